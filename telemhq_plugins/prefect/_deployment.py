"""The name of a flow run's deployment, for the ``deployment`` of the ``prefect`` block.

Prefect's ``FlowRun`` carries its deployment's id, not its name. Where the name comes from:

- In the flow run's own process, from ``PREFECT__DEPLOYMENT_NAME``: Prefect's workers and
  runners set it in the process they start for a run (Prefect's own API attribution reads it).
  No network call there: the user's flow never waits on the Prefect API for a ping's details.
- In a runner's process (a served run's ``on_cancellation`` / ``on_crashed``, which Prefect
  calls there) that variable is not the run's: the Prefect API is asked, once per deployment,
  in a daemon thread waited for at most :data:`LOOKUP_TIMEOUT` (Prefect's client retries for
  up to a minute on its own when the API is down). A late answer still fills the cache.

Nothing here raises: without a name the ping carries the deployment's id only.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from typing import Any

from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext

from telemhq_plugins.core.logs import log_once, logger

__all__ = [
    "LOOKUP_TIMEOUT",
    "add_looked_up_name",
    "deployment_name",
    "looked_up_name",
    "name_from_environment",
]

#: the longest a hook waits for the Prefect API's answer (seconds).
LOOKUP_TIMEOUT = 2.0
#: deployment names kept (a runner serves a handful; a bound all the same).
_MAX_CACHED = 1_000
#: what Prefect's workers and runners set in a flow run's process.
_NAME_VARIABLE = "PREFECT__DEPLOYMENT_NAME"
_ID_VARIABLE = "PREFECT__DEPLOYMENT_ID"
_RUN_VARIABLE = "PREFECT__FLOW_RUN_ID"

_lock = threading.Lock()
_names: dict[str, str] = {}  # deployment id -> name, as the API answered
_pending: dict[str, threading.Thread] = {}  # deployment id -> the lookup in flight


def deployment_name(flow_run: Any, *, elsewhere: bool = False) -> str | None:
    """The name of ``flow_run``'s deployment as known without a network call, None when
    unknown (or the run has none). ``elsewhere``: the run may execute in another process (a
    runner's hooks), whose variables then count only when they name this deployment's id."""
    deployment_id = getattr(flow_run, "deployment_id", None)
    if deployment_id is None:
        return None
    # A label on the run itself is the run's own (Prefect 3.9 does not set it; others may).
    label = (getattr(flow_run, "labels", None) or {}).get("prefect.deployment.name")
    if label:
        return str(label)
    if elsewhere and not _in_own_process(flow_run):
        # A runner's own variables, if any, are those of the run that started the runner.
        name = os.environ.get(_NAME_VARIABLE)
        return name if name and os.environ.get(_ID_VARIABLE) == str(deployment_id) else None
    return name_from_environment(flow_run)


def add_looked_up_name(details: dict[str, Any] | None, flow_run: Any) -> None:
    """Complete ``details["deployment"]`` (a ``prefect`` block) with the name from the Prefect
    API (:func:`looked_up_name`, bounded) when it has none and ``flow_run`` does not execute in
    this process: the run's own process never waits on the network."""
    deployment = (details or {}).get("deployment")
    if not isinstance(deployment, dict) or deployment.get("name") or _in_own_process(flow_run):
        return
    name = looked_up_name(str(deployment["id"]))
    if name:
        deployment["name"] = name


def name_from_environment(flow_run: Any) -> str | None:
    """``PREFECT__DEPLOYMENT_NAME`` when it belongs to ``flow_run``'s deployment, else None.

    The variable is inherited by every child process, so it is trusted only for a deployed run
    (a subflow, or a flow called directly, has no deployment id of its own) and only when
    nothing says it is another run's: ``PREFECT__DEPLOYMENT_ID`` (set by workers with it) must
    be this run's deployment; without it (``serve()`` sets the name alone),
    ``PREFECT__FLOW_RUN_ID``, where set, must be this run. A name is never guessed."""
    deployment_id = getattr(flow_run, "deployment_id", None)
    name = os.environ.get(_NAME_VARIABLE)
    if deployment_id is None or not name:
        return None
    env_deployment = os.environ.get(_ID_VARIABLE)
    if env_deployment:
        return name if env_deployment == str(deployment_id) else None
    env_run = os.environ.get(_RUN_VARIABLE)
    if env_run and env_run != str(getattr(flow_run, "id", "")):
        return None
    return name


def looked_up_name(deployment_id: str, timeout: float = LOOKUP_TIMEOUT) -> str | None:
    """The deployment's name from the cache, else from the Prefect API within ``timeout``
    seconds (None past it, or on any error). One lookup per deployment is in flight at a
    time; a caller that finds one waits for it rather than starting another."""
    with _lock:
        name = _names.get(deployment_id)
        if name is not None:
            return name
        lookup = _pending.get(deployment_id)
        if lookup is None:
            # The caller's context goes along: Prefect's settings (the API URL) live in it.
            context = contextvars.copy_context()
            lookup = threading.Thread(
                target=context.run,
                args=(_read_name, deployment_id),
                name="telemhq-prefect-deployment-name",
                daemon=True,  # an unreachable API never holds the process open
            )
            _pending[deployment_id] = lookup
            lookup.start()
    lookup.join(timeout)
    with _lock:
        return _names.get(deployment_id)


def _read_name(deployment_id: str) -> None:
    name: str | None = None
    try:
        with get_client(sync_client=True) as client:
            name = str(client.read_deployment(deployment_id).name)
    except Exception as exc:  # unreachable API, unknown deployment: the ping keeps the id
        log_once(
            logger,
            logging.WARNING,
            ("prefect deployment name", type(exc)),
            "TelemHQ could not read a deployment's name from the Prefect API (%s: %s); "
            "pings carry the deployment's id only",
            type(exc).__name__,
            exc,
        )
    finally:
        with _lock:
            _pending.pop(deployment_id, None)
            if name:
                if len(_names) >= _MAX_CACHED:
                    _names.pop(next(iter(_names)))
                _names[deployment_id] = name


def _in_own_process(flow_run: Any) -> bool:
    """Whether ``flow_run`` executes in this process (by Prefect's run context or the run id a
    worker or runner gave the process): then no lookup, whatever the caller asked."""
    run_id = str(getattr(flow_run, "id", ""))
    context_run = getattr(FlowRunContext.get(), "flow_run", None)
    if context_run is not None and str(context_run.id) == run_id:
        return True
    return os.environ.get(_RUN_VARIABLE) == run_id
