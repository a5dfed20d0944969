"""The tasks every Celery test runs, registered on a given app (in-process or subprocess)."""

from __future__ import annotations

import time
from typing import Any

from celery import Celery
from celery.exceptions import Ignore

import telemhq_plugins

__all__ = ["configure", "register"]


def configure(app: Celery, broker_url: str, prefix: str) -> None:
    """Broker and result backend on the test's own Redis database and key prefix."""
    app.conf.update(
        broker_url=broker_url,
        result_backend=broker_url,
        broker_transport_options={"global_keyprefix": prefix},
        result_backend_transport_options={"global_keyprefix": prefix},
        broker_connection_retry_on_startup=True,
        task_default_queue=f"{prefix}tasks",
        worker_hijack_root_logger=False,
        worker_prefetch_multiplier=1,
        result_expires=600,
    )


def register(app: Celery, special_token: str) -> dict[str, Any]:
    """The test tasks; ``tests.tokened`` names its tracker token itself (``special_token``)."""

    @app.task(shared=False, name="tests.add")
    def add(x: int, y: int) -> int:
        telemhq_plugins.report(records_processed=x + y, errors=0)
        return x + y

    @app.task(shared=False, name="tests.boom")
    def boom() -> None:
        raise ValueError("boom: the input was empty")

    @app.task(shared=False, name="tests.flaky", bind=True, max_retries=3)
    def flaky(self: Any) -> str:
        if self.request.retries == 0:
            raise self.retry(exc=RuntimeError("transient outage"), countdown=0)
        telemhq_plugins.report(records_processed=1)
        return "ok"

    @app.task(shared=False, name="tests.quiet", telemhq={"enabled": False})
    def quiet() -> str:
        return "unmonitored"

    @app.task(shared=False, name="tests.tokened", telemhq={"token": special_token})
    def tokened() -> str:
        return "tokened"

    @app.task(shared=False, name="tests.ignored")
    def ignored() -> None:
        raise Ignore()

    @app.task(shared=False, name="tests.sleepy", telemhq={"send_start": True})
    def sleepy(seconds: float) -> str:
        time.sleep(seconds)
        return "slept"

    return {
        "add": add,
        "boom": boom,
        "flaky": flaky,
        "quiet": quiet,
        "tokened": tokened,
        "ignored": ignored,
        "sleepy": sleepy,
    }
