"""The embedded AWS: a moto server bound to 127.0.0.1 and clients that can only talk to it."""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from typing import Any

import boto3
from botocore.config import Config

REGION = "eu-west-2"
# moto's default account; every ARN the embedded stack produces carries it.
ACCOUNT_ID = "123456789012"
LOOPBACK = "127.0.0.1"

_FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


def aws_env(endpoint: str, region: str = REGION) -> dict[str, str]:
    """Environment that points every AWS SDK in a process at `endpoint` and nowhere else."""
    _require_loopback(endpoint)
    return {
        "AWS_ENDPOINT_URL": endpoint,
        **_FAKE_CREDENTIALS,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        # No profile, instance metadata or proxy can redirect a call off the loopback (the worker
        # environment is built from scratch, so no AWS_PROFILE reaches it; an empty one breaks boto3).
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


def _require_loopback(endpoint: str) -> None:
    if not endpoint.startswith((f"http://{LOOPBACK}:", "http://localhost:")):
        raise ValueError(f"refusing a non-loopback AWS endpoint: {endpoint!r}")


def make_client(service: str, endpoint: str, region: str = REGION, **config: Any) -> Any:
    """A boto3 client bound to the embedded endpoint with fake credentials (never the user's)."""
    _require_loopback(endpoint)
    session = boto3.session.Session(
        aws_access_key_id=_FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=_FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=_FAKE_CREDENTIALS["AWS_SESSION_TOKEN"],
        region_name=region,
    )
    cfg = Config(
        retries={"max_attempts": 2, "mode": "standard"},
        proxies={},
        **config,
    )
    return session.client(service, endpoint_url=endpoint, config=cfg)  # type: ignore[call-overload]


class MotoServer:
    """moto's threaded server on a free loopback port, in this process (with keep-alive: `keepalive`).

    In-process matters: the local stack registers its moto extensions (`moto_ext`: Lambda invokes
    run in the local runtime) and detaches moto's own SQS->Lambda invoker (`esm`).
    """

    def __init__(self, port: int = 0) -> None:
        self._port = port
        self._server: Any = None
        self._previous_port: str | None = None
        self.endpoint = ""

    def start(self) -> str:
        from lfr_cli.local.keepalive import KeepAliveMotoServer

        # One access-log line per SDK call drowns everything else.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)

        from lfr_cli.local import moto_ext

        moto_ext.install()
        # port 0: the OS picks a free port, so parallel test runs never collide.
        self._server = KeepAliveMotoServer(ip_address=LOOPBACK, port=self._port, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        # moto's Step Functions engine calls Lambda on http://localhost:$MOTO_PORT (moto.settings):
        # this server. One server per process (moto's backends are per process), so one port.
        self._previous_port = os.environ.get("MOTO_PORT")
        os.environ["MOTO_PORT"] = str(port)
        return self.endpoint

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
            if self._previous_port is None:
                os.environ.pop("MOTO_PORT", None)
            else:
                os.environ["MOTO_PORT"] = self._previous_port

    def client(self, service: str, **config: Any) -> Any:
        if not self.endpoint:
            raise RuntimeError("moto server not started")
        return make_client(service, self.endpoint, **config)

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def moto_config(endpoint: str, update: dict[str, Any] | None = None) -> dict[str, Any]:
    """moto's runtime configuration (`/moto-api/config`): read it, or merge `update` into it."""
    _require_loopback(endpoint)
    data = json.dumps(update).encode() if update is not None else None
    req = urllib.request.Request(
        f"{endpoint}/moto-api/config", data=data, method="POST" if data else "GET",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        config: dict[str, Any] = json.loads(resp.read())
    return config


def enable_state_machine_execution(endpoint: str, enabled: bool = True) -> None:
    """Executions run on moto's own ASL engine (ported from EmbeddedStack) instead of being recorded only."""
    moto_config(endpoint, {"stepfunctions": {"execute_state_machine": enabled}})
