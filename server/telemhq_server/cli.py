"""``telemhq-server``: ``serve`` (migrate, then run on granian) and ``migrate``.

``serve`` with no configuration uses ``./telemhq.db`` (SQLite, WAL), migrates it, creates an
admin API key on first start (printed once, stored hashed; ``TELEMHQ_API_KEY`` sets it
instead) and prints the base URL and how to create a tracker.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence

import sqlalchemy as sa

from telemhq_server.config import Settings, load_settings
from telemhq_server.db import make_engine, migrate
from telemhq_server.keys import ensure_admin_key
from telemhq_server.logs import GRANIAN_LOG_CONFIG, setup_logging

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="telemhq-server", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="migrate the database and serve HTTP")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (0: pick a free one)")
    serve.add_argument("--database-url", help="SQLAlchemy URL (env TELEMHQ_DATABASE_URL)")
    serve.add_argument("--workers", type=int, help="server processes (env TELEMHQ_WORKERS)")
    serve.add_argument("--public-url", help="base URL in links (env TELEMHQ_PUBLIC_URL)")
    serve.add_argument(
        "--public-dashboard",
        action="store_true",
        default=None,
        help="serve the dashboard without sign-in, for local use (env TELEMHQ_PUBLIC_DASHBOARD)",
    )
    mig = sub.add_parser("migrate", help="bring the database schema up to date, then exit")
    mig.add_argument("--database-url", help="SQLAlchemy URL (env TELEMHQ_DATABASE_URL)")
    return parser


def _absolute_sqlite(url: str) -> str:
    """Resolve a relative SQLite path now, so every worker process opens the same file."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return url
    if parsed.database == ":memory:":
        raise SystemExit("an in-memory SQLite database cannot be shared by server processes")
    path = os.path.abspath(os.path.expanduser(parsed.database))
    return parsed.set(database=path).render_as_string(hide_password=False)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def prepare(settings: Settings) -> str | None:
    """Migrate and make sure an admin key exists; returns a newly created key, if any."""
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        return ensure_admin_key(engine, settings.api_key)
    finally:
        engine.dispose()


def _banner(settings: Settings, base: str, new_key: str | None) -> str:
    if new_key:
        key_line = f"admin API key (shown once, stored hashed): {new_key}"
        shown = new_key
    elif settings.api_key:
        key_line = "admin API key: the one in TELEMHQ_API_KEY"
        shown = "$TELEMHQ_API_KEY"
    else:
        key_line = (
            "admin API key: created at first start and shown then (set TELEMHQ_API_KEY to "
            "choose one)"
        )
        shown = "<your API key>"
    return (
        f"TelemHQ server on {base}\n"
        f"  database: {settings.database_url}\n"
        f"  {key_line}\n"
        f"  API docs: {base}/api/v1/openapi.json\n"
        "  create a tracker:\n"
        f'    curl -X POST {base}/api/v1/trackers -H "Authorization: Bearer {shown}" \\\n'
        "         -H 'Content-Type: application/json' \\\n"
        '         -d \'{"name": "nightly etl", "assertions": ["records_processed > 0"]}\'\n'
        "  then ping it: curl -X POST <ping_url from the answer>\n"
    )


def serve(args: argparse.Namespace) -> int:
    settings = load_settings(
        database_url=args.database_url,
        workers=args.workers,
        public_url=args.public_url,
        public_dashboard=args.public_dashboard,
    )
    settings = settings.with_overrides(database_url=_absolute_sqlite(settings.database_url))
    setup_logging(settings.log_level)
    new_key = prepare(settings)
    port = args.port or _free_port(args.host)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(_banner(settings, f"http://{host}:{port}", new_key), flush=True)

    from granian import Granian
    from granian.constants import Interfaces

    # The workers are separate processes: they read their settings from the environment.
    os.environ.update(settings.to_env())
    server = Granian(
        "telemhq_server.app:app_from_env",
        address=args.host,
        port=port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        factory=True,
        log_access=False,
        log_dictconfig=GRANIAN_LOG_CONFIG,
        websockets=False,
        respawn_failed_workers=True,  # a worker that dies is replaced, not left missing
    )
    server.serve()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    settings = load_settings(database_url=args.database_url)
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
    finally:
        engine.dispose()
    print(f"database at the newest schema: {settings.database_url}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
