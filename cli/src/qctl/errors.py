"""qctl's exit codes and the translation of qstack errors into them."""

from __future__ import annotations

import click
import httpx

from qshared.errors import (
    ConfigError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    QstackError,
    ServiceUnavailable,
    StorageError,
    Unauthorized,
    ValidationFailed,
)

OK = 0
FAILED = 1
USAGE = 2
UNREACHABLE = 3
AUTH = 4
NOT_FOUND = 5

EXIT_CODES_HELP = (
    "\b\nExit codes:\n"
    "  0  ok\n"
    "  1  the operation failed, or something is unhealthy\n"
    "  2  usage error (bad option, bad configuration, request rejected as invalid)\n"
    "  3  a service or the database could not be reached\n"
    "  4  authentication failed (missing or wrong token) or refused (403)\n"
    "  5  not found (job, worker, context)"
)

_UNREACHABLE_STATUSES = frozenset({502, 503, 504})


class CliError(click.ClickException):
    """An error qctl reports as `error: <message>` on stderr, with its exit code."""

    def __init__(self, message: str, exit_code: int = FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _unreachable(exc: QstackError) -> bool:
    """True when no answer came back: a transport error, or a gateway/503 reply."""
    cause = exc.__cause__
    if isinstance(cause, httpx.TransportError | OSError | TimeoutError):
        return True
    if isinstance(exc, StorageError):
        # a database that answered with an SQL error was reached; one we could not
        # connect to (or that dropped the connection) was not
        return cause is None or "Connect" in type(cause).__name__
    return isinstance(exc, ServiceUnavailable) and exc.status in _UNREACHABLE_STATUSES


def exit_code_for(exc: QstackError) -> int:
    """The documented exit code of a qstack error."""
    if isinstance(exc, Unauthorized | Forbidden):
        return AUTH
    if isinstance(exc, NotFound):
        return NOT_FOUND
    if isinstance(exc, ValidationFailed | PayloadTooLarge | ConfigError):
        return USAGE
    if _unreachable(exc):
        return UNREACHABLE
    return FAILED


def describe(exc: QstackError) -> str:
    """The one-line message shown for a qstack error, with a hint where one helps."""
    message = exc.message
    if isinstance(exc.__cause__, httpx.TransportError):
        detail = str(exc.__cause__) or type(exc.__cause__).__name__
        url = message.split(": ", 1)[0] if ": " in message else message
        return (
            f"cannot reach {url}: {detail} "
            "(is the stack running? see `qctl up` and `qctl context list`)"
        )
    if isinstance(exc, Unauthorized):
        return f"{message} (pass --token, set QSTACK_TOKEN or use a context with a token)"
    if isinstance(exc, Forbidden):
        return (f"{message} (the gateway serves /admin/ only to the networks of "
                "QSTACK_GATEWAY_ADMIN_ALLOW; run qctl from inside them or against the services)")
    return message


def to_cli_error(exc: QstackError) -> CliError:
    """A qstack error as the CliError qctl prints."""
    return CliError(describe(exc), exit_code_for(exc))
