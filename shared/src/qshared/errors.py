"""The one error hierarchy of qstack; HTTP status codes are attached here."""

from __future__ import annotations


class QstackError(Exception):
    """Base of every error qstack raises on purpose."""

    status = 500
    code = "internal"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code)
        if code:
            self.code = code


class ConfigError(QstackError):
    """A setting has a bad value."""

    code = "config"


class ValidationFailed(QstackError):
    """The request was malformed."""

    status = 400
    code = "invalid_request"


class PayloadTooLarge(QstackError):
    """The request body is larger than allowed."""

    status = 413
    code = "payload_too_large"


class Unauthorized(QstackError):
    """A missing or wrong bearer token."""

    status = 401
    code = "unauthorized"


class Forbidden(QstackError):
    """The request is refused whatever the token (the gateway's admin allow-list)."""

    status = 403
    code = "forbidden"


class NotFound(QstackError):
    """The named object does not exist."""

    status = 404
    code = "not_found"


class Conflict(QstackError):
    """The object is not in a state that allows the operation."""

    status = 409
    code = "conflict"


class StorageError(QstackError):
    """The database failed or could not be reached."""

    status = 503
    code = "storage_unavailable"


class ServiceUnavailable(QstackError):
    """Another qstack service could not be reached or answered with an error."""

    status = 503
    code = "service_unavailable"
