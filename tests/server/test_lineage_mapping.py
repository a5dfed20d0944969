"""The pure parts of the OpenLineage mapping: the tool a producer names, ping ids."""

from __future__ import annotations

import uuid

import pytest
from telemhq_server.lineage.mapping import ping_id, producer_tool


@pytest.mark.parametrize(
    ("producer", "tool"),
    [
        ("https://github.com/OpenLineage/OpenLineage/tree/1.20.0/integration/spark", "spark"),
        ("https://github.com/OpenLineage/OpenLineage/tree/1.20.0/integration/dbt", "dbt"),
        ("https://github.com/OpenLineage/OpenLineage/tree/1.20.0/integration/flink", "flink"),
        ("https://github.com/apache/airflow/tree/providers-openlineage/2.1.0", "airflow"),
        (
            "https://github.com/OpenLineage/OpenLineage/tree/1.54.0/client/python",
            "openlineage-python",
        ),
        ("https://github.com/dagster-io/dagster.git", "dagster"),
        ("https://lineage.example.com/producer/v2", "lineage.example.com"),
        ("urn:acme:etl", "urn:acme:etl"),
    ],
)
def test_it_reads_the_tool_from_the_producer(producer: str, tool: str) -> None:
    assert producer_tool(producer) == tool


def test_ping_ids_are_stable_version_5_uuids_per_run_and_event_type() -> None:
    run = str(uuid.uuid4())
    start, end = ping_id(run, "START"), ping_id(run, "COMPLETE")
    assert start == ping_id(run, "START")
    assert start != end
    assert uuid.UUID(start).version == 5
    assert ping_id(str(uuid.uuid4()), "START") != start
