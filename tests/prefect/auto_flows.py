"""A script whose flows carry no TelemHQ code except one with explicit hooks: run with
``PREFECT_PLUGINS_ENABLED=1 TELEMHQ_PREFECT_AUTO=1 TELEMHQ_PREFECT_TASKS=1``, Prefect's plugin
system instruments the process at ``import prefect``."""

from __future__ import annotations

from prefect import flow, task

import telemhq_plugins
from telemhq_plugins.prefect import PrefectInstrumentor, hooks, task_hooks


@task
def transform(n: int) -> int:
    telemhq_plugins.report(rows_transformed=n)
    return n * 2


@flow(name="auto-child")
def auto_child(n: int) -> int:
    return transform(n)


@flow(name="auto-parent")
def auto_parent() -> int:
    telemhq_plugins.report(records_processed=7)
    return auto_child(3) + transform(1)


@task(name="explicit-task", **task_hooks())
def explicit_task() -> int:
    return 1


@flow(name="auto-explicit", **hooks())
def auto_explicit() -> int:
    return explicit_task()


if __name__ == "__main__":
    assert PrefectInstrumentor().is_instrumented, "the plugin did not instrument"
    assert auto_parent() == 8
    assert auto_explicit() == 1
    # A copy made by with_options carries our hooks too: still one ping per event.
    assert auto_explicit.with_options(name="auto-explicit-copy")() == 1
