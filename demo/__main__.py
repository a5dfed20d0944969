"""``make demo``: start the reference server, run monitored jobs of every kind against it, and
print what the server made of them.

1. ``telemhq-server serve`` on a free loopback port (SQLite in ``.demo/``, public dashboard);
2. trackers with payload assertions, created through the management API;
3. ``@telemhq_plugins.monitor`` jobs in this process: a good run, then one that "succeeds"
   with 0 records (the assertion turns the tracker failing);
4. ``telemhq run -- CMD``: a shell command that fails, tracker created by its first ping;
5. a real Celery worker (prefork) on the machine's Redis: a task with metrics, a retry then
   success, a failure - every task monitored by ``telemhq_plugins.celery.setup(app)``;
6. Prefect flows on a real Prefect API server (``demo/prefect_stage.py``, in ``.venvs/prefect``):
   metrics, a retry then success, a failure, 0 records, and the watcher reporting a flow with
   no hooks;
7. Dagster jobs (``demo/dagster_stage.py``, in ``.venvs/dagster``): step hooks (metadata
   metrics, a retry then success, a failure, 0 records) and run status sensors;
8. a real Airflow DAG run (``.venvs/airflow``), reported by the listener plugin alone.

``python -m demo --keep`` leaves the server running for the dashboard until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

import telemhq_plugins
from telemhq_plugins.core.config import load_settings
from telemhq_plugins.core.delivery import Client, set_client

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".demo"
API_KEY = "thq_demo_admin_key_not_for_production"
REDIS = ("127.0.0.1", 6379)


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def bin_path(name: str) -> str:
    found = Path(sys.executable).with_name(name)
    return str(found) if found.exists() else name


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMHQ_")}
    return {**env, **extra}


def start_server(port: int) -> subprocess.Popen[bytes]:
    log = (WORK / "server.log").open("wb")
    proc = subprocess.Popen(
        [
            bin_path("telemhq-server"), "serve", "--port", str(port),
            "--database-url", f"sqlite:///{WORK / 'telemhq.db'}", "--public-dashboard",
        ],
        env=clean_env(TELEMHQ_API_KEY=API_KEY),
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited; see {WORK / 'server.log'}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not become healthy within 60 s")


def monitored_jobs(base_url: str, nightly: dict[str, Any], ml: dict[str, Any]) -> None:
    client = Client(load_settings(env={}, base_url=base_url))
    set_client(client)

    @telemhq_plugins.monitor(token=nightly["token"], job="nightly-sync")
    def nightly_sync(rows: int) -> None:
        time.sleep(0.05)
        telemhq_plugins.report(records_processed=rows, errors=0)

    @telemhq_plugins.monitor(token=ml["token"], job="ml-eval")
    def ml_eval() -> None:
        telemhq_plugins.report(eval_score=0.91, cost_usd=1.20, tokens=48_000)

    nightly_sync(450)
    client.flush(10)
    ml_eval()
    nightly_sync(0)  # exits cleanly, yet loaded nothing
    client.close(10)
    set_client(None)


def cli_job(base_url: str, ping_key: str) -> None:
    command = [bin_path("telemhq"), "run", "--job", "backup", "--", "sh", "-c",
               "echo 'rsync: connection refused' >&2; exit 3"]  # fmt: skip
    code = subprocess.call(
        command, env=clean_env(TELEMHQ_BASE_URL=base_url, TELEMHQ_PING_KEY=ping_key)
    )
    print(f"telemhq run passed the command's exit code through: {code}")


def skip(stage: str, why: str) -> str:
    """Say now, and again in the summary, that ``stage`` did not run and why."""
    print(f"SKIPPED: {stage}: {why}", flush=True)
    return f"{stage}: {why}"


def celery_jobs(base_url: str, trackers_file: Path, ping_key: str) -> str | None:
    """demo.load_orders pings its own tracker (TELEMHQ_TRACKERS); the other tasks ping by
    name with the project's ping key, which creates their trackers on first ping. Returns
    why the stage was skipped, None when it ran."""
    if not reachable(*REDIS):
        return skip(
            "Celery",
            f"Redis is not reachable on {REDIS[0]}:{REDIS[1]} (start one, e.g. `redis-server`, and "
            "run `make demo` again)",
        )
    broker = "redis://127.0.0.1:6379/15"
    env = clean_env(
        TELEMHQ_BASE_URL=base_url,
        TELEMHQ_TRACKERS=str(trackers_file),
        TELEMHQ_PING_KEY=ping_key,
        DEMO_BROKER=broker,
        PYTHONWARNINGS="ignore",  # celery's warning about running as root, on CI machines
    )
    worker = subprocess.Popen(
        [bin_path("celery"), "--quiet", "-A", "demo.celery_app", "worker", "--pool", "prefork",
         "--concurrency", "2", "--loglevel", "CRITICAL", "--without-gossip",
         "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    os.environ["DEMO_BROKER"] = broker
    from demo import celery_app

    try:
        # One at a time, so the summary's "last run" is the same on every machine.
        for task, args in (
            (celery_app.load_orders, (1200,)),
            (celery_app.flaky, ()),
            (celery_app.broken, ()),
            (celery_app.load_orders, (0,)),
        ):
            result = task.delay(*args)
            try:
                result.get(timeout=60, propagate=False)
            except Exception as exc:  # a timeout: say so, the summary shows what arrived
                print(f"task {result.id}: {exc!r}")
    finally:
        worker.send_signal(signal.SIGTERM)  # warm shutdown: pending pings are flushed
        worker.wait(60)
    return None


def orchestrator_jobs(name: str, base_url: str, ping_key: str) -> str | None:
    """Run ``demo/<name>_stage.py`` with ``.venvs/<name>``'s Python: each orchestrator has its
    own environment (Airflow and Prefect cannot share one). Returns why it was skipped or
    failed, None when it ran."""
    python = ROOT / ".venvs" / name / "bin" / "python"
    stage = name.capitalize()
    if not python.exists():
        return skip(stage, f"no .venvs/{name} (run `make env-{name}`, then `make demo`)")
    command = [str(python), "-m", f"demo.{name}_stage", "--base-url", base_url,
               "--ping-key", ping_key]  # fmt: skip
    code = subprocess.call(command, cwd=ROOT, env=clean_env(), timeout=600)
    if code != 0:
        return skip(stage, f"the stage failed with exit status {code} (its output is above)")
    return None


def summary(api: httpx.Client, base_url: str, skipped: list[str]) -> None:
    trackers = api.get("/api/v1/trackers").json()["items"]
    print(f"{'tracker':<22} {'state':<9} {'runs':>4}  last run")
    for tracker in sorted(trackers, key=lambda t: t["name"]):
        runs = api.get(f"/api/v1/trackers/{tracker['id']}/runs", params={"limit": 1}).json()
        last = runs["items"][0] if runs["items"] else None
        detail = ""
        if last is not None:
            failed = [a["reason"] for a in last["assertions"] if not a["passed"]]
            error = (last["payload"].get("error") or {}).get("message")
            detail = last["status"] + (f" - {'; '.join(failed)}" if failed else "")
            detail += f" - {error}" if error else ""
        print(f"{tracker['name']:<22} {tracker['state']:<9} {tracker['n_runs']:>4}  {detail}")
    for line in skipped:
        print(f"\nNot shown, skipped: {line}")
    print(f"\nDashboard: {base_url}/dashboard/   API key: {API_KEY}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the server running")
    args = parser.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"

    say(f"Reference server on {base_url} (SQLite in .demo/, log in .demo/server.log)")
    server = start_server(port)
    try:
        api = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=15
        )

        def create(**fields: Any) -> dict[str, Any]:
            response = api.post("/api/v1/trackers", json=fields)
            response.raise_for_status()
            tracker: dict[str, Any] = response.json()
            print(f"tracker {tracker['name']!r}: {tracker['assertions']} -> {tracker['ping_url']}")
            return tracker

        say("Trackers with payload assertions")
        nightly = create(
            name="nightly-sync",
            assertions=["records_processed > 0", "errors = 0"],
            schedule={"kind": "period", "period_seconds": 86400, "grace_seconds": 3600},
        )
        ml = create(name="ml-eval", assertions=["eval_score >= 0.8", "cost_usd <= 5"])
        orders = create(name="demo.load_orders", assertions=["records_processed > 0"])
        ping_key = api.post("/api/v1/ping-keys", json={"name": "demo"}).json()["key"]
        trackers_file = WORK / "trackers.json"
        trackers_file.write_text(json.dumps({"demo.load_orders": orders["token"]}))

        say("@telemhq_plugins.monitor jobs (450 records, an ML eval, then 0 records)")
        monitored_jobs(base_url, nightly, ml)

        say("telemhq run -- a failing shell command (tracker created by its first ping)")
        cli_job(base_url, ping_key)

        say("A real Celery worker (prefork) on Redis: metrics, retry then success, failure")
        skipped = [celery_jobs(base_url, trackers_file, ping_key)]

        say("Prefect flows (hooks) and the watcher, on a real Prefect API server")
        for name in ("prefect-etl", "prefect-empty"):
            create(name=name, assertions=["records_processed > 0"])
        skipped.append(orchestrator_jobs("prefect", base_url, ping_key))

        say("Dagster jobs: a ping per step (hooks) and per run (sensors)")
        create(name="dagster_etl.extract", assertions=["records_processed > 0"])
        skipped.append(orchestrator_jobs("dagster", base_url, ping_key))

        say("Airflow: the listener plugin, no TelemHQ code in the DAG")
        create(name="airflow_demo.extract", assertions=["records_processed > 0"])
        create(name="airflow_demo.load", assertions=["records_processed > 0"])
        skipped.append(orchestrator_jobs("airflow", base_url, ping_key))

        say("What the server recorded")
        summary(api, base_url, [line for line in skipped if line is not None])
        if args.keep:
            print("Serving until Ctrl-C ...")
            server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
