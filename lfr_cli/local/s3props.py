"""Apply the S3 bucket properties moto's CloudFormation ignores, from the same template.

moto creates a CloudFormation bucket with its encryption and tags only. Versioning and the
Object Lock configuration (the audit bucket's immutability) are part of what the template
promises, and moto's S3 API implements both, so the local stack applies them here, read
from the deployed template: no second hand-written copy of the infrastructure.
Lifecycle rules are not applied: moto never runs expirations, so they would change nothing.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def apply_bucket_properties(s3: Any, template: dict[str, Any], physical_ids: dict[str, str]) -> list[str]:
    """Returns the logical ids of buckets that got an Object Lock configuration."""
    locked = []
    for logical_id, res in template.get("Resources", {}).items():
        if res.get("Type") != "AWS::S3::Bucket" or logical_id not in physical_ids:
            continue
        props = res.get("Properties", {})
        bucket = physical_ids[logical_id]
        if props.get("VersioningConfiguration", {}).get("Status") == "Enabled":
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        lock = props.get("ObjectLockConfiguration")
        if props.get("ObjectLockEnabled") and lock:
            config: dict[str, Any] = {"ObjectLockEnabled": "Enabled"}
            retention = (lock.get("Rule") or {}).get("DefaultRetention")
            if retention:
                config["Rule"] = {"DefaultRetention": {k: retention[k] for k in ("Mode", "Days", "Years")
                                                       if k in retention}}
            s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration=config)
            locked.append(logical_id)
    if locked:
        log.info("applied versioning and Object Lock to %s (moto's CloudFormation does not)", ", ".join(locked))
    return locked
