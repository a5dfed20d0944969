"""Dagster benchmark: what ``telemhq_hooks()`` costs a job, side by side.

Run: ``.venvs/dagster/bin/python benchmarks/dagster_overhead.py [--ops N] [--rounds R]``.

One job of ``N`` independent ops (each returns a value with numeric output metadata, which
the hook turns into metrics) is built three times from the same graph: without hooks
(``plain``), with a hook that does nothing (``noop``: what Dagster itself charges for any hook,
which records a ``HOOK_COMPLETED`` event per step) and with ``telemhq_hooks()``. All run with
``execute_in_process`` on one persistent SQLite instance (a temporary ``DAGSTER_HOME``, on
tmpfs when the machine has ``/dev/shm``, as is the server's database), in the
order plain, noop, telemhq, telemhq, noop, plain, ... so that every mode meets the same drift
of a shared machine. The pings go over real HTTP to the reference server (a subprocess, on a
ping key: one tracker per op), and the pings of the last step are checked to have arrived.

Prints each mode's median wall time per run, the ratios telemhq/plain and telemhq/noop, and
the time added per step. The wall time is the job's, as its caller waits for it: the hook
queues its pings and the delivery thread sends them meanwhile; the final flush (bounded by
``flush_timeout``) is timed apart. The job thread's CPU time per step (``thread_time``) is
printed too: the hook's own cost, without the delivery thread's and the server's (which
share this machine's cores here, and would not in production).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dagster import GraphDefinition, HookDefinition, Output, instance_for_test, op
from dagster._core.definitions.events import HookExecutionResult

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from telemhq_plugins.core import Client, load_settings, set_client, slugify
from telemhq_plugins.dagster import telemhq_hooks
from tests.live_server import LiveServer

#: Dagster's console logger would print every event of every mode; errors only.
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
MODES = ("plain", "noop", "telemhq")


def build_graph(n: int) -> GraphDefinition:
    def make(i: int) -> Any:
        @op(name=f"step_{i:03d}")
        def step() -> Output[int]:
            return Output(i, metadata={"rows": i})

        return step

    return GraphDefinition(name="bench", node_defs=[make(i) for i in range(n)])


def noop_hook(context: Any, events: Any) -> HookExecutionResult:
    return HookExecutionResult(hook_name="noop", is_skipped=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2, help="each: every mode twice")
    args = parser.parse_args()

    graph = build_graph(args.ops)
    jobs = {
        "plain": graph.to_job(name="bench_plain"),
        "noop": graph.to_job(
            name="bench_noop", hooks={HookDefinition(name="noop", hook_fn=noop_hook)}
        ),
        "telemhq": graph.to_job(name="bench_telemhq", hooks=telemhq_hooks()),
    }
    plan = [*MODES, *reversed(MODES)] * args.rounds

    # Both SQLite databases on tmpfs when there is one: on a shared disk, fsync latency
    # (Dagster commits each event) swamps the CPU cost being measured.
    scratch = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with (
        tempfile.TemporaryDirectory(dir=scratch) as home,
        LiveServer(database_url=f"sqlite:///{home}/telemhq.db") as server,
    ):
        key = server.api("POST", "/ping-keys", json={"name": "bench"}).json()["key"]
        settings = load_settings(
            env={}, config_file=os.devnull, base_url=server.base_url, ping_key=key
        )
        client = Client(settings)
        set_client(client)
        times: dict[str, list[float]] = {mode: [] for mode in MODES}
        cpu: dict[str, list[float]] = {mode: [] for mode in MODES}
        os.makedirs(f"{home}/dagster")
        with instance_for_test(temp_dir=f"{home}/dagster") as instance:
            for mode in MODES:  # warm-up: imports, storage, the trackers' creation
                jobs[mode].execute_in_process(instance=instance, run_config=QUIET)
            for mode in plan:
                started, started_cpu = time.perf_counter(), time.thread_time()
                result = jobs[mode].execute_in_process(instance=instance, run_config=QUIET)
                times[mode].append(time.perf_counter() - started)
                cpu[mode].append(time.thread_time() - started_cpu)
                assert result.success
        started = time.perf_counter()
        drained = client.flush()
        flush_s = time.perf_counter() - started
        runs = plan.count("telemhq") + 1
        stored = len(server.runs(slugify(f"bench_telemhq.step_{args.ops - 1:03d}")))
        assert drained
        assert stored == runs, f"expected {runs} pings of the last step, the server has {stored}"

    median = {mode: statistics.median(times[mode]) for mode in MODES}
    per_step = {mode: median[mode] / args.ops * 1000 for mode in MODES}
    print(f"ops per job: {args.ops}; runs per mode: {len(times['plain'])}")
    for mode in MODES:
        print(f"{mode:8} median {median[mode]:8.3f} s   {per_step[mode]:7.2f} ms per step")
    cpu_step = {mode: statistics.median(cpu[mode]) / args.ops * 1000 for mode in MODES}
    for mode in MODES:
        print(f"{mode:8} job thread CPU  {cpu_step[mode]:7.2f} ms per step")
    print(f"ratio telemhq/plain: {median['telemhq'] / median['plain']:.3f}")
    print(f"ratio telemhq/noop:  {median['telemhq'] / median['noop']:.3f}")
    print(f"ratio noop/plain:    {median['noop'] / median['plain']:.3f}  (Dagster's own hook cost)")
    print(f"added per step vs plain: {per_step['telemhq'] - per_step['plain']:7.3f} ms")
    print(f"added per step vs noop:  {per_step['telemhq'] - per_step['noop']:7.3f} ms")
    print(f"job thread CPU added per step vs noop: {cpu_step['telemhq'] - cpu_step['noop']:.3f} ms")
    print(f"final flush: {flush_s * 1000:.1f} ms (the last step's pings all stored)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
