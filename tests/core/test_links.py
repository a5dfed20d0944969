"""Links to a run in its orchestrator's UI: only http(s) bases, each id quoted whole."""

from __future__ import annotations

from telemhq_plugins.core.links import ui_base, ui_link


def test_a_base_is_an_http_url_without_its_trailing_slash() -> None:
    assert ui_base(" https://airflow.example.com/ui/ ") == "https://airflow.example.com/ui"
    assert ui_base("http://localhost:8080") == "http://localhost:8080"
    assert ui_base("javascript:alert(1)") is None
    assert ui_base("") is None
    assert ui_base(None) is None


def test_each_segment_is_quoted_whole() -> None:
    link = ui_link("http://x", "dags", "a b", "runs", "manual__2026-01-01T00:00:00+00:00", 3)
    assert link == "http://x/dags/a%20b/runs/manual__2026-01-01T00%3A00%3A00%2B00%3A00/3"
    assert ui_link("http://x", "runs", "a/b?c#d") == "http://x/runs/a%2Fb%3Fc%23d"
    assert ui_link(None, "runs", "x") is None
