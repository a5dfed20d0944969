"""A tracker's past runs for ``telemhq check``: from a file saved from the management API
(``curl .../api/v1/trackers/ID/runs > runs.json``), or fetched from the server.

Either way the runs become the :class:`~telemhq_plugins.core.history.History` the server
judges a run against, so ``telemhq check`` gives the server's verdict offline.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

import httpx

from telemhq_plugins.core import jsontext
from telemhq_plugins.core.history import History, PastRun

__all__ = ["RunsFileError", "fetch_history", "history_from_runs", "read_runs_file"]

#: how many runs ``fetch_history`` reads at most (the server keeps 1000 by default)
MAX_FETCHED: Final = 20_000
_PAGE: Final = 500


class RunsFileError(ValueError):
    """A runs document that is not what the runs API returns, or a server that refused."""


def history_from_runs(document: Any, *, limit: int | None = None) -> History:
    """The :class:`History` of a runs document: ``GET /api/v1/trackers/{id}/runs``'s answer
    (``{"items": [...]}``) or its items (a list), newest or oldest first."""
    items = document.get("items") if isinstance(document, Mapping) else document
    if not isinstance(items, list):
        raise RunsFileError('expected the runs API\'s answer ({"items": [...]}) or its items')
    runs = [_past_run(i, item) for i, item in enumerate(items)]
    # The order the server stored them in (their ids), as the server reads them; by time
    # where the runs have no ids.
    if all(isinstance(item.get("id"), int) for item in items):
        runs.sort(key=lambda run: run[1])
    else:
        runs.sort(key=lambda run: run[0].at)
    return History((run for run, _ in runs), limit=limit)


def read_runs_file(path: str) -> History:
    """:func:`history_from_runs` of a JSON file."""
    try:
        with open(path, "rb") as file:
            document = jsontext.loads(file.read())
    except OSError as exc:
        raise RunsFileError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise RunsFileError(f"{path} is not JSON: {exc}") from None
    return history_from_runs(document)


def fetch_history(
    base_url: str, tracker: str, api_key: str, *, timeout: float = 15.0
) -> tuple[History, str]:
    """The history and timezone of ``tracker`` (an id or a slug) from the server's API."""
    headers = {"Authorization": f"Bearer {api_key}"}
    path = f"{base_url.rstrip('/')}/api/v1/trackers/{quote(tracker, safe='')}"
    items: list[Any] = []
    with httpx.Client(headers=headers, timeout=timeout) as http:
        shown = _get(http, path, {})
        params: dict[str, Any] = {"limit": _PAGE}
        while len(items) < MAX_FETCHED:
            page = _get(http, f"{path}/runs", params)
            items.extend(page.get("items") or [])
            if not page.get("next"):
                break
            params["cursor"] = page["next"]
    schedule = shown.get("schedule") or {}
    timezone = schedule.get("timezone") if isinstance(schedule, Mapping) else None
    return history_from_runs(items), timezone if isinstance(timezone, str) else "UTC"


def _get(http: httpx.Client, url: str, params: Mapping[str, Any]) -> Mapping[str, Any]:
    try:
        response = http.get(url, params=params)
    except httpx.HTTPError as exc:
        raise RunsFileError(f"cannot reach {url}: {exc}") from None
    if response.status_code != 200:
        raise RunsFileError(f"{url} answered {response.status_code}: {response.text[:200]}")
    try:
        document = jsontext.loads(response.content)
    except ValueError:
        raise RunsFileError(f"{url} did not answer JSON") from None
    if not isinstance(document, Mapping):
        raise RunsFileError(f"{url} did not answer a JSON object")
    return document


def _past_run(index: int, item: Any) -> tuple[PastRun, int]:
    """A run of the API as history reads it, and its id (the order runs were stored in)."""
    if not isinstance(item, Mapping):
        raise RunsFileError(f"run {index} is not an object")
    received = item.get("received_at")
    try:
        at = dt.datetime.fromisoformat(str(received))
    except ValueError:
        raise RunsFileError(f"run {index} has no ISO 8601 received_at") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    status = item.get("status", "success")
    payload = item.get("payload")
    passed = item.get("passed")
    run_id = item.get("id")
    return (
        PastRun(
            at,
            status if isinstance(status, str) else "success",
            passed if isinstance(passed, bool) else None,
            payload if isinstance(payload, Mapping) else {},
        ),
        run_id if isinstance(run_id, int) and not isinstance(run_id, bool) else index,
    )
