"""``telemhq check`` with a tracker's history: a runs file saved from the API, exit statuses."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from telemhq_plugins.core.cli import main

X = "\u00d7"  # the multiplication sign baselines are written with
FLOOR = "records_processed >= 0.5 * median(last 20)"
AT = dt.datetime(2026, 11, 2, 6, 0, tzinfo=dt.UTC)


def api_runs(values: list[int], *, failed_at: int | None = None) -> list[dict[str, Any]]:
    """Runs as ``GET /api/v1/trackers/{id}/runs`` lists them: newest first."""
    runs = []
    for i, value in enumerate(values):
        failed = i == failed_at
        runs.append(
            {
                "id": i + 1,
                "ping_id": None,
                "status": "success",
                "passed": not failed,
                "assertions": [],
                "payload": {"records_processed": value},
                "received_at": (AT - dt.timedelta(hours=len(values) - i)).isoformat(),
            }
        )
    return list(reversed(runs))


@pytest.mark.parametrize("shape", ["answer", "items"])
def test_it_judges_a_run_against_a_saved_runs_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shape: str
) -> None:
    items = api_runs([97_000, 99_000] * 10 + [1], failed_at=20)  # the failed run is not counted
    document: Any = {"items": items, "next": None} if shape == "answer" else items
    runs = tmp_path / "runs.json"
    runs.write_text(json.dumps(document))
    argv = ["check", FLOOR, "errors = 0", "--history", str(runs), "--at", AT.isoformat()]
    code = main([*argv, "--json", '{"records_processed": 1200, "errors": 0}'])
    assert capsys.readouterr().out.splitlines() == [
        f"FAIL  {FLOOR}  (records_processed was 1200, expected >= 49000 "
        f"(0.5 {X} median 98000 of the last 20 runs))",
        "PASS  errors = 0  (errors was 0)",
    ]
    assert code == 1
    assert main([*argv, "--json", '{"records_processed": 50000, "errors": 0}']) == 0


def test_too_little_history_is_not_evaluated_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs.json"
    runs.write_text(json.dumps({"items": api_runs([5, 5, 5]), "next": None}))
    code = main(["check", FLOOR, "--json", '{"records_processed": 0}', "--history", str(runs)])
    assert capsys.readouterr().out.splitlines() == [f"SKIP  {FLOOR}  (history: 3 of 5 runs)"]
    assert code == 0
    # Without any history, the same.
    assert main(["check", FLOOR, "--json", '{"records_processed": 0}']) == 0


def test_a_window_budget_needs_no_history(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "sum(cost_usd, 24h) <= 50", "--json", '{"cost_usd": 51}']) == 1
    assert capsys.readouterr().out.startswith("FAIL  sum(cost_usd, 24h) <= 50  (sum(cost_usd")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["check", "x >= median(last 5"], "expected ) or , followed by"),
        (["check", "x > 1", "--json", "{}", "--history", "/nonexistent.json"], "cannot read"),
        (["check", "x > 1", "--json", "{}", "--history", "BAD"], "is not JSON"),
        (["check", "x > 1", "--json", "{}", "--history", "OBJECT"], "runs API's answer"),
        (["check", "x > 1", "--json", "{}", "--history", "NOTIME"], "no ISO 8601 received_at"),
        (["check", "x > 1", "--json", "{}", "--at", "yesterday"], "not an ISO 8601 time"),
        (["check", "x > 1", "--json", "{}", "--tracker", "t"], "--tracker needs an API key"),
    ],
)
def test_usage_and_syntax_errors_exit_2(
    argv: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TELEMHQ_API_KEY", raising=False)
    files = {"BAD": "{", "OBJECT": '{"runs": []}', "NOTIME": '[{"status": "success"}]'}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    argv = [str(tmp_path / a) if a in files else a for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
