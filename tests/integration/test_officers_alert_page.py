"""Officers end to end on the embedded stack: SNS delivery scoped per deployment, one alert per
track, the APNs/FCM payloads, the alert page in headless Chromium, and the decision in the counts.

One stack and one deployment for the module (deploying costs ~40 s); tests run in file order.
The alert page tests live here too (rather than in a second module) because two embedded
stacks cannot share one process (moto's backends are per process).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from edge_uploader.pipeline import FaceCropper, GateCounts, image_folder_messages
from edge_uploader.sender import SqsSender
from functions.dal.officers import SecretSigningKey
from functions.logic.officer_access import FAILED_ACCESS_METRIC
from functions.logic.tokens import _b64, _mac, issue_token
from functions.models.officers import ChannelKind
from infra import constants as C
from lfr_cli.admin import Admin
from lfr_cli.aws import AwsContext
from lfr_cli.demo import _wait_queue_drained
from lfr_cli.local.server import ACCOUNT_ID, REGION
from lfr_cli.local.stack import EmbeddedStack
from lfr_cli.main import main as lfr
from lfr_cli.officer_admin import filter_policy
from lfr_cli.officers import officer_admin
from lfr_core.contracts import Alert, CropMessage, DeploymentState, utcnow
from lfr_eval.datasets import LfwImage, read_lfw_manifest
from tests.integration.conftest import ARTIFACTS

pytestmark = pytest.mark.integration
SESSION_S = 20 * 60
PHONE = {"width": 390, "height": 844}  # an iPhone 12-14 sized viewport




def cli(ctx: AwsContext, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = lfr(["--endpoint-url", str(ctx.endpoint_url), "--region", ctx.region, *argv])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def people() -> list[list[LfwImage]]:
    by_id: dict[str, list[LfwImage]] = {}
    for img in read_lfw_manifest():
        by_id.setdefault(img.identity, []).append(img)
    return [by_id[i] for i in sorted(i for i, imgs in by_id.items() if len(imgs) >= 4)[:3]]


@pytest.fixture(scope="module")
def deployments(ctx: AwsContext, people: list[list[LfwImage]], tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Deployment A (ACTIVE, watchlist of 3 with references and reasons) and B (another one, not started)."""
    wl = tmp_path_factory.mktemp("watchlist")
    manifest = {}
    for n, imgs in enumerate(people):
        (wl / imgs[0].file).symlink_to(imgs[0].path)
        manifest[imgs[0].file] = {"entry_id": Path(imgs[0].file).stem, "label": imgs[0].identity,
                                  "reference": f"WL-{n:04d}", "reason": "Wanted on warrant (test)"}
    (wl / "manifest.json").write_text(json.dumps(manifest))
    admin = Admin(ctx)
    a = admin.create_authorise_start("officers-a", wl, duration_s=SESSION_S)
    b = admin.create_deployment("officers-b", wl, SESSION_S)
    admin.wait_for(a.deployment_id, {DeploymentState.ACTIVE}, timeout_s=300)
    return [a.deployment_id, b.deployment_id]


class Phone:
    """An SQS queue registered as an officer's channel (through the same code path as APNs/FCM)."""

    def __init__(self, ctx: AwsContext, name: str, deployment_id: str) -> None:
        self.sqs = ctx.client("sqs")
        self.url = self.sqs.create_queue(QueueName=f"phone-{name}")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.officer = officer_admin(ctx).add_officer(deployment_id, name, [(ChannelKind.SQS, arn)])
        self.received: list[dict[str, Any]] = []

    def drain(self, settle_s: float = 2.0) -> list[dict[str, Any]]:
        time.sleep(settle_s)
        while True:
            got = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            msgs = got.get("Messages", [])
            if not msgs:
                return self.received
            for m in msgs:
                self.received.append(json.loads(m["Body"]))
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"])


@pytest.fixture(scope="module")
def phones(ctx: AwsContext, deployments: list[str]) -> dict[str, Phone]:
    return {"a": Phone(ctx, "pc-alpha", deployments[0]), "b": Phone(ctx, "pc-bravo", deployments[1])}


def crops(images: list[LfwImage], deployment_id: str, track_id: str) -> list[CropMessage]:
    out = []
    for _, m in image_folder_messages([i.path for i in images], FaceCropper(), deployment_id=deployment_id,
                                      camera_id="cam-north", counts=GateCounts(), faces="central"):
        out.append(m.model_copy(update={"track_id": track_id}))
    assert len(out) == len(images)
    return out


@pytest.fixture(scope="module")
def walk(ctx: AwsContext, deployments: list[str], phones: dict[str, Phone],
         people: list[list[LfwImage]]) -> list[CropMessage]:
    """One watchlisted person walking past: three crops of one track, sent one after another."""
    msgs = crops(people[0][1:4], deployments[0], "walk-1")
    sender = SqsSender(ctx.client("sqs"), ctx.outputs[C.OUTPUT_CROP_QUEUE_URL])
    for m in msgs:
        assert sender.send([m]).sent == 1
        _wait_queue_drained(ctx, timeout_s=120)
    return msgs


def test_platform_channels_register_with_filter_policies(ctx: AwsContext, deployments: list[str],
                                                         tmp_path: Path) -> None:
    p8 = tmp_path / "AuthKey_TEST.p8"
    p8.write_text("-----BEGIN PRIVATE KEY-----\nnot-a-real-key\n-----END PRIVATE KEY-----\n")
    sa = tmp_path / "fcm.json"
    sa.write_text(json.dumps({"type": "service_account", "project_id": "lfr-test"}))
    assert cli(ctx, "officers", "platform", "apns", "--p8", str(p8), "--key-id", "K1", "--team-id", "T1",
               "--bundle-id", "uk.police.lfr")[0] == 0
    assert cli(ctx, "officers", "platform", "fcm", "--service-account", str(sa))[0] == 0
    code, out = cli(ctx, "officers", "add", "--deployment", deployments[0], "--name", "PC Charlie",
                    "--apns", "a" * 64, "--fcm", "fcm-token-" + "b" * 40, "--sms", "+447700900123",
                    "--email", "charlie@example.police.uk")
    assert code == 0, out
    officer_id = out.split()[1]
    rec = officer_admin(ctx).officers.get(deployments[0], officer_id)
    assert rec is not None and [c.kind for c in rec.channels] == ["apns", "fcm", "sms", "email"]
    assert "a" * 64 not in rec.model_dump_json() and "+447700900123" not in rec.model_dump_json()
    sns = ctx.client("sns")
    for ch in rec.channels:
        attrs = sns.get_subscription_attributes(SubscriptionArn=ch.subscription_arn)["Attributes"]
        assert json.loads(attrs["FilterPolicy"]) == filter_policy(deployments[0])
    endpoints = [c.endpoint_arn for c in rec.channels if c.endpoint_arn]
    assert len(endpoints) == 2
    # Bad input: a clear refusal and nothing half-registered.
    before = len(officer_admin(ctx).officers.list_for_deployment(deployments[0]))
    code, _ = cli(ctx, "officers", "add", "--deployment", deployments[0], "--name", "X", "--sms", "07700")
    assert code == 1 and len(officer_admin(ctx).officers.list_for_deployment(deployments[0])) == before


def test_one_track_one_alert_delivered_only_to_assigned_officer(
    stack: EmbeddedStack, ctx: AwsContext, deployments: list[str], phones: dict[str, Phone], walk: list[CropMessage]
) -> None:
    got = phones["a"].drain()
    alerts = [Alert.model_validate_json(m["Message"]) for m in got]
    assert alerts, "the assigned officer received nothing"
    assert {a.alert_id for a in alerts} == {alerts[0].alert_id}  # one track, one alert
    assert [a.revision for a in alerts] == list(range(1, len(alerts) + 1))  # republished only when better
    assert all(m["MessageAttributes"]["deployment_id"]["Value"] == deployments[0] for m in got)
    stored = Admin(ctx).alerts_of(deployments[0])
    assert [s.alert_id for s in stored] == [alerts[0].alert_id]
    assert stored[0].similarity == max(a.similarity for a in alerts)
    last = alerts[-1]
    assert last.watchlist_reference == "WL-0000" and last.watchlist_reason == "Wanted on warrant (test)"
    assert last.page_url and last.page_url.startswith(stack.api_url)
    assert last.queue_to_publish_ms is not None and last.queue_to_publish_ms < 5000
    assert phones["b"].drain(settle_s=0.5) == []  # not assigned to deployment A: nothing at all
    print(f"\nwalk of {len(walk)} crops -> {len(alerts)} publish(es) of one alert; revisions "
          f"{[a.revision for a in alerts]}, similarity {[round(a.similarity, 3) for a in alerts]}, "
          f"queue_to_publish_ms {[round(a.queue_to_publish_ms or 0, 1) for a in alerts]}")


def test_published_message_carries_apns_and_fcm_payloads(deployments: list[str], walk: list[CropMessage]) -> None:
    from moto.sns.models import sns_backends

    topics = sns_backends[ACCOUNT_ID][REGION].topics
    sent = [n for t in topics.values() for n in t.sent_notifications]
    assert sent
    for _, message, _, attributes, _ in sent:
        doc = json.loads(message)
        assert {"default", "APNS", "APNS_SANDBOX", "GCM", "sms", "email"} <= set(doc)
        apns = json.loads(doc["APNS"])
        assert {"alert", "thread-id", "mutable-content"} <= set(apns["aps"])
        assert ("sound" in apns["aps"]) == (apns["revision"] == "1")  # updates replace it silently
        assert apns["aps"]["thread-id"] == apns["alert_id"] and apns["aps"]["mutable-content"] == 1
        fcm = json.loads(doc["GCM"])["fcmV1Message"]["message"]
        assert {"title", "body"} == set(fcm["notification"])
        assert fcm["data"]["alert_id"] == apns["alert_id"] == fcm["android"]["collapse_key"]
        assert (attributes or {})["deployment_id"]["Value"] == deployments[0]
        # No biometric: no crop bytes, no crop key, no presigned evidence URL.
        for m in walk:
            assert m.image.jpeg_b64[:40] not in message  # type: ignore[union-attr]
        assert "alerts/" not in message and "X-Amz-Signature" not in message


# -- the alert page in headless Chromium --------------------------------------------------------




@pytest.fixture(scope="module")
def alert_link(phones: dict[str, Phone]) -> str:
    alerts = [Alert.model_validate_json(m["Message"]) for m in phones["a"].received]
    assert alerts and alerts[-1].page_url
    return alerts[-1].page_url


def _page(browser: Any) -> Any:
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    return context.new_page()


def test_page_renders_both_images_and_records_not_a_match(
    ctx: AwsContext, browser: Any, deployments: list[str], phones: dict[str, Phone], alert_link: str
) -> None:
    code, out = cli(ctx, "officers", "token", "--deployment", deployments[0],
                    "--officer", phones["a"].officer.officer_id, "--json")
    assert code == 0
    token = json.loads(out)["token"]
    page = _page(browser)
    page.goto(f"{alert_link}#token={token}")
    page.wait_for_selector("#alert:not([hidden])", timeout=20_000)
    page.wait_for_function(
        "['probe', 'watchlist'].every(id => { const i = document.getElementById(id);"
        " return i.complete && i.naturalWidth > 0; })", timeout=20_000)
    assert "#token" not in page.url  # the token does not stay in the address bar or history
    text = page.inner_text("main")
    assert "cam-north" in text and "WL-0000" in text and "Wanted on warrant (test)" in text
    for label in ("match confirmed - engaged", "not a match", "could not locate"):
        assert page.get_by_role("button", name=label, exact=True).is_visible()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "alert_page_phone.png"), full_page=True)

    page.get_by_role("button", name="not a match", exact=True).click()
    page.wait_for_function("document.getElementById('status').textContent.includes('recorded')", timeout=10_000)
    (rec,) = Admin(ctx).alerts_of(deployments[0])
    assert rec.decision == "not_a_match" and rec.decided_by == f"officer:{phones['a'].officer.officer_id}"
    page.screenshot(path=str(ARTIFACTS / "alert_page_decided.png"), full_page=True)
    page.context.close()


@pytest.mark.parametrize("case", ["expired", "foreign"])
def test_expired_or_foreign_token_gets_403_and_shows_nothing(
    stack: EmbeddedStack, ctx: AwsContext, browser: Any, deployments: list[str], phones: dict[str, Phone],
    alert_link: str, case: str,
) -> None:
    key = SecretSigningKey(ctx.outputs[C.OUTPUT_SIGNING_SECRET_ARN], ctx.client("secretsmanager"))()
    now = utcnow()
    if case == "expired":
        token = issue_token(key, phones["a"].officer.officer_id, deployments[0], now - timedelta(seconds=1),
                            now - timedelta(hours=1))
    else:  # a valid token of an officer of another deployment
        token = issue_token(key, phones["b"].officer.officer_id, deployments[1], now + timedelta(hours=1), now)
    page = _page(browser)
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status) if "/t/alerts/" in r.url else None)
    page.goto(f"{alert_link}#token={token}")
    page.wait_for_selector("#refused:not([hidden])", timeout=20_000)
    assert statuses == [403]
    html = page.content()
    assert "cam-north" not in html and "WL-0000" not in html and "0." not in page.inner_text("#alert")
    assert page.get_attribute("#probe", "src") is None and page.get_attribute("#watchlist", "src") is None
    page.screenshot(path=str(ARTIFACTS / f"alert_page_{case}_token.png"), full_page=True)
    page.context.close()
    # The refusal is in the audit log.
    code, out = cli(ctx, "audit", "events", "--deployment", deployments[0])
    assert code == 0 and "failed_access" in out


# -- hostile requests: 403/404, never 502; counted, and strangers write nothing to the audit log -------


def _audit_objects(ctx: AwsContext) -> int:
    s3 = ctx.client("s3")
    pages = s3.get_paginator("list_object_versions").paginate(Bucket=ctx.outputs[C.OUTPUT_AUDIT_BUCKET])
    return sum(len(p.get("Versions", [])) + len(p.get("DeleteMarkers", [])) for p in pages)


def _request(stack: EmbeddedStack, method: str, path: str, authorization: bytes | None,
             body: bytes | None = None) -> int:
    """One raw HTTP request: header bytes go out as given (http.client would refuse non-latin-1 text)."""
    base = stack.api_url.split("://", 1)[1]
    host, stage = base.split("/", 1)
    conn = http.client.HTTPConnection(host, timeout=30)
    try:
        conn.putrequest(method, f"/{stage}{path}")
        if authorization is not None:
            conn.putheader("Authorization", authorization)
        conn.putheader("Content-Length", str(len(body or b"")))
        conn.endheaders(body)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _officer_api_emf(stack: EmbeddedStack) -> list[dict[str, Any]]:
    (fn,) = [f for f in stack.runtime.functions.values() if f.handler == "functions.handlers.officer_api.handler"]
    out: list[dict[str, Any]] = []
    log = stack.runtime.log_path(fn.name)
    if not log.exists():  # not invoked yet
        return out
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{") and '"_aws"' in line and FAILED_ACCESS_METRIC in line:
            out.append(json.loads(line))
    return out


def _refusal_counts(stack: EmbeddedStack) -> tuple[float, dict[str, float]]:
    total, by_reason = 0.0, dict[str, float]()
    for doc in _officer_api_emf(stack):
        value = sum(doc[FAILED_ACCESS_METRIC])
        if "reason" in doc:
            by_reason[doc["reason"]] = by_reason.get(doc["reason"], 0.0) + value
        else:
            total += value
    return total, by_reason


def test_anonymous_and_malformed_requests_are_403_counted_and_write_no_audit_objects(
    stack: EmbeddedStack, ctx: AwsContext, deployments: list[str], phones: dict[str, Phone], alert_link: str
) -> None:
    key = SecretSigningKey(ctx.outputs[C.OUTPUT_SIGNING_SECRET_ARN], ctx.client("secretsmanager"))()
    token = issue_token(key, phones["a"].officer.officer_id, deployments[0], utcnow() + timedelta(hours=1), utcnow())
    head, body, mac = token.split(".")

    def signed(payload: dict[str, Any]) -> str:
        b = f"lfr1.{_b64(json.dumps(payload).encode())}"
        return f"{b}.{_mac(key, b)}"

    good = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    malformed: list[bytes] = [
        f"Bearer {head}.{body}.é".encode(),  # the reported 502
        f"Bearer {head}.{body}.{mac[:-1]}é".encode("latin-1"),
        f"Bearer {head}.{body}.{mac}\u2603".encode(),  # raw UTF-8 beyond latin-1
        f"Bearer {signed({**good, 'exp': '²'})}".encode(),  # the reported exp=²
        f"Bearer {signed({**good, 'exp': 10**30})}".encode(),
        f"Bearer {signed({**good, 'exp': True})}".encode(),
        f"Bearer {signed({k: v for k, v in good.items() if k != 'sub'})}".encode(),
        f"Bearer {head}.{body}".encode(), b"Bearer lfr1..", b"Bearer " + b"A" * 8000,
        f"Bearer {head}.{_b64(b'not json')}.{mac}".encode(), f"Bearer {head}.{body}.{'A' * len(mac)}".encode(),
    ]
    # The alert data route of the link in the notification (/alert/... is the static page).
    path = alert_link.split(stack.api_url.rstrip("/"), 1)[1].replace("/alert/", "/t/alerts/")
    before_objects, (before_total, before_reasons) = _audit_objects(ctx), _refusal_counts(stack)
    statuses = [_request(stack, "GET", path, None) for _ in range(20)]  # the reported 20 anonymous GETs
    statuses += [_request(stack, "GET", path, auth) for auth in malformed]
    statuses += [_request(stack, "POST", path.split("?")[0] + "/decision", auth, b'{"decision": "not_a_match"}')
                 for auth in malformed[:4]]
    assert statuses == [403] * len(statuses)
    # Not one Object Lock object for all of them...
    assert _audit_objects(ctx) == before_objects
    # ...but each one counted (EMF in the function's log: the FailedAccess metric, total and by reason).
    time.sleep(0.5)
    total, reasons = _refusal_counts(stack)
    assert total - before_total == len(statuses)
    new = {r: v - before_reasons.get(r, 0.0) for r, v in reasons.items() if v != before_reasons.get(r, 0.0)}
    assert new == {"token_missing": 20.0, "token_malformed": 14.0, "token_bad_signature": 2.0}, new
    print(f"\n{len(statuses)} anonymous/forged/malformed requests: all 403, 0 audit objects, "
          f"FailedAccess by reason {new}")


def test_malformed_path_and_query_with_a_valid_token_are_4xx_not_502(
    stack: EmbeddedStack, ctx: AwsContext, deployments: list[str], phones: dict[str, Phone], alert_link: str
) -> None:
    key = SecretSigningKey(ctx.outputs[C.OUTPUT_SIGNING_SECRET_ARN], ctx.client("secretsmanager"))()
    now = utcnow()
    token = issue_token(key, phones["a"].officer.officer_id, deployments[0], now + timedelta(hours=1), now)
    auth = f"Bearer {token}".encode()
    page_path = alert_link.split(stack.api_url.rstrip("/"), 1)[1].split("?")[0]
    data_path = page_path.replace("/alert/", "/t/alerts/")
    before = _audit_objects(ctx)
    (decided_before,) = Admin(ctx).alerts_of(deployments[0])
    # An alert id DynamoDB would refuse as a key (> 1 KiB) and a non-ASCII one: not found, before any lookup.
    for alert in ("x" * 2000, "%C3%A9"):
        bad = data_path.rsplit("/", 1)[0] + f"/{alert}"
        assert _request(stack, "POST", f"{bad}/decision", auth, b'{"decision": "not_a_match"}') == 404
    # Malformed decision bodies: 400.
    for body in (b"not json", b'{"decision": 7}', b"\xff\xfe", b"{" * 5000):
        assert _request(stack, "POST", f"{data_path}/decision", auth, body) == 400
    # A link whose exp is not ASCII digits, or whose sig is not ASCII: 403, audited (the officer is known).
    for query in ("exp=%C2%B2&sig=x", "exp=1&sig=%C3%A9", "exp=" + "9" * 400 + "&sig=x"):
        assert _request(stack, "GET", f"{data_path}?{query}", auth) == 403
    assert _audit_objects(ctx) == before + 1  # one identified refusal per officer, deployment, reason and hour
    (rec,) = Admin(ctx).alerts_of(deployments[0])
    assert (rec.decision, rec.decided_at) == (decided_before.decision, decided_before.decided_at)  # unchanged


def test_decision_in_status_and_audit_report(ctx: AwsContext, deployments: list[str]) -> None:
    code, out = cli(ctx, "deployment", "status", deployments[0])
    assert code == 0
    doc = json.loads(out)
    assert doc["alert_outcomes"] == {"alerts": 1, "true": 0, "false": 1, "unresolved": 0,
                                     "could_not_locate": 0, "undecided": 0}
    lat = doc["queue_to_publish_ms"]
    assert lat["n"] == 1 and 0 <= lat["p50_ms"] <= lat["p95_ms"] <= lat["max_ms"] < 5000
    code, out = cli(ctx, "audit", "report", "--format", "json")
    assert code == 0
    (row,) = [r for r in json.loads(out) if r["deployment_id"] == deployments[0]]
    assert (row["alerts"], row["true_alerts"], row["false_alerts"], row["unresolved_alerts"]) == (1, 0, 1, 0)


# -- encounters and the van's console -------------------------------------------------------------

TABLET = {"width": 1024, "height": 768}  # an iPad in landscape


@pytest.fixture(scope="module")
def operator_token(ctx: AwsContext, deployments: list[str], phones: dict[str, Phone]) -> str:
    code, out = cli(ctx, "officers", "token", "--deployment", deployments[0],
                    "--officer", phones["a"].officer.officer_id, "--json")
    assert code == 0
    return str(json.loads(out)["token"])


def test_console_live_encounters_and_a_decision_in_the_audit_report(
    stack: EmbeddedStack, ctx: AwsContext, browser: Any, deployments: list[str], phones: dict[str, Phone],
    people: list[list[LfwImage]], operator_token: str,
) -> None:
    dep = deployments[0]
    phones["a"].drain(settle_s=0.5)
    before = len(phones["a"].received)
    context = browser.new_context(viewport=TABLET, device_scale_factor=1, has_touch=True)
    page = context.new_page()
    failed: list[str] = []  # any request of the page refused or failing (the browser's own favicon aside)
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{stack.api_url.rstrip('/')}/console/{dep}#token={operator_token}")
    page.wait_for_selector("#console:not([hidden])", timeout=20_000)
    assert "#token" not in page.url
    page.evaluate("window.__sameDocument = true")  # gone if the page reloaded
    (earlier,) = page.query_selector_all("article.card")  # the first walk's encounter, decided "not a match"
    assert earlier.get_attribute("data-state") == "rejected"

    # A second listed person walks past two cameras (a track each): one encounter, one push.
    sender = SqsSender(ctx.client("sqs"), ctx.outputs[C.OUTPUT_CROP_QUEUE_URL])
    made = [m for _, m in image_folder_messages([i.path for i in people[1][1:]], FaceCropper(), deployment_id=dep,
                                                camera_id="cam-north", counts=GateCounts(), faces="central")]
    assert len(made) >= 2, "need two crops of the second person"
    # Two clear views: the gate passes a profile too (lfr_core/matching.py PRODUCTION_MIN_QUALITY),
    # and a profile may fairly score below the threshold; this walk is about two cameras, not recall.
    made.sort(key=lambda m: m.quality.score, reverse=True)
    north = made[0].model_copy(update={"track_id": "walk-north"})
    south = made[1].model_copy(update={"track_id": "walk-south", "camera_id": "cam-south"})
    for m in (north, south):
        assert sender.send([m]).sent == 1
        _wait_queue_drained(ctx, timeout_s=120)
    got = [Alert.model_validate_json(m["Message"]) for m in phones["a"].drain()[before:]]
    assert got and {a.alert_id for a in got} == {got[0].alert_id}  # one encounter
    assert [a.revision for a in got].count(1) == 1  # one push; the rest are silent updates
    enc_id = got[0].alert_id

    # The console shows it without a reload: both cameras, its crop, unresolved.
    card = f"#enc-{enc_id}"
    page.wait_for_selector(f"{card}[data-state='unresolved']", timeout=30_000)
    loaded = (f"(() => {{ const i = document.querySelector('{card} img');"
              " return i && i.complete && i.naturalWidth > 0; })()")
    page.wait_for_function(loaded, timeout=20_000)
    assert page.evaluate("window.__sameDocument") is True
    page.wait_for_function("document.querySelectorAll('#cameras tr').length === 2", timeout=20_000)
    cams = page.inner_text("#cameras")
    assert "cam-north" in cams and "cam-south" in cams and "up" in cams
    assert "2x by cam-north, cam-south" in page.inner_text(card)
    assert page.inner_text("#dstate").startswith("ACTIVE") and "left" in page.inner_text("#left")
    # Faces on the page: only the encounters' crops (matched people), nothing else.
    srcs = page.eval_on_selector_all("img", "els => els.map(e => e.getAttribute('src'))")
    assert len(srcs) == 2 and all(s and f"/alerts/{dep}/" in s for s in srcs)
    # Touch targets a finger can hit.
    box = page.get_by_role("button", name="match confirmed - engaged", exact=True).bounding_box()
    assert box is not None and box["height"] >= 44
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console_tablet.png"), full_page=True)

    page.locator(card).get_by_role("button", name="match confirmed - engaged", exact=True).click()
    page.wait_for_selector(f"{card}[data-state='confirmed']", timeout=20_000)
    assert page.inner_text("#n-confirmed") == "1" and page.inner_text("#n-rejected") == "1"
    page.screenshot(path=str(ARTIFACTS / "console_decided.png"), full_page=True)
    context.close()
    assert errors == [] and failed == []

    rec = next(a for a in Admin(ctx).alerts_of(dep) if a.alert_id == enc_id)
    assert rec.decision == "confirmed_engaged" and rec.sightings == 2 and rec.cameras == ("cam-north", "cam-south")
    code, out = cli(ctx, "audit", "report", "--format", "json")
    assert code == 0
    (row,) = [r for r in json.loads(out) if r["deployment_id"] == dep]
    assert (row["alerts"], row["true_alerts"], row["false_alerts"]) == (2, 1, 1)
    code, out = cli(ctx, "audit", "events", "--deployment", dep)
    assert code == 0 and f'"alert_id": "{enc_id}"' in out.replace('":"', '": "') and "adjudication" in out


def test_console_refuses_a_foreign_token(
    stack: EmbeddedStack, ctx: AwsContext, browser: Any, deployments: list[str], phones: dict[str, Phone],
) -> None:
    key = SecretSigningKey(ctx.outputs[C.OUTPUT_SIGNING_SECRET_ARN], ctx.client("secretsmanager"))()
    now = utcnow()
    token = issue_token(key, phones["b"].officer.officer_id, deployments[1], now + timedelta(hours=1), now)
    page = browser.new_context(viewport=TABLET).new_page()
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status) if "/t/console/" in r.url else None)
    page.goto(f"{stack.api_url.rstrip('/')}/console/{deployments[0]}#token={token}")
    page.wait_for_selector("#refused:not([hidden])", timeout=20_000)
    assert statuses == [403] and page.query_selector_all("img") == []
    page.context.close()


def test_encounter_window_is_set_at_create_bounded_and_audited(ctx: AwsContext, people: list[list[LfwImage]],
                                                                tmp_path: Path) -> None:
    (tmp_path / people[2][0].file).symlink_to(people[2][0].path)
    code, _ = cli(ctx, "deployment", "create", "--name", "window-bad", "--watchlist", str(tmp_path),
                  "--duration", "10m", "--encounter-window", "5s")
    assert code != 0
    code, out = cli(ctx, "deployment", "create", "--name", "window-ok", "--watchlist", str(tmp_path),
                    "--duration", "10m", "--encounter-window", "45s")
    assert code == 0, out
    dep = out.split()[1]
    code, out = cli(ctx, "deployment", "status", dep)
    assert code == 0 and json.loads(out)["encounter_window_s"] == 45
    code, out = cli(ctx, "audit", "events", "--deployment", dep)
    assert code == 0 and "encounter_window_s" in out and "45" in out
