"""S3 adapter for the audit chain: one object per entry in a versioned, Object Lock bucket.

Why S3 and not a table: the bucket's Object Lock (COMPLIANCE, set in the template) makes every
entry undeletable and unalterable for the retention period, even by an administrator, and it
is outside everything a deployment purge touches. Appends are S3 conditional writes
(`If-None-Match: *`), so two writers racing for the same sequence number cannot both win.
"""

from __future__ import annotations

import re
from typing import Any

from botocore.exceptions import ClientError

from functions.dal._aws import LazyClient, error_code, transient
from functions.dal.ports import AuditStore
from functions.exceptions import ObjectNotFoundError

CHAIN_PREFIX = "chain/"
_KEY = re.compile(r"^chain/(\d{12})\.json$")
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
# 412 = someone else created the key first; 409 = a concurrent conditional write in flight.
_TAKEN = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


def entry_key(seq: int) -> str:
    return f"{CHAIN_PREFIX}{seq:012d}.json"


def seq_of(key: str) -> int | None:
    m = _KEY.match(key)
    return int(m.group(1)) if m else None


class S3AuditStore(AuditStore):
    def __init__(self, bucket: str, client: Any | None = None) -> None:
        self.bucket = bucket
        self._s3 = LazyClient("s3", client)

    def _keys(self, start_after: str | None = None) -> list[str]:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": CHAIN_PREFIX}
        if start_after:
            kwargs["StartAfter"] = start_after
        keys: list[str] = []
        for page in self._s3.client.get_paginator("list_objects_v2").paginate(**kwargs):
            keys.extend(o["Key"] for o in page.get("Contents", []))
        return keys

    def last_seq(self, after: int = 0) -> int:
        # Zero-padded keys list in sequence order; a warm writer only lists past what it knows.
        with transient("audit.last_seq"):
            keys = self._keys(entry_key(after) if after > 0 else None)
        seqs = [s for s in (seq_of(k) for k in keys) if s is not None]
        return max(seqs, default=after)

    def get_entry(self, seq: int) -> bytes:
        with transient("audit.get"):
            try:
                resp = self._s3.client.get_object(Bucket=self.bucket, Key=entry_key(seq))
            except ClientError as exc:
                if error_code(exc) in _NOT_FOUND:
                    raise ObjectNotFoundError(entry_key(seq)) from exc
                raise
            return bytes(resp["Body"].read())

    def put_new(self, seq: int, body: bytes) -> bool:
        with transient("audit.put"):
            try:
                self._s3.client.put_object(
                    Bucket=self.bucket,
                    Key=entry_key(seq),
                    Body=body,
                    ContentType="application/json",
                    IfNoneMatch="*",
                )
            except ClientError as exc:
                if error_code(exc) in _TAKEN:
                    return False
                raise
        return True

    def entries(self) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        with transient("audit.list"):
            keys = self._keys()
        for key in keys:
            seq = seq_of(key)
            if seq is not None:
                out.append((seq, self.get_entry(seq)))
        return out

    def anomalies(self) -> list[str]:
        found: list[str] = []
        versions: dict[str, int] = {}
        with transient("audit.versions"):
            for page in self._s3.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket):
                for v in page.get("Versions", []):
                    versions[v["Key"]] = versions.get(v["Key"], 0) + 1
                for m in page.get("DeleteMarkers", []):
                    found.append(f"{m['Key']}: delete marker (someone deleted an audit entry)")
        for key, n in sorted(versions.items()):
            if seq_of(key) is None:
                found.append(f"{key}: not an audit entry key")
            elif n > 1:
                found.append(f"{key}: {n} versions (an audit entry was overwritten)")
        return found

    def lock_configuration(self) -> dict[str, Any] | None:
        """The bucket's Object Lock configuration, or None if it has none (auditors check it)."""
        with transient("audit.lock_config"):
            try:
                resp = self._s3.client.get_object_lock_configuration(Bucket=self.bucket)
            except ClientError as exc:
                if error_code(exc) == "ObjectLockConfigurationNotFoundError":
                    return None
                raise
        return dict(resp.get("ObjectLockConfiguration") or {}) or None
