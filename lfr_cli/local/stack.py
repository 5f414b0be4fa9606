"""`EmbeddedStack`: the whole AWS of lfr in this process, from the synthesised CDK app (moto server,
emulated Lambda runtime, event-source pollers, API Gateway proxy), and `lfr local up`."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from aws_emulation.apigw import LocalApiGateway, gateways_for
from aws_emulation.esm import EsmPollers, SqsPoller, detach_moto_sqs_invoker, discover_mappings
from aws_emulation.runtime import REPO_ROOT, LocalRuntime
from lfr_cli.local.deploy import DeployedStack, Synthesiser, deploy
from lfr_cli.local.moto_ext import route_lambda_invocations
from lfr_cli.local.s3props import apply_bucket_properties
from lfr_cli.local.server import ACCOUNT_ID, REGION, MotoServer, enable_state_machine_execution, make_client

log = logging.getLogger(__name__)

DEFAULT_RUN_DIR = REPO_ROOT / "build" / "local"


class EmbeddedStack:
    """Context manager: `with EmbeddedStack() as stack:` -> server up, stack deployed, functions runnable."""

    def __init__(
        self,
        stack_name: str | None = None,
        run_dir: Path = DEFAULT_RUN_DIR,
        synth_fn: Synthesiser | None = None,
        assembly_dir: Path | None = None,
        model_dir: Path | None = None,
        extra_env: dict[str, str] | None = None,
        start_pollers: bool = True,
        port: int = 0,
    ) -> None:
        if stack_name is None:
            from infra.constants import DEFAULT_STACK_NAME

            stack_name = DEFAULT_STACK_NAME
        self.stack_name = stack_name
        self.run_dir = Path(run_dir)
        self._synth_fn = synth_fn
        self._assembly_dir = assembly_dir
        self._model_dir = model_dir
        self._extra_env = extra_env
        self._start_pollers = start_pollers
        self._server = MotoServer(port)
        self.deployed: DeployedStack | None = None
        self._runtime: LocalRuntime | None = None
        self.state_machine_arns: list[str] = []
        self.pollers: EsmPollers | None = None
        self.gateways: dict[str, LocalApiGateway] = {}

    # -- lifecycle

    def up(self) -> EmbeddedStack:
        try:
            return self._up()
        except BaseException:
            self.down()
            raise

    def _up(self) -> EmbeddedStack:
        t0 = time.perf_counter()
        endpoint = self._server.start()
        log.info("moto server at %s", endpoint)
        self.deployed = deploy(
            self.client,
            self.stack_name,
            endpoint,
            assembly_dir=self._assembly_dir,
            synth_fn=self._synth_fn,
            outdir=self.run_dir / "cdk.out",
            work_dir=self.run_dir / "deploy",
        )
        apply_bucket_properties(
            self.client("s3"), self.deployed.template,
            {r.logical_id: r.physical_id for r in self.deployed.of_type("AWS::S3::Bucket")},
        )
        self._runtime = LocalRuntime(
            self.client, endpoint, self.deployed, self.log_dir, model_dir=self._model_dir, extra_env=self._extra_env
        )
        self._runtime.discover()
        # The template's REST APIs on 127.0.0.1; functions (the match function's page links) use its URL.
        self.gateways = gateways_for(self.deployed.template, self._runtime.invoke)
        for gw in self.gateways.values():
            gw.start()
        if self.gateways:
            from functions.models.env import OFFICER_PAGE_URL

            self._runtime.extra_env.setdefault(OFFICER_PAGE_URL, self.api_url)
        detach_moto_sqs_invoker(ACCOUNT_ID, REGION)
        function_arns = {fn.arn for fn in self._runtime.functions.values()}
        mappings = discover_mappings(self.client("lambda"), function_arns)
        runtime = self._runtime
        self.pollers = EsmPollers([
            SqsPoller(m, self.client("sqs"), runtime.invoke, REGION, runtime.resolve(m.function_arn).max_workers)
            for m in mappings
        ])
        # Every Lambda Invoke (moto's Step Functions engine's tasks, any client's) runs in the runtime.
        route_lambda_invocations(self._runtime.invoke)
        self.state_machine_arns = self._executable_state_machines()
        if self._start_pollers:
            self.pollers.start()
        self.deployed.timings["up_s"] = time.perf_counter() - t0
        return self

    def _executable_state_machines(self) -> list[str]:
        """Register the template's state machines with moto's executing Step Functions backend.

        moto's CloudFormation creates a state machine in its recording-only backend, which the
        executing one (`execute_state_machine`) does not see: each is created again there through
        the API, with the definition moto resolved from the template and the same name (same ARN).
        `tests/unit/test_moto_ext.py` asserts moto still behaves so.
        """
        sfn = self.client("stepfunctions")
        deployed = self._require(self.deployed)
        described = [
            sfn.describe_state_machine(stateMachineArn=r.physical_id)
            for r in deployed.of_type("AWS::StepFunctions::StateMachine")
        ]
        enable_state_machine_execution(self.endpoint)
        arns = []
        for sm in described:
            # moto's engine parses the definition here: an ASL it cannot run fails the deploy.
            arn = sfn.create_state_machine(
                name=sm["name"], definition=sm["definition"], roleArn=sm["roleArn"], type=sm.get("type", "STANDARD")
            )["stateMachineArn"]
            if arn != sm["stateMachineArn"]:
                raise RuntimeError(f"state machine registered as {arn}, deployed as {sm['stateMachineArn']}")
            arns.append(arn)
        return arns

    def wait_execution(self, execution_arn: str, timeout_s: float = 60.0) -> dict[str, Any]:
        """`describe_execution` once the execution has left RUNNING (or when `timeout_s` is up)."""
        sfn = self.client("stepfunctions")
        deadline = time.monotonic() + timeout_s
        while True:
            desc: dict[str, Any] = sfn.describe_execution(executionArn=execution_arn)
            if desc["status"] != "RUNNING" or time.monotonic() > deadline:
                return desc
            time.sleep(0.2)

    def _stop_executions(self) -> None:
        sfn = self.client("stepfunctions")
        for arn in self.state_machine_arns:
            for ex in sfn.list_executions(stateMachineArn=arn, statusFilter="RUNNING").get("executions", []):
                sfn.stop_execution(executionArn=ex["executionArn"], cause="local stack stopped")

    def down(self) -> None:
        route_lambda_invocations(None)
        if self._server.endpoint and self.state_machine_arns:
            try:
                self._stop_executions()
            except Exception:
                log.warning("could not stop running executions", exc_info=True)
        if self.pollers is not None:
            self.pollers.stop()
        if self._runtime is not None:
            self._runtime.stop()
        for gw in self.gateways.values():
            gw.stop()
        if self._server.endpoint:
            try:
                enable_state_machine_execution(self._server.endpoint, False)  # moto's config is per process too
            except OSError:
                log.warning("could not reset moto's config at %s", self._server.endpoint)
            _reset_moto(self._server.endpoint)  # moto's backends are per process: leave none behind
        self._server.stop()

    def __enter__(self) -> EmbeddedStack:
        return self.up()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()

    # -- accessors

    @property
    def endpoint(self) -> str:
        return self._server.endpoint

    @property
    def region(self) -> str:
        return REGION

    @property
    def api_url(self) -> str:
        """Base URL (ending in /<stage>/) of the stack's REST API (the officers' API) on 127.0.0.1."""
        if not self.gateways:
            raise RuntimeError("the stack has no REST API")
        return next(iter(self.gateways.values())).url

    @property
    def outputs(self) -> dict[str, str]:
        return self._require(self.deployed).outputs

    @property
    def runtime(self) -> LocalRuntime:
        return self._require(self._runtime)

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    def client(self, service: str, **config: Any) -> Any:
        return make_client(service, self.endpoint, REGION, **config)

    @staticmethod
    def _require(value: Any) -> Any:
        if value is None:
            raise RuntimeError("EmbeddedStack is not up")
        return value

    def describe(self) -> dict[str, Any]:
        doc = {"endpoint": self.endpoint, "outputs": self.outputs, "region": REGION, "stack": self.stack_name}
        if self.gateways:
            doc["api_url"] = self.api_url
        return doc


def _reset_moto(endpoint: str) -> None:
    try:
        req = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=5):
            pass
    except OSError:
        log.warning("could not reset moto at %s", endpoint)


def endpoint_file(run_dir: Path = DEFAULT_RUN_DIR) -> Path:
    return run_dir / "endpoint.json"


def run_forever(
    stack_name: str | None = None,
    run_dir: Path = DEFAULT_RUN_DIR,
    synth_fn: Synthesiser | None = None,
    stop: threading.Event | None = None,
    port: int = 0,
) -> None:
    """`lfr local up`: bring the stack up, publish where it is, print the outputs, wait for Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stack = EmbeddedStack(stack_name=stack_name, run_dir=run_dir, synth_fn=synth_fn, port=port)
    with stack:
        info = stack.describe()
        path = endpoint_file(run_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(info, indent=2))
        timings = stack._require(stack.deployed).timings
        print(f"lfr local stack '{stack.stack_name}' up at {stack.endpoint} ({timings.get('up_s', 0):.1f}s)")
        for key, value in sorted(stack.outputs.items()):
            print(f"  {key} = {value}")
        print(f"endpoint file: {path}\nfunction logs: {stack.log_dir}\nCtrl-C to stop")
        waiter = stop or threading.Event()
        try:
            while not waiter.wait(1.0):
                pass
        except KeyboardInterrupt:
            print("stopping")
        finally:
            path.unlink(missing_ok=True)
