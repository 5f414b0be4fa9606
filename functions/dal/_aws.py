"""boto3 plumbing shared by the adapters: lazy clients and error translation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from functions.exceptions import TransientStorageError

# Fail fast inside a 30 s match invocation; the standard retry mode already backs off on throttling.
CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=3, read_timeout=10)


def make_client(service: str) -> Any:
    # boto3 reads AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_<SERVICE> itself, which is how the
    # local runtime points us at the moto server.
    return boto3.client(service, config=CLIENT_CONFIG)  # type: ignore[call-overload]


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def transient(operation: str) -> Iterator[None]:
    """Anything boto raises that the adapter did not handle becomes `TransientStorageError`."""
    try:
        yield
    except ClientError as exc:
        raise TransientStorageError(f"{operation}: {error_code(exc) or 'ClientError'}") from exc
    except BotoCoreError as exc:
        raise TransientStorageError(f"{operation}: {type(exc).__name__}") from exc


class LazyClient:
    """Creates the boto3 client on first use so importing a handler costs nothing and tests can inject one."""

    def __init__(self, service: str, client: Any | None = None) -> None:
        self._service = service
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_client(self._service)
        return self._client
