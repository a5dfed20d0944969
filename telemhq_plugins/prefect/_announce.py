"""How in-process hooks tell the watcher that they report a flow run themselves.

When a flow run opens in a process with our hooks (or instrument-all), the hooks emit one
Prefect event, :data:`MONITORED_EVENT`, about that flow run. The watcher follows it with the
state events: for a run so announced it leaves the final ping to the hooks (whose ping carries
the run's metrics) and sends its own only as a late fallback, under the same ``ping_id``, so the
server keeps the hooks' ping even when its delivery takes longer than the watcher's.

``emit_event`` only queues the event for Prefect's own events worker (a background thread,
drained at exit): the flow never waits on the network for it.
"""

from __future__ import annotations

from prefect.events import emit_event

from telemhq_plugins.core.logs import capture_internal_errors

__all__ = ["FLOW_RUN_RESOURCE", "MONITORED_EVENT", "announce_monitored"]

#: the event's name (outside ``prefect.``, which Prefect keeps for its own events).
MONITORED_EVENT = "telemhq.flow-run.monitored"
#: the prefix of a flow run's resource id in Prefect's events.
FLOW_RUN_RESOURCE = "prefect.flow-run."


def announce_monitored(flow_run_id: str) -> None:
    """Tell the watcher that this process's hooks report ``flow_run_id``. Never raises."""
    with capture_internal_errors("prefect hooks announcement"):
        emit_event(
            event=MONITORED_EVENT,
            resource={"prefect.resource.id": FLOW_RUN_RESOURCE + flow_run_id},
        )
