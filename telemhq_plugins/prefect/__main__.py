"""``telemhq prefect watch`` (or ``python -m telemhq_plugins.prefect watch``): run the watcher
(see ``watch.py``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from telemhq_plugins.prefect.watch import Watcher

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="telemhq prefect",
        description="TelemHQ for Prefect: follow the Prefect API's flow-run events and ping.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    watch = commands.add_parser("watch", help="ping for every flow run of the workspace")
    watch.add_argument("--cursor", help="progress file (default ~/.telemhq/prefect-watch.json)")
    watch.add_argument(
        "--heartbeat-frequency",
        type=float,
        help="the flows' PREFECT_FLOWS_HEARTBEAT_FREQUENCY in seconds (default: this "
        "process's Prefect setting); a Running run silent for twice this is a failure",
    )
    watch.add_argument(
        "--delay", type=float, default=5.0, help="seconds a final ping waits (default 5)"
    )
    watch.add_argument(
        "--hooks-wait",
        type=float,
        default=120.0,
        help="seconds a final ping waits for a run whose hooks report it: the watcher's ping "
        "is then a fallback (default 120)",
    )
    watch.add_argument(
        "--no-schedules", action="store_true", help="do not push deployment schedules"
    )
    watch.add_argument(
        "--schedules-interval",
        type=float,
        default=300.0,
        help="seconds between two schedule pushes (default 300)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    watcher = Watcher(
        cursor=args.cursor,
        heartbeat_frequency=args.heartbeat_frequency,
        delay=args.delay,
        hooks_wait=args.hooks_wait,
        schedules=not args.no_schedules,
        schedules_interval=args.schedules_interval,
    )

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, watcher.stop)
        await watcher.run()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
