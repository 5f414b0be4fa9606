"""The session lifecycle: which `DeploymentState` may move to which, and the session machine's actions.

The one home of the rule. Every write of a deployment's state (`functions/logic/session.py`,
`functions/logic/build_watchlist.py`, `lfr_cli/admin.py`) is a conditional update whose expected
states are `sources_of(target)`, so no guard list is written by hand anywhere else; the session
state machine (`infra/constructs/session.py`) and the session function dispatch on the same
`SessionAction`. docs/ARCHITECTURE.md carries `mermaid()` of the table (a test keeps it equal).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

from lfr_core.contracts import DeploymentState

S = DeploymentState


class SessionAction(StrEnum):
    """The `action` of a session machine task's payload; the session function's dispatch key."""

    VALIDATE = "validate"
    ACTIVATE = "activate"
    CHECK = "check"
    PURGE = "purge"
    CLOSE = "close"
    FAIL = "fail"


# A self-loop is a retried step rewriting the state it already wrote (BUILDING, PURGING): allowed
# so a retry after a lost response succeeds rather than conflicting with itself.
TRANSITIONS: Mapping[DeploymentState, frozenset[DeploymentState]] = MappingProxyType({
    # Authorised by an officer (the CLI); built, stopped, or failed and purged by the machine.
    # PENDING -> ACTIVE passes the state check only: Activate refuses a deployment with no
    # authorisation recorded (`AuthorisationError`, audited), so it is never written.
    S.PENDING: frozenset({S.AUTHORISED, S.BUILDING, S.ACTIVE, S.STOPPED, S.PURGING, S.FAILED}),
    S.AUTHORISED: frozenset({S.BUILDING, S.ACTIVE, S.STOPPED, S.PURGING, S.FAILED}),
    S.BUILDING: frozenset({S.BUILDING, S.ACTIVE, S.STOPPED, S.PURGING, S.FAILED}),
    # Ended by its clock (CheckActive) or an admin; purged directly from the live fault loop past
    # its window; failed by an error no retry can cure.
    S.ACTIVE: frozenset({S.EXPIRED, S.STOPPED, S.PURGING, S.FAILED}),
    S.EXPIRED: frozenset({S.PURGING, S.FAILED}),
    S.STOPPED: frozenset({S.PURGING, S.FAILED}),
    S.PURGING: frozenset({S.PURGING, S.CLOSED, S.FAILED}),
    # Terminal. A FAILED deployment is purged in place: it keeps its state and reason.
    S.CLOSED: frozenset(),
    S.FAILED: frozenset(),
})

INITIAL = S.PENDING
TERMINAL: frozenset[DeploymentState] = frozenset(s for s, to in TRANSITIONS.items() if not to)
# A session machine may begin (Validate) only for a deployment whose session never started.
STARTABLE: frozenset[DeploymentState] = frozenset({S.PENDING, S.AUTHORISED})


def can_move(source: DeploymentState, target: DeploymentState) -> bool:
    return target in TRANSITIONS[source]


def sources_of(target: DeploymentState) -> frozenset[DeploymentState]:
    """The states a deployment may be in for a write of `target`: the update's `expect_states`."""
    return frozenset(s for s, to in TRANSITIONS.items() if target in to)


def mermaid() -> str:
    """The table as a Mermaid `stateDiagram-v2` block (docs/ARCHITECTURE.md holds exactly this)."""
    lines = ["```mermaid", "stateDiagram-v2", f"    [*] --> {INITIAL}"]
    for source, targets in TRANSITIONS.items():
        lines += [f"    {source} --> {target}" for target in DeploymentState if target in targets]
    lines += [f"    {state} --> [*]" for state in DeploymentState if state in TERMINAL]
    lines.append("```")
    return "\n".join(lines)
