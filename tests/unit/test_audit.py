"""The audit chain: appends, concurrent writers, tamper/gap detection, no biometric; on a real moto S3
bucket with versioning and Object Lock (COMPLIANCE) as the template declares it."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from functions.dal.audit_store import S3AuditStore, entry_key
from functions.exceptions import AuditRejectedError
from functions.logic.audit_log import GENESIS_HASH, AuditEntry, AuditLog, chain_hash, read_events, verify_chain
from lfr_cli.local.server import MotoServer
from lfr_core.contracts import AuditAction
from tests.fakes import InMemoryAuditStore
from tests.unit.functions_support import Clock


def _log(store: Any, clock: Clock | None = None) -> AuditLog:
    return AuditLog(store, clock=clock or Clock(), sleep=lambda s: None)


def test_append_links_each_entry_to_the_previous() -> None:
    store = InMemoryAuditStore()
    log = _log(store)
    e1 = log.record("officer:alice", AuditAction.CREATE, "dep-1", watchlist_images=3)
    e2 = log.record("officer:bob", AuditAction.AUTHORISE, "dep-1", max_watchlist_size=5)
    assert (e1.seq, e2.seq) == (1, 2)
    assert e1.prev_hash == GENESIS_HASH and e2.prev_hash == e1.hash
    assert e2.hash == chain_hash(e1.hash, 2, e2.event)
    report = verify_chain(store.entries())
    assert report.ok and report.entries == 2 and report.last_seq == 2


def test_two_writers_never_fork_the_chain() -> None:
    """Two containers with their own cached heads, interleaving: each conflict is retried, none lost."""
    store = InMemoryAuditStore()
    a, b = _log(store), _log(store)
    a.record("a", AuditAction.CREATE, "d")  # b's view of the head is now stale
    b.record("b", AuditAction.CREATE, "d")
    a.record("a", AuditAction.START, "d")  # a's cached head (1) is stale too
    threads = [threading.Thread(target=lambda w=w: [w.record("t", AuditAction.ALERT, "d") for _ in range(25)])
               for w in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = verify_chain(store.entries())
    assert report.ok, report.problems
    assert report.entries == 53 and report.last_seq == 53
    assert store.calls["put_new"] > 53  # conflicts happened and were resolved by retrying


def test_altered_deleted_and_renumbered_events_are_detected() -> None:
    store = InMemoryAuditStore()
    log = _log(store)
    for i in range(5):
        log.record("officer:alice", AuditAction.EXPORT, "dep-1", rows=i)
    # Alter event 2's details (and keep its JSON valid): its own hash no longer matches.
    doc = json.loads(store.objects[2])
    doc["event"]["details"]["rows"] = 99
    store.objects[2] = json.dumps(doc).encode()
    # Delete event 4: a gap.
    del store.objects[4]
    report = verify_chain(store.entries())
    assert not report.ok
    assert "entry 2: content does not match its hash (altered)" in report.problems
    assert "gap: entry 4 missing (deleted?)" in report.problems
    # Recomputing the altered entry's hash does not help: the next entry no longer links to it.
    doc["hash"] = chain_hash(doc["prev_hash"], 2, doc["event"])
    store.objects[2] = json.dumps(doc).encode()
    assert "entry 3: does not link to entry 2 (chain broken)" in verify_chain(store.entries()).problems


def test_events_cannot_carry_a_face() -> None:
    log = _log(InMemoryAuditStore())
    crop_b64 = base64.b64encode(bytes(range(256)) * 16).decode()  # the size of an aligned JPEG
    with pytest.raises(AuditRejectedError, match="max 500"):
        log.record("match-function", AuditAction.ALERT, "dep-1", crop=crop_b64)
    with pytest.raises(ValueError):  # the contract admits scalars only: no embedding arrays
        log.record("match-function", AuditAction.ALERT, "dep-1", embedding=[0.1, 0.2])  # type: ignore[arg-type]


# -- on moto's S3, as the template declares the bucket ---------------------------------------


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def bucket(moto: MotoServer, request: pytest.FixtureRequest) -> Iterator[tuple[Any, str]]:
    s3 = moto.client("s3")
    name = f"audit-{request.node.name.replace('_', '-')[:40].lower()}"
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"},
                     ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 30}}})
    yield s3, name


def test_s3_store_appends_with_conditional_writes_and_locks_each_entry(bucket: tuple[Any, str]) -> None:
    s3, name = bucket
    store = S3AuditStore(name, s3)
    a, b = _log(store), _log(S3AuditStore(name, s3))
    a.record("a", AuditAction.CREATE, "dep-1")
    b.record("b", AuditAction.AUTHORISE, "dep-1")  # reads the head written by a
    entry = a.record("a", AuditAction.START, "dep-1")  # a's cached head is stale: put 2 refused, then 3
    assert entry.seq == 3
    assert store.put_new(3, b"{}") is False  # If-None-Match: an existing entry is never overwritten
    report = verify_chain(store.entries(), store.anomalies())
    assert report.ok and report.entries == 3, report.problems
    head = s3.head_object(Bucket=name, Key=entry_key(1))
    assert head["ObjectLockMode"] == "COMPLIANCE"
    version = head["VersionId"]
    with pytest.raises(ClientError, match="AccessDenied"):  # Object Lock: the version cannot be deleted
        s3.delete_object(Bucket=name, Key=entry_key(1), VersionId=version)
    assert store.lock_configuration() is not None
    assert [e.event["action"] for e in read_events(store)] == ["create", "authorise", "start"]


def test_s3_tampering_is_detected_from_the_objects_and_their_versions(bucket: tuple[Any, str]) -> None:
    s3, name = bucket
    store = S3AuditStore(name, s3)
    log = _log(store)
    for i in range(4):
        log.record("officer:alice", AuditAction.EXPORT, "dep-1", rows=i)
    # An overwrite (what an attacker with PutObject could do): a new version with altered content.
    doc = AuditEntry.model_validate_json(store.get_entry(2)).model_dump()
    doc["event"]["actor"] = "someone-else"
    s3.put_object(Bucket=name, Key=entry_key(2), Body=json.dumps(doc).encode())
    # A delete without a version id: Object Lock allows a delete marker, the entry vanishes from listings.
    s3.delete_object(Bucket=name, Key=entry_key(3))
    report = verify_chain(store.entries(), store.anomalies())
    assert not report.ok
    text = "\n".join(report.problems)
    assert "entry 2: content does not match its hash (altered)" in text
    assert "gap: entry 3 missing" in text
    assert f"{entry_key(2)}: 2 versions" in text and f"{entry_key(3)}: delete marker" in text
