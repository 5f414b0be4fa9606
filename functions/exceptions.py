"""Typed errors of the Lambda code.

Step Functions and Lambda report an uncaught exception by its class name (`errorType`),
and the session state machine's Retry/Catch match on `NoUsableFacesError` and
`PurgeIncompleteError`: renaming those breaks the state machine.
"""

from __future__ import annotations

from typing import Literal


class LfrFunctionError(Exception):
    """Base of every error raised on purpose by `functions/`."""


class DeploymentNotFoundError(LfrFunctionError):
    def __init__(self, deployment_id: str) -> None:
        super().__init__(f"deployment {deployment_id!r} not found")
        self.deployment_id = deployment_id


class DeploymentNotActiveError(LfrFunctionError):
    """A deployment is not in a state that allows the requested action."""


class StateConflictError(LfrFunctionError):
    """A conditional state transition lost a race or started from the wrong state."""


class WatchlistNotBuiltError(LfrFunctionError):
    """Activation was requested before a watchlist index was built."""


class InvalidCropError(LfrFunctionError):
    """A crop message that can never be matched (bad message, corrupt or wrong-size JPEG).

    `reason` is a short machine-readable tag; it goes to metrics and logs, the content never does.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NoUsableFacesError(LfrFunctionError):
    """No watchlist image yielded a usable face: the deployment cannot go live."""


class PurgeIncompleteError(LfrFunctionError):
    """Objects remain under the deployment prefix after deletion (the state machine retries)."""


class WatchlistIndexError(LfrFunctionError):
    """The deployment's index is missing or unreadable; `reason` is "missing" or "unreadable"."""

    def __init__(self, message: str, reason: Literal["missing", "unreadable"] = "unreadable") -> None:
        super().__init__(message)
        self.reason = reason


class ObjectNotFoundError(LfrFunctionError):
    """A storage object that was expected does not exist (not transient: retrying will not help)."""


class TransientStorageError(LfrFunctionError):
    """An AWS call failed in a way that may succeed on retry (throttling, 5xx, network)."""


class UnknownActionError(LfrFunctionError):
    """The session function was asked for an action it does not implement."""


class AuthorisationError(LfrFunctionError):
    """A deployment may not start: no authorisation, or its watchlist or duration exceeds it.

    The state machine routes this (like any failure before activation) to fail + purge.
    """


class AuditRejectedError(LfrFunctionError):
    """An audit event was refused: it could carry data that must never be in the audit log."""


class AuditAppendError(LfrFunctionError):
    """The audit chain could not be extended (contention did not settle, or storage failed)."""


class TokenError(LfrFunctionError):
    """An officer's access token was refused; `reason` is a short tag for the audit log (never the token).

    `officer_id` is set only when the token's signature verified (e.g. expired): the refusal has an identity.
    """

    def __init__(self, reason: str, officer_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.officer_id = officer_id
