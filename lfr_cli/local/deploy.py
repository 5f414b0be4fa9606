"""Deploy the synthesised CDK cloud assembly into the embedded moto server, the way `cdk deploy` would.

Same template, same assets: bootstrap (bucket + SSM version), publish `*.assets.json` file assets,
CloudFormation create_stack, wait, read outputs and physical resources.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lfr_cli.local.emulate import create_alarms, materialise_unsupported, take_alarms
from lfr_cli.local.server import ACCOUNT_ID, REGION

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

BOOTSTRAP_QUALIFIER = "hnb659fds"
BOOTSTRAP_VERSION = "30"  # any value the template's CheckBootstrapVersion rule accepts (>= 6)
TEMPLATE_BODY_LIMIT = 51_200  # CloudFormation's TemplateBody limit; beyond it, TemplateURL
STORED_ABOVE_BYTES = 20 * 1024 * 1024  # directories bigger than this are zipped without compression

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
    """The project's CDK app, synthesised in this process."""
    os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
    from infra.app import synth  # the colleague's module; imported late so tests can run without it

    assembly = synth(str(outdir))
    # `synth` returns a CloudAssembly (its `directory`) or a path, depending on the app's version.
    directory = getattr(assembly, "directory", None) or assembly or outdir
    return Path(str(directory))


def synthesise(synth_fn: Synthesiser | None, outdir: Path) -> Path:
    os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
    outdir.mkdir(parents=True, exist_ok=True)
    return (synth_fn or default_synth)(outdir)


def assets_bucket(account: str = ACCOUNT_ID, region: str = REGION) -> str:
    return f"cdk-{BOOTSTRAP_QUALIFIER}-assets-{account}-{region}"


def bootstrap(client: Callable[[str], Any], account: str = ACCOUNT_ID, region: str = REGION) -> str:
    """Emulate `cdk bootstrap`: only what a deploy of a DefaultStackSynthesizer stack reads."""
    bucket = assets_bucket(account, region)
    s3 = client("s3")
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    client("ssm").put_parameter(
        Name=f"/cdk-bootstrap/{BOOTSTRAP_QUALIFIER}/version",
        Value=BOOTSTRAP_VERSION,
        Type="String",
        Overwrite=True,
    )
    return bucket


# Zips are cached per process by asset hash: the hash already covers the source content.
_ZIP_CACHE: dict[str, Path] = {}
_ZIP_LOCK = threading.Lock()


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def zip_directory(source: Path, asset_hash: str) -> Path:
    with _ZIP_LOCK:
        cached = _ZIP_CACHE.get(asset_hash)
        if cached is not None and cached.exists():
            return cached
        # Layers carry already-compressed wheels and model files: deflating them costs time, saves little.
        method = zipfile.ZIP_STORED if _dir_size(source) > STORED_ABOVE_BYTES else zipfile.ZIP_DEFLATED
        out = Path(tempfile.gettempdir()) / f"lfr-asset-{asset_hash}.zip"
        tmp = out.with_suffix(".zip.part")
        with zipfile.ZipFile(tmp, "w", compression=method) as zf:
            for path in sorted(source.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(source).as_posix())
        tmp.replace(out)
        _ZIP_CACHE[asset_hash] = out
        return out


def _substitute(text: str, account: str, region: str) -> str:
    return (
        text.replace("${AWS::AccountId}", account).replace("${AWS::Region}", region).replace("${AWS::Partition}", "aws")
    )


def publish_assets(
    client: Callable[[str], Any], assembly: Path, stack_name: str, account: str, region: str
) -> dict[str, Path]:
    """Upload every file asset of the stack; returns object key -> source path."""
    manifest = assembly / f"{stack_name}.assets.json"
    if not manifest.exists():
        raise DeployError(f"no asset manifest {manifest.name} in {assembly}")
    spec = json.loads(manifest.read_text())
    if spec.get("dockerImages"):
        raise DeployError("docker image assets are not supported by the embedded stack (no Docker engine)")
    s3 = client("s3")
    sources: dict[str, Path] = {}
    for asset_hash, asset in spec.get("files", {}).items():
        source = assembly / asset["source"]["path"]
        packaging = asset["source"].get("packaging", "file")
        if packaging == "zip" and source.is_dir():
            body_path = zip_directory(source, asset_hash)
        elif packaging == "file":
            body_path = source
        else:
            raise DeployError(f"asset {asset_hash}: unsupported packaging {packaging!r} for {source}")
        for dest in asset["destinations"].values():
            bucket = _substitute(dest["bucketName"], account, region)
            key = _substitute(dest["objectKey"], account, region)
            with body_path.open("rb") as body:
                s3.put_object(Bucket=bucket, Key=key, Body=body)
            sources[key] = source
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
    assembly_dir: Path | None = None,
    synth_fn: Synthesiser | None = None,
    outdir: Path | None = None,
    account: str = ACCOUNT_ID,
    region: str = REGION,
    timeout_s: float = 300.0,
) -> DeployedStack:
    """Synthesise (unless `assembly_dir` is given), bootstrap, publish, create the stack, wait."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if assembly_dir is None:
        assembly_dir = synthesise(synth_fn, outdir or Path("build/local/cdk.out"))
    timings["synth_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    bucket = bootstrap(client, account, region)
    timings["bootstrap_s"] = time.perf_counter() - t

    t = time.perf_counter()
    sources = publish_assets(client, assembly_dir, stack_name, account, region)
    timings["publish_s"] = time.perf_counter() - t

    t = time.perf_counter()
    template_path = assembly_dir / f"{stack_name}.template.json"
    body = template_path.read_text()
    _note_unsupported(json.loads(body))
    # Secrets, Cognito, API stages/authorizers: created through their own APIs (moto's CFN skips them).
    local_template = materialise_unsupported(json.loads(body), client, stack_name)
    alarms = take_alarms(local_template)  # created below, once the resources they watch exist
    body = json.dumps(local_template)
    cfn = client("cloudformation")
    kwargs: dict[str, Any] = {
        "StackName": stack_name,
        "Capabilities": ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
    }
    if len(body.encode()) > TEMPLATE_BODY_LIMIT:
        key = f"{hashlib.sha256(body.encode()).hexdigest()}.json"
        client("s3").put_object(Bucket=bucket, Key=key, Body=body.encode())
        kwargs["TemplateURL"] = f"https://s3.{region}.amazonaws.com/{bucket}/{key}"
    else:
        kwargs["TemplateBody"] = body
    stack_id = cfn.create_stack(**kwargs)["StackId"]
    status = _wait(cfn, stack_name, timeout_s)
    if status != "CREATE_COMPLETE":
        raise DeployError(f"stack {stack_name} ended {status}: {_failure_reasons(cfn, stack_name)}")
    timings["create_stack_s"] = time.perf_counter() - t

    desc = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
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
        stack_id=stack_id,
        outputs=outputs,
        resources=resources,
        assembly_dir=assembly_dir,
        template=json.loads(template_path.read_text()),  # as synthesised (before local substitutions)
        asset_sources=sources,
        timings=timings,
    )


def _wait(cfn: Any, stack_name: str, timeout_s: float) -> str:
    # moto creates resources inside the create_stack request; the loop is for real-CFN-like semantics.
    deadline = time.monotonic() + timeout_s
    while True:
        status: str = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]["StackStatus"]
        if not status.endswith("IN_PROGRESS") or time.monotonic() > deadline:
            return status
        time.sleep(0.2)
