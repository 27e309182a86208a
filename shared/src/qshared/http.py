"""aiohttp helpers every service uses: errors as JSON, bearer auth, body parsing, running."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import BaseModel, ValidationError

from qshared.config import Settings, load_settings
from qshared.errors import ConfigError, PayloadTooLarge, QstackError, Unauthorized, ValidationFailed
from qshared.metrics import track_pool
from qshared.storage import Storage, open_storage

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PROTECTED_PREFIXES = ("/api/", "/admin/")


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot encode {type(value).__name__}")


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON response; pydantic models are dumped in JSON mode."""
    if isinstance(data, BaseModel):
        body = data.model_dump_json().encode()
    else:
        body = orjson.dumps(data, default=_default)
    return web.Response(body=body, status=status, content_type="application/json")


def error_response(status: int, code: str, message: str) -> web.Response:
    """The `{"error": {"code", "message"}}` body every error uses."""
    return json_response({"error": {"code": code, "message": message}}, status=status)


def describe_validation(exc: ValidationError) -> str:
    """One line naming each bad field and what is wrong with it."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


async def read_model(request: web.Request, model: type[M]) -> M:
    """Parse and validate a JSON body; any problem is a ValidationFailed naming it."""
    if request.content_type not in ("application/json", "", "application/octet-stream"):
        raise ValidationFailed(f"expected a JSON body, got content type {request.content_type}")
    raw = await request.read()
    if not raw:
        raise ValidationFailed("the request body is empty; expected a JSON object")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed(f"malformed JSON: {exc}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(describe_validation(exc)) from None


def int_param(request: web.Request, name: str) -> int:
    """A path or query parameter that must be a positive integer."""
    raw = request.match_info.get(name) or request.query.get(name)
    try:
        value = int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValidationFailed(f"{name} must be an integer, got {raw!r}") from None
    if value < 1:
        raise ValidationFailed(f"{name} must be positive, got {value}")
    return value


def error_middleware() -> Callable[..., Awaitable[web.StreamResponse]]:
    """Maps qstack errors and aiohttp's HTTP errors to the JSON error body; never a traceback."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except QstackError as exc:
            if exc.status >= 500:
                log.warning("%s %s: %s", request.method, request.path, exc.message)
            return error_response(exc.status, exc.code, exc.message)
        except web.HTTPRequestEntityTooLarge as exc:
            err = PayloadTooLarge(f"request body too large: {exc.text}")
            return error_response(err.status, err.code, err.message)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = exc.reason.lower().replace(" ", "_")
            return error_response(exc.status, code, f"{exc.reason}: {request.method} {request.path}")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unhandled error in %s %s", request.method, request.path)
            return error_response(500, "internal", "internal error; see the service log")

    return middleware


def auth_middleware(token: str | None) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Requires `Authorization: Bearer <token>` on /api/ and /admin/ routes when a token is set."""
    expected = f"Bearer {token}".encode() if token else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is not None and request.path.startswith(PROTECTED_PREFIXES):
            given = request.headers.get("Authorization", "").encode()
            if not given:
                raise Unauthorized("missing bearer token (Authorization: Bearer <QSTACK_TOKEN>)")
            if not hmac.compare_digest(given, expected):
                raise Unauthorized("wrong bearer token")
        return await handler(request)

    return middleware


def make_app(token: str | None, **kwargs: Any) -> web.Application:
    """An application with qstack's error and auth middlewares."""
    kwargs.setdefault("client_max_size", 256 * 1024 * 1024)
    return web.Application(middlewares=[error_middleware(), auth_middleware(token)], **kwargs)


async def metrics_handler(_request: web.Request) -> web.Response:
    """Prometheus text format of this process's registry."""
    resp = web.Response(body=generate_latest(REGISTRY))
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


def openapi_handler(owner: str) -> Handler:
    """Serves the service's OpenAPI document (generated once, on first request)."""
    cache: list[web.Response] = []

    async def handler(_request: web.Request) -> web.StreamResponse:
        if not cache:
            from qshared.openapi import openapi_document

            cache.append(json_response(openapi_document(owner)))
        return web.Response(body=cache[0].body, content_type="application/json")

    return handler


def setup_logging(level: str) -> None:
    """One log format for every service."""
    logging.basicConfig(
        level=level.upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


async def serve(
    app: web.Application, host: str, port: int, *,
    on_started: Callable[[int], None] | None = None, stop: asyncio.Event | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or `stop`), then shut down gracefully."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        log.info("listening on http://%s:%s", host, bound)
        if on_started:
            on_started(bound)
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()


def storage_context(
    key: web.AppKey[Storage], settings: Settings, pool_size: int | None = None
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx entry that opens the storage pool into app[key] and closes it after."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        app[key] = await open_storage(
            settings.dsn, pool_size=pool_size or settings.db_pool_size,
            max_idle=settings.db_max_idle_time,
        )
        track_pool(app[key])
        try:
            yield
        finally:
            await app[key].close()

    return ctx


def loop_context(
    key: web.AppKey[Any], build: Callable[[web.Application], Any], grace: float = 10.0
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx entry for a background loop: `build(app)` makes an object with
    `run(stop)`, kept in app[key]; at shutdown `stop` is set and the loop gets `grace`
    seconds before it is cancelled.
    """

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        app[key] = build(app)
        stop = asyncio.Event()
        task = asyncio.create_task(app[key].run(stop), name=f"loop:{key!r}")
        yield
        stop.set()
        try:
            await asyncio.wait_for(task, timeout=grace)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return ctx


def owner_id(role: str) -> str:
    """A replica's name in leases and locks: role, host, pid and a random part."""
    return f"{role}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def service_main(name: str, create_app: Callable[[Settings], web.Application]) -> None:
    """The whole entry point of a service configured only by the environment."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.exit(f"{name}: {exc}")
    setup_logging(settings.log_level)
    run(lambda: serve(create_app(settings), settings.qstack_host, settings.qstack_port))


def run(main: Callable[[], Awaitable[None]]) -> None:
    """Run a service's main coroutine on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a declared dependency
        asyncio.run(main())
    else:
        uvloop.run(main())
