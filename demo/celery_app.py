"""The demo's Celery app: three tasks, monitored by one line (``setup(app)``)."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

import telemhq_plugins
import telemhq_plugins.celery

broker = os.environ.get("DEMO_BROKER", "redis://127.0.0.1:6379/15")
app = Celery("demo", broker=broker, backend=broker)
app.conf.update(result_expires=600, broker_connection_retry_on_startup=True)
telemhq_plugins.celery.setup(app)


@app.task(name="demo.load_orders")
def load_orders(rows: int) -> int:
    """A data job: reports how many records it loaded (0 trips an assertion)."""
    telemhq_plugins.report(records_processed=rows, errors=0)
    return rows


@app.task(name="demo.flaky", bind=True, max_retries=3, default_retry_delay=0.2)
def flaky(self: Any) -> str:
    """Fails on its first attempt, then succeeds: one `retry` ping, then `success`."""
    if self.request.retries == 0:
        raise self.retry(exc=ConnectionError("warehouse not ready"))
    return "ok"


@app.task(name="demo.broken")
def broken() -> None:
    """Always fails: a `failure` ping with the error and traceback."""
    raise ValueError("upstream API returned HTTP 503")
