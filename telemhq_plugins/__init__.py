"""telemhq-plugins: automatic job monitoring for Airflow, Prefect, Dagster and Celery.

The user-facing API::

    import telemhq_plugins

    telemhq_plugins.report(records_processed=450)        # inside any monitored task

    @telemhq_plugins.monitor(token="...")                # any function, sync or async
    def nightly_sync(): ...

    with telemhq_plugins.monitored("backfill", token="...") as r:   # any block
        r.report(cost_usd=0.12)
"""

from telemhq_plugins.core import (
    Assertion,
    AssertionResult,
    AssertionSyntaxError,
    Ping,
    Run,
    Settings,
    current_run,
    get_client,
    hookimpl,
    load_settings,
    monitor,
    monitored,
    parse_assertion,
    plugin_manager,
    report,
    run,
    start_run,
)

__version__ = "0.1.0"

__all__ = [
    "Assertion",
    "AssertionResult",
    "AssertionSyntaxError",
    "Ping",
    "Run",
    "Settings",
    "__version__",
    "current_run",
    "get_client",
    "hookimpl",
    "load_settings",
    "monitor",
    "monitored",
    "parse_assertion",
    "plugin_manager",
    "report",
    "run",
    "start_run",
]
