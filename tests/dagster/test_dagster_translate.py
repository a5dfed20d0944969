"""Unit tests of the translation functions (one function each, Dagster's own objects)."""

from __future__ import annotations

from dagster import AssetOut, Definitions, MetadataValue, define_asset_job, multi_asset
from dagster._core.execution.api import create_execution_plan
from dagster._utils.error import SerializableErrorInfo

from telemhq_plugins.dagster._translate import (
    asset_key_of,
    bounded_tags,
    error_from_serializable,
    metrics_from_metadata,
    options_from_tags,
    step_job_name,
)
from tests.dagster import fidelity_jobs


def test_numeric_metadata_only_including_mapped_outputs() -> None:
    metadata = {
        "result": {
            "rows": MetadataValue.int(4),
            "ratio": MetadataValue.float(0.5),
            "plain": 7,
            "flag": MetadataValue.bool(True),
            "nan": MetadataValue.float(float("nan")),
            "text": MetadataValue.text("x"),
            "dagster": 1,  # never overwrites the orchestrator block
        },
        "mapped": {"k1": {"bytes": MetadataValue.int(10)}},
    }
    assert metrics_from_metadata(metadata) == {"rows": 4, "ratio": 0.5, "plain": 7, "bytes": 10}


def test_error_unwraps_dagster_wrappers_but_keeps_the_users_chain() -> None:
    root = SerializableErrorInfo("KeyError: 'root cause'\n", ["  File x\n"], "KeyError")
    user = SerializableErrorInfo(
        "pkg.mod.UserError: load failed\n", ["  File y\n"], "UserError", cause=root
    )
    retry = SerializableErrorInfo(
        "dagster._core.execution.plan.utils.RetryRequestedFromPolicy\n",
        [],
        "RetryRequestedFromPolicy",
        cause=user,
    )
    wrapper = SerializableErrorInfo(
        "dagster._core.errors.DagsterExecutionStepExecutionError: Error occurred\n",
        [],
        "DagsterExecutionStepExecutionError",
        cause=retry,
    )
    error = error_from_serializable(wrapper)
    assert error is not None
    assert error.type == "UserError"
    assert error.message == "load failed"
    assert error.traceback is not None
    assert "root cause" in error.traceback
    assert error_from_serializable(None) is None


def test_job_names() -> None:
    assert step_job_name("etl", "load", None) == "etl.load"
    assert step_job_name("etl", "inner.load", None) == "etl.inner.load"
    assert step_job_name("etl", "rows", "warehouse/rows") == "etl.warehouse/rows"
    assert step_job_name("__ephemeral_asset_job__", "rows", "warehouse/rows") == "warehouse/rows"


def test_tags_are_bounded() -> None:
    tags = {f"k{i}": "v" * 500 for i in range(50)}
    out = bounded_tags(tags)
    assert len(out) == 20
    assert all(len(v) == 200 for v in out.values())


def test_options_from_tags() -> None:
    assert options_from_tags(None) == {}
    assert options_from_tags({"telemhq/enabled": "false", "telemhq/token": "abc"}) == {
        "enabled": False,
        "token": "abc",
    }
    assert options_from_tags({"telemhq/send_start": "maybe", "other": "x"}) == {}


def test_the_asset_of_a_step_is_read_from_its_own_outputs() -> None:
    """Inside a graph-backed asset only the op that returns it has it among its outputs; a
    multi-asset step has several (no single name), a subset only the selected ones."""

    @multi_asset(outs={"a": AssetOut(), "b": AssetOut()}, can_subset=True)
    def pair() -> tuple[int, int]:
        return 1, 2

    defs = Definitions.merge(
        fidelity_jobs.DEFS,
        Definitions(
            assets=[pair],
            jobs=[
                define_asset_job("both", selection=["a", "b"]),
                define_asset_job("only_a", selection=["a"]),
            ],
        ),
    )

    def names(job: str) -> dict[str, str | None]:
        plan = create_execution_plan(defs.resolve_job_def(job))
        return {step.key: asset_key_of(step.step_outputs) for step in plan.steps}

    assert names("graph_asset_job") == {
        "cleaned_values.download": None,
        "cleaned_values.clean": "cleaned_values",
    }
    assert names("both") == {"pair": None}
    assert names("only_a") == {"pair": "a"}
