"""Dagster's documented patterns, written the way its documentation shows them, each under the
step hooks: op retries (``RetryPolicy``, a job-wide ``op_retry_policy``, ``RetryRequested``),
retries exhausted, conditional branching on optional outputs, dynamic outputs mapped and
collected, a graph-backed asset, asset checks (a separate check, a blocking one, and checks
inside the asset's own step) and a partitioned asset. Nothing here knows what a ping is:
``test_fidelity`` derives every expected ping from Dagster's event log of the run.

Outcomes depend only on ``context.retry_number`` (Dagster's own count of earlier attempts),
so a run is the same on every machine.
"""

from collections.abc import Iterator

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    Definitions,
    DynamicOut,
    DynamicOutput,
    MaterializeResult,
    OpExecutionContext,
    Out,
    Output,
    RetryPolicy,
    RetryRequested,
    StaticPartitionsDefinition,
    asset,
    asset_check,
    define_asset_job,
    graph_asset,
    job,
    op,
)

from telemhq_plugins.dagster import telemhq_hooks

__all__ = ["DEFS"]

HOOKS = telemhq_hooks()


class FlakyWarehouse(ConnectionError):
    """The user's own transient error."""


# -- retries -------------------------------------------------------------------------------------


@op(retry_policy=RetryPolicy(max_retries=3))
def fetch(context: OpExecutionContext) -> int:
    """Fails its first two attempts, then succeeds (a ``RetryPolicy`` on the op)."""
    if context.retry_number < 2:
        raise FlakyWarehouse(f"attempt {context.retry_number + 1} timed out")
    return 3


@op
def transform(context: OpExecutionContext, rows: int) -> int:
    """Retried by the job's ``op_retry_policy`` once."""
    if context.retry_number == 0:
        raise FlakyWarehouse("lock held by another writer")
    return rows * 2


@op
def publish(context: OpExecutionContext, rows: int) -> None:
    """Asks for its own retry (``RetryRequested``) after a failure it knows to be transient."""
    try:
        if context.retry_number == 0:
            raise FlakyWarehouse("publish endpoint busy")
    except FlakyWarehouse as error:
        raise RetryRequested(max_retries=1, seconds_to_wait=0) from error


@job(hooks=HOOKS, op_retry_policy=RetryPolicy(max_retries=1))
def retried() -> None:
    publish(transform(fetch()))


@op(retry_policy=RetryPolicy(max_retries=2))
def always_down() -> int:
    raise FlakyWarehouse("warehouse unreachable")


@op
def never_reached(rows: int) -> None:
    """Downstream of a step that failed for good: Dagster never runs it."""


@job(hooks=HOOKS)
def retries_exhausted() -> None:
    never_reached(always_down())


# -- conditional branching (optional outputs) ----------------------------------------------------


@op(out={"big": Out(is_required=False), "small": Out(is_required=False)})
def route() -> Iterator[Output[int]]:
    yield Output(5, "small")


@op
def handle_big(rows: int) -> None:
    """Its input is never yielded: Dagster skips the step."""


@op
def handle_small(rows: int) -> None:
    pass


@job(hooks=HOOKS)
def branching() -> None:
    big, small = route()
    handle_big(big)
    handle_small(small)


# -- dynamic outputs -----------------------------------------------------------------------------


@op(out=DynamicOut())
def files() -> Iterator[DynamicOutput[int]]:
    for index in range(3):
        yield DynamicOutput(index, mapping_key=f"file_{index}")


@op(retry_policy=RetryPolicy(max_retries=1))
def parse(context: OpExecutionContext, index: int) -> int:
    """One mapped copy (``file_1``) fails its first attempt."""
    if index == 1 and context.retry_number == 0:
        raise FlakyWarehouse("file_1 still being written")
    return index * 10


@op
def merge(parsed: list[int]) -> int:
    return sum(parsed)


@job(hooks=HOOKS)
def dynamic() -> None:
    merge(files().map(parse).collect())


# -- assets: graph-backed, checks, partitions ----------------------------------------------------


@op
def download() -> list[int]:
    return [1, 2, 3]


@op
def clean(values: list[int]) -> list[int]:
    return [v for v in values if v > 1]


@graph_asset
def cleaned_values() -> list[int]:
    return clean(download())


@asset
def value_count(cleaned_values: list[int]) -> MaterializeResult:
    return MaterializeResult(metadata={"count": len(cleaned_values)})


@asset_check(asset=value_count)
def enough_values() -> AssetCheckResult:
    """A failed check does not fail its step: the step succeeds, the evaluation says failed."""
    return AssetCheckResult(passed=False, metadata={"expected_at_least": 10})


@asset(check_specs=[AssetCheckSpec("not_empty", asset="orders")])
def orders() -> Iterator[MaterializeResult | AssetCheckResult]:
    yield MaterializeResult(metadata={"rows": 4})
    yield AssetCheckResult(check_name="not_empty", passed=True)


@asset_check(asset=orders, blocking=True)
def orders_are_fresh() -> AssetCheckResult:
    """Blocking and failing: Dagster fails this check's step."""
    return AssetCheckResult(passed=False)


@asset(deps=[orders])
def orders_report() -> None:
    """Downstream of a failed blocking check: never materialized."""


graph_asset_job = define_asset_job("graph_asset_job", selection=[cleaned_values], hooks=HOOKS)
checks_job = define_asset_job(
    "checks_job",
    selection=[value_count, enough_values, orders, orders_are_fresh, orders_report],
    hooks=HOOKS,
)

regions = StaticPartitionsDefinition(["eu", "us", "apac"])


@asset(partitions_def=regions)
def sales(context: AssetExecutionContext) -> MaterializeResult:
    return MaterializeResult(metadata={"region_rows": len(context.partition_key)})


partitioned_job = define_asset_job("partitioned_job", selection=[sales], hooks=HOOKS)

DEFS = Definitions(
    assets=[cleaned_values, value_count, orders, orders_report, sales],
    asset_checks=[enough_values, orders_are_fresh],
    jobs=[
        retried,
        retries_exhausted,
        branching,
        dynamic,
        graph_asset_job,
        checks_job,
        partitioned_job,
    ],
)
