"""Fixtures the unit modules share."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from lfr_cli.local.server import MotoServer, make_client


@pytest.fixture(scope="module")
def sqs() -> Iterator[tuple[Any, str]]:
    """A moto server of the module's own with one queue, `crops`: (client, queue URL)."""
    server = MotoServer()
    endpoint = server.start()
    try:
        client = make_client("sqs", endpoint)
        yield client, client.create_queue(QueueName="crops")["QueueUrl"]
    finally:
        server.stop()
