"""What a run tells a reader: why it failed, and where to see it in its orchestrator's UI.

Pure functions of a stored run (its payload and assertion results, already parsed) and the
server's settings; the pages escape what these return.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

__all__ = [
    "Reason",
    "UiBases",
    "assertion_text",
    "baseline_text",
    "error_of",
    "failed_assertions",
    "reason_of",
    "ui_url",
    "value_text",
]

#: At most this many characters of a message on a row (the run page shows it whole).
SHORT: Final = 300


@dataclass(frozen=True, slots=True)
class UiBases:
    """Base URLs of the orchestrators' own UIs, from the server's settings (None: unknown)."""

    airflow: str | None = None
    prefect: str | None = None
    dagster: str | None = None


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a run failed, in one line: ``kind`` is ``error`` or ``assertion``."""

    kind: str
    text: str


def value_text(value: Any) -> str:
    """A value as JSON (strings quoted, so ``"0"`` and ``0`` differ), bounded."""
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= SHORT else text[: SHORT - 1] + "…"


def error_of(payload: Any) -> Mapping[str, Any] | None:
    """The payload's ``error`` block ``{type, message, traceback}``, when it has one."""
    if isinstance(payload, Mapping):
        error = payload.get("error")
        if isinstance(error, Mapping) and (error.get("type") or error.get("message")):
            return error
    return None


def failed_assertions(results: Any) -> list[Mapping[str, Any]]:
    if not isinstance(results, list):
        return []
    return [r for r in results if isinstance(r, Mapping) and r.get("passed") is False]


def baseline_text(result: Mapping[str, Any]) -> str | None:
    """A history assertion's baseline (``{"value", "text"}``), as text, when it has one."""
    baseline = result.get("baseline")
    if isinstance(baseline, Mapping):
        text = baseline.get("text")
        if isinstance(text, str) and text:
            return text
        if "value" in baseline:
            return value_text(baseline["value"])
    elif baseline is not None:
        return value_text(baseline)
    return None


def assertion_text(result: Mapping[str, Any]) -> str:
    """``records_processed > 0: records_processed was 0, expected > 0 (baseline 120)``."""
    text = str(result.get("expression") or "assertion")
    reason = result.get("reason")
    if reason:
        text += f": {reason}"
    elif "actual" in result:
        text += f": was {value_text(result.get('actual'))}"
    baseline = baseline_text(result)
    if baseline is not None:
        text += f" (baseline {baseline})"
    return text


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SHORT else text[: SHORT - 1] + "…"


def reason_of(status: str | None, payload: Any, results: Any) -> Reason | None:
    """Why a run went wrong: its error (type and message), else its failed assertions, else
    a bare failure status; None for a run that passed."""
    error = error_of(payload)
    if error is not None:
        kind = str(error.get("type") or "error")
        message = str(error.get("message") or "")
        return Reason("error", _short(f"{kind}: {message}" if message else kind))
    failed = failed_assertions(results)
    if failed:
        return Reason("assertion", _short("; ".join(assertion_text(r) for r in failed)))
    if status == "failure":
        return Reason("error", "the run reported failure (no error details)")
    return None


def _safe(url: Any) -> str | None:
    """Only http(s) links: a ``javascript:`` URL from a payload never becomes a link."""
    if isinstance(url, str) and url.startswith(("https://", "http://")) and len(url) <= 2000:
        return url
    return None


def _q(value: Any) -> str:
    return quote(str(value), safe="")


def ui_url(payload: Any, bases: UiBases) -> str | None:
    """The run in its orchestrator's own UI: the ``ui_url`` the adapter sent in its block, else
    built from the server's base URL for that orchestrator and the ids in the block."""
    if not isinstance(payload, Mapping):
        return None
    orchestrator = payload.get("orchestrator")
    for name in (orchestrator, "airflow", "prefect", "dagster", "celery"):
        block = payload.get(name) if isinstance(name, str) else None
        if isinstance(block, Mapping):
            break
    else:
        return None
    sent = _safe(block.get("ui_url"))
    if sent is not None:
        return sent
    if name == "airflow" and bases.airflow and block.get("dag_id") and block.get("run_id"):
        url = f"{bases.airflow.rstrip('/')}/dags/{_q(block['dag_id'])}/runs/{_q(block['run_id'])}"
        if block.get("task_id"):
            url += f"/tasks/{_q(block['task_id'])}"
            index = block.get("map_index")
            if isinstance(index, int) and not isinstance(index, bool) and index >= 0:
                url += f"/mapped/{index}"
        return _safe(url)
    if name == "prefect" and bases.prefect:
        base = bases.prefect.rstrip("/")
        if block.get("task_run_id"):
            return _safe(f"{base}/runs/task-run/{_q(block['task_run_id'])}")
        if block.get("flow_run_id"):
            return _safe(f"{base}/runs/flow-run/{_q(block['flow_run_id'])}")
    if name == "dagster" and bases.dagster and block.get("run_id"):
        return _safe(f"{bases.dagster.rstrip('/')}/runs/{_q(block['run_id'])}")
    return None
