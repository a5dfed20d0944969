"""Settings resolution (explicit > env > file > defaults) and token resolution for a job."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest

from telemhq_plugins.core.config import (
    DEFAULT_BASE_URL,
    ConfigError,
    env_flag,
    load_settings,
    parse_flag,
    slugify,
)


def test_it_uses_defaults_when_nothing_is_configured(tmp_path: Path) -> None:
    settings = load_settings(env={}, config_file=None)
    assert settings.base_url == DEFAULT_BASE_URL
    assert settings.timeout == 15.0
    assert settings.ping_url_for("etl.load") is None


def test_it_prefers_explicit_over_env_over_file(tmp_path: Path) -> None:
    config = tmp_path / "telemhq.toml"
    config.write_text('[telemhq]\nbase_url = "http://file:1"\ntoken = "file-tok"\ntimeout = 3\n')
    env = {"TELEMHQ_CONFIG": str(config), "TELEMHQ_TOKEN": "env-tok"}
    settings = load_settings(env=env, token="arg-tok")
    assert settings.token == "arg-tok"
    assert settings.base_url == "http://file:1"
    assert settings.timeout == 3.0
    assert settings.sources == {
        "base_url": str(config),
        "token": "argument",
        "timeout": str(config),
    }
    assert load_settings(env=env).token == "env-tok"
    assert load_settings(env=env).ping_url_for("any") == "http://file:1/ping/env-tok"


def test_it_reads_the_environment_but_never_writes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEMHQ_BASE_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("TELEMHQ_DISABLED", "yes")
    before = dict(os.environ)
    settings = load_settings()
    assert settings.base_url == "http://127.0.0.1:9"
    assert settings.disabled is True
    assert dict(os.environ) == before


def test_it_resolves_tokens_by_precedence(tmp_path: Path) -> None:
    trackers = tmp_path / "trackers.json"
    trackers.write_text(json.dumps({"etl_daily.*": "tok-etl", "ml.*": "https://x.test/ping/ml"}))
    settings = load_settings(
        env={
            "TELEMHQ_BASE_URL": "http://srv",
            "TELEMHQ_TRACKERS": str(trackers),
            "TELEMHQ_PING_KEY": "pk",
            "TELEMHQ_TOKEN": "fallback",
        }
    )
    assert settings.ping_url_for("etl_daily.load", token="explicit") == "http://srv/ping/explicit"
    assert settings.ping_url_for("etl_daily.load") == "http://srv/ping/tok-etl"
    assert settings.ping_url_for("ml.train") == "https://x.test/ping/ml"
    assert settings.ping_url_for("Other Job.Step") == "http://srv/ping/pk/other-job-step"
    assert settings.ping_url_for(None) == "http://srv/ping/fallback"


def test_it_reads_a_toml_trackers_map(tmp_path: Path) -> None:
    trackers = tmp_path / "trackers.toml"
    trackers.write_text('[trackers]\n"reports.*" = "tok-r"\n')
    settings = load_settings(env={"TELEMHQ_TRACKERS": str(trackers)})
    assert settings.ping_url_for("reports.weekly") == f"{DEFAULT_BASE_URL}/ping/tok-r"
    assert settings.ping_url_for("other") is None


def test_it_prefers_a_full_ping_url_over_a_token() -> None:
    settings = load_settings(
        env={"TELEMHQ_PING_URL": "http://a/ping/u", "TELEMHQ_TOKEN": "t"}, config_file=None
    )
    assert settings.ping_url_for("job") == "http://a/ping/u"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TELEMHQ_TIMEOUT": "soon"}, "TELEMHQ_TIMEOUT: invalid value 'soon' for timeout"),
        ({"TELEMHQ_TIMEOUT": "0"}, "must be a positive number of seconds"),
        ({"TELEMHQ_DISABLED": "maybe"}, "expected 1/0, true/false"),
        ({"TELEMHQ_QUEUE_SIZE": "-1"}, "must not be negative"),
        ({"TELEMHQ_CONFIG": "/nonexistent/telemhq.toml"}, "does not exist"),
        ({"TELEMHQ_TRACKERS": "/nonexistent/t.toml"}, "cannot be read"),
    ],
)
def test_it_names_the_source_of_a_bad_value(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_settings(env=env)


def test_it_rejects_unknown_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings(env={}, tokn="x")
    config = tmp_path / "c.toml"
    config.write_text("tokn = 'x'\n")
    with pytest.raises(ConfigError, match="unknown setting 'tokn'"):
        load_settings(env={}, config_file=config)
    config.write_text("token = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(env={}, config_file=config)


def test_it_reads_telemhq_toml_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "telemhq.toml").write_text('ping_key = "pk"\n[trackers]\n"a.*" = "tok-a"\n')
    settings = load_settings(env={})
    assert settings.ping_url_for("a.b") == f"{DEFAULT_BASE_URL}/ping/tok-a"
    assert settings.ping_url_for("c") == f"{DEFAULT_BASE_URL}/ping/pk/c"


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("etl_daily.Load Orders", "etl-daily-load-orders"),
        ("---", "job"),
        ("Ünïcode Job", "unicode-job"),
    ],
)
def test_it_slugifies_job_names(name: str, slug: str) -> None:
    assert slugify(name) == slug


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", True),
        (" TRUE ", True),
        ("Yes", True),
        ("on", True),
        (True, True),
        ("0", False),
        ("false", False),
        ("NO", False),
        ("off", False),
        ("", False),
        ("  ", False),
        (False, False),
        (1, True),
        (0, False),
    ],
)
def test_a_switch_reads_every_spelling(value: object, expected: bool) -> None:
    assert parse_flag(value) is expected


@pytest.mark.parametrize("value", ["maybe", "2", "enabled", None])
def test_a_switch_refuses_what_it_cannot_read_and_names_it(value: object) -> None:
    with pytest.raises(ConfigError, match=re.escape(repr(value))):
        parse_flag(value)


def test_a_settings_switch_uses_the_same_reader() -> None:
    assert load_settings(env={"TELEMHQ_SEND_START": " On "}, config_file=os.devnull).send_start
    assert not load_settings(env={"TELEMHQ_DISABLED": ""}, config_file=os.devnull).disabled


def test_an_environment_switch_falls_back_to_its_default_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert env_flag("TELEMHQ_X_AUTO", env={"TELEMHQ_X_AUTO": "yes"}) is True
    assert env_flag("TELEMHQ_X_AUTO", env={}) is False
    assert env_flag("TELEMHQ_X_AUTO", default=True, env={}) is True
    caplog.set_level(logging.WARNING, logger="telemhq")
    bad = {"TELEMHQ_X_SWITCH": "sometimes"}
    assert env_flag("TELEMHQ_X_SWITCH", default=True, env=bad) is True
    assert env_flag("TELEMHQ_X_SWITCH", default=True, env=bad) is True
    warnings = [r.getMessage() for r in caplog.records if "TELEMHQ_X_SWITCH" in r.getMessage()]
    assert len(warnings) == 1
    assert "'sometimes'" in warnings[0]
    assert "using the default, on" in warnings[0]


def test_an_environment_switch_reads_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TELEMHQ_X_FROM_ENV", "1")
    assert env_flag("TELEMHQ_X_FROM_ENV") is True
    monkeypatch.setenv("TELEMHQ_X_FROM_ENV", "off")
    assert env_flag("TELEMHQ_X_FROM_ENV", default=True) is False


def test_the_spool_bound_and_replay_interval_come_from_env_and_file(tmp_path: Path) -> None:
    defaults = load_settings(env={}, config_file=os.devnull)
    assert (defaults.spool_max_bytes, defaults.replay_interval) == (50_000_000, 30.0)
    config = tmp_path / "telemhq.toml"
    config.write_text("spool_max_bytes = 1000000\nreplay_interval = 5\n")
    from_file = load_settings(env={}, config_file=config)
    assert (from_file.spool_max_bytes, from_file.replay_interval) == (1_000_000, 5.0)
    env = {"TELEMHQ_SPOOL_MAX_BYTES": "2048", "TELEMHQ_REPLAY_INTERVAL": "0.5"}
    from_env = load_settings(env=env, config_file=config)
    assert (from_env.spool_max_bytes, from_env.replay_interval) == (2048, 0.5)
    assert from_env.sources["replay_interval"] == "TELEMHQ_REPLAY_INTERVAL"
    with pytest.raises(ConfigError, match="TELEMHQ_REPLAY_INTERVAL: invalid value '0'"):
        load_settings(env={"TELEMHQ_REPLAY_INTERVAL": "0"}, config_file=os.devnull)
