"""dbt with ``dbt-ol`` (OpenLineage) against the reference server."""
