"""How the admin CLI reaches AWS: real AWS, or the local embedded stack.

The CLI finds the stack's resources through its CloudFormation outputs, exactly as an
admin's laptop would against a real account, so the local stack is not special-cased.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from infra.constants import DEFAULT_STACK_NAME

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCAL_ENDPOINT_FILE = REPO_ROOT / "build" / "local" / "endpoint.json"


class StackNotFoundError(Exception):
    pass


@dataclass
class AwsContext:
    region: str
    endpoint_url: str | None = None
    profile: str | None = None
    stack_name: str = DEFAULT_STACK_NAME
    _session: Any = field(default=None, repr=False)
    _outputs: dict[str, str] | None = field(default=None, repr=False)

    @classmethod
    def discover(cls, endpoint_url: str | None = None, region: str | None = None,
                 profile: str | None = None, stack_name: str = DEFAULT_STACK_NAME) -> AwsContext:
        """Explicit flags, then the environment, then a running `lfr local up`."""
        endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        reg = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if endpoint is None and LOCAL_ENDPOINT_FILE.exists() and profile is None:
            local = json.loads(LOCAL_ENDPOINT_FILE.read_text())
            endpoint, reg = local["endpoint"], reg or local.get("region")
        return cls(region=reg or "eu-west-2", endpoint_url=endpoint, profile=profile, stack_name=stack_name)

    @property
    def session(self) -> Any:
        if self._session is None:
            if self.endpoint_url and self.profile is None:
                # The local emulator accepts any credentials; never use an admin's real ones against it.
                self._session = boto3.Session(
                    aws_access_key_id="testing", aws_secret_access_key="testing", region_name=self.region
                )
            else:
                self._session = boto3.Session(profile_name=self.profile, region_name=self.region)
        return self._session

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.endpoint_url)

    @property
    def outputs(self) -> dict[str, str]:
        if self._outputs is None:
            try:
                stacks = self.client("cloudformation").describe_stacks(StackName=self.stack_name)["Stacks"]
            except Exception as exc:
                raise StackNotFoundError(
                    f"stack {self.stack_name!r} not found at {self.endpoint_url or 'AWS'} "
                    f"(run `lfr local up` or deploy with CDK): {exc}"
                ) from exc
            self._outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
        return self._outputs
