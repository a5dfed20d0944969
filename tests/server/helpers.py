"""Helpers for the server tests: an in-process client for the ASGI app, API shortcuts, and a
monitored job run in a shell that took the server's ``export`` line.

:class:`AppClient` runs the app's lifespan (so the group-commit writer runs as in
production) on an event loop in a background thread, and sends requests through
``httpx.ASGITransport``; its methods are synchronous and return ``httpx.Response``.
(Starlette's AppClient warns that its httpx support is deprecated, and warnings are errors.)
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx

ADMIN_KEY = "thq_test_admin_key"
T = TypeVar("T")


class AppClient:
    def __init__(self, app: Any, headers: dict[str, str] | None = None) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._to_app: asyncio.Queue[dict[str, Any]] | None = None
        self._from_app: asyncio.Queue[dict[str, Any]] | None = None
        self._lifespan: Any = None
        self.call(self._startup)
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver",
            headers=headers or {},
        )

    def call(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``fn()`` on the app's event loop and return its result."""
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(timeout=60)

    async def _startup(self) -> None:
        self._to_app, self._from_app = asyncio.Queue(), asyncio.Queue()
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._lifespan = asyncio.ensure_future(
            self.app(scope, self._to_app.get, self._from_app.put)
        )
        await self._to_app.put({"type": "lifespan.startup"})
        message = await self._from_app.get()
        assert message["type"] == "lifespan.startup.complete", message

    async def _shutdown(self) -> None:
        assert self._to_app is not None
        assert self._from_app is not None
        await self.client.aclose()
        await self._to_app.put({"type": "lifespan.shutdown"})
        message = await self._from_app.get()
        assert message["type"] == "lifespan.shutdown.complete", message
        await self._lifespan

    def close(self) -> None:
        self.call(self._shutdown)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    def __enter__(self) -> AppClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            return await self.client.request(method, url, **kwargs)

        return self.call(send)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)

    def head(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("HEAD", url, **kwargs)

    def options(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("OPTIONS", url, **kwargs)

    def gather(self, calls: list[Callable[[], Awaitable[T]]]) -> list[T]:
        """Run several coroutines concurrently on the app's loop (one batch for the writer)."""

        async def run() -> list[T]:
            return list(await asyncio.gather(*(c() for c in calls)))

        return self.call(run)


def make_tracker(client: AppClient, **fields: Any) -> dict[str, Any]:
    fields.setdefault("name", f"job {uuid.uuid4().hex[:8]}")
    response = client.post("/api/v1/trackers", json=fields)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def runs_of(client: AppClient, tracker_id: int, **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/trackers/{tracker_id}/runs", params={"limit": 500, **params})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def tracker_of(client: AppClient, tracker_id: int) -> dict[str, Any]:
    response = client.get(f"/api/v1/trackers/{tracker_id}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def flips_of(client: AppClient, tracker_id: int) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/trackers/{tracker_id}/flips")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


#: A job monitored with the plugins' ``monitored`` block, named "first ping" (slug first-ping).
_FIRST_PING_JOB = (
    "import telemhq_plugins\nwith telemhq_plugins.monitored('first ping'):\n    pass\n"
)


def run_job_after(export_line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a monitored Python job (job name ``first ping``) in a bash shell that first ran
    ``export_line`` exactly as printed, with no other ``TELEMHQ_`` variable set: what a user
    does after pasting the line. The job flushes its ping before it exits."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMHQ_")}
    return subprocess.run(
        ["bash", "-c", export_line + '\nexec "$0" -c "$1"', sys.executable, _FIRST_PING_JOB],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
