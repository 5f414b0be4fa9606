"""Deploy the synthesised CDK cloud assembly into the embedded moto server with the real CDK CLI.

`cdk bootstrap` and `cdk deploy` (the pinned CLI in node_modules, as an admin runs them against
AWS) with AWS_ENDPOINT_URL on the embedded endpoint: the CLI creates the bootstrap stack, publishes
the assets, creates and executes the change set. Before that, the few resource types moto's
CloudFormation does not create are created through their own APIs (`emulate.py`) in a per-deploy
copy of the assembly. Outputs and physical resources are read back for the local runtime.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lfr_cli.local.emulate import create_alarms, materialise_unsupported, take_alarms
from lfr_cli.local.server import ACCOUNT_ID, REGION, aws_env

log = logging.getLogger(__name__)

# Resource types moto's CloudFormation skips (with a warning per resource, twice): policies that
# enforce TLS/least privilege. They are asserted on the synthesised template in tests/infra; locally
# they are reported once instead of flooding the console. Alarms, which moto's CloudFormation skips
# too, are created after the stack through CloudWatch's API (emulate.create_alarms).
MOTO_UNSUPPORTED = ("AWS::S3::BucketPolicy", "AWS::SQS::QueuePolicy", "AWS::SNS::TopicPolicy")
logging.getLogger("moto.cloudformation.parsing").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message="Tried to parse AWS::", category=UserWarning)


def _note_unsupported(template: dict[str, Any]) -> None:
    skipped = Counter(
        r["Type"] for r in template.get("Resources", {}).values() if r.get("Type") in MOTO_UNSUPPORTED
    )
    if skipped:
        log.warning(
            "not emulated locally (moto): %s", ", ".join(f"{n} {t}" for t, n in sorted(skipped.items()))
        )

BOOTSTRAP_QUALIFIER = "hnb659fds"  # the CDK default; `cdk bootstrap` creates cdk-<qualifier>-assets-...
REPO_ROOT = Path(__file__).resolve().parents[2]
CDK_CLI = REPO_ROOT / "node_modules" / ".bin" / "cdk"
# Variables of this process a CLI run may see; AWS comes only from `aws_env` (the embedded endpoint).
_CLI_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TERM", "NODE_OPTIONS")

Synthesiser = Callable[[Path], Path]


class DeployError(RuntimeError):
    """The stack did not reach CREATE_COMPLETE; the message names the failing resources."""


@dataclass
class Resource:
    logical_id: str
    physical_id: str
    type: str
    status: str


@dataclass
class DeployedStack:
    name: str
    stack_id: str
    outputs: dict[str, str]
    resources: list[Resource]
    assembly_dir: Path
    template: dict[str, Any]
    # S3 object key of each published asset -> its source in the cloud assembly (file or directory);
    # the local runtime runs a function's code from here, exactly what was uploaded.
    asset_sources: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def of_type(self, cfn_type: str) -> list[Resource]:
        return [r for r in self.resources if r.type == cfn_type]

    def physical_id(self, logical_id: str) -> str:
        for r in self.resources:
            if r.logical_id == logical_id:
                return r.physical_id
        raise KeyError(logical_id)


def default_synth(outdir: Path) -> Path:
    """The project's CDK app, synthesised in this process (the same app `cdk synth` runs)."""
    os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
    from infra.app import synth

    return Path(str(synth(str(outdir)).directory))


# One synthesis per app per process: the integration modules and the demo deploy the same assembly
# several times (`cdk deploy --app <assembly>`), and synthesis is the slowest step.
_ASSEMBLIES: dict[Synthesiser | None, Path] = {}
_ASSEMBLIES_LOCK = threading.Lock()


def synthesise(synth_fn: Synthesiser | None, outdir: Path) -> Path:
    os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
    with _ASSEMBLIES_LOCK:
        assembly = _ASSEMBLIES.get(synth_fn)
        if assembly is not None and (assembly / "manifest.json").exists():
            return assembly
        outdir.mkdir(parents=True, exist_ok=True)
        assembly = (synth_fn or default_synth)(outdir)
        _ASSEMBLIES[synth_fn] = assembly
        return assembly


def assets_bucket(account: str = ACCOUNT_ID, region: str = REGION) -> str:
    return f"cdk-{BOOTSTRAP_QUALIFIER}-assets-{account}-{region}"


def cdk_cli() -> Path:
    if not CDK_CLI.exists():
        raise DeployError(f"the CDK CLI is not installed at {CDK_CLI}: run `make node_modules` (npm ci)")
    return CDK_CLI


def cli_env(endpoint: str, region: str) -> dict[str, str]:
    """The CLI's environment: the embedded endpoint, dummy credentials, no version check/notices/telemetry."""
    env = {k: os.environ[k] for k in _CLI_INHERITED_ENV if k in os.environ}
    env.update(aws_env(endpoint, region))
    env.update({"CDK_DISABLE_VERSION_CHECK": "1", "CDK_DISABLE_CLI_TELEMETRY": "true", "CI": "true",
                "FORCE_COLOR": "0", "NODE_NO_WARNINGS": "1",
                # The SDK's default upload checksums are computed again by moto, in Python: the
                # layer's upload took ~45 s of a ~85 s deploy; with checksums only where required, ~10 s.
                "AWS_REQUEST_CHECKSUM_CALCULATION": "WHEN_REQUIRED"})
    return env


def run_cdk(args: list[str], endpoint: str, region: str, log_path: Path, cwd: Path) -> None:
    """Run the pinned CDK CLI against the embedded endpoint; its output goes to `log_path`."""
    cmd = [str(cdk_cli()), *args, "--no-notices", "--no-color"]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        out.write(f"$ cdk {' '.join(args)}\n".encode())
        out.flush()
        # cwd: a directory without cdk.json, so the CLI reads only what it is given here.
        proc = subprocess.run(cmd, env=cli_env(endpoint, region), cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        raise DeployError(f"cdk {args[0]} failed ({proc.returncode}); {log_path}:\n" + "\n".join(tail))


def local_assembly(source: Path, dest: Path, stack_name: str, template: dict[str, Any]) -> Path:
    """A cloud assembly for this deployment: `source` with the stack's template replaced by `template`.

    Asset directories and the CLI's zip cache (`.cache`) are links into `source`, so each asset is
    zipped once per synthesis however often it is deployed.
    """
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    (source / ".cache").mkdir(exist_ok=True)
    template_file = f"{stack_name}.template.json"
    for entry in source.iterdir():
        target = dest / entry.name
        if entry.name == template_file:
            target.write_text(json.dumps(template, indent=1))
        elif entry.is_file():
            shutil.copy2(entry, target)
        else:
            target.symlink_to(entry.resolve(), target_is_directory=True)
    return dest


def asset_sources(assembly: Path, stack_name: str, account: str, region: str) -> dict[str, Path]:
    """S3 object key -> source (in the cloud assembly) of every file asset the CLI published."""
    manifest = assembly / f"{stack_name}.assets.json"
    if not manifest.exists():
        raise DeployError(f"no asset manifest {manifest.name} in {assembly}")
    spec = json.loads(manifest.read_text())
    if spec.get("dockerImages"):
        raise DeployError("docker image assets are not supported by the embedded stack (no Docker engine)")
    sources: dict[str, Path] = {}
    for asset in spec.get("files", {}).values():
        for dest in asset["destinations"].values():
            key = dest["objectKey"].replace("${AWS::AccountId}", account).replace("${AWS::Region}", region)
            sources[key] = (assembly / asset["source"]["path"]).resolve()
    return sources


def _failure_reasons(cfn: Any, stack_name: str) -> str:
    events = cfn.describe_stack_events(StackName=stack_name).get("StackEvents", [])
    failed = [
        f"{e['LogicalResourceId']} ({e.get('ResourceType', '?')}): {e['ResourceStatus']}"
        f" - {e.get('ResourceStatusReason', 'no reason given')}"
        for e in events
        if e.get("ResourceStatus", "").endswith("FAILED")
    ]
    return "; ".join(failed) or "no failed resource event recorded"


def deploy(
    client: Callable[[str], Any],
    stack_name: str,
    endpoint: str,
    assembly_dir: Path | None = None,
    synth_fn: Synthesiser | None = None,
    outdir: Path | None = None,
    work_dir: Path | None = None,
    account: str = ACCOUNT_ID,
    region: str = REGION,
) -> DeployedStack:
    """Synthesise (unless `assembly_dir` is given), then `cdk bootstrap` and `cdk deploy` on `endpoint`."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if assembly_dir is None:
        assembly_dir = synthesise(synth_fn, outdir or REPO_ROOT / "build" / "local" / "cdk.out")
    timings["synth_s"] = time.perf_counter() - t0
    work = work_dir or Path(tempfile.mkdtemp(prefix="lfr-deploy-"))
    work.mkdir(parents=True, exist_ok=True)
    log_path = work / "cdk.log"

    t = time.perf_counter()
    run_cdk(["bootstrap", f"aws://{account}/{region}"], endpoint, region, log_path, work)
    timings["bootstrap_s"] = time.perf_counter() - t

    t = time.perf_counter()
    template = json.loads((assembly_dir / f"{stack_name}.template.json").read_text())
    _note_unsupported(template)
    # Secrets, Cognito, API stages/authorizers: created through their own APIs (moto's CFN skips them).
    local_template = materialise_unsupported(template, client, stack_name)
    alarms = take_alarms(local_template)  # created below, once the resources they watch exist
    local = local_assembly(assembly_dir, work / "cdk.out", stack_name, local_template)
    run_cdk(
        ["deploy", stack_name, "--app", str(local), "--require-approval", "never", "--progress", "events"],
        endpoint, region, log_path, work,
    )
    timings["deploy_s"] = time.perf_counter() - t

    cfn = client("cloudformation")
    desc = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
    if desc["StackStatus"] not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
        raise DeployError(f"stack {stack_name} ended {desc['StackStatus']}: {_failure_reasons(cfn, stack_name)}")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in desc.get("Outputs", [])}
    resources: list[Resource] = []
    paginator = cfn.get_paginator("list_stack_resources")
    for page in paginator.paginate(StackName=stack_name):
        for r in page["StackResourceSummaries"]:
            resources.append(
                Resource(
                    logical_id=r["LogicalResourceId"],
                    physical_id=r.get("PhysicalResourceId", ""),
                    type=r["ResourceType"],
                    status=r["ResourceStatus"],
                )
            )
    try:
        create_alarms(alarms, client, {r.logical_id: r.physical_id for r in resources}, stack_name)
    except (KeyError, ValueError) as exc:
        raise DeployError(f"alarms of {stack_name} could not be created locally: {exc}") from exc
    timings["total_s"] = time.perf_counter() - t0
    log.info("deployed %s in %.1fs %s", stack_name, timings["total_s"], timings)
    return DeployedStack(
        name=stack_name,
        stack_id=desc["StackId"],
        outputs=outputs,
        resources=resources,
        assembly_dir=assembly_dir,
        template=template,  # as synthesised (before local substitutions)
        asset_sources=asset_sources(assembly_dir, stack_name, account, region),
        timings=timings,
    )


