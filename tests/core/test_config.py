"""Settings resolution (explicit > env > file > defaults) and token resolution for a job."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest

from telemhq_plugins.core import get_client, monitor, set_client
from telemhq_plugins.core.config import (
    DEFAULT_BASE_URL,
    ConfigError,
    env_flag,
    env_setting,
    load_settings,
    parse_flag,
    settings_or_disabled,
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
        (
            {"TELEMHQ_TIMEOUT": "soon"},
            "TELEMHQ_TIMEOUT='soon' (environment): not a number; "
            "expected a number of seconds above 0 (default 15)",
        ),
        (
            {"TELEMHQ_TIMEOUT": "0"},
            "TELEMHQ_TIMEOUT='0' (environment): out of range; expected a number of seconds",
        ),
        (
            {"TELEMHQ_MAX_RETRIES": "-1"},
            "TELEMHQ_MAX_RETRIES='-1' (environment): out of range; "
            "expected a whole number, 0 or more (default 3)",
        ),
        (
            {"TELEMHQ_DISABLED": "maybe"},
            "TELEMHQ_DISABLED='maybe' (environment): not a switch; expected 1/0, true/false",
        ),
        (
            {"TELEMHQ_CELERY_AUTO": "maybe"},
            "TELEMHQ_CELERY_AUTO='maybe' (environment): not a switch",
        ),
        (
            {"TELEMHQ_BASE_URL": "127.0.0.1:8000"},
            "TELEMHQ_BASE_URL='127.0.0.1:8000' (environment): expected an http:// or https://",
        ),
        ({"TELEMHQ_CONFIG": "/nonexistent/telemhq.toml"}, "no such file"),
        (
            {"TELEMHQ_TRACKERS": "/nonexistent/t.toml"},
            "TELEMHQ_TRACKERS='/nonexistent/t.toml' (environment): cannot be read",
        ),
    ],
)
def test_it_names_the_setting_its_value_its_source_and_what_is_valid(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(env=env, config_file=None)


def test_it_names_an_unknown_setting_with_the_closest_valid_one(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=re.escape("unknown setting 'tokn' (argument): did you mean 'token'?")
    ):
        load_settings(env={}, tokn="x")
    config = tmp_path / "c.toml"
    config.write_text("[telemhq]\ntimout = 5\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(env={}, config_file=config)
    assert (
        str(caught.value)
        == f"unknown setting 'timout' in {config} [telemhq]: did you mean 'timeout'?"
    )
    config.write_text("colour = 'blue'\n")
    with pytest.raises(
        ConfigError, match=r"unknown setting 'colour' in .*: expected one of base_url"
    ):
        load_settings(env={}, config_file=config)
    config.write_text("token = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(env={}, config_file=config)


def test_a_bad_value_in_the_file_is_named_with_the_file(tmp_path: Path) -> None:
    config = tmp_path / "telemhq.toml"
    config.write_text("[telemhq]\nmax_retries = -1\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(env={}, config_file=config)
    assert str(caught.value) == (
        f"max_retries = -1 in {config}: out of range; "
        "expected a whole number, 0 or more (default 3)"
    )
    config.write_text("send_start = 'sometimes'\n")
    with pytest.raises(
        ConfigError, match=re.escape(f"send_start = 'sometimes' in {config}: not a switch")
    ):
        load_settings(env={}, config_file=config)
    config.write_text("token = 5\n")
    with pytest.raises(ConfigError, match=re.escape(f"token = 5 in {config}: expected a string")):
        load_settings(env={}, config_file=config)


def test_explicit_values_are_named_with_their_origin() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={}, config_file=os.devnull, origin="Dagster resource X", timeout=-1.0)
    assert str(caught.value).startswith("timeout=-1.0 (Dagster resource X): out of range")


def test_telemhq_and_trackers_tables_are_read_together(tmp_path: Path) -> None:
    config = tmp_path / "telemhq.toml"
    config.write_text(
        "[telemhq]\n"
        'base_url = "http://127.0.0.1:8000"\n'
        'ping_key = "pk"\n'
        "\n"
        "[trackers]\n"
        '"etl_daily.*" = "tok_etl"\n'
        '"ml.train" = "https://telemhq.com/ping/tok_ml"\n'
        "\n"
        "[[jobs]]\n"
        'name = "etl_daily.load"\n'
    )
    settings = load_settings(env={}, config_file=config)
    assert settings.ping_url_for("etl_daily.load") == "http://127.0.0.1:8000/ping/tok_etl"
    assert settings.ping_url_for("ml.train") == "https://telemhq.com/ping/tok_ml"
    assert settings.ping_url_for("other") == "http://127.0.0.1:8000/ping/pk/other"


def test_the_file_takes_a_trackers_table_under_telemhq_or_a_trackers_path(tmp_path: Path) -> None:
    config = tmp_path / "telemhq.toml"
    config.write_text('[telemhq]\ntoken = "t"\n[telemhq.trackers]\n"a.*" = "tok-a"\n')
    assert load_settings(env={}, config_file=config).ping_url_for("a.b").endswith("/ping/tok-a")
    trackers = tmp_path / "trackers.json"
    trackers.write_text(json.dumps({"b.*": "tok-b"}))
    config.write_text(f"trackers = {json.dumps(str(trackers))}\n")
    assert load_settings(env={}, config_file=config).ping_url_for("b.c").endswith("/ping/tok-b")
    config.write_text('token = "t"\n[telemhq]\ntoken = "u"\n')
    with pytest.raises(ConfigError, match="token is set twice"):
        load_settings(env={}, config_file=config)


def _documented_variables() -> list[str]:
    """Every ``TELEMHQ_*`` variable of the client tables of docs/configuration.md."""
    text = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    client = text.split("## The reference server")[0]
    return sorted(set(re.findall(r"^\| `(TELEMHQ_[A-Z_]+)`", client, flags=re.M)))


def test_every_documented_setting_is_accepted_in_the_file_in_lower_case(tmp_path: Path) -> None:
    values = {
        "disabled": "false", "send_start": "true", "timeout": "3", "max_retries": "0",
        "queue_size": "10", "flush_timeout": "1", "spool_max_bytes": "0",
        "replay_interval": "5", "base_url": '"http://127.0.0.1:1"', "ping_url": '"http://x/ping/u"',
        "agent": '"auto"',
    }  # fmt: skip
    names = [name for name in _documented_variables() if name != "TELEMHQ_CONFIG"]
    assert "TELEMHQ_API_KEY" in names
    assert "TELEMHQ_CELERY_AUTO" in names
    trackers = tmp_path / "trackers.toml"
    trackers.write_text('"x" = "tok"\n')
    lines = []
    for name in names:
        key = name.removeprefix("TELEMHQ_").lower()
        default = json.dumps(str(trackers)) if key == "trackers" else '"1"'
        lines.append(f"{key} = {values.get(key, default)}")
    config = tmp_path / "telemhq.toml"
    config.write_text("[telemhq]\n" + "\n".join(lines) + "\n")
    settings = load_settings(env={}, config_file=config)
    assert settings.api_key == "1"
    assert settings.ping_url_for("x").endswith("/ping/tok")
    assert env_flag("TELEMHQ_CELERY_AUTO", env={"TELEMHQ_CONFIG": str(config)}) is True


def test_the_api_key_is_a_setting_never_shown() -> None:
    settings = load_settings(env={"TELEMHQ_API_KEY": "thq_secret"}, config_file=os.devnull)
    assert settings.api_key == "thq_secret"
    assert "thq_secret" not in repr(settings)


def test_a_bad_setting_turns_monitoring_off_with_one_error_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="telemhq")
    env = {"TELEMHQ_TIMEOUT": "abc", "TELEMHQ_TOKEN": "t"}
    for _ in range(3):
        settings = settings_or_disabled(env=env, config_file=os.devnull)
        assert settings.disabled
        assert settings.ping_url_for("job") is None
    [line] = [r.getMessage() for r in caplog.records if "TELEMHQ_TIMEOUT" in r.getMessage()]
    assert line == (
        "TelemHQ: monitoring is off, the job runs as without it: "
        "TELEMHQ_TIMEOUT='abc' (environment): not a number; "
        "expected a number of seconds above 0 (default 15)"
    )
    assert "\n" not in line


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


def test_an_unreadable_switch_turns_monitoring_off_with_one_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert env_flag("TELEMHQ_X_AUTO", env={"TELEMHQ_X_AUTO": "yes"}) is True
    assert env_flag("TELEMHQ_X_AUTO", env={}) is False
    assert env_flag("TELEMHQ_X_AUTO", default=True, env={}) is True
    caplog.set_level(logging.WARNING, logger="telemhq")
    bad = {"TELEMHQ_X_SWITCH": "sometimes"}
    assert env_flag("TELEMHQ_X_SWITCH", default=True, env=bad) is False
    assert env_flag("TELEMHQ_X_SWITCH", default=True, env=bad) is False
    errors = [r for r in caplog.records if "TELEMHQ_X_SWITCH" in r.getMessage()]
    assert [r.levelno for r in errors] == [logging.ERROR]
    assert "TELEMHQ_X_SWITCH='sometimes' (environment): not a switch" in errors[0].getMessage()


def test_an_adapter_setting_comes_from_the_environment_else_the_file(tmp_path: Path) -> None:
    config = tmp_path / "telemhq.toml"
    config.write_text('airflow_include = "etl_*"\nprefect_tasks = true\n')
    env = {"TELEMHQ_CONFIG": str(config)}
    assert env_setting("TELEMHQ_AIRFLOW_INCLUDE", env=env) == "etl_*"
    assert env_flag("TELEMHQ_PREFECT_TASKS", env=env) is True
    assert (
        env_setting("TELEMHQ_AIRFLOW_INCLUDE", env={**env, "TELEMHQ_AIRFLOW_INCLUDE": "x"}) == "x"
    )
    assert env_setting("TELEMHQ_AIRFLOW_EXCLUDE", env=env) is None


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
    with pytest.raises(ConfigError, match=r"TELEMHQ_REPLAY_INTERVAL='0' .*: out of range"):
        load_settings(env={"TELEMHQ_REPLAY_INTERVAL": "0"}, config_file=os.devnull)


@pytest.mark.parametrize(
    ("env", "toml"),
    [
        # values of their own: the ERROR line is logged once per process and message
        ({"TELEMHQ_TIMEOUT": "not-a-number"}, None),
        ({"TELEMHQ_MAX_RETRIES": "-7"}, None),
        ({}, "[telemhq]\ntimout = 5\n"),
    ],
)
def test_monitor_runs_the_function_exactly_as_without_monitoring(
    env: dict[str, str],
    toml: str | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for name in [k for k in os.environ if k.startswith("TELEMHQ_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    if toml is not None:
        (tmp_path / "telemhq.toml").write_text(toml)
    for name, value in {**env, "TELEMHQ_PING_URL": "http://127.0.0.1:9/ping/t"}.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.DEBUG, logger="telemhq")
    calls: list[str] = []

    @monitor
    def nightly(n: int) -> int:
        calls.append("ran")
        return n * 2

    @monitor
    def broken() -> None:
        raise KeyError("the job's own error")

    previous = set_client(None)  # the process's client is built from the settings again
    try:
        assert nightly(21) == 42
        with pytest.raises(KeyError, match="the job's own error"):
            broken()
        client = get_client()
    finally:
        set_client(previous)
    assert calls == ["ran"]
    assert client.settings.disabled
    records = [r for r in caplog.records if r.name == "telemhq" and r.levelno >= logging.WARNING]
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR
    assert records[0].getMessage().startswith("TelemHQ: monitoring is off, the job runs as")


def test_the_documented_example_file_and_error_lines_are_what_the_code_does(
    tmp_path: Path,
) -> None:
    text = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    [example] = re.findall(r"```toml\n(.*?)```", text, flags=re.S)
    config = tmp_path / "telemhq.toml"
    config.write_text(example)
    settings = load_settings(env={}, config_file=config)
    assert settings.send_start is True
    assert settings.ping_url_for("etl_daily.load") == "http://127.0.0.1:8000/ping/tok_etl"
    assert settings.ping_url_for("other").startswith("http://127.0.0.1:8000/ping/vJ0q")
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"TELEMHQ_TIMEOUT": "abc"}, config_file=config)
    assert f"monitoring is off, the job runs as without it: {caught.value}\n" in text
