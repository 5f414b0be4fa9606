"""One local Lambda "container": imports `_HANDLER` once, then serves invocations as JSON lines.

Protocol (one JSON object per line):
  worker -> runtime, first: {"type": "ready", "init_ms": float} or {"type": "init_error", ...}
  runtime -> worker: {"request_id": str, "event": Any, "deadline_ms": epoch ms}
  worker -> runtime: {"type": "result", "payload": Any} or {"type": "error", "errorType", "errorMessage",
                     "stackTrace"}

The protocol uses a private dup of the original stdout; fd 1 and `sys.stdout` are pointed at stderr, so
whatever the handler prints (Powertools writes its JSON logs and EMF metrics there) lands in the
function's log file and can never corrupt the protocol stream.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, TextIO

from lfr_cli.local import emf


class LambdaContext:
    """The attributes and method of the Python Lambda runtime's context object that handlers use."""

    def __init__(self, request_id: str, deadline_ms: int) -> None:
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.invoked_function_arn = os.environ.get("LFR_LOCAL_FUNCTION_ARN", "")
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.aws_request_id = request_id
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self._deadline_ms - time.time() * 1000))


def _error(exc: BaseException, error_type: str | None = None) -> dict[str, Any]:
    return {
        "type": "error",
        # Lambda names a Python function error by the exception's class name.
        "errorType": error_type or type(exc).__name__,
        "errorMessage": str(exc),
        "stackTrace": traceback.format_exception(exc),
    }


def _take_stdout() -> TextIO:
    """Keep the real stdout for the protocol; send fd 1 and sys.stdout to stderr."""
    proto_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), line_buffering=True)
    return io.TextIOWrapper(os.fdopen(proto_fd, "wb"), encoding="utf-8", line_buffering=True)


def _load_handler(spec: str) -> Callable[[Any, Any], Any]:
    module_name, _, func_name = spec.rpartition(".")
    if not module_name:
        raise ValueError(f"bad handler {spec!r}: expected module.function")
    module = importlib.import_module(module_name.replace("/", "."))
    handler = getattr(module, func_name, None)
    if handler is None:
        raise AttributeError(f"Handler {func_name!r} missing on module {module_name!r}")
    return handler


def _send(out: TextIO, message: dict[str, Any]) -> None:
    out.write(json.dumps(message, default=str) + "\n")
    out.flush()


def main() -> int:
    proto = _take_stdout()
    # Metrics printed as EMF reach the local CloudWatch, as CloudWatch Logs would extract them.
    sys.stdout = emf.install(sys.stdout)
    task_root = os.environ.get("LAMBDA_TASK_ROOT")
    if task_root and task_root not in sys.path:
        sys.path.insert(0, task_root)
    spec = os.environ["_HANDLER"]
    t0 = time.perf_counter()
    try:
        handler = _load_handler(spec)
    except ImportError as exc:
        _send(proto, {**_error(exc, "Runtime.ImportModuleError"), "type": "init_error"})
        return 1
    except Exception as exc:  # an init-phase error fails every invocation, as in Lambda
        error_type = "Runtime.HandlerNotFound" if isinstance(exc, AttributeError) else None
        _send(proto, {**_error(exc, error_type), "type": "init_error"})
        return 1
    init_ms = (time.perf_counter() - t0) * 1000
    _send(proto, {"type": "ready", "init_ms": init_ms})

    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        request_id = request["request_id"]
        context = LambdaContext(request_id, int(request["deadline_ms"]))
        print(f"START RequestId: {request_id} Version: $LATEST", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            payload = handler(request["event"], context)
            response: dict[str, Any] = {"type": "result", "payload": payload}
            try:
                json.dumps(payload)  # Lambda must serialise the result; fail here, not in the caller
            except (TypeError, ValueError) as exc:
                response = _error(exc, "Runtime.MarshalError")
        except Exception as exc:
            response = _error(exc)
            # Lambda logs an unhandled error as one JSON line; same here, for the log scanners.
            print(json.dumps({k: v for k, v in response.items() if k != "type"}), file=sys.stderr)
        duration_ms = (time.perf_counter() - started) * 1000
        sys.stdout.flush()
        print(f"END RequestId: {request_id}", file=sys.stderr)
        print(f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms", file=sys.stderr, flush=True)
        _send(proto, response)
    return 0


if __name__ == "__main__":
    sys.exit(main())
