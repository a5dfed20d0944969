"""The demo's Prefect stage: real flows against a real Prefect API server, monitored by
``hooks()``, and the watcher reporting a flow that has no hooks.

Run by ``python -m demo`` when ``.venvs/prefect`` exists::

    .venvs/prefect/bin/python -m demo.prefect_stage --base-url URL --ping-key KEY

It starts ``prefect server start`` (SQLite in ``.demo/prefect``), the watcher
(``python -m telemhq_plugins.prefect watch``), runs the flows, stops both and exits.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
HOME = ROOT / ".demo" / "prefect"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prefect_env(port: int) -> dict[str, str]:
    return {
        "PREFECT_HOME": str(HOME),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_LOGGING_TO_API_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "CRITICAL",  # the flows fail on purpose: no tracebacks
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{HOME}/prefect.db",
    }


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_for(check: object, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"timed out waiting for {what}")


def run_flows() -> None:
    from prefect import flow, task

    import telemhq_plugins
    from telemhq_plugins.prefect import hooks, task_hooks

    attempts = {"n": 0}

    @task(**task_hooks())
    def extract(rows: int) -> int:
        return rows

    @flow(name="prefect-etl", **hooks())
    def etl(rows: int = 120) -> None:
        telemhq_plugins.report(records_processed=extract(rows), errors=0)

    @flow(name="prefect-retry", retries=1, **hooks())
    def flaky() -> None:
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise ConnectionError("warehouse timeout (retried)")

    @flow(name="prefect-failure", **hooks())
    def broken() -> None:
        raise RuntimeError("schema changed: column 'amount' is missing")

    @flow(name="prefect-no-hooks")
    def plain() -> str:
        return "nobody told TelemHQ, the watcher did"

    etl(120)
    flaky()
    broken(return_state=True)
    etl.with_options(name="prefect-empty")(0)  # 0 records: the tracker's assertion fails
    plain()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--ping-key", required=True)
    args = parser.parse_args()
    HOME.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEMHQ_", "PREFECT_"))}
    env.update(prefect_env(port), TELEMHQ_BASE_URL=args.base_url, TELEMHQ_PING_KEY=args.ping_key)
    os.environ.update(env)
    bin_dir = Path(sys.executable).parent
    print(f"Prefect API server on 127.0.0.1:{port} (log in .demo/prefect/server.log)", flush=True)
    server = start(
        [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
        HOME / "server.log",
    )
    watcher = None
    try:
        wait_for(
            lambda: httpx.get(f"{env['PREFECT_API_URL']}/health", timeout=2).status_code == 200,
            "the Prefect API server",
        )
        log = HOME / "watch.log"
        watcher = start(
            [sys.executable, "-m", "telemhq_plugins.prefect", "watch", "--delay", "2",
             "--no-schedules", "--cursor", str(HOME / "watch-cursor.json")],
            env,
            log,
        )  # fmt: skip
        wait_for(lambda: "following" in log.read_text(), "the watcher")
        print(
            "flows: prefect-etl (120 rows), prefect-retry (retry then success), "
            "prefect-failure, prefect-empty (0 rows), prefect-no-hooks (watcher)",
            flush=True,
        )
        run_flows()
        wait_for(lambda: "prefect-no-hooks) attempt 1 -> success" in log.read_text(), "watcher")
    finally:
        if watcher is not None:
            stop(watcher)
        stop(server)
    from telemhq_plugins.core import get_client

    get_client().flush(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
