"""The local runtime's container cap per function: the template's reserved concurrency, else a
default, never more than the machine's cores plus one (a container waiting on an AWS call leaves
its core to the next)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aws_emulation import runtime
from aws_emulation.runtime import DEFAULT_MAX_WORKERS, FunctionConfig, _reserved
from lambda_target import LAMBDA_RUNTIME_NAME


def _fn(reserved: int | None) -> FunctionConfig:
    return FunctionConfig("f", "arn", "F", "h.handler", {}, 3.0, 128, Path("."), LAMBDA_RUNTIME_NAME, reserved)


@pytest.mark.parametrize(("cores", "reserved", "expected"), [
    (2, None, 3), (8, None, DEFAULT_MAX_WORKERS), (8, 1, 1), (8, 6, 6), (2, 6, 3), (1, 6, 2), (4, 0, 0),
])
def test_cap_is_reserved_concurrency_or_default_within_the_cores(
    monkeypatch: pytest.MonkeyPatch, cores: int, reserved: int | None, expected: int
) -> None:
    monkeypatch.setattr(runtime, "machine_cap", lambda: cores)
    assert _fn(reserved).max_workers == expected


def test_reserved_concurrency_is_read_from_the_template_resource() -> None:
    assert _reserved({"Properties": {"ReservedConcurrentExecutions": 3}}) == 3
    assert _reserved({"Properties": {}}) is None
    assert _reserved({"Properties": {"ReservedConcurrentExecutions": {"Ref": "X"}}}) is None


def test_timeout_scale_defaults_to_lambdas_and_refuses_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(runtime.ENV_TIMEOUT_SCALE, raising=False)
    assert runtime.timeout_scale() == 1.0
    monkeypatch.setenv(runtime.ENV_TIMEOUT_SCALE, "2.5")
    assert runtime.timeout_scale() == 2.5
    for bad in ("0.5", "fast", "nan"):
        monkeypatch.setenv(runtime.ENV_TIMEOUT_SCALE, bad)
        with pytest.raises(ValueError, match=runtime.ENV_TIMEOUT_SCALE):
            runtime.timeout_scale()
