"""Which jobs an adapter monitors: globs, and the per-job option that overrides them."""

from __future__ import annotations

import logging

import pytest

from telemhq_plugins.core.policy import JobPolicy, matches, policy_from_kwargs, resolve_policy


def test_globs_exclude_first_then_include() -> None:
    assert matches("etl.load")
    assert not matches("celery.ping", exclude=("celery.*",))
    assert matches("etl.load", include=("etl.*", "web.*"))
    assert not matches("jobs.email", include=("etl.*",))
    assert not matches("etl.tmp_x", include=("etl.*",), exclude=("etl.tmp_*",))
    assert not matches("ETL.load", include=("etl.*",))  # case-sensitive, as job names are


def test_a_job_without_options_follows_the_globs() -> None:
    assert resolve_policy("etl.load", None) == JobPolicy()
    assert resolve_policy("etl.load", None, exclude=("etl.*",)) is None
    assert resolve_policy("web.email", None, include=("etl.*",)) is None


def test_an_explicit_enabled_wins_over_the_globs() -> None:
    assert resolve_policy("etl.x", {"enabled": True}, exclude=("etl.*",)) == JobPolicy()
    assert resolve_policy("web.email", True, include=("etl.*",)) == JobPolicy()
    assert resolve_policy("etl.load", {"enabled": False}, include=("etl.*",)) is None
    assert resolve_policy("etl.load", False) is None


def test_the_option_carries_token_and_start() -> None:
    assert resolve_policy("etl.load", {"token": "abc", "send_start": 1}) == JobPolicy(
        token="abc", send_start=True
    )
    assert resolve_policy("etl.load", {"token": "", "send_start": False}) == JobPolicy(
        send_start=False
    )
    assert resolve_policy("etl.load", "not a mapping") == JobPolicy()


def test_keyword_options_make_a_policy_and_an_unknown_one_turns_monitoring_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="telemhq")
    assert policy_from_kwargs("tok", True, {"enabled": True}, where="acme()") == JobPolicy(
        token="tok", send_start=True
    )
    assert policy_from_kwargs("tok", True, {"enabled": False}, where="acme()") is None
    assert caplog.records == []
    assert policy_from_kwargs(None, None, {"tokn": "x"}, where="acme()") is None
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert "'tokn'" in record.getMessage()
    assert "acme()" in record.getMessage()
    assert "token" in record.getMessage()  # the closest valid name
    caplog.clear()
    # ``valid`` narrows what a helper takes (a DAG run's callbacks send no start)
    assert policy_from_kwargs(None, None, {"send_start": 1}, where="b()", valid=("token",)) is None
    assert "'send_start' (b())" in caplog.records[0].getMessage()
