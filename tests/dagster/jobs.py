"""The Dagster definitions the tests run (importable by a daemon's workspace too)."""

import os
import time
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    OpExecutionContext,
    Output,
    RetryPolicy,
    StaticPartitionsDefinition,
    asset,
    define_asset_job,
    job,
    op,
)

import telemhq_plugins
from telemhq_plugins.dagster import telemhq_hooks

__all__ = [
    "assets_job",
    "broken",
    "counted",
    "flaky_job",
    "letters",
    "plain_job",
    "rows",
]

HOOKS = telemhq_hooks()


class LoadError(RuntimeError):
    """The user's own error type (what a failure ping must name)."""


@op
def extract(context: OpExecutionContext) -> Output[int]:
    telemhq_plugins.report(records_processed=450, source="orders")
    return Output(
        450,
        metadata={
            "rows": 450,
            "ratio": MetadataValue.float(0.25),
            "label": "text is not a metric",
        },
    )


@op
def load(context: OpExecutionContext, count: int) -> None:
    context.log.info("loaded %s", count)


@job(hooks=HOOKS)
def plain_job() -> None:
    load(extract())


@op
def explode() -> None:
    raise LoadError("warehouse refused the batch")


@job(hooks=HOOKS)
def broken() -> None:
    explode()


@op(retry_policy=RetryPolicy(max_retries=2))
def sometimes(context: OpExecutionContext) -> int:
    """Fails its first attempt: the marker file says whether one already happened."""
    marker = Path(os.environ["TELEMHQ_TEST_MARKER"]) / context.run_id
    if not marker.exists():
        marker.write_text("failed once")
        raise ConnectionError("upstream timed out")
    time.sleep(0.05)
    return 1


@job(hooks=HOOKS)
def flaky_job() -> None:
    sometimes()


letters = StaticPartitionsDefinition(["a", "b", "c"])


@asset(partitions_def=letters, key_prefix=["warehouse"])
def rows(context: AssetExecutionContext) -> MaterializeResult:
    telemhq_plugins.report(partition_seen=1)
    return MaterializeResult(metadata={"row_count": 12})


assets_job = define_asset_job("assets_job", selection=[rows], hooks=HOOKS)


@asset(hooks=HOOKS)
def counted() -> MaterializeResult:
    return MaterializeResult(metadata={"n": MetadataValue.int(3)})
