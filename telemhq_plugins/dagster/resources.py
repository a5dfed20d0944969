"""``TelemHQResource``: TelemHQ's settings as a Dagster resource.

::

    defs = Definitions(
        jobs=[etl],
        sensors=telemhq_sensors(),
        resources={"telemhq": TelemHQResource(base_url="https://telemhq.example.com")},
    )

The sensors of that ``Definitions`` find it among the code location's resources (whatever its
key); the hooks use it when given its key (``telemhq_hooks(resource_key="telemhq")``). What
the resource leaves unset comes from the usual settings (environment, ``telemhq.toml``): the
``TELEMHQ_*`` variables need no ``EnvVar``, which fails a run before its first op when its
variable is unset.
"""

from __future__ import annotations

import threading
from typing import Any

from dagster import ConfigurableResource, build_resources

from telemhq_plugins.core.config import Settings, settings_or_disabled
from telemhq_plugins.core.delivery import Client
from telemhq_plugins.core.logs import capture_internal_errors
from telemhq_plugins.core.payload import ErrorInfo, Status
from telemhq_plugins.core.runs import report, resolve_target
from telemhq_plugins.dagster._translate import ORCHESTRATOR

__all__ = ["TelemHQResource", "resource_in"]

#: one client per distinct settings in this process (a resource is rebuilt per run or step).
_clients: dict[Settings, Client] = {}
_clients_lock = threading.Lock()
#: the resource found in a code location, by the ``ResourceDefinition`` it was built from.
_found: dict[int, tuple[Any, TelemHQResource]] = {}


class TelemHQResource(ConfigurableResource):  # type: ignore[misc,type-arg,unused-ignore]
    """Where pings go and how: ``base_url``, ``token`` (a tracker token or ping URL for every
    job), ``ping_key`` (a tracker per job, created on its first ping), ``api_key`` (for schedule
    sync; default ``TELEMHQ_API_KEY``), ``timeout`` (seconds per request)."""

    base_url: str | None = None
    token: str | None = None
    ping_key: str | None = None
    api_key: str | None = None
    timeout: float | None = None

    def settings(self) -> Settings:
        """These values over the usual settings (environment, config file, defaults). A value
        that cannot be used turns monitoring off (one ERROR line naming it): never the run."""
        return settings_or_disabled(
            origin=f"Dagster resource {type(self).__name__}",
            base_url=self.base_url,
            token=self.token,
            ping_key=self.ping_key,
            timeout=self.timeout,
        )

    def client(self) -> Client:
        """The delivery client for these settings (one per process and settings)."""
        settings = self.settings()
        with _clients_lock:
            found = _clients.get(settings)
            if found is None:
                found = _clients[settings] = Client(settings)
            return found

    def report(self, **metrics: Any) -> None:
        """``telemhq_plugins.report(...)``: metrics for the ping of the step running here."""
        report(**metrics)

    def ping(
        self,
        status: Status = "success",
        *,
        job: str | None = None,
        error: BaseException | ErrorInfo | None = None,
        **fields: Any,
    ) -> bool:
        """Send one ping of ``job`` (default: the ``token``'s tracker) now, apart from the
        hooks and sensors; True when it was queued. Never raises."""
        queued = False
        with capture_internal_errors("dagster.TelemHQResource.ping"):
            client = self.client()
            target = resolve_target(job, token=self.token, send_start=False, client=client)
            if target is not None:
                run = target.run(job, orchestrator=ORCHESTRATOR, timed=False)
                queued = run.finish(status, error=error, **fields)
        return queued


def resource_in(repository_def: Any) -> TelemHQResource | None:
    """The ``TelemHQResource`` among a code location's resources (built, env vars read), or
    None. Built once per resource definition."""
    if repository_def is None:
        return None
    for key, definition in repository_def.get_top_level_resources().items():
        cls = getattr(definition, "configurable_resource_cls", None)
        if not (isinstance(cls, type) and issubclass(cls, TelemHQResource)):
            continue
        cached = _found.get(id(definition))
        if cached is not None and cached[0] is definition:
            return cached[1]
        with build_resources({key: definition}) as built:
            resource: TelemHQResource = getattr(built, key)
        _found[id(definition)] = (definition, resource)
        return resource
    return None
