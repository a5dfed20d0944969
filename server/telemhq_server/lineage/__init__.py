"""OpenLineage in: ``POST /api/v1/lineage`` takes the RunEvents that Airflow's OpenLineage
provider, Spark, dbt-ol, Flink and the OpenLineage clients send, and stores each as a run of
the tracker ``<namespace>/<job name>``, like a ping.

- :mod:`.schema`: the event checked against the spec version it declares (vendored in
  ``spec/``);
- :mod:`.mapping`: the event as a ping (tracker, status, run id, metrics, parent);
- :mod:`.seeding`: the schedule an Airflow DAG run's event gives the tracker it creates;
- :mod:`.endpoint`: the route (keys, compression, pairing a START with its end).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import Route

from telemhq_server.lineage.endpoint import LINEAGE_PATH, LineageEndpoint

if TYPE_CHECKING:
    from telemhq_server.host import TelemHQ

__all__ = ["LINEAGE_PATH", "register"]


def register(app: TelemHQ) -> None:
    """Add ``POST /api/v1/lineage``, served in front of the framework as pings are."""
    endpoint = LineageEndpoint(app)
    app.add_ingest_route(LINEAGE_PATH, endpoint)
    app.add_routes([Route(LINEAGE_PATH, endpoint, methods=["POST"])])
