"""``telemhq-server``: ``serve`` (migrate, then run on granian), ``migrate``, and
``ping-keys create NAME`` / ``ping-keys list``.

``serve`` with no configuration uses ``./telemhq.db`` (SQLite, WAL), migrates it, and on first
start creates an admin API key (printed once, stored hashed; ``TELEMHQ_API_KEY`` sets it
instead) and a ping key that creates a tracker per job, printed with the ``export`` line that
points a job at this server. Every command reads the database settings the same way
(``--database-url``, else ``TELEMHQ_DATABASE_URL``, else ``./telemhq.db``).

Help texts are plain text: they are read in a terminal.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa

from telemhq_server.config import Settings, load_settings
from telemhq_server.db import make_engine, migrate, write_tx
from telemhq_server.keys import create_ping_key, ensure_admin_key, list_ping_keys, ping_key_hint
from telemhq_server.logs import GRANIAN_LOG_CONFIG, setup_logging

__all__ = ["NewKeys", "main", "prepare"]

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8000
#: The name of the ping key made on first start.
FIRST_PING_KEY: Final = "default"
MAX_KEY_NAME: Final = 200  # characters, as the API allows


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="telemhq-server",
        description="The TelemHQ reference ping server: it stores pings, checks their "
        "assertions, detects missed runs and sends webhooks.",
    )
    database = argparse.ArgumentParser(add_help=False)
    database.add_argument(
        "--database-url",
        help="SQLAlchemy URL (default: env TELEMHQ_DATABASE_URL, else sqlite:///telemhq.db)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser(
        "serve",
        parents=[database],
        help="migrate the database and serve HTTP",
        description="Migrate the database, then serve HTTP. On first start it prints an "
        "admin API key and a ping key, with the export line that points jobs at it.",
    )
    serve.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0: pick a free one)")
    serve.add_argument("--workers", type=int, help="server processes (env TELEMHQ_WORKERS)")
    serve.add_argument("--public-url", help="base URL in links (env TELEMHQ_PUBLIC_URL)")
    serve.add_argument(
        "--public-dashboard",
        action="store_true",
        default=None,
        help="serve the dashboard without sign-in, for local use (env TELEMHQ_PUBLIC_DASHBOARD)",
    )
    sub.add_parser(
        "migrate",
        parents=[database],
        help="bring the database schema up to date, then exit",
        description="Bring the database schema up to date, then exit.",
    )
    keys = sub.add_parser(
        "ping-keys",
        help="create or list ping keys",
        description="Ping keys let jobs ping by name: BASE/ping/KEY/SLUG, where SLUG is made "
        "from the job's name; with auto-create, a job's first ping creates its tracker.",
    )
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = keys_sub.add_parser(
        "create",
        parents=[database],
        help="create a ping key and print it with its export line",
        description="Create a ping key, print it, and print the export line that points a "
        "job at this server with it (the last line of the output).",
    )
    create.add_argument("name", help="what the key is for, e.g. the project or team")
    create.add_argument(
        "--no-auto-create",
        dest="auto_create",
        action="store_false",
        help="pings to a slug without a tracker are refused (404) instead of creating one",
    )
    create.add_argument(
        "--base-url",
        help="the server's URL in the export line (default: env TELEMHQ_PUBLIC_URL, else "
        "http://127.0.0.1:8000, where serve listens by default)",
    )
    keys_sub.add_parser(
        "list",
        parents=[database],
        help="list ping keys (names and hints, never whole keys)",
        description="List ping keys: id, name, the key's first characters, whether it "
        "creates trackers, and when it was made. Whole keys are never shown.",
    )
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


@dataclass(frozen=True, slots=True)
class NewKeys:
    """Keys created by :func:`prepare` on first start, to be printed once."""

    admin_key: str | None = None
    ping_key: str | None = None


def prepare(settings: Settings) -> NewKeys:
    """Migrate and make sure an admin key exists. On first start (no API key stored yet and
    none in ``TELEMHQ_API_KEY``) also create a ping key that creates trackers; returns the
    keys created, if any."""
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        admin_key = ensure_admin_key(engine, settings.api_key)
        if admin_key is None:
            return NewKeys()
        with write_tx(engine) as conn:
            ping_key = create_ping_key(conn, FIRST_PING_KEY, auto_create=True)["key"]
        return NewKeys(admin_key, ping_key)
    finally:
        engine.dispose()


def export_line(base_url: str, ping_key: str) -> str:
    """The shell line that points a job at this server with ``ping_key``."""
    return f"export TELEMHQ_BASE_URL={base_url} TELEMHQ_PING_KEY={ping_key}"


def _client_base(settings: Settings, host: str, port: int) -> str:
    """The URL a job on this machine reaches the server at: ``TELEMHQ_PUBLIC_URL``, else the
    bound address (loopback for a wildcard one)."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _banner(settings: Settings, base: str, new: NewKeys, client_base: str) -> str:
    if new.admin_key:
        key_line = f"admin API key (shown once, stored hashed): {new.admin_key}"
        shown = new.admin_key
    elif settings.api_key:
        key_line = "admin API key: the one in TELEMHQ_API_KEY"
        shown = "$TELEMHQ_API_KEY"
    else:
        key_line = (
            "admin API key: created at first start and shown then (set TELEMHQ_API_KEY to "
            "choose one)"
        )
        shown = "<your API key>"
    if new.ping_key:
        ping = (
            f"  ping key (a tracker per job, created on its first ping): {new.ping_key}\n"
            "  point a job at this server (paste into its shell or environment):\n"
            f"    {export_line(client_base, new.ping_key)}\n"
        )
    else:
        ping = "  ping keys: telemhq-server ping-keys create NAME (or ping-keys list)\n"
    return (
        f"TelemHQ server on {base}\n"
        f"  database: {settings.database_url}\n"
        f"  {key_line}\n"
        f"{ping}"
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
    new = prepare(settings)
    port = args.port or _free_port(args.host)
    host = f"[{args.host}]" if ":" in args.host else args.host
    client_base = _client_base(settings, args.host, port)
    print(_banner(settings, f"http://{host}:{port}", new, client_base), flush=True)

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


def _migrated(args: argparse.Namespace) -> tuple[Settings, sa.Engine]:
    """The settings and a migrated engine, for the commands that work on the database."""
    settings = load_settings(database_url=args.database_url)
    engine = make_engine(settings.database_url)
    migrate(engine)
    return settings, engine


def create_ping_key_command(args: argparse.Namespace) -> int:
    """``ping-keys create NAME``: the key, then the export line (the last line, so that
    ``eval "$(telemhq-server ping-keys create NAME | tail -n 1)"`` sets both variables)."""
    name = args.name.strip()
    if not name or len(name) > MAX_KEY_NAME:
        print(f"telemhq-server: the name must be 1 to {MAX_KEY_NAME} characters", file=sys.stderr)
        return 2
    settings, engine = _migrated(args)
    try:
        with write_tx(engine) as conn:
            key = create_ping_key(conn, name, args.auto_create)
    finally:
        engine.dispose()
    base = (args.base_url or settings.public_url or "").rstrip("/")
    base = base or f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
    creates = "creates" if key["auto_create"] else "does not create"
    print(f"ping key {key['name']!r} ({creates} trackers on a first ping): {key['key']}")
    print(export_line(base, key["key"]))
    return 0


def list_ping_keys_command(args: argparse.Namespace) -> int:
    """``ping-keys list``: one line per key, with a hint of the key, never the whole key."""
    _, engine = _migrated(args)
    try:
        with engine.connect() as conn:
            items = list_ping_keys(conn)
    finally:
        engine.dispose()
    if not items:
        print("no ping keys yet: telemhq-server ping-keys create NAME")
        return 0
    print(f"{'ID':>4}  {'KEY':<8} {'AUTO-CREATE':<12} {'CREATED':<28} NAME")
    for item in items:
        auto = "yes" if item["auto_create"] else "no"
        print(
            f"{item['id']:>4}  {ping_key_hint(item['key']):<8} {auto:<12} "
            f"{item['created_at']:<28} {item['name']}"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "ping-keys":
        if args.keys_command == "create":
            return create_ping_key_command(args)
        return list_ping_keys_command(args)
    settings, engine = _migrated(args)
    engine.dispose()
    print(f"database at the newest schema: {settings.database_url}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
