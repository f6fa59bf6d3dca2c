"""Domain exceptions; the error middleware maps each to one HTTP status and a JSON body.

Every exception carries a CamelCase ``reason`` that becomes ``{"error": reason}`` in responses.
"""

from __future__ import annotations


class MetadataError(Exception):
    """Base class: ``status`` is the HTTP status the error middleware answers with."""

    status = 500
    reason = "InternalError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthenticated(MetadataError):
    """No trusted identity or token on the request."""

    status = 401
    reason = "Unauthenticated"


class Forbidden(MetadataError):
    """The caller is known but may not do this."""

    status = 403
    reason = "Forbidden"


class NotFound(MetadataError):
    """The addressed object does not exist (or is not visible to the caller)."""

    status = 404
    reason = "NotFound"


class Conflict(MetadataError):
    """The request contradicts stored state (a different object under the same key)."""

    status = 409
    reason = "Conflict"


class InvalidTransition(MetadataError):
    """A job status change that the job's state machine does not allow."""

    status = 409
    reason = "InvalidTransition"


class StoreUnavailable(MetadataError):
    """MongoDB did not answer within the bounded retries; clients should retry later."""

    status = 503
    reason = "StoreUnavailable"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SchemaTooNew(MetadataError):
    """The database was migrated by a newer service version than this one."""

    reason = "SchemaTooNew"
