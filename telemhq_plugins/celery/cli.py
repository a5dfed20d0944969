"""``celery -A proj telemhq``: which tasks TelemHQ monitors, and where their pings go.

Registered under Celery's ``celery.commands`` entry point, which the ``celery`` program loads
at start-up: that import is also what makes ``TELEMHQ_CELERY_AUTO=1`` work with no code change
(``celery worker`` and ``celery beat`` are instrumented before the pool forks).
"""

from __future__ import annotations

from typing import Any

import click
from celery.bin.base import CeleryCommand, handle_preload_options

from telemhq_plugins.celery._context import resolve_policy
from telemhq_plugins.celery._instrumentor import CeleryInstrumentor
from telemhq_plugins.core.delivery import get_client
from telemhq_plugins.core.logs import redact_url

__all__ = ["telemhq"]


@click.command(cls=CeleryCommand, name="telemhq")
@click.pass_context
@handle_preload_options  # type: ignore[untyped-decorator]
def telemhq(ctx: Any) -> None:
    """Show which tasks TelemHQ monitors and where their pings go."""
    app = ctx.obj.app
    app.loader.import_default_modules()
    settings = get_client().settings
    instrumentor = CeleryInstrumentor()
    state = "on" if instrumentor.is_instrumented else "off (setup(app) or TELEMHQ_CELERY_AUTO=1)"
    click.echo(f"instrumentation in this process: {state}")
    if settings.disabled:
        click.echo("TELEMHQ_DISABLED is set: nothing is sent")
    handlers = instrumentor.handlers
    include = handlers.include if handlers is not None else ()
    exclude = handlers.exclude if handlers is not None else None
    for name in sorted(app.tasks):
        options: dict[str, Any] = {"include": include}
        if exclude is not None:
            options["exclude"] = exclude
        policy = resolve_policy(name, getattr(app.tasks[name], "telemhq", None), **options)
        if policy is None:
            where = "not monitored"
        else:
            url = settings.ping_url_for(name, policy.token)
            where = redact_url(url) if url else "no tracker (set TELEMHQ_TOKEN, ...)"
        click.echo(f"  {name}: {where}")
