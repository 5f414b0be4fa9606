"""S3 adapters: the watchlist bucket (images, index, purge) and the alerts bucket (matched crops)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from botocore.exceptions import ClientError

from functions.dal._aws import LazyClient, error_code, transient
from functions.dal.ports import AlertCropStore, WatchlistStore
from functions.exceptions import ObjectNotFoundError
from functions.models.records import ALERT_RETENTION_TAG

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_DELETE_BATCH = 1000  # DeleteObjects limit


class S3WatchlistStore(WatchlistStore):
    def __init__(self, bucket: str, client: Any | None = None) -> None:
        self._bucket = bucket
        self._s3 = LazyClient("s3", client)

    @property
    def bucket(self) -> str:
        return self._bucket

    def list_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        with transient("s3.list"):
            for page in self._s3.client.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=prefix
            ):
                keys.extend(o["Key"] for o in page.get("Contents", []))
        return sorted(keys)

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        with transient("s3.get"):
            try:
                resp = self._s3.client.get_object(Bucket=self._bucket, Key=key)
            except ClientError as exc:
                if error_code(exc) in _NOT_FOUND:
                    raise ObjectNotFoundError(key) from exc
                raise
            return resp["Body"].read(), str(resp.get("ETag", ""))

    def get_object(self, key: str) -> bytes:
        return self.get_with_etag(key)[0]

    def put_object(self, key: str, data: bytes) -> str:
        with transient("s3.put"):
            resp = self._s3.client.put_object(Bucket=self._bucket, Key=key, Body=data)
        return str(resp.get("ETag", ""))

    def _versions(self, prefix: str) -> list[dict[str, str]]:
        # Versions and delete markers too: on a versioned bucket a plain delete leaves the
        # face images recoverable, which is not a purge. Unversioned buckets report VersionId "null".
        out: list[dict[str, str]] = []
        for page in self._s3.client.get_paginator("list_object_versions").paginate(
            Bucket=self._bucket, Prefix=prefix
        ):
            for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
                out.append({"Key": v["Key"], "VersionId": v.get("VersionId") or "null"})
        return out

    def delete_prefix(self, prefix: str) -> int:
        if not prefix.endswith("/"):
            raise ValueError("refusing to delete a prefix that is not a folder")
        deleted = 0
        with transient("s3.delete_prefix"):
            objects = self._versions(prefix)
            for i in range(0, len(objects), _DELETE_BATCH):
                batch = objects[i : i + _DELETE_BATCH]
                resp = self._s3.client.delete_objects(
                    Bucket=self._bucket, Delete={"Objects": batch, "Quiet": False}
                )
                deleted += len(resp.get("Deleted", []))
        return deleted

    def count_prefix(self, prefix: str) -> int:
        with transient("s3.count_prefix"):
            return len(self._versions(prefix))


class S3AlertCropStore(AlertCropStore):
    def __init__(self, bucket: str, client: Any | None = None) -> None:
        self.bucket = bucket
        self._s3 = LazyClient("s3", client)

    def put_crop(self, key: str, jpeg: bytes, retention_days: int | None = None) -> None:
        extra: dict[str, Any] = {}
        if retention_days is not None:
            # Matches the bucket's per-tag lifecycle rule (infra/constructs/storage.py).
            extra["Tagging"] = urlencode({ALERT_RETENTION_TAG: str(retention_days)})
        with transient("s3.put_crop"):
            self._s3.client.put_object(
                Bucket=self.bucket, Key=key, Body=jpeg, ContentType="image/jpeg", **extra
            )
