"""httpx's transport (httpcore) asks for sniffio on every request and falls back to asyncio
when it is missing; a failed import is not cached, so without sniffio each request of every
qstack client (heartbeats, qctl, the lock client) searched sys.path again. anyio 4.11+ no
longer brings sniffio, so qshared depends on it (encode/httpcore discussion #1102)."""

from __future__ import annotations

import sys
from typing import Any

import httpx
from aiohttp import web
from tooling import free_port


class Searches:
    """A meta path finder that finds nothing and counts what the import system asked for."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, name: str, *_: Any) -> None:
        self.names.append(name)


async def test_an_httpx_request_searches_for_no_module() -> None:
    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    searches = Searches()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/")).text == "ok"  # the first request imports what it needs
            sys.meta_path.insert(0, searches)
            try:
                for _ in range(3):
                    assert (await http.get("/")).text == "ok"
            finally:
                sys.meta_path.remove(searches)
    finally:
        await runner.cleanup()
    assert searches.names == []
