"""The leak scan reads Step Functions executions through the API (they live in the service, not in files)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from lfr_cli.leakscan import needles_for, scan

REGION = "eu-west-2"
# A Pass state carries its input into the history's state events and the execution's output.
DEFINITION = {"StartAt": "Carry", "States": {"Carry": {"Type": "Pass", "End": True}}}


@pytest.fixture
def clients() -> Iterator[Any]:
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        yield lambda service: boto3.client(service, region_name=REGION)


def _execute(sfn: Any, machine: str, name: str, payload: dict[str, Any]) -> None:
    arn = sfn.create_state_machine(name=machine, definition=json.dumps(DEFINITION),
                                   roleArn="arn:aws:iam::123456789012:role/r")["stateMachineArn"]
    ex = sfn.start_execution(stateMachineArn=arn, name=name, input=json.dumps(payload))["executionArn"]
    deadline = time.monotonic() + 30
    while sfn.describe_execution(executionArn=ex)["status"] == "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_biometric_planted_in_an_execution_input_is_found(clients: Any) -> None:
    crop = bytes(range(256)) * 8  # stands in for a crop's bytes
    sfn = clients("stepfunctions")
    _execute(sfn, "clean", "ids-only", {"deployment_id": "dep-1", "count": 3})
    _execute(sfn, "session", "leaky", {"deployment_id": "dep-1", "crop": base64.b64encode(crop).decode(),
                                       "embedding": [round(0.01 * i, 4) for i in range(128)]})
    found = scan(clients, needles_for([crop]), in_flight_wait_s=0)
    assert {f.location for f in found} == {"states://session/leaky"}  # not the clean one
    kinds = {f.kind for f in found}
    assert {"crop0:base64", "crop0:base64-slice", "float-array"} <= kinds
    # The allow list still applies to executions.
    assert scan(clients, needles_for([crop]), allow=["states://session/"], in_flight_wait_s=0) == []
