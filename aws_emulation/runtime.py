"""Local Lambda runtime: long-lived worker subprocesses per deployed function, like warm containers.

Configuration (handler, environment, timeout, memory) is read back from moto, i.e. from what the
CloudFormation template created; the code is the function's published asset from the cloud assembly.

Concurrency: like Lambda, one container serves one invocation at a time and concurrent invocations
get more containers, up to a cap: the template's reserved concurrency if it sets one, else
`DEFAULT_MAX_WORKERS`, and never more than the machine's cores plus `CONTAINERS_OVER_CORES`.
Each match container is one CPU-bound onnxruntime session, but it also waits on its AWS calls
(moto here): `lfr bench --throughput` measured the match function blocked on them for 15-18% of its
wall time at saturation, a core left idle; one container more than cores keeps the cores busy
(47-52% -> 61% of the raw inference ceiling in that measurement), more would only add contention.
An invocation beyond the cap waits for a container, as a synchronous caller would be throttled
and retry.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from lfr_cli.local.deploy import DeployedStack
from lfr_cli.local.server import REGION, aws_env

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
# Only these of the parent's variables reach a function: never the developer's AWS credentials/profile.
_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT", "VIRTUAL_ENV")
_INIT_TIMEOUT_S = 120.0  # importing onnxruntime + loading models can be slow on a cold machine
DEFAULT_MAX_WORKERS = 4  # per function when the template reserves no concurrency (then capped by cores)
CONTAINERS_OVER_CORES = 1  # the module docstring says why
# Lambda runs each invocation on its own CPU share; a shared, oversubscribed machine does not, and
# there a function's wall-clock timeout measures the neighbours' load, not the function. This
# factor (default 1: Lambda's timeouts) stretches every function's timeout, and the deadline its
# handler sees, on such a machine. Queue visibility timeouts stay as the template sets them.
ENV_TIMEOUT_SCALE = "LFR_LOCAL_TIMEOUT_SCALE"


def timeout_scale() -> float:
    raw = os.environ.get(ENV_TIMEOUT_SCALE, "1")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{ENV_TIMEOUT_SCALE}={raw!r}: expected a number >= 1") from None
    if not value >= 1.0:
        raise ValueError(f"{ENV_TIMEOUT_SCALE}={raw!r}: expected a number >= 1")
    return value


def machine_cap() -> int:
    """Cores this process may run on (the container's CPU share, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class InvokeResult:
    payload: Any = None
    error_type: str | None = None
    error_message: str | None = None
    stack_trace: list[str] = field(default_factory=list)
    request_id: str = ""
    duration_ms: float = 0.0
    cold_start: bool = False

    @property
    def ok(self) -> bool:
        return self.error_type is None


@dataclass
class FunctionConfig:
    name: str
    arn: str
    logical_id: str
    handler: str
    environment: dict[str, str]
    timeout_s: float
    memory_mb: int
    code_dir: Path
    runtime: str  # the deployed Runtime, e.g. python3.12 (what AWS_EXECUTION_ENV names)
    reserved_concurrency: int | None = None  # the template's ReservedConcurrentExecutions, if set

    @property
    def max_workers(self) -> int:
        """How many containers may serve this function at once here (0: reserved concurrency 0)."""
        wanted = DEFAULT_MAX_WORKERS if self.reserved_concurrency is None else self.reserved_concurrency
        return min(wanted, machine_cap() + CONTAINERS_OVER_CORES)


@dataclass(frozen=True)
class WorkerState:
    """One container of a function as seen from outside (fault-injection tests kill by pid)."""

    pid: int | None
    request_id: str | None  # the invocation in flight, None when idle


class _Worker:
    """A subprocess running `aws_emulation.worker` for one function; restarted after a timeout/crash."""

    def __init__(self, config: FunctionConfig, env: dict[str, str], log_path: Path) -> None:
        self.config = config
        self.env = env
        self.log_path = log_path
        self.lock = threading.Lock()  # one container serves one invocation at a time
        self.proc: subprocess.Popen[bytes] | None = None
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._log_file: IO[bytes] | None = None
        self.request_id: str | None = None  # in flight; read by `LocalRuntime.workers`
        self.timeout_scale = timeout_scale()

    def state(self) -> WorkerState:
        proc = self.proc
        return WorkerState(pid=proc.pid if proc is not None else None, request_id=self.request_id)

    def _start(self) -> tuple[bool, InvokeResult | None]:
        """Start the process and wait for init; returns (ok, init error as an InvokeResult)."""
        self._log_file = self.log_path.open("ab")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aws_emulation.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            env=self.env,
            cwd=str(self.config.code_dir),
            start_new_session=True,  # its own process group: a timeout kills the handler's children too
        )
        self._lines = queue.Queue()
        threading.Thread(
            target=self._read, args=(self.proc.stdout, self._lines), daemon=True, name=f"worker-{self.config.name}"
        ).start()
        message = self._next(t0 + _INIT_TIMEOUT_S)
        elapsed_ms = (time.perf_counter() - t0) * 1000
        if message is None:
            self.kill()
            return False, InvokeResult(
                error_type="Runtime.ExitError", error_message=f"worker died or hung during init ({elapsed_ms:.0f} ms)"
            )
        if message.get("type") != "ready":
            self.kill()
            return False, InvokeResult(
                error_type=message.get("errorType", "Runtime.Unknown"),
                error_message=message.get("errorMessage", ""),
                stack_trace=message.get("stackTrace", []),
            )
        init_ms = float(message.get("init_ms", 0.0))
        log.info("cold start %s: %.0f ms (handler init %.0f ms)", self.config.name, elapsed_ms, init_ms)
        self._log_line(
            f"LFR_LOCAL COLD_START function={self.config.name} duration_ms={elapsed_ms:.1f} init_ms={init_ms:.1f}"
        )
        return True, None

    @staticmethod
    def _read(stream: IO[bytes] | None, lines: queue.Queue[bytes | None]) -> None:
        assert stream is not None
        for line in stream:
            lines.put(line)
        lines.put(None)  # EOF: the process exited

    def _next(self, deadline: float) -> dict[str, Any] | None:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return None
        try:
            line = self._lines.get(timeout=remaining)
        except queue.Empty:
            return None
        if line is None:
            return None
        result: dict[str, Any] = json.loads(line)
        return result

    def _log_line(self, text: str) -> None:
        if self._log_file is not None:
            self._log_file.write((text + "\n").encode())
            self._log_file.flush()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def invoke(self, event: Any) -> InvokeResult:
        with self.lock:
            cold = False
            if not self.alive():
                ok, failure = self._start()
                if not ok:
                    assert failure is not None
                    failure.cold_start = True
                    return failure
                cold = True
            assert self.proc is not None and self.proc.stdin is not None
            request_id = str(uuid.uuid4())
            timeout_s = self.config.timeout_s * self.timeout_scale
            deadline_ms = int((time.time() + timeout_s) * 1000)
            request = {"request_id": request_id, "event": event, "deadline_ms": deadline_ms}
            t0 = time.perf_counter()
            self.request_id = request_id
            try:
                return self._call(request, request_id, timeout_s, t0, cold)
            finally:
                self.request_id = None

    def _call(self, request: dict[str, Any], request_id: str, timeout_s: float, t0: float, cold: bool) -> InvokeResult:
        """Send one request and wait for its answer (the caller holds the lock)."""
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.kill()
            return InvokeResult(
                error_type="Runtime.ExitError",
                error_message="worker exited",
                request_id=request_id,
                cold_start=cold,
            )
        message = self._next(t0 + timeout_s)
        duration_ms = (time.perf_counter() - t0) * 1000
        if message is None:
            # EOF before the deadline is a crash even if the process is not reapable yet (the
            # kernel closes a dying process's pipes before it becomes a zombie).
            timed_out = time.perf_counter() >= t0 + timeout_s and self.alive()
            if timed_out:  # before kill(), which closes the log
                self._log_line(f"{request_id} Task timed out after {timeout_s:.2f} seconds")
            self.kill()
            if timed_out:
                return InvokeResult(
                    error_type="Sandbox.Timedout",
                    error_message=f"Task timed out after {timeout_s:.2f} seconds",
                    request_id=request_id,
                    duration_ms=duration_ms,
                    cold_start=cold,
                )
            return InvokeResult(
                error_type="Runtime.ExitError",
                error_message="worker exited during the invocation",
                request_id=request_id,
                duration_ms=duration_ms,
                cold_start=cold,
            )
        if message.get("type") == "result":
            return InvokeResult(
                payload=message.get("payload"), request_id=request_id, duration_ms=duration_ms, cold_start=cold
            )
        return InvokeResult(
            error_type=message.get("errorType", "Runtime.Unknown"),
            error_message=message.get("errorMessage", ""),
            stack_trace=message.get("stackTrace", []),
            request_id=request_id,
            duration_ms=duration_ms,
            cold_start=cold,
        )

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the group we created with start_new_session
            except (ProcessLookupError, PermissionError):
                proc.kill()
            proc.wait(timeout=10)
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def stop(self) -> None:
        """Graceful: close stdin so the worker's loop ends, then kill if it lingers."""
        with self.lock:
            proc = self.proc
            if proc is not None and proc.poll() is None and proc.stdin is not None:
                try:
                    proc.stdin.close()
                    proc.wait(timeout=3)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            self.kill()


class LocalRuntime:
    """Runs the deployed stack's Lambda functions locally; `invoke` by name, ARN or logical id."""

    def __init__(
        self,
        client: Callable[[str], Any],
        endpoint: str,
        stack: DeployedStack,
        log_dir: Path,
        model_dir: Path | None = None,
        region: str = REGION,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self._client = client
        self.endpoint = endpoint
        self.stack = stack
        self.log_dir = log_dir
        self.model_dir = model_dir or REPO_ROOT / "build" / "models"
        self.region = region
        self.extra_env = extra_env or {}
        self.functions: dict[str, FunctionConfig] = {}
        self._workers: dict[str, list[_Worker]] = {}  # every container of a function, idle or busy
        self._idle: dict[str, list[_Worker]] = {}  # most recently used last: warm starts reuse it
        self._aliases: dict[str, str] = {}
        self._lock = threading.Condition()
        # Outcome counts per function ("ok" or the error type): what a fault-injection test reports.
        self.outcomes: dict[str, Counter[str]] = {}

    def discover(self) -> dict[str, FunctionConfig]:
        """Read every AWS::Lambda::Function of the stack back from moto."""
        lam = self._client("lambda")
        resources = self.stack.template.get("Resources", {})
        for res in self.stack.of_type("AWS::Lambda::Function"):
            cfg = lam.get_function_configuration(FunctionName=res.physical_id)
            code = resources.get(res.logical_id, {}).get("Properties", {}).get("Code", {})
            fn = FunctionConfig(
                name=cfg["FunctionName"],
                arn=cfg["FunctionArn"],
                logical_id=res.logical_id,
                handler=cfg["Handler"],
                environment=dict(cfg.get("Environment", {}).get("Variables", {})),
                timeout_s=float(cfg.get("Timeout", 3)),
                memory_mb=int(cfg.get("MemorySize", 128)),
                code_dir=self._code_dir(code),
                reserved_concurrency=_reserved(resources.get(res.logical_id, {})),
                runtime=cfg["Runtime"],
            )
            self.functions[fn.name] = fn
            for alias in (fn.name, fn.arn, fn.logical_id, f"{fn.arn}:$LATEST"):
                self._aliases[alias] = fn.name
        return self.functions

    def _code_dir(self, code: dict[str, Any]) -> Path:
        key = code.get("S3Key")
        source = self.stack.asset_sources.get(key) if isinstance(key, str) else None
        if source is not None and source.is_dir():
            return source
        # Inline or unknown code: the repo itself (handler strings are importable from its root).
        return REPO_ROOT

    def resolve(self, function_name_or_arn: str) -> FunctionConfig:
        name = self._aliases.get(function_name_or_arn)
        if name is None and function_name_or_arn.startswith("arn:"):
            # ARN with a qualifier: arn:aws:lambda:region:acct:function:name[:qualifier]
            parts = function_name_or_arn.split(":")
            name = self._aliases.get(parts[6]) if len(parts) > 6 else None
        if name is None:
            raise KeyError(f"no deployed function {function_name_or_arn!r}; known: {sorted(self.functions)}")
        return self.functions[name]

    def env_for(self, fn: FunctionConfig) -> dict[str, str]:
        env = {k: os.environ[k] for k in _INHERITED_ENV if k in os.environ}
        env.update(fn.environment)
        env.update(aws_env(self.endpoint, self.region))
        pythonpath = [str(fn.code_dir), str(REPO_ROOT)]
        env.update(
            {
                "AWS_LAMBDA_FUNCTION_NAME": fn.name,
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_mb),
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{fn.name}",
                "AWS_LAMBDA_LOG_STREAM_NAME": f"local/{uuid.uuid4().hex}",
                "AWS_EXECUTION_ENV": f"AWS_Lambda_{fn.runtime}",
                "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
                "LAMBDA_TASK_ROOT": str(fn.code_dir),
                "LFR_LOCAL_FUNCTION_ARN": fn.arn,
                "_HANDLER": fn.handler,
                "TZ": "UTC",
                "PYTHONPATH": os.pathsep.join(pythonpath),
                "PYTHONUNBUFFERED": "1",
                # No X-Ray daemon locally; Powertools' Tracer would otherwise try to emit segments.
                "POWERTOOLS_TRACE_DISABLED": "true",
                "MODEL_DIR": str(self.model_dir),
            }
        )
        env.update(self.extra_env)
        return env

    def _acquire(self, fn: FunctionConfig) -> _Worker | None:
        """An idle container of `fn` (the warmest), a new one if below the cap, else wait for one."""
        with self._lock:
            while True:
                idle = self._idle.setdefault(fn.name, [])
                if idle:
                    return idle.pop()
                workers = self._workers.setdefault(fn.name, [])
                if len(workers) < fn.max_workers:
                    self.log_dir.mkdir(parents=True, exist_ok=True)
                    worker = _Worker(fn, self.env_for(fn), self.log_path(fn.name))
                    workers.append(worker)
                    return worker
                if fn.max_workers == 0:
                    return None
                self._lock.wait()

    def _release(self, fn: FunctionConfig, worker: _Worker) -> None:
        with self._lock:
            if worker in self._workers.get(fn.name, []):
                self._idle.setdefault(fn.name, []).append(worker)
            self._lock.notify()

    def log_path(self, function_name_or_arn: str) -> Path:
        fn = self.resolve(function_name_or_arn)
        return self.log_dir / f"{fn.name}.log"

    def invoke(self, function_name_or_arn: str, event: Any) -> InvokeResult:
        fn = self.resolve(function_name_or_arn)
        worker = self._acquire(fn)
        if worker is None:
            result = InvokeResult(
                error_type="TooManyRequestsException", error_message="Rate Exceeded. (reserved concurrency 0)"
            )
        else:
            try:
                result = worker.invoke(event)
            finally:
                self._release(fn, worker)
        with self._lock:
            self.outcomes.setdefault(fn.name, Counter())[result.error_type or "ok"] += 1
        if not result.ok:
            log.info("%s -> %s: %s", fn.name, result.error_type, result.error_message)
        return result

    def workers(self, function_name_or_arn: str) -> list[WorkerState]:
        """The function's containers now: pid (None if not running) and the invocation in flight."""
        with self._lock:
            return [w.state() for w in self._workers.get(self.resolve(function_name_or_arn).name, [])]

    def warm(self, function_name_or_arn: str) -> bool:
        """True if the function has a live container (the next invoke may be a warm start)."""
        with self._lock:
            return any(w.alive() for w in self._workers.get(self.resolve(function_name_or_arn).name, []))

    def stop(self) -> None:
        with self._lock:
            workers = [w for ws in self._workers.values() for w in ws]
        for worker in workers:
            worker.stop()
        with self._lock:
            self._workers.clear()
            self._idle.clear()
            self._lock.notify_all()


def _reserved(resource: dict[str, Any]) -> int | None:
    value = resource.get("Properties", {}).get("ReservedConcurrentExecutions")
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):  # an unresolved intrinsic: no cap from the template
        return None
