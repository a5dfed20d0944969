"""``make demo`` says which stage it skips and why, at the stage and again in its summary."""

from __future__ import annotations

import pytest

import demo.__main__ as demo
from tests.core.http_receiver import free_port


def test_it_says_it_skips_celery_without_redis_and_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()  # nothing listens there
    monkeypatch.setattr(demo, "REDIS", ("127.0.0.1", port))
    why = demo.celery_jobs("http://127.0.0.1:9", demo.WORK / "trackers.json", "pk")
    assert why == (
        f"Celery: Redis is not reachable on 127.0.0.1:{port} (start one, e.g. `redis-server`, "
        "and run `make demo` again)"
    )
    assert capsys.readouterr().out == f"SKIPPED: {why}\n"


def test_it_says_it_skips_an_orchestrator_without_its_environment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    why = demo.orchestrator_jobs("nosuchorchestrator", "http://127.0.0.1:9", "pk")
    assert why == (
        "Nosuchorchestrator: no .venvs/nosuchorchestrator "
        "(run `make env-nosuchorchestrator`, then `make demo`)"
    )
    assert "SKIPPED: Nosuchorchestrator" in capsys.readouterr().out
