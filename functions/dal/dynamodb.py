"""DynamoDB adapters for the deployments and alerts tables."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from functions.dal._aws import LazyClient, error_code, transient
from functions.dal.ports import AlertRepository, DeploymentRepository
from functions.exceptions import (
    DeploymentNotFoundError,
    ObjectNotFoundError,
    StateConflictError,
    TransientStorageError,
)
from functions.models.records import (
    CAMERA_KEY_PREFIX,
    ENCOUNTER_KEY_PREFIX,
    MAX_ENCOUNTER_TRACKS,
    AlertRecord,
    CameraActivity,
    DeploymentRecord,
    EncounterState,
    IndexFault,
    LastCameraStatus,
)
from lfr_core.contracts import DeploymentState

_SER = TypeSerializer()
_DESER = TypeDeserializer()
_CONDITION_FAILED = "ConditionalCheckFailedException"


def to_attr(value: Any) -> dict[str, Any]:
    # DynamoDB numbers must be Decimal; a JSON round trip converts floats exactly as written.
    return cast(dict[str, Any], _SER.serialize(json.loads(json.dumps(value), parse_float=Decimal)))


def to_item(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: to_attr(v) for k, v in doc.items() if v is not None}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | set):
        return [_plain(v) for v in value]
    return value


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _plain(_DESER.deserialize(v)) for k, v in item.items()}


def _alert_item(record: AlertRecord) -> dict[str, Any]:
    # Tracks and cameras are string sets, so a sighting is an idempotent atomic ADD.
    item = to_item(record.to_item())
    for name, values in (("tracks", record.tracks), ("cameras", record.cameras)):
        item.pop(name, None)
        if values:
            item[name] = {"SS": sorted(set(values))}
    return item


def _is_alert(item: Mapping[str, Any]) -> bool:
    sk = str(item.get("alert_id", {}).get("S", ""))
    return not sk.startswith((ENCOUNTER_KEY_PREFIX, CAMERA_KEY_PREFIX))


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _from_ms(ms: Any) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000.0, UTC)


class DynamoDeploymentRepository(DeploymentRepository):
    def __init__(self, table_name: str, client: Any | None = None) -> None:
        self.table = table_name
        self._ddb = LazyClient("dynamodb", client)

    def _key(self, deployment_id: str) -> dict[str, Any]:
        return {"deployment_id": {"S": deployment_id}}

    def get(self, deployment_id: str) -> DeploymentRecord | None:
        with transient("deployments.get"):
            resp = self._ddb.client.get_item(
                TableName=self.table, Key=self._key(deployment_id), ConsistentRead=True
            )
        item = resp.get("Item")
        return None if item is None else DeploymentRecord.model_validate(from_item(item))

    def list_all(self) -> list[DeploymentRecord]:
        out: list[DeploymentRecord] = []
        with transient("deployments.scan"):
            for page in self._ddb.client.get_paginator("scan").paginate(
                TableName=self.table, ConsistentRead=True
            ):
                out.extend(DeploymentRecord.model_validate(from_item(i)) for i in page.get("Items", []))
        return sorted(out, key=lambda r: r.created_at)

    def create(self, record: DeploymentRecord) -> None:
        # Our own errors raised inside `transient` pass through it untouched.
        with transient("deployments.create"):
            try:
                self._ddb.client.put_item(
                    TableName=self.table,
                    Item=to_item(record.to_item()),
                    ConditionExpression="attribute_not_exists(deployment_id)",
                )
            except ClientError as exc:
                if error_code(exc) == _CONDITION_FAILED:
                    raise StateConflictError(f"deployment {record.deployment_id} exists") from exc
                raise

    def update(
        self,
        deployment_id: str,
        fields: Mapping[str, Any],
        expect_states: Collection[DeploymentState] | None = None,
    ) -> DeploymentRecord:
        names: dict[str, str] = {"#pk": "deployment_id"}
        values: dict[str, Any] = {}
        sets: list[str] = []
        removes: list[str] = []
        for i, (k, v) in enumerate(fields.items()):
            names[f"#f{i}"] = k
            if v is None:
                removes.append(f"#f{i}")
            else:
                values[f":v{i}"] = to_attr(v)
                sets.append(f"#f{i} = :v{i}")
        expr = " ".join(
            part
            for part in (
                f"SET {', '.join(sets)}" if sets else "",
                f"REMOVE {', '.join(removes)}" if removes else "",
            )
            if part
        )
        condition = "attribute_exists(#pk)"
        if expect_states is not None:
            names["#state"] = "state"
            placeholders = []
            for j, s in enumerate(expect_states):
                values[f":s{j}"] = {"S": str(s)}
                placeholders.append(f":s{j}")
            condition += f" AND #state IN ({', '.join(placeholders)})"
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "Key": self._key(deployment_id),
            "UpdateExpression": expr,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ReturnValues": "ALL_NEW",
        }
        if values:
            kwargs["ExpressionAttributeValues"] = values
        with transient("deployments.update"):
            try:
                resp = self._ddb.client.update_item(**kwargs)
            except ClientError as exc:
                if error_code(exc) != _CONDITION_FAILED:
                    raise
                current = self.get(deployment_id)
                if current is None:
                    raise DeploymentNotFoundError(deployment_id) from exc
                raise StateConflictError(
                    f"deployment {deployment_id} is {current.state}, expected one of "
                    f"{sorted(str(s) for s in expect_states or ())}"
                ) from exc
        return DeploymentRecord.model_validate(from_item(resp["Attributes"]))

    def add_refused_crops(self, deployment_id: str, count: int) -> None:
        self._add(deployment_id, "refused_crops", count)

    def add_faces_seen(self, deployment_id: str, count: int) -> None:
        self._add(deployment_id, "faces_seen", count)

    def set_index_fault(self, deployment_id: str, fault: IndexFault | None) -> bool:
        kwargs: dict[str, Any] = {"TableName": self.table, "Key": self._key(deployment_id)}
        if fault is None:
            kwargs.update(
                UpdateExpression="REMOVE index_fault",
                ConditionExpression="attribute_exists(deployment_id) AND attribute_exists(index_fault)",
            )
        else:
            kwargs.update(
                UpdateExpression="SET index_fault = :f",
                ConditionExpression="attribute_exists(deployment_id) AND attribute_not_exists(index_fault)",
                ExpressionAttributeValues={":f": to_attr(fault.model_dump(mode="json"))},
            )
        with transient("deployments.set_index_fault"):
            try:
                self._ddb.client.update_item(**kwargs)
            except ClientError as exc:
                if error_code(exc) != _CONDITION_FAILED:
                    raise
                return False
        return True

    def _add(self, deployment_id: str, counter: str, count: int) -> None:
        with transient(f"deployments.add_{counter}"):
            try:
                self._ddb.client.update_item(
                    TableName=self.table,
                    Key=self._key(deployment_id),
                    UpdateExpression=f"ADD {counter} :n",
                    # Never create a record for an id only a crop message claimed.
                    ConditionExpression="attribute_exists(deployment_id)",
                    ExpressionAttributeValues={":n": {"N": str(int(count))}},
                )
            except ClientError as exc:
                if error_code(exc) != _CONDITION_FAILED:
                    raise


class DynamoAlertRepository(AlertRepository):
    def __init__(self, table_name: str, client: Any | None = None) -> None:
        self.table = table_name
        self._ddb = LazyClient("dynamodb", client)

    def _key(self, deployment_id: str, alert_id: str) -> dict[str, Any]:
        return {"deployment_id": {"S": deployment_id}, "alert_id": {"S": alert_id}}

    def get(self, deployment_id: str, alert_id: str) -> AlertRecord | None:
        with transient("alerts.get"):
            resp = self._ddb.client.get_item(
                TableName=self.table, Key=self._key(deployment_id, alert_id), ConsistentRead=True
            )
        item = resp.get("Item")
        return None if item is None else AlertRecord.model_validate(from_item(item))

    def put_new(self, record: AlertRecord) -> bool:
        with transient("alerts.put_new"):
            try:
                self._ddb.client.put_item(
                    TableName=self.table,
                    Item=_alert_item(record),
                    ConditionExpression="attribute_not_exists(alert_id)",
                )
            except ClientError as exc:
                if error_code(exc) == _CONDITION_FAILED:
                    return False
                raise
        return True

    def claim_publication(self, deployment_id: str, alert_id: str, revision: int, claimant: str,
                          now: datetime, lease_s: int) -> bool:
        now_s = int(now.timestamp())
        with transient("alerts.claim_publication"):
            try:
                self._ddb.client.update_item(
                    TableName=self.table, Key=self._key(deployment_id, alert_id),
                    UpdateExpression="SET publish_claim_by = :me, publish_claim_revision = :r,"
                    " publish_claim_until = :until",
                    ConditionExpression="revision = :r AND attribute_not_exists(published_at)"
                    " AND (attribute_not_exists(publish_claim_revision) OR publish_claim_revision < :r"
                    " OR publish_claim_by = :me OR publish_claim_until < :now)",
                    ExpressionAttributeValues={
                        ":me": {"S": claimant}, ":r": {"N": str(revision)},
                        ":until": {"N": str(now_s + lease_s)}, ":now": {"N": str(now_s)},
                    },
                )
            except ClientError as exc:
                if error_code(exc) == _CONDITION_FAILED:
                    return False
                raise
        return True

    def mark_published(
        self, deployment_id: str, alert_id: str, revision: int, published_at: datetime,
        queue_to_publish_ms: float | None,
    ) -> None:
        values: dict[str, Any] = {":p": {"S": published_at.isoformat()}, ":r": {"N": str(revision)}}
        expr = "SET published_at = :p"
        if queue_to_publish_ms is not None:
            values[":q"] = to_attr(queue_to_publish_ms)
            expr += ", queue_to_publish_ms = :q"
        with transient("alerts.mark_published"):
            try:
                self._ddb.client.update_item(
                    TableName=self.table,
                    Key=self._key(deployment_id, alert_id),
                    UpdateExpression=expr,
                    ConditionExpression="revision = :r",
                    ExpressionAttributeValues=values,
                )
            except ClientError as exc:
                if error_code(exc) != _CONDITION_FAILED:
                    raise

    def list_for_deployment(self, deployment_id: str) -> list[AlertRecord]:
        out: list[AlertRecord] = []
        with transient("alerts.query"):
            paginator = self._ddb.client.get_paginator("query")
            for page in paginator.paginate(
                TableName=self.table,
                KeyConditionExpression="deployment_id = :d",
                ExpressionAttributeValues={":d": {"S": deployment_id}},
            ):
                out.extend(
                    AlertRecord.model_validate(from_item(i)) for i in page.get("Items", []) if _is_alert(i)
                )
        return out

    def replace_if_better(self, record: AlertRecord) -> bool:
        with transient("alerts.replace_if_better"):
            try:
                self._ddb.client.put_item(
                    TableName=self.table,
                    Item=_alert_item(record),
                    # Concurrent crops of one track: only a higher score wins, and never over a decision.
                    ConditionExpression="attribute_exists(alert_id) AND similarity < :s"
                    " AND attribute_not_exists(decision)",
                    ExpressionAttributeValues={":s": to_attr(record.similarity)},
                )
            except ClientError as exc:
                if error_code(exc) == _CONDITION_FAILED:
                    return False
                raise
        return True

    def set_decision(
        self, deployment_id: str, alert_id: str, decision: str, decided_by: str, decided_at: datetime
    ) -> bool:
        with transient("alerts.set_decision"):
            try:
                self._ddb.client.update_item(
                    TableName=self.table,
                    Key=self._key(deployment_id, alert_id),
                    UpdateExpression="SET decision = :d, decided_by = :b, decided_at = :t",
                    ConditionExpression="attribute_exists(alert_id) AND attribute_not_exists(decision)",
                    ExpressionAttributeValues={
                        ":d": {"S": str(decision)},
                        ":b": {"S": decided_by},
                        ":t": {"S": decided_at.isoformat()},
                    },
                )
            except ClientError as exc:
                if error_code(exc) != _CONDITION_FAILED:
                    raise
                if self.get(deployment_id, alert_id) is None:
                    raise ObjectNotFoundError(f"alert {deployment_id}/{alert_id}") from exc
                return False
        return True

    # -- encounters -------------------------------------------------------------------------

    def sight_encounter(
        self, deployment_id: str, entry_id: str, now: datetime, window_s: int, expires_at_epoch: int
    ) -> EncounterState:
        key = self._key(deployment_id, ENCOUNTER_KEY_PREFIX + entry_id)
        values = {
            ":now": {"N": str(_ms(now))},
            ":cutoff": {"N": str(_ms(now - timedelta(seconds=window_s)))},
            ":e": {"N": str(int(expires_at_epoch))},
            ":entry": {"S": entry_id},
        }
        # Extend-or-open, each a conditional write; a loser of the open race finds the winner's
        # encounter on its next extend. Three rounds: a fourth would need a window to close and
        # reopen within one call.
        for _ in range(3):
            extended = self._update_if(
                "alerts.extend_encounter", key, values,
                "SET last_seen_ms = :now, expires_at_epoch = :e, watchlist_entry_id = :entry",
                "attribute_exists(alert_id) AND last_seen_ms >= :cutoff",
            )
            if extended is not None:
                return self._encounter(deployment_id, extended, opened=False)
            opened = self._update_if(
                "alerts.open_encounter", key, values,
                "SET opened_at_ms = :now, last_seen_ms = :now, expires_at_epoch = :e, watchlist_entry_id = :entry",
                "attribute_not_exists(alert_id) OR last_seen_ms < :cutoff",
            )
            if opened is not None:
                return self._encounter(deployment_id, opened, opened=True)
        raise TransientStorageError("alerts.sight_encounter: no stable encounter after 3 rounds")

    def _update_if(
        self, op: str, key: dict[str, Any], values: dict[str, Any], update: str, condition: str
    ) -> Mapping[str, Any] | None:
        """The item after a conditional update, or None if its condition did not hold."""
        with transient(op):
            try:
                resp = self._ddb.client.update_item(
                    TableName=self.table, Key=key, UpdateExpression=update, ConditionExpression=condition,
                    ExpressionAttributeValues=values, ReturnValues="ALL_NEW",
                )
            except ClientError as exc:
                if error_code(exc) != _CONDITION_FAILED:
                    raise
                return None
        attrs: Mapping[str, Any] = resp["Attributes"]
        return attrs

    @staticmethod
    def _encounter(deployment_id: str, attrs: Mapping[str, Any], opened: bool) -> EncounterState:
        doc = from_item(attrs)
        return EncounterState(
            deployment_id=deployment_id, watchlist_entry_id=str(doc["watchlist_entry_id"]),
            opened_at=_from_ms(doc["opened_at_ms"]), last_seen=_from_ms(doc["last_seen_ms"]), opened=opened,
        )

    def add_sighting(self, deployment_id: str, alert_id: str, camera_id: str, track_key: str,
                     seen_at: datetime) -> AlertRecord | None:
        with transient("alerts.add_sighting"):
            try:
                resp = self._ddb.client.update_item(
                    TableName=self.table, Key=self._key(deployment_id, alert_id),
                    UpdateExpression="ADD tracks :t, cameras :c SET last_seen_at = :s",
                    ConditionExpression="attribute_exists(alert_id)"
                    " AND (attribute_not_exists(tracks) OR size(tracks) < :cap)",
                    ExpressionAttributeValues={
                        ":t": {"SS": [track_key]}, ":c": {"SS": [camera_id]},
                        ":s": {"S": seen_at.isoformat()}, ":cap": {"N": str(MAX_ENCOUNTER_TRACKS)},
                    },
                    ReturnValues="ALL_OLD",
                )
            except ClientError as exc:
                if error_code(exc) != _CONDITION_FAILED:
                    raise
                return self.get(deployment_id, alert_id)  # missing (None), or full: counted no further
        return AlertRecord.model_validate(from_item(resp["Attributes"]))

    def bump_revision(self, deployment_id: str, alert_id: str, revision: int) -> bool:
        with transient("alerts.bump_revision"):
            try:
                self._ddb.client.update_item(
                    TableName=self.table, Key=self._key(deployment_id, alert_id),
                    UpdateExpression="SET revision = :next REMOVE published_at, queue_to_publish_ms",
                    ConditionExpression="revision = :r AND attribute_not_exists(decision)",
                    ExpressionAttributeValues={":r": {"N": str(revision)}, ":next": {"N": str(revision + 1)}},
                )
            except ClientError as exc:
                if error_code(exc) == _CONDITION_FAILED:
                    return False
                raise
        return True

    def improve(self, deployment_id: str, alert_id: str, fields: Mapping[str, Any], similarity: float) -> bool:
        names: dict[str, str] = {}
        values: dict[str, Any] = {":s": to_attr(similarity), ":one": {"N": "1"}}
        sets = ["revision = revision + :one"]
        removes = ["published_at", "queue_to_publish_ms"]
        for i, (k, v) in enumerate({**fields, "similarity": similarity}.items()):
            names[f"#f{i}"] = k
            if v is None:
                removes.append(f"#f{i}")
            else:
                values[f":v{i}"] = to_attr(v)
                sets.append(f"#f{i} = :v{i}")
        with transient("alerts.improve"):
            try:
                self._ddb.client.update_item(
                    TableName=self.table, Key=self._key(deployment_id, alert_id),
                    UpdateExpression=f"SET {', '.join(sets)} REMOVE {', '.join(removes)}",
                    ConditionExpression="attribute_exists(alert_id) AND similarity < :s"
                    " AND attribute_not_exists(decision)",
                    ExpressionAttributeNames=names, ExpressionAttributeValues=values,
                )
            except ClientError as exc:
                if error_code(exc) == _CONDITION_FAILED:
                    return False
                raise
        return True

    def record_camera_activity(self, deployment_id: str, camera_id: str, messages: int, now: datetime,
                               queue_lag_ms: float | None, expires_at_epoch: int) -> None:
        values: dict[str, Any] = {
            ":c": {"S": camera_id}, ":t": {"S": now.isoformat()}, ":n": {"N": str(int(messages))},
            ":e": {"N": str(int(expires_at_epoch))},
        }
        sets = "SET camera_id = :c, last_seen = :t, expires_at_epoch = :e"
        if queue_lag_ms is not None:
            values[":q"] = to_attr(round(queue_lag_ms, 1))
            sets += ", queue_lag_ms = :q"
        with transient("alerts.record_camera_activity"):
            self._ddb.client.update_item(
                TableName=self.table, Key=self._key(deployment_id, CAMERA_KEY_PREFIX + camera_id),
                # One attribute per minute (at most 720 in a 12 h session): the count stays one ADD.
                UpdateExpression=f"{sets} ADD messages :n, #m :n",
                ExpressionAttributeNames={"#m": f"m{int(now.timestamp()) // 60}"},
                ExpressionAttributeValues=values,
            )

    def record_camera_status(self, deployment_id: str, camera_id: str, status: LastCameraStatus,
                             expires_at_epoch: int) -> bool:
        with transient("alerts.record_camera_status"):
            try:
                self._ddb.client.update_item(
                    TableName=self.table, Key=self._key(deployment_id, CAMERA_KEY_PREFIX + camera_id),
                    UpdateExpression="SET camera_id = :c, #s = :s, status_sent_ms = :t, expires_at_epoch = :e",
                    # Newest by the edge's send time wins: a status delivered late cannot undo a newer one.
                    ConditionExpression="attribute_not_exists(status_sent_ms) OR status_sent_ms < :t",
                    ExpressionAttributeNames={"#s": "status"},  # a DynamoDB reserved word
                    ExpressionAttributeValues={
                        ":c": {"S": camera_id}, ":s": to_attr(status.model_dump(mode="json")),
                        ":t": {"N": str(_ms(status.sent_at))}, ":e": {"N": str(int(expires_at_epoch))},
                    },
                )
            except ClientError as exc:
                if error_code(exc) == _CONDITION_FAILED:
                    return False
                raise
        return True

    def camera_activity(self, deployment_id: str) -> list[CameraActivity]:
        out: list[CameraActivity] = []
        with transient("alerts.camera_activity"):
            for page in self._ddb.client.get_paginator("query").paginate(
                TableName=self.table,
                KeyConditionExpression="deployment_id = :d AND begins_with(alert_id, :p)",
                ExpressionAttributeValues={":d": {"S": deployment_id}, ":p": {"S": CAMERA_KEY_PREFIX}},
            ):
                out.extend(camera_from_doc(from_item(i)) for i in page.get("Items", []))
        return sorted(out, key=lambda c: c.camera_id)

    def purge_state(self, deployment_id: str) -> int:
        deleted = 0
        for prefix in (ENCOUNTER_KEY_PREFIX, CAMERA_KEY_PREFIX):
            with transient("alerts.purge_state"):
                for page in self._ddb.client.get_paginator("query").paginate(
                    TableName=self.table,
                    KeyConditionExpression="deployment_id = :d AND begins_with(alert_id, :p)",
                    ExpressionAttributeValues={":d": {"S": deployment_id}, ":p": {"S": prefix}},
                    ProjectionExpression="deployment_id, alert_id",
                ):
                    for item in page.get("Items", []):
                        self._ddb.client.delete_item(TableName=self.table, Key=dict(item))
                        deleted += 1
        return deleted


def camera_from_doc(doc: Mapping[str, Any]) -> CameraActivity:
    return CameraActivity(
        camera_id=str(doc["camera_id"]), last_seen=doc.get("last_seen"), messages=int(doc.get("messages", 0)),
        status=LastCameraStatus.model_validate(doc["status"]) if doc.get("status") else None,
        per_minute={int(k[1:]): int(v) for k, v in doc.items() if k[:1] == "m" and k[1:].isdigit()},
        queue_lag_ms=doc.get("queue_lag_ms"),
    )
