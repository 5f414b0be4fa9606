"""Everything the local stack changes in moto, in this one module, through moto's own registration points.

moto's server routes each service's requests through the `url_paths` of `moto.<service>.urls` to a
`BaseResponse` subclass; `install()` registers two small subclasses there before the server starts:

1. CloudFormation reads a `TemplateURL` on the local endpoint. The CDK CLI uploads the stack's
   template to the bootstrap bucket and passes its path-style URL on the endpoint it was given
   (`http://127.0.0.1:<port>/<bucket>/<key>`). moto 5.2 parses a TemplateURL as path-style only
   when it contains "localhost" or is `s3*.amazonaws.com`; otherwise it takes the first label of
   the host as the bucket, here "127", and the change set fails with "The specified bucket does
   not exist". The subclass hands moto the same bucket and key as an S3 path-style URL.
   The same subclass executes a CREATE change set (what `cdk deploy` sends for a new stack) the
   way moto's `create_stack` creates a stack. moto 5.2 applies it as an update of an empty stack:
   resources are created in template order, ignoring their dependencies (the REST API's
   deployment before its methods: "The REST API doesn't contain any methods"), and the stack's
   Outputs are never read (the CLI and the local runtime would see none).
   `tests/unit/test_moto_ext.py` asserts moto still has both faults: when it fails, moto has fixed
   one, and its half of the subclass goes.
2. Lambda `Invoke` runs the function in the local runtime's worker (`route_lambda_invocations`):
   moto's Step Functions engine calls Lambda tasks through this API, and so does any client.
   Without a route (or for a function the runtime does not know) moto's own invoke answers.

3. Choice timestamps (`Timestamp*` comparisons) are read as RFC 3339, as Step Functions reads them.
   moto 5.2's engine parses only `YYYY-MM-DDTHH:MM:SSZ` and takes anything else as "not a
   timestamp" (every comparison false), including its own `$$.State.EnteredTime` (isoformat,
   microseconds, `+00:00`): the session machine's WithinWindow (EnteredTime < expires_at) was
   always false locally, so a live check that failed past its quick retries ended the session
   instead of re-checking within the authorised window. `install()` replaces that one parser
   (`IsTimestamp.string_to_timestamp`); `tests/unit/test_moto_ext.py` asserts moto still has the fault.

4. Cost per request, not behaviour (measured with `lfr bench --throughput`; same answers, less CPU).
   moto 5.2's server lists its own package directory (`list_of_moto_modules`: ~200 `isdir` calls)
   on every request to route it; the list is read once here. Its SQS `Queue` counts visible,
   in-flight and delayed messages by reading the clock once per message per count, and computes
   every attribute (three such scans) for each message sent and three times for each message
   received (`is_message_valid_based_on_retention_period` reads one attribute through
   `get_queue_attributes`): with a few hundred messages waiting, a receive of 5 cost ~15 full
   scans. `install()` counts with one clock read per call and reads the retention period
   directly. `tests/unit/test_moto_ext.py` checks the counts and the retention rule against
   moto's own code.

Not a patch: moto's Step Functions engine is switched on with its documented config
(`/moto-api/config`, `stepfunctions.execute_state_machine`), see `server.enable_state_machine_execution`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from moto.awslambda.responses import LambdaResponse
from moto.cloudformation.responses import CloudFormationResponse
from moto.core.responses import EmptyResult

if TYPE_CHECKING:
    from aws_emulation.runtime import InvokeResult

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")

Invoker = Callable[[str, Any], "InvokeResult"]
_route: dict[str, Invoker] = {}
_route_lock = threading.Lock()
_upstream: dict[str, Callable[..., Any]] = {}


def path_style_template_url(template_url: str) -> str:
    """`http://127.0.0.1:<port>/<bucket>/<key>` -> `https://s3.amazonaws.com/<bucket>/<key>`; others unchanged."""
    parts = urlparse(template_url)
    if parts.hostname in LOOPBACK_HOSTS:
        return f"https://s3.amazonaws.com{parts.path}"
    return template_url


class LocalCloudFormationResponse(CloudFormationResponse):
    def _get_stack_from_s3_url(self, template_url: str) -> str:
        return super()._get_stack_from_s3_url(path_style_template_url(template_url))

    def execute_change_set(self) -> Any:
        from moto.cloudformation.models import Stack

        backend = self.cloudformation_backend
        name = self._get_param("ChangeSetName")
        change_set = backend.change_sets.get(name) or next(
            (cs for cs in backend.change_sets.values() if cs.change_set_name == name
             and self._get_param("StackName") in (None, cs.stack_name, cs.stack_id)),
            None,
        )
        if change_set is None or change_set.change_set_type != "CREATE":
            return super().execute_change_set()
        # Create the stack as moto's create_stack does (resources in dependency order, Outputs read),
        # in place of the placeholder (empty template) that create_change_set made for it.
        placeholder = change_set.stack
        stack = Stack(  # type: ignore[abstract]  # moto's own Stack, constructed as create_stack does
            stack_id=placeholder.stack_id, name=placeholder.name, template=change_set.template,
            parameters=change_set.parameters, account_id=placeholder.account_id,
            region_name=placeholder.region_name, notification_arns=placeholder.notification_arns,
            tags=placeholder.tags, role_arn=placeholder.role_arn, cross_stack_resources=backend.exports,
        )
        stack.events = placeholder.events
        backend.stacks[stack.stack_id] = stack
        change_set.stack = stack
        for export in stack.exports:
            backend.exports[export.name] = export
        stack._add_stack_event("CREATE_IN_PROGRESS", resource_status_reason="User Initiated")
        stack.create_resources()
        change_set.execution_status = "EXECUTE_COMPLETE"
        return EmptyResult()


class LocalLambdaResponse(LambdaResponse):
    def invoke(self) -> tuple[int, dict[str, str], str | bytes]:
        invoke = _route.get("invoke")
        if invoke is None:
            return super().invoke()
        body = self.body.decode() if isinstance(self.body, bytes) else self.body
        try:
            event = json.loads(body) if body else {}
        except ValueError:
            return 400, {}, json.dumps({"message": "Could not parse request body into json"})
        function = unquote(self.path.rsplit("/", 2)[-2])  # a name or an ARN; the runtime has $LATEST only
        invocation_type = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        if invocation_type == "DryRun":
            return 204, {}, b""
        if invocation_type == "Event":
            threading.Thread(target=_invoke_logged, args=(invoke, function, event), daemon=True).start()
            return 202, {}, b""
        try:
            result = invoke(function, event)
        except KeyError:
            return super().invoke()  # not one of the stack's functions: moto's own behaviour
        headers = {"content-type": "application/json", "x-amz-executed-version": "$LATEST"}
        if result.ok:
            return 200, headers, json.dumps(result.payload).encode()
        # Lambda's shape for a function error: the SFN engine names the error by `errorType`.
        headers["x-amz-function-error"] = "Unhandled"
        error = {"errorType": result.error_type, "errorMessage": result.error_message,
                 "stackTrace": result.stack_trace}
        return 200, headers, json.dumps(error).encode()


def _invoke_logged(invoke: Invoker, function: str, event: Any) -> None:
    try:
        invoke(function, event)
    except Exception:  # an async invoke has no caller to tell
        log.exception("async invoke of %s failed", function)


def route_lambda_invocations(invoke: Invoker | None) -> None:
    """Send every Lambda `Invoke` to `invoke(function name or ARN, event)`; None restores moto's."""
    with _route_lock:
        if invoke is None:
            _route.pop("invoke", None)
        else:
            _route["invoke"] = invoke


def rfc3339_timestamp(value: str) -> datetime | None:
    """An RFC 3339 date-time (uppercase T, Z or a numeric offset, optional fraction) in UTC; else None."""
    if not isinstance(value, str) or "T" not in value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo is not None else None


def _visible_messages(queue: Any) -> list[Any]:
    """`Queue.messages` (visible and not delayed), one clock read for the whole scan."""
    from moto.sqs import models

    now = models.unix_time_millis()
    return [m for m in queue._messages if now > m.visible_at and not now < m.delayed_until]


def _count_not_visible(queue: Any) -> int:
    from moto.sqs import models

    now = models.unix_time_millis()
    return sum(1 for m in queue._messages if not now > m.visible_at)


def _count_delayed(queue: Any) -> int:
    from moto.sqs import models

    now = models.unix_time_millis()
    return sum(1 for m in queue._messages if now < m.delayed_until)


def _retention_ok(backend: Any, queue_name: str, message: Any) -> bool:
    """moto's `is_message_valid_based_on_retention_period`, reading the one attribute it needs."""
    from moto.sqs import models

    retention_period = backend.get_queue(queue_name).message_retention_period
    return bool(retention_period + message.sent_timestamp / 1000 > models.unix_time())


def _install_cost_patches() -> None:
    from moto import backends
    from moto.sqs import models

    if "list_of_moto_modules" not in _upstream:
        _upstream["list_of_moto_modules"] = backends.list_of_moto_modules
        modules = tuple(backends.list_of_moto_modules())  # moto's installed package: fixed while running
        backends.list_of_moto_modules = lambda: modules
    queue = models.Queue
    if "queue_messages" not in _upstream:
        _upstream["queue_messages"] = queue.messages.fget  # type: ignore[attr-defined]
        _upstream["retention_ok"] = models.SQSBackend.is_message_valid_based_on_retention_period
        queue.messages = property(_visible_messages)  # type: ignore[method-assign,assignment]
        queue.approximate_number_of_messages_not_visible = property(_count_not_visible)  # type: ignore[method-assign,assignment]
        queue.approximate_number_of_messages_delayed = property(_count_delayed)  # type: ignore[method-assign,assignment]
        models.SQSBackend.is_message_valid_based_on_retention_period = _retention_ok  # type: ignore[method-assign,assignment]


def install() -> None:
    """Register the subclasses in moto's URL maps; idempotent, before the server handles a request."""
    from moto.awslambda import urls as lambda_urls
    from moto.cloudformation import urls as cfn_urls
    from moto.stepfunctions.parser.asl.component.state.choice.comparison.operator.implementations import (
        is_operator,
    )

    current = is_operator.IsTimestamp.__dict__["string_to_timestamp"].__func__
    if current is not rfc3339_timestamp:
        _upstream["string_to_timestamp"] = current  # kept for the upstream-fault test
    is_operator.IsTimestamp.string_to_timestamp = staticmethod(rfc3339_timestamp)  # type: ignore[method-assign,assignment]

    _install_cost_patches()
    cfn_urls.url_paths["{0}/$"] = LocalCloudFormationResponse.dispatch
    for path in list(lambda_urls.url_paths):
        if "/invocations" in path:
            lambda_urls.url_paths[path] = LocalLambdaResponse.dispatch
