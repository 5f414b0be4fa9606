"""Typed errors of the Lambda code.

Step Functions and Lambda report an uncaught exception by its class name (`errorType`),
and the session state machine's Retry/Catch lists are generated from the classification at
the end of this module (TRANSIENT_ERRORS, TERMINAL_ERRORS): a new error the session steps
raise belongs in one of them (unclassified errors are not retried, and end a session unless
it is live).
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


class AccessRefusedError(LfrFunctionError):
    """An officers' API request refused after its credential was read (foreign deployment, revoked
    officer, ended deployment, bad link): `reason` is an `AccessRefusal` value, `officer_id` whom
    the credential named. Answered 403 like a `TokenError`."""

    def __init__(self, reason: str, officer_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.officer_id = officer_id


class RequestNotFoundError(LfrFunctionError):
    """An officers' API request names no route or no alert: answered 404, the same body for both."""


class InvalidRequestBodyError(LfrFunctionError):
    """An officers' API request body that is not the model its route takes: answered 400."""


# -- Which errors a retry can cure: the ONE classification. The session state machine's Retry
# and Catch lists (infra/constructs/session.py) are built from these names, and the session
# handler's error metric uses `is_transient`.

# Ours: the call may succeed if repeated (storage/network, audit contention, a purge that saw
# something still in flight).
TRANSIENT_ERRORS: tuple[type[LfrFunctionError], ...] = (
    TransientStorageError,
    AuditAppendError,
    PurgeIncompleteError,
)
# Ours: repeating cannot help; the session ends (fail -> purge). A real end of a deployment:
# refused authorisation, nothing to match against, a record missing or in a state that forbids
# the step, a bug in the request.
TERMINAL_ERRORS: tuple[type[LfrFunctionError], ...] = (
    AuthorisationError,
    NoUsableFacesError,
    WatchlistNotBuiltError,
    DeploymentNotFoundError,
    DeploymentNotActiveError,
    StateConflictError,
    UnknownActionError,
)
# Reported by Lambda / Step Functions rather than raised by our code: the service throttled or
# failed, or the function's process died (killed, out of memory) or timed out. All transient.
LAMBDA_TRANSIENT_ERRORS: tuple[str, ...] = (
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.TooManyRequestsException",
    "Lambda.Unknown",
    "Runtime.ExitError",
    "Sandbox.Timedout",
)


def transient_error_names() -> list[str]:
    """Error names (Lambda `errorType`s) a retry may cure, for a state machine's Retry."""
    return [e.__name__ for e in TRANSIENT_ERRORS] + list(LAMBDA_TRANSIENT_ERRORS)


def terminal_error_names() -> list[str]:
    """Error names that end a session, for a state machine's Catch."""
    return [e.__name__ for e in TERMINAL_ERRORS]


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_ERRORS)
