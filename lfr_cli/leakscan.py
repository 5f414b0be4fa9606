"""Scan everything the stack stores for biometric data of faces that were not matched.

`scan(...)` reads every object version in every bucket, every item of every table, every
message still in every queue (waiting up to `in_flight_wait_s` for messages in flight elsewhere,
and reporting those that never show as `unscanned`), every Step Functions execution's input, output
and history (through the Step Functions API: the executions live in the service, not in files), and
every file under the given directories (function logs), and reports where it finds:
- any of the `needles` (the exact JPEG bytes of crops that must not be kept, their base64, or a
  64-character slice of it);
- a serialised numpy array (`\\x93NUMPY`: an embedding or an index);
- a run of 16+ comma-separated floats (an embedding written as JSON or text).
`allow` lists locations (prefix match on the finding's location) that may legitimately hold
face data, e.g. the alerts bucket's crops of MATCHED faces.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NPY_MAGIC = b"\x93NUMPY"
FLOAT_RUN = re.compile(rb"(?:-?\d+\.\d+(?:[eE][-+]?\d+)?\s*,\s*){15,}-?\d+\.\d+")
SLICE = 64


@dataclass(frozen=True)
class Finding:
    location: str
    kind: str


def needles_for(jpegs: Iterable[bytes]) -> dict[bytes, str]:
    """What to look for, per crop: raw bytes, full base64, and a base64 slice from the middle.

    Raw bytes are taken from the middle of the JPEG (entropy-coded data): every crop from the
    same encoder starts with the same header and quantisation tables.
    """
    out: dict[bytes, str] = {}
    for i, jpeg in enumerate(jpegs):
        b64 = base64.b64encode(jpeg)
        half = len(jpeg) // 2
        out[jpeg[half : half + SLICE]] = f"crop{i}:jpeg"
        out[b64] = f"crop{i}:base64"
        mid = len(b64) // 2
        out[b64[mid : mid + SLICE]] = f"crop{i}:base64-slice"
    return out


def _check(location: str, blob: bytes, needles: dict[bytes, str]) -> list[Finding]:
    found = [Finding(location, kind) for needle, kind in needles.items() if needle and needle in blob]
    if NPY_MAGIC in blob:
        found.append(Finding(location, "numpy-array"))
    if FLOAT_RUN.search(blob):
        found.append(Finding(location, "float-array"))
    return found


def _scan_executions(sfn: Any, needles: dict[bytes, str]) -> list[Finding]:
    """Every execution of every state machine: its input, output, error and every history event."""
    findings: list[Finding] = []
    for page in sfn.get_paginator("list_state_machines").paginate():
        for machine in page.get("stateMachines", []):
            for ex_page in sfn.get_paginator("list_executions").paginate(stateMachineArn=machine["stateMachineArn"]):
                for ex in ex_page.get("executions", []):
                    arn = ex["executionArn"]
                    desc = sfn.describe_execution(executionArn=arn)
                    texts = list(_strings({k: desc.get(k) for k in ("input", "output", "error", "cause")}))
                    for h_page in sfn.get_paginator("get_execution_history").paginate(executionArn=arn):
                        texts += _strings(h_page.get("events", []))
                    # Each input/output is JSON text as the service holds it: scanned as stored, not re-escaped.
                    location = f"states://{machine['name']}/{arn.rsplit(':', 1)[-1]}"
                    findings += _check(location, "\n".join(texts).encode(), needles)
    return findings


def _strings(node: Any) -> Iterable[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def scan(
    session_client: Any,
    needles: dict[bytes, str],
    dirs: Iterable[Path] = (),
    allow: Iterable[str] = (),
    in_flight_wait_s: float = 30.0,
) -> list[Finding]:
    """`session_client(service)` returns a boto3 client for the stack's endpoint."""
    findings: list[Finding] = []
    s3 = session_client("s3")
    for b in s3.list_buckets().get("Buckets", []):
        name = b["Name"]
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=name):
            for v in page.get("Versions", []):
                body = s3.get_object(Bucket=name, Key=v["Key"], VersionId=v["VersionId"])["Body"].read()
                findings += _check(f"s3://{name}/{v['Key']}", body, needles)
    ddb = session_client("dynamodb")
    for table in ddb.list_tables().get("TableNames", []):
        n = 0
        for page in ddb.get_paginator("scan").paginate(TableName=table):
            for item in page.get("Items", []):
                n += 1
                blob = json.dumps(item, default=str).encode()
                for attr in item.values():  # binary attributes as stored, not as JSON-escaped text
                    if "B" in attr:
                        blob += b"\n" + bytes(attr["B"])
                findings += _check(f"dynamodb://{table}/item{n}", blob, needles)
    sqs = session_client("sqs")
    for url in sqs.list_queues().get("QueueUrls", []):
        held: list[str] = []
        location = f"sqs://{url.rsplit('/', 1)[-1]}"
        deadline = time.monotonic() + in_flight_wait_s
        try:
            while True:  # hidden while scanning so each is read once
                msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60,
                                           MessageAttributeNames=["All"], WaitTimeSeconds=0).get("Messages", [])
                for m in msgs:
                    held.append(m["ReceiptHandle"])
                    findings += _check(location, m["Body"].encode(), needles)
                if msgs:
                    continue
                # An empty reply is not an empty queue: messages in flight elsewhere (a consumer, a
                # crashed worker) come back later. Wait for them; what never shows is reported.
                attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
                    "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"])["Attributes"]
                unseen = max(0, int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)) - len(held)) + int(
                    attrs.get("ApproximateNumberOfMessagesDelayed", 0))
                if unseen == 0:
                    break
                if time.monotonic() >= deadline:
                    findings.append(Finding(location, f"unscanned:{unseen} message(s) in flight or delayed"))
                    break
                time.sleep(0.5)
        finally:  # then put back: the scan must not change what the queue holds
            for i in range(0, len(held), 10):
                sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
                    {"Id": str(j), "ReceiptHandle": h, "VisibilityTimeout": 0} for j, h in enumerate(held[i:i + 10])])
    findings += _scan_executions(session_client("stepfunctions"), needles)
    for d in dirs:
        for path in sorted(Path(d).rglob("*")):
            if path.is_file():
                findings += _check(f"file://{path}", path.read_bytes(), needles)
    allowed = tuple(allow)
    return [f for f in findings if not f.location.startswith(allowed)] if allowed else findings
