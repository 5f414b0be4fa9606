"""The lifecycle table (lfr_core/lifecycle.py): its shape, every code path's writes against it, its diagram.

The paths run the real session service, the real watchlist build (real detector, embedder and
faces) and the admin's own authorise/stop, over the in-memory deployments repository, which
records every state write it sees and the states that write expected.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from functions.exceptions import AuthorisationError, DeploymentNotActiveError, NoUsableFacesError
from functions.logic.audit_log import AuditLog
from functions.logic.build_watchlist import BuildService
from functions.logic.session import SessionRequest, SessionService
from functions.models.records import DeploymentRecord
from infra import constants as C
from lfr_cli.admin import Admin
from lfr_cli.aws import AwsContext
from lfr_core.contracts import DeploymentState as S
from lfr_core.layout import watchlist_images_prefix, watchlist_index_key
from lfr_core.lifecycle import (
    INITIAL,
    STARTABLE,
    TERMINAL,
    TRANSITIONS,
    SessionAction,
    can_move,
    mermaid,
    sources_of,
)
from tests.fakes import (
    InMemoryAlertRepository,
    InMemoryAuditStore,
    InMemoryCropQueues,
    InMemoryDeploymentRepository,
    InMemoryObjectStore,
)
from tests.unit.functions_support import Clock, deployment, lfw_image, real_embedder, require_models
from tests.unit.test_session_logic import authorisation

ROOT = Path(__file__).resolve().parents[2]
DEP = "dep-lifecycle"
Move = tuple[S, S]

# Edges the table allows that no path writes, and why they stay allowed.
UNEXERCISED: dict[Move, str] = {
    (S.PENDING, S.ACTIVE): "the state check passes; Activate's authorisation check refuses (no authorisation)",
}


def _reachable(start: S) -> set[S]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_table_covers_every_state_and_every_state_is_reachable() -> None:
    assert set(TRANSITIONS) == set(S)
    assert _reachable(INITIAL) == set(S)


def test_every_live_state_can_end_and_ended_states_have_no_exit() -> None:
    assert {S.CLOSED, S.FAILED} == TERMINAL
    for state in set(S) - TERMINAL:
        assert _reachable(state) & TERMINAL, f"{state} can never end"
        # A failure is always recordable, whatever the deployment was doing.
        assert can_move(state, S.FAILED), state
    for state in TERMINAL:
        assert not TRANSITIONS[state]
        assert all(state not in sources_of(t) for t in S)


def test_sources_of_is_the_inverse_of_the_table() -> None:
    assert sources_of(S.PENDING) == frozenset()  # only created
    assert sources_of(S.CLOSED) == {S.PURGING}  # never closed without the purge's state
    assert sources_of(S.EXPIRED) == {S.ACTIVE}
    assert sources_of(S.AUTHORISED) == {S.PENDING}
    for target in S:
        assert sources_of(target) == {s for s in S if can_move(s, target)}
    assert sources_of(S.STOPPED) >= STARTABLE  # a session never started can be stopped


# -- every state write of the code, recorded ---------------------------------------------------


class RecordingRepository(InMemoryDeploymentRepository):
    """Records each state write as (from, to); a write must expect exactly the table's sources."""

    def __init__(self) -> None:
        super().__init__()
        self.moves: list[Move] = []

    def update(
        self, deployment_id: str, fields: Mapping[str, Any], expect_states: Collection[S] | None = None
    ) -> DeploymentRecord:
        before = self.get(deployment_id)
        rec = super().update(deployment_id, fields, expect_states)
        if "state" in fields:
            assert before is not None
            assert expect_states is not None and frozenset(expect_states) == sources_of(rec.state), (
                f"write of {rec.state} expected {expect_states}, the table says {sources_of(rec.state)}"
            )
            self.moves.append((before.state, rec.state))
        return rec


class World:
    def __init__(self, repo: RecordingRepository, admin: Admin) -> None:
        self.repo, self.admin = repo, admin
        self.clock = Clock()
        self.store = InMemoryObjectStore("watchlist")
        audit = AuditLog(InMemoryAuditStore(), clock=self.clock)
        self.session = SessionService(repo, self.store, clock=self.clock, audit=audit, queues=InMemoryCropQueues(),
                                      alerts=InMemoryAlertRepository())
        self.build = BuildService(repo, self.store, detector=self._detector(), embedder=real_embedder)
        self.n = 0

    @staticmethod
    def _detector() -> Any:
        from lfr_core.face.detect import FaceDetector

        return FaceDetector

    def new(self, state: S, *, faces: bool = True, built: bool = False, authorised: bool = True) -> str:
        self.n += 1
        dep = f"{DEP}-{self.n}"
        rec = deployment(dep, state, duration_s=20)
        if built:
            rec = rec.model_copy(update={"index_etag": '"abc"', "watchlist_size": 1})
            self.store.objects[watchlist_index_key(dep)] = b"idx"
        if authorised:
            rec = rec.model_copy(update={"authorisation": authorisation(self.clock)})
        self.repo.create(rec)
        image = lfw_image("Colin_Powell", 1).read_bytes() if faces else b"not an image"
        self.store.objects[watchlist_images_prefix(dep) + "Colin_Powell_0001.jpg"] = image
        return dep

    def step(self, action: SessionAction, dep: str, **more: Any) -> dict[str, Any]:
        return self.session.handle(SessionRequest(action=action, deployment_id=dep, **more))

    def authorise(self, dep: str) -> None:
        self.admin.authorise(
            dep, officer="Supt A. Example", legitimate_aim="aim", necessity="need", proportionality="bounded",
            location="here", watchlist_criteria="wanted", max_watchlist_size=5, start=self.clock(),
        )

    def live_until_expired(self, dep: str) -> None:
        self.step(SessionAction.ACTIVATE, dep)
        self.clock.advance(30)
        assert self.step(SessionAction.CHECK, dep)["active"] is False

    def end(self, dep: str) -> None:
        self.step(SessionAction.PURGE, dep)
        self.step(SessionAction.CLOSE, dep)
        assert self.repo.get(dep).state == S.CLOSED  # type: ignore[union-attr]

    def fail_and_purge(self, dep: str, error: str = "DeploymentNotActiveError") -> None:
        self.step(SessionAction.FAIL, dep, error={"Error": error})
        self.step(SessionAction.PURGE, dep)
        assert self.repo.get(dep).state == S.FAILED  # type: ignore[union-attr]


@pytest.fixture
def world() -> Iterator[World]:
    require_models()
    with mock_aws():
        # The admin's own authorise/stop, over the same repository; its machine start goes to moto.
        ctx = AwsContext(region="eu-west-2")
        sfn = ctx.client("stepfunctions")
        arn = sfn.create_state_machine(
            name="session", roleArn="arn:aws:iam::123456789012:role/sfn",
            definition='{"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}',
        )["stateMachineArn"]
        ctx._outputs = {C.OUTPUT_SESSION_STATE_MACHINE_ARN: arn}
        repo = RecordingRepository()
        admin = Admin.__new__(Admin)
        admin.ctx, admin.actor, admin._sfn = ctx, "cli:test-admin", sfn
        admin.deployments = repo
        admin.audit = AuditLog(InMemoryAuditStore())
        yield World(repo, admin)


def _paths(w: World) -> None:
    # Happy path: authorise, validate, build, activate, expire, purge, close.
    dep = w.new(S.PENDING, authorised=False)
    w.authorise(dep)
    w.step(SessionAction.VALIDATE, dep)
    w.build.build(dep)
    w.live_until_expired(dep)
    w.end(dep)

    # A build retried after a lost response; an admin stop while live; a retried purge.
    dep = w.new(S.AUTHORISED)
    w.build.build(dep)
    w.build.build(dep)
    w.step(SessionAction.ACTIVATE, dep)
    w.admin.stop(dep, "operational")
    assert w.step(SessionAction.CHECK, dep)["active"] is False
    w.step(SessionAction.PURGE, dep)
    w.end(dep)

    # Activated straight from AUTHORISED (its index already built); the live fault loop past the
    # window purges a deployment its check never saw expire.
    dep = w.new(S.AUTHORISED, built=True)
    w.step(SessionAction.ACTIVATE, dep)
    w.clock.advance(30)
    w.end(dep)

    # Never authorised: Activate refuses it even with an index (the table's unwritten PENDING -> ACTIVE),
    # as Validate does; the fail path purges.
    dep = w.new(S.PENDING, built=True, authorised=False)
    with pytest.raises(AuthorisationError):
        w.step(SessionAction.ACTIVATE, dep)
    assert w.repo.get(dep).state == S.PENDING  # type: ignore[union-attr]
    dep = w.new(S.PENDING, authorised=False)
    with pytest.raises(AuthorisationError):
        w.step(SessionAction.VALIDATE, dep)
    w.fail_and_purge(dep, "AuthorisationError")

    # Stopped before its session started: the machine's Validate refuses it, the fail path purges.
    for state in (S.PENDING, S.AUTHORISED):
        dep = w.new(state)
        w.admin.stop(dep)
        with pytest.raises(DeploymentNotActiveError):
            w.step(SessionAction.VALIDATE, dep)
        w.fail_and_purge(dep)

    # Stopped while its watchlist was being built.
    dep = w.new(S.AUTHORISED)
    w.build.build(dep)
    w.admin.stop(dep)
    with pytest.raises(DeploymentNotActiveError):
        w.step(SessionAction.ACTIVATE, dep)
    w.fail_and_purge(dep)

    # Refused authorisation (too many images), and a build of no usable face: the fail path.
    dep = w.new(S.AUTHORISED)
    for i in range(6):
        w.store.objects[watchlist_images_prefix(dep) + f"P_{i}.jpg"] = b"img"
    with pytest.raises(AuthorisationError):
        w.step(SessionAction.VALIDATE, dep)
    w.fail_and_purge(dep, "AuthorisationError")
    dep = w.new(S.PENDING, faces=False)
    with pytest.raises(NoUsableFacesError):
        w.build.build(dep)
    w.fail_and_purge(dep, "NoUsableFacesError")

    # A live check's terminal error; a failure once ended, and once purging.
    dep = w.new(S.BUILDING, built=True)
    w.step(SessionAction.ACTIVATE, dep)
    w.fail_and_purge(dep, "DeploymentNotFoundError")
    dep = w.new(S.BUILDING, built=True)
    w.live_until_expired(dep)
    w.fail_and_purge(dep)
    dep = w.new(S.BUILDING, built=True)
    w.live_until_expired(dep)
    w.step(SessionAction.PURGE, dep)
    w.fail_and_purge(dep)

    # MarkFailed could not write its FAILED: the failure purge records the reason with PURGING.
    for state in (S.PENDING, S.AUTHORISED, S.BUILDING):
        dep = w.new(state)
        w.step(SessionAction.PURGE, dep, error={"Error": "TransientStorageError"})
        w.end(dep)


def test_every_write_of_every_path_is_an_edge_of_the_table_and_every_edge_is_written(world: World) -> None:
    _paths(world)
    written = set(world.repo.moves)
    assert written, "no state write recorded"
    for source, target in written:
        assert can_move(source, target), f"{source} -> {target} is not in the table"
    edges = {(s, t) for s, targets in TRANSITIONS.items() for t in targets}
    assert set(UNEXERCISED) <= edges
    assert not written & set(UNEXERCISED), "an edge listed as unexercised is written: take it off the list"
    assert edges - set(UNEXERCISED) == written, f"edges no path writes: {sorted(edges - written - set(UNEXERCISED))}"


def test_writes_outside_the_table_are_refused(world: World) -> None:
    from functions.exceptions import StateConflictError

    dep = world.new(S.BUILDING, built=True)
    world.live_until_expired(dep)
    world.end(dep)
    with pytest.raises(StateConflictError):  # CLOSED has no exit: not even a failure
        world.repo.update(dep, {"state": str(S.FAILED)}, expect_states=sources_of(S.FAILED))
    assert world.step(SessionAction.FAIL, dep)["state"] == "CLOSED"  # the step is a no-op once ended


# -- no state write bypasses the table ---------------------------------------------------------------


def _update_calls() -> Iterator[tuple[Path, ast.Call]]:
    for top in ("functions", "lfr_cli"):
        for path in sorted((ROOT / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "update":
                    yield path, node


def test_every_state_write_in_the_code_expects_the_sources_the_table_gives() -> None:
    checked = 0
    for path, call in _update_calls():
        expect = next((k.value for k in call.keywords if k.arg == "expect_states"), None)
        literal = next((a for a in call.args if isinstance(a, ast.Dict)), None)
        keys = {k.value for k in literal.keys if isinstance(k, ast.Constant)} if literal else set()
        where = f"{path.relative_to(ROOT)}:{call.lineno}"
        if "state" in keys:
            assert expect is not None, f"{where}: a state write without expected states"
        if expect is None:
            continue
        checked += 1
        table = expect if isinstance(expect, ast.Call) and ast.unparse(expect.func) == "sources_of" else None
        if table is None:
            # Only a write that keeps the state may name its own guard (the build's "still BUILDING").
            assert literal is not None and "state" not in keys, f"{where}: expected states not from sources_of"
            continue
        if literal is not None and "state" in keys:
            value = next(v for k, v in zip(literal.keys, literal.values, strict=True)
                         if isinstance(k, ast.Constant) and k.value == "state")
            assert isinstance(value, ast.Call) and ast.unparse(value.args[0]) == ast.unparse(table.args[0]), (
                f"{where}: writes {ast.unparse(value)} but expects {ast.unparse(table)}"
            )
    assert checked >= 9  # session (5), build (2), admin (2)


# -- the diagram in docs/ARCHITECTURE.md is the table's -------------------------------------------


def test_the_architecture_doc_holds_exactly_the_generated_diagram() -> None:
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    blocks = re.findall(r"```mermaid\nstateDiagram-v2\n.*?```", doc, flags=re.S)
    assert blocks == [mermaid()], "regenerate: python -c 'from lfr_core.lifecycle import mermaid; print(mermaid())'"
    section = doc.split("## Session state machine", 1)[1].split("\n## ", 1)[0]
    assert mermaid() in section


def test_the_diagram_has_one_line_per_edge() -> None:
    lines = mermaid().splitlines()
    edges = [ln.strip() for ln in lines if "-->" in ln and "[*]" not in ln]
    assert sorted(edges) == sorted(f"{s} --> {t}" for s, ts in TRANSITIONS.items() for t in ts)
    assert f"    [*] --> {INITIAL}" in lines
    assert {ln.strip() for ln in lines if ln.endswith("--> [*]")} == {f"{s} --> [*]" for s in TERMINAL}
