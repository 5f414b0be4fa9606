"""Ports and adapters of the officers' side: the officers table, SNS channels (platform
applications, platform endpoints, filtered subscriptions), presigned evidence links and the
token-signing key in Secrets Manager.

Kept in one module of their own (ports and boto3 adapters; the in-memory fakes are in
tests/fakes.py) so the officer API and `lfr officers` share them without touching the match
path's ports.
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from functions.dal._aws import LazyClient, error_code, transient
from functions.dal.dynamodb import from_item, to_item
from functions.exceptions import ObjectNotFoundError
from functions.models.officers import OfficerRecord

# --------------------------------------------------------------------------------- ports


class OfficerRepository(ABC):
    @abstractmethod
    def get(self, deployment_id: str, officer_id: str) -> OfficerRecord | None: ...

    @abstractmethod
    def put(self, record: OfficerRecord) -> None: ...

    @abstractmethod
    def list_for_deployment(self, deployment_id: str) -> list[OfficerRecord]: ...


class EvidenceLinks(ABC):
    @abstractmethod
    def presign(self, bucket: str, key: str, expires_s: int) -> str:
        """A GET URL for one object that stops working after `expires_s` seconds."""


class OfficerChannels(ABC):
    """SNS: one alert topic; each officer channel is a subscription with a filter policy."""

    @abstractmethod
    def find_platform_application(self, name: str) -> str | None: ...

    @abstractmethod
    def create_platform_application(self, name: str, platform: str, attributes: Mapping[str, str]) -> str: ...

    @abstractmethod
    def create_platform_endpoint(self, application_arn: str, device_token: str, user_data: str) -> str: ...

    @abstractmethod
    def subscribe(self, protocol: str, endpoint: str, filter_policy: Mapping[str, Any]) -> str: ...

    @abstractmethod
    def unsubscribe(self, subscription_arn: str) -> None: ...

    @abstractmethod
    def delete_endpoint(self, endpoint_arn: str) -> None: ...


# ------------------------------------------------------------------------------ adapters


class DynamoOfficerRepository(OfficerRepository):
    def __init__(self, table_name: str, client: Any | None = None) -> None:
        self.table = table_name
        self._ddb = LazyClient("dynamodb", client)

    def get(self, deployment_id: str, officer_id: str) -> OfficerRecord | None:
        with transient("officers.get"):
            resp = self._ddb.client.get_item(
                TableName=self.table,
                Key={"deployment_id": {"S": deployment_id}, "officer_id": {"S": officer_id}},
                ConsistentRead=True,
            )
        item = resp.get("Item")
        return None if item is None else OfficerRecord.model_validate(from_item(item))

    def put(self, record: OfficerRecord) -> None:
        with transient("officers.put"):
            self._ddb.client.put_item(TableName=self.table, Item=to_item(record.to_item()))

    def list_for_deployment(self, deployment_id: str) -> list[OfficerRecord]:
        out: list[OfficerRecord] = []
        with transient("officers.query"):
            for page in self._ddb.client.get_paginator("query").paginate(
                TableName=self.table,
                KeyConditionExpression="deployment_id = :d",
                ExpressionAttributeValues={":d": {"S": deployment_id}},
            ):
                out.extend(OfficerRecord.model_validate(from_item(i)) for i in page.get("Items", []))
        return out


class S3EvidenceLinks(EvidenceLinks):
    def __init__(self, client: Any | None = None) -> None:
        self._s3 = LazyClient("s3", client)

    def presign(self, bucket: str, key: str, expires_s: int) -> str:
        with transient("s3.presign"):
            return str(
                self._s3.client.generate_presigned_url(
                    "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=int(expires_s)
                )
            )


class SecretSigningKey:
    """The HMAC key of officer tokens and page links: a Secrets Manager secret, read once per container."""

    def __init__(self, secret_id: str, client: Any | None = None) -> None:
        self.secret_id = secret_id
        self._sm = LazyClient("secretsmanager", client)
        self._key: bytes | None = None
        self._lock = threading.Lock()

    def __call__(self) -> bytes:
        with self._lock:
            if self._key is None:
                with transient("secretsmanager.get"):
                    try:
                        value = self._sm.client.get_secret_value(SecretId=self.secret_id)["SecretString"]
                    except ClientError as exc:
                        if error_code(exc) == "ResourceNotFoundException":
                            raise ObjectNotFoundError(f"signing secret {self.secret_id}") from exc
                        raise
                if len(value) < 32:
                    raise ValueError("signing secret shorter than 32 characters")
                self._key = value.encode()
            return self._key


class SnsOfficerChannels(OfficerChannels):
    def __init__(self, topic_arn: str, client: Any | None = None) -> None:
        self.topic_arn = topic_arn
        self._sns = LazyClient("sns", client)

    def find_platform_application(self, name: str) -> str | None:
        with transient("sns.list_platform_applications"):
            for page in self._sns.client.get_paginator("list_platform_applications").paginate():
                for app in page.get("PlatformApplications", []):
                    arn = str(app["PlatformApplicationArn"])
                    if arn.split("/")[-1] == name:
                        return arn
        return None

    def create_platform_application(self, name: str, platform: str, attributes: Mapping[str, str]) -> str:
        with transient("sns.create_platform_application"):
            resp = self._sns.client.create_platform_application(
                Name=name, Platform=platform, Attributes=dict(attributes)
            )
        return str(resp["PlatformApplicationArn"])

    def create_platform_endpoint(self, application_arn: str, device_token: str, user_data: str) -> str:
        with transient("sns.create_platform_endpoint"):
            resp = self._sns.client.create_platform_endpoint(
                PlatformApplicationArn=application_arn, Token=device_token, CustomUserData=user_data
            )
        return str(resp["EndpointArn"])

    def subscribe(self, protocol: str, endpoint: str, filter_policy: Mapping[str, Any]) -> str:
        attributes = {"FilterPolicy": json.dumps(filter_policy), "FilterPolicyScope": "MessageAttributes"}
        with transient("sns.subscribe"):
            resp = self._sns.client.subscribe(
                TopicArn=self.topic_arn,
                Protocol=protocol,
                Endpoint=endpoint,
                Attributes=attributes,
                ReturnSubscriptionArn=True,
            )
        return str(resp["SubscriptionArn"])

    def unsubscribe(self, subscription_arn: str) -> None:
        with transient("sns.unsubscribe"):
            self._sns.client.unsubscribe(SubscriptionArn=subscription_arn)

    def delete_endpoint(self, endpoint_arn: str) -> None:
        with transient("sns.delete_endpoint"):
            self._sns.client.delete_endpoint(EndpointArn=endpoint_arn)
