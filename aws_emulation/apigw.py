"""Local API Gateway: an HTTP server on 127.0.0.1 serving the template's REST APIs.

Routes come from the deployed template (`AWS::ApiGateway::Resource` path parts and
`AWS::ApiGateway::Method`s) and each request becomes a real API Gateway REST proxy event
(payload format 1.0) for the Lambda function the method's integration names, invoked
through the local runtime; the function's proxy response becomes the HTTP response.

Like API Gateway: an unknown path or method answers 403 `Missing Authentication Token`, a
function error 502. Not emulated: Cognito user pool authorizers (their methods answer 401:
no request reaches the function unauthenticated), request validators, throttling.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from aws_emulation.runtime import InvokeResult
from lfr_cli.local.server import ACCOUNT_ID, LOOPBACK

log = logging.getLogger(__name__)

Invoke = Callable[[str, Any], InvokeResult]
MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit


@dataclass(frozen=True)
class Route:
    api_id: str  # logical id of the RestApi
    path: str  # resource path template, e.g. /t/alerts/{deployment_id}/{alert_id}
    method: str
    function: str  # logical id of the integrated function
    authorization: str  # NONE | COGNITO_USER_POOLS | AWS_IAM | CUSTOM

    def match(self, path: str) -> dict[str, str] | None:
        want, got = self.path.strip("/").split("/"), path.strip("/").split("/")
        params: dict[str, str] = {}
        for i, part in enumerate(want):
            if part.startswith("{") and part.endswith("+}"):
                if i >= len(got):
                    return None
                params[part[1:-2]] = "/".join(got[i:])
                return params
            if i >= len(got):
                return None
            if part.startswith("{") and part.endswith("}"):
                if not got[i]:
                    return None
                params[part[1:-1]] = unquote(got[i])
            elif part != got[i]:
                return None
        return params if len(got) == len(want) or (self.path == "/" and path.strip("/") == "") else None


def _ref(node: Any) -> str | None:
    if isinstance(node, dict):
        if "Ref" in node:
            return str(node["Ref"])
        if "Fn::GetAtt" in node:
            target = node["Fn::GetAtt"]
            return str(target[0] if isinstance(target, list) else target.split(".")[0])
    return None


def _integrated_function(node: Any, functions: set[str]) -> str | None:
    """The first `Fn::GetAtt [<function>, Arn]` inside an integration URI."""
    if isinstance(node, dict):
        got = node.get("Fn::GetAtt")
        if isinstance(got, list) and got and got[0] in functions:
            return str(got[0])
        for v in node.values():
            found = _integrated_function(v, functions)
            if found:
                return found
    if isinstance(node, list):
        for v in node:
            found = _integrated_function(v, functions)
            if found:
                return found
    return None


def routes_from_template(template: dict[str, Any]) -> dict[str, list[Route]]:
    """Routes per RestApi logical id."""
    res = template.get("Resources", {})
    functions = {lid for lid, r in res.items() if r.get("Type") == "AWS::Lambda::Function"}
    apis = {lid for lid, r in res.items() if r.get("Type") == "AWS::ApiGateway::RestApi"}
    paths: dict[str, tuple[str, str]] = {}  # resource logical id -> (api, path)

    def path_of(lid: str) -> tuple[str, str]:
        if lid in paths:
            return paths[lid]
        props = res[lid]["Properties"]
        parent = _ref(props.get("ParentId"))
        if parent is None:
            raise ValueError(f"API resource {lid} has no parent")
        if parent in apis:  # GetAtt RestApi.RootResourceId
            api, base = parent, ""
        else:
            api, base = path_of(parent)
        paths[lid] = (api, f"{base}/{props['PathPart']}")
        return paths[lid]

    out: dict[str, list[Route]] = {api: [] for api in apis}
    for _lid, r in res.items():
        if r.get("Type") != "AWS::ApiGateway::Method":
            continue
        props = r["Properties"]
        target = _ref(props.get("ResourceId"))
        if target is None:
            continue
        if target in apis:
            api, path = target, "/"
        else:
            api, path = path_of(target)
        fn = _integrated_function(props.get("Integration", {}), functions)
        if fn is None:
            log.warning("method %s %s: no Lambda integration, not served locally", props.get("HttpMethod"), path)
            continue
        out[api].append(
            Route(api, path, str(props["HttpMethod"]).upper(), fn, str(props.get("AuthorizationType", "NONE")))
        )
    return out


class LocalApiGateway:
    """One REST API of the stack at http://127.0.0.1:<port>/<stage>/."""

    def __init__(self, routes: list[Route], invoke: Invoke, stage: str = "prod", api_id: str = "local") -> None:
        self.routes = routes
        self.invoke = invoke
        self.stage = stage
        self.api_id = api_id
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("local API gateway not started")
        return f"http://{LOOPBACK}:{self._server.server_address[1]}/{self.stage}/"

    def start(self, port: int = 0) -> str:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("apigw %s", format % args)

            def _serve(self) -> None:
                gateway.serve(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

        self._server = ThreadingHTTPServer((LOOPBACK, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-apigw", daemon=True)
        self._thread.start()
        log.info("local API gateway at %s (%d routes)", self.url, len(self.routes))
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- one request

    def serve(self, req: BaseHTTPRequestHandler) -> None:
        split = urlsplit(req.path)
        prefix = f"/{self.stage}"
        if not (split.path == prefix or split.path.startswith(prefix + "/")):
            return self._send(req, 403, {"message": "Forbidden"})
        path = split.path[len(prefix) :] or "/"
        length = int(req.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            return self._send(req, 413, {"message": "Request Too Long"})
        raw = req.rfile.read(length) if length else b""
        candidates = [(r, p) for r in self.routes if (p := r.match(path)) is not None]
        chosen = next(((r, p) for r, p in candidates if r.method in (req.command, "ANY")), None)
        if chosen is None:
            return self._send(req, 403, {"message": "Missing Authentication Token"})
        route, params = chosen
        if route.authorization != "NONE":
            return self._send(req, 401, {"message": "Unauthorized"})
        event = self._event(req, route, path, params, split.query, raw)
        result = self.invoke(route.function, event)
        if not result.ok or not isinstance(result.payload, dict) or "statusCode" not in result.payload:
            log.warning("apigw %s %s -> function error %s", req.command, route.path, result.error_type)
            return self._send(req, 502, {"message": "Internal server error"})
        payload = result.payload
        body = payload.get("body") or ""
        data = base64.b64decode(body) if payload.get("isBase64Encoded") else str(body).encode()
        headers = {str(k): str(v) for k, v in (payload.get("headers") or {}).items()}
        for k, vs in (payload.get("multiValueHeaders") or {}).items():
            headers[str(k)] = ", ".join(str(v) for v in vs)
        self._send_raw(req, int(payload["statusCode"]), data, headers)

    def _event(
        self, req: BaseHTTPRequestHandler, route: Route, path: str, params: dict[str, str], query: str, raw: bytes
    ) -> dict[str, Any]:
        headers: dict[str, str] = {}
        multi_headers: dict[str, list[str]] = {}
        for k, v in req.headers.items():
            headers[k] = v
            multi_headers.setdefault(k, []).append(v)
        qs = parse_qs(query, keep_blank_values=True)
        try:
            body: str | None = raw.decode("utf-8") if raw else None
            b64 = False
        except UnicodeDecodeError:
            body, b64 = base64.b64encode(raw).decode("ascii"), True
        now = time.time()
        return {
            "resource": route.path,
            "path": path,
            "httpMethod": req.command,
            "headers": headers or None,
            "multiValueHeaders": multi_headers or None,
            "queryStringParameters": {k: v[-1] for k, v in qs.items()} or None,
            "multiValueQueryStringParameters": qs or None,
            "pathParameters": params or None,
            "stageVariables": None,
            "requestContext": {
                "accountId": ACCOUNT_ID,
                "apiId": self.api_id,
                "resourcePath": route.path,
                "httpMethod": req.command,
                "path": f"/{self.stage}{path}",
                "stage": self.stage,
                "requestId": str(uuid.uuid4()),
                "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
                "requestTimeEpoch": int(now * 1000),
                "protocol": req.request_version,
                "domainName": req.headers.get("Host", LOOPBACK),
                "identity": {"sourceIp": req.client_address[0], "userAgent": req.headers.get("User-Agent")},
            },
            "body": body,
            "isBase64Encoded": b64,
        }

    def _send(self, req: BaseHTTPRequestHandler, status: int, doc: dict[str, Any]) -> None:
        self._send_raw(req, status, json.dumps(doc).encode(), {"Content-Type": "application/json"})

    @staticmethod
    def _send_raw(req: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str]) -> None:
        req.send_response(status)
        for k, v in headers.items():
            if k.lower() not in ("content-length", "connection", "transfer-encoding"):
                req.send_header(k, v)
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        if req.command != "HEAD":
            req.wfile.write(data)


def gateways_for(template: dict[str, Any], invoke: Invoke) -> dict[str, LocalApiGateway]:
    """A local gateway per RestApi of the template, with its stage name from its Deployment/Stage."""
    res = template.get("Resources", {})
    out: dict[str, LocalApiGateway] = {}
    for api, routes in routes_from_template(template).items():
        stage = "prod"
        for r in res.values():
            props = r.get("Properties", {})
            if r.get("Type") in ("AWS::ApiGateway::Stage", "AWS::ApiGateway::Deployment") and _ref(
                props.get("RestApiId")
            ) == api and props.get("StageName"):
                stage = str(props["StageName"])
        out[api] = LocalApiGateway(routes, invoke, stage=stage, api_id=api)
    return out
