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

With ``--rtt MS`` (or ``--multiprocess``), it measures delivery instead, as production pays it:
``[--ops N] [--rounds R] [--rtt MS]``. The job runs on the multiprocess executor
(``execute_job``; every step in a process of its own, which flushes its pings before it exits,
one step at a time) in three modes: with a hook that does nothing (``plain``), with
``telemhq_hooks()`` delivering to the server itself (``direct``), and with them handing the
pings to a local ``telemhq agent`` (``agent``). The server is reached through a loopback proxy
adding ``MS`` per round trip (a server across a network; ``delay_proxy.py``), in both
monitored modes. Modes alternate as above; prints each mode's median wall time per run and
per step process's end (from its last event to the executor's next, apart from the seconds a
new Python process takes to start), its ratio to ``plain`` and the time added per step, and
checks every step's pings were stored (through the agent: that it counted them).
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

from dagster import (
    DagsterInstance,
    GraphDefinition,
    HookDefinition,
    JobDefinition,
    Output,
    build_reconstructable_job,
    execute_job,
    instance_for_test,
    multiprocess_executor,
    op,
)
from dagster._core.definitions.events import HookExecutionResult

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from delivery_modes import MODES as DELIVERY_MODES
from delivery_modes import LocalAgent, alternating, print_comparison, remote

from telemhq_plugins.core import Client, load_settings, set_client, slugify
from telemhq_plugins.dagster import telemhq_hooks
from tests.kit import wait_for_runs
from tests.live_server import LiveServer

HERE = Path(__file__).resolve().parent
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


def delivery_job(ops: int, monitored: bool) -> JobDefinition:
    """The job of the delivery comparison, on the multiprocess executor (each step process
    builds it again: ``build_reconstructable_job``)."""
    return build_graph(ops).to_job(
        name="bench_mp" if monitored else "bench_mp_plain",
        executor_def=multiprocess_executor,
        # Without monitoring, a hook that does nothing: every mode's steps then end with a
        # hook event, from which a step process's end is measured.
        hooks=telemhq_hooks() if monitored else {HookDefinition(name="noop", hook_fn=noop_hook)},
    )


def step_exits(instance: DagsterInstance, run_id: str) -> list[float]:
    """For each step of a run, the seconds from its process's last event to the run's next
    event (the executor starting the next step, or ending the run): what the step process's
    end costs, its exit flush included, apart from the seconds Python takes to start it.
    Steps run one at a time (``max_concurrent: 1``), so nothing else happens in between."""
    entries = sorted(instance.all_logs(run_id), key=lambda entry: entry.timestamp)
    last: dict[str, int] = {}
    for index, entry in enumerate(entries):
        event = entry.dagster_event
        # STEP_WORKER_STARTING is the executor's, before the step's process exists.
        if entry.step_key and event and event.event_type_value != "STEP_WORKER_STARTING":
            last[entry.step_key] = index
    return [entries[i + 1].timestamp - entries[i].timestamp for i in last.values()]


def delivery(args: argparse.Namespace) -> int:
    """The delivery comparison: plain, direct and agent, on the multiprocess executor."""
    jobs = {
        monitored: build_reconstructable_job(
            "dagster_overhead",
            "delivery_job",
            reconstructable_args=(args.ops, monitored),
            reconstructor_working_directory=str(HERE),
        )
        for monitored in (False, True)
    }
    run_config = {**QUIET, "execution": {"config": {"max_concurrent": 1}}}
    # The step processes are spawned: they import this module and build the process's client
    # from TELEMHQ_* in the environment, as in production.
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), str(HERE.parent)])
    scratch = "/dev/shm" if os.path.isdir("/dev/shm") else None
    times: dict[str, list[float]] = {mode: [] for mode in DELIVERY_MODES}
    exits: dict[str, list[float]] = {mode: [] for mode in DELIVERY_MODES}
    with (
        tempfile.TemporaryDirectory(dir=scratch) as home,
        LiveServer(database_url=f"sqlite:///{home}/telemhq.db") as server,
        remote(server.base_url, args.rtt) as target,
        LocalAgent(target) as agent,
    ):
        key = server.api("POST", "/ping-keys", json={"name": "bench"}).json()["key"]
        os.environ.update(TELEMHQ_BASE_URL=target, TELEMHQ_PING_KEY=key)
        os.makedirs(f"{home}/dagster")
        with instance_for_test(temp_dir=f"{home}/dagster") as instance:

            def timed(mode: str) -> tuple[float, list[float]]:
                if mode == "agent":
                    os.environ["TELEMHQ_AGENT"] = agent.socket
                else:
                    os.environ.pop("TELEMHQ_AGENT", None)
                started = time.perf_counter()
                with execute_job(
                    jobs[mode != "plain"], instance=instance, run_config=run_config
                ) as result:
                    elapsed = time.perf_counter() - started
                    assert result.success, mode
                    return elapsed, step_exits(instance, result.run_id)

            for mode in DELIVERY_MODES:  # warm-up: the trackers' creation, caches
                print(f"warm-up run, {mode} (not counted): {timed(mode)[0]:.2f} s")
            for mode in alternating(DELIVERY_MODES, args.rounds):
                elapsed, ends = timed(mode)
                times[mode].append(elapsed)
                exits[mode].extend(ends)
                print(f"{mode:8} {elapsed:7.2f} s   step exits {statistics.median(ends):.3f} s")
            runs = len(times["direct"]) + len(times["agent"]) + 2
            last = slugify(f"bench_mp.step_{args.ops - 1:03d}")
            stored = len(wait_for_runs(server, last, runs, timeout=120))
            assert stored == runs, f"expected {runs} pings of {last}, the server has {stored}"
            handed = agent.status()["acked"]
            status = agent.summary()

    print_comparison("the job's wall time", times, per_run=args.ops, unit="step", rtt_ms=args.rtt)
    print_comparison("a step process's end", exits, per_run=1, unit="step", rtt_ms=args.rtt)
    agent_pings = (len(times["agent"]) + 1) * args.ops
    print(f"\nagent mode: {handed} of {agent_pings} pings acknowledged by the agent")
    print(f"the agent: {status}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--ops", type=int, help="default: 200 (delivery: 6)")
    parser.add_argument("--rounds", type=int, help="every mode twice each; 2 (delivery: 1)")
    parser.add_argument("--rtt", type=float, help="delivery comparison, ms per round trip")
    parser.add_argument("--multiprocess", action="store_true", help="delivery, on loopback")
    args = parser.parse_args()
    if args.rtt is not None or args.multiprocess:
        args.ops = args.ops or 6
        args.rounds = args.rounds or 1
        return delivery(args)
    args.ops, args.rounds = args.ops or 200, args.rounds or 2

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
