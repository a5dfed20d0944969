"""Unit tests of the translation functions (one function each, Dagster's own objects)."""

from __future__ import annotations

from dagster import MetadataValue
from dagster._utils.error import SerializableErrorInfo

from telemhq_plugins.dagster._translate import (
    bounded_tags,
    error_from_serializable,
    metrics_from_metadata,
    options_from_tags,
    step_job_name,
)


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
