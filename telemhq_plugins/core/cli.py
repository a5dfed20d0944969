"""The ``telemhq`` command: ping a tracker, monitor any command, check assertions locally,
sync the trackers of a ``telemhq.toml`` ``[[jobs]]`` table."""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import IO, Any

import httpx

from telemhq_plugins.core import jsontext
from telemhq_plugins.core.agent.command import add_agent_parser, agent_command
from telemhq_plugins.core.agent.paths import AgentError
from telemhq_plugins.core.assertions import (
    AssertionSyntaxError,
    History,
    evaluate_all,
    parse_assertion,
)
from telemhq_plugins.core.config import ConfigError, Settings, load_settings
from telemhq_plugins.core.delivery import Client
from telemhq_plugins.core.jobsfile import JobsFileError, read_jobs
from telemhq_plugins.core.payload import STATUSES, ErrorInfo, Ping, as_status
from telemhq_plugins.core.provision import sync
from telemhq_plugins.core.runs import start_run
from telemhq_plugins.core.runsfile import RunsFileError, fetch_history, read_runs_file

__all__ = ["command_job", "main"]

STDERR_TAIL = 4_000

EPILOG = """\
examples:
  telemhq ping https://telemhq.com/ping/TOKEN
  telemhq ping TOKEN --json '{"records_processed": 450, "errors": 0}'
  telemhq ping TOKEN --status failure -f result.json
  telemhq ping -- -TOKEN                        (a token that starts with a dash)
  telemhq run --token TOKEN -- python nightly_sync.py --full
  telemhq run --job etl_daily -- ./load.sh          (token from TELEMHQ_TRACKERS/PING_KEY)
  telemhq check 'records_processed > 0' 'status = success' --json '{"records_processed": 0}'
  telemhq check 'records_processed >= 0.5 * median(last 20)' -f run.json --history runs.json
  telemhq check 'duration <= 3 * p90(last 50)' --json '{"duration": 9000}' --tracker nightly
  telemhq sync --dry-run                         (the [[jobs]] of ./telemhq.toml, no writes)
  telemhq sync --prune -c jobs.toml              (and pause trackers of jobs no longer there)
  telemhq silence --tag nightly --for 2h --comment "warehouse upgrade"
  telemhq agent                                 (the local agent: TELEMHQ_AGENT=auto uses it)
  telemhq agent status

configuration: TELEMHQ_BASE_URL, TELEMHQ_TOKEN, TELEMHQ_PING_URL, TELEMHQ_PING_KEY,
TELEMHQ_TRACKERS, TELEMHQ_TIMEOUT, TELEMHQ_DISABLED, TELEMHQ_API_KEY (sync, silence),
TELEMHQ_AGENT
adapters add commands: telemhq prefect watch (with telemhq-plugins[prefect])
(see docs/configuration.md and docs/schedules.md)."""
SYNC_TAG = "telemhq-sync"
#: entry point group of commands that adapters add (``telemhq prefect watch``).
COMMANDS_GROUP = "telemhq.commands"
BUILTIN_COMMANDS = frozenset({"ping", "run", "check", "sync", "silence", "agent"})


class CliError(Exception):
    """A usage problem: printed as ``telemhq: error: ...`` with exit status 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="telemhq",
        description="Send TelemHQ pings, monitor commands, check payload assertions.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ping = sub.add_parser("ping", help="send one ping and print the server's answer")
    ping.add_argument("target", metavar="TOKEN_OR_URL", help="a tracker token or full ping URL")
    ping.add_argument("--status", choices=sorted(STATUSES), help="run status (default: success)")
    _payload_args(ping)

    run = sub.add_parser(
        "run",
        help="run a command, ping with its outcome, exit with its exit code",
        description="Time CMD, ping success or failure (exit code, duration, stderr tail), "
        "and exit with CMD's exit code. Delivery problems never change the exit code.",
    )
    run.add_argument("--token", help="tracker token or ping URL (default: from configuration)")
    run.add_argument("--job", help="job name for TELEMHQ_TRACKERS / ping-key lookup")
    run.add_argument("--start", action="store_true", help="also send a start ping")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS")

    check = sub.add_parser(
        "check",
        help="evaluate assertions against a payload locally",
        description="Evaluate assertions as the server would. Exit status: 0 when all pass "
        "or are not evaluated (too little history), 1 when one fails, 2 on a usage or "
        "syntax error.",
    )
    check.add_argument("expressions", nargs="+", metavar="EXPR", help="e.g. 'errors = 0'")
    _payload_args(check)
    past = check.add_mutually_exclusive_group()
    past.add_argument(
        "--history",
        metavar="RUNS_JSON",
        help="the tracker's past runs: what GET /api/v1/trackers/ID/runs answers (or its items)",
    )
    past.add_argument(
        "--tracker",
        metavar="SLUG",
        help="fetch the tracker's past runs and timezone from the server's API "
        "(TELEMHQ_BASE_URL, and an API key: --api-key or TELEMHQ_API_KEY)",
    )
    check.add_argument("--api-key", dest="check_api_key", help="an API key for --tracker")
    check.add_argument(
        "--timezone", help="for same weekday / same hour (default: the tracker's, else UTC)"
    )
    check.add_argument("--at", help="the run's time, ISO 8601 (default: now)")

    sync_cmd = sub.add_parser(
        "sync",
        help="create/update the trackers of a telemhq.toml [[jobs]] table",
        description="Make the server's trackers match the [[jobs]] of a telemhq.toml file "
        "(schedule, timezone, grace, assertions, tags, name), through the management API. "
        "Only what differs is written; every tracker is tagged (--tag).",
    )
    sync_cmd.add_argument(
        "-c",
        "--config",
        type=Path,
        help="the file (default: $TELEMHQ_CONFIG, else ./telemhq.toml)",
    )
    sync_cmd.add_argument(
        "--dry-run", action="store_true", help="print what would change, write nothing"
    )
    sync_cmd.add_argument(
        "--prune",
        action="store_true",
        help="pause (never delete) trackers with the tag whose job is no longer in the file",
    )
    sync_cmd.add_argument(
        "--tag", default=SYNC_TAG, help=f"tag of the file's trackers (default: {SYNC_TAG})"
    )
    sync_cmd.add_argument(
        "--api-key",
        help="a read-write API key (default: $TELEMHQ_API_KEY, else the file's api_key)",
    )
    silence = sub.add_parser(
        "silence",
        help="hold the server's notifications for some trackers for a while",
        description="Create a silence on the server: the trackers it selects still record "
        "their state changes, but no channel is notified until it ends.",
    )
    silence.add_argument("--tag", action="append", default=[], help="trackers with this tag")
    silence.add_argument("--name", help="trackers whose name or slug matches this glob")
    silence.add_argument("--orchestrator", help="trackers of this orchestrator (e.g. airflow)")
    silence.add_argument("--for", dest="duration", required=True, help="e.g. 30m, 2h, 1d")
    silence.add_argument("--comment", default="", help="why (shown with the silence)")
    silence.add_argument("--api-key", help="a read-write API key (default: $TELEMHQ_API_KEY)")
    add_agent_parser(sub)
    return parser


def _cmd_silence(args: argparse.Namespace, out: IO[str]) -> int:
    settings = load_settings()
    api_key = args.api_key or settings.api_key
    if not api_key:
        raise CliError("silence needs a read-write API key: set TELEMHQ_API_KEY or --api-key")
    selector: dict[str, Any] = {"tags": args.tag} if args.tag else {}
    if args.name:
        selector["name"] = args.name
    if args.orchestrator:
        selector["orchestrator"] = args.orchestrator
    body = {"selector": selector, "duration": args.duration, "comment": args.comment}
    try:
        answer = httpx.post(
            f"{settings.base_url.rstrip('/')}/api/v1/silences",
            json=body,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=settings.timeout,
        )
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach {settings.base_url}: {exc}") from None
    if answer.status_code != 201:
        raise CliError(f"the server refused the silence ({answer.status_code}): {answer.text}")
    created = answer.json()
    print(
        f"silence {created['id']} until {created['active_until'] or created['ends_at']}", file=out
    )
    return 0


def _payload_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--json", dest="json_text", metavar="JSON", help="payload as a JSON object")
    group.add_argument("-f", "--file", type=Path, help="read the payload from a file ('-': stdin)")


def _read_payload(args: argparse.Namespace, stdin: IO[str]) -> dict[str, Any]:
    if args.json_text is not None:
        text, source = args.json_text, "--json"
    elif args.file is not None:
        source = str(args.file)
        try:
            text = stdin.read() if source == "-" else args.file.read_text()
        except OSError as exc:
            raise CliError(f"cannot read {source}: {exc.strerror}") from None
    else:
        return {}
    try:
        data = jsontext.loads(text)  # the server's parser: the same values, the same verdict
    except jsontext.JSONDecodeError as exc:
        raise CliError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CliError(f"{source} must be a JSON object, got {type(data).__name__}")
    return data


def _cmd_ping(args: argparse.Namespace, out: IO[str], stdin: IO[str]) -> int:
    payload = _read_payload(args, stdin)
    settings = load_settings()
    try:
        status = as_status(args.status or payload.pop("status", None) or "success")
    except ValueError as exc:
        raise CliError(str(exc)) from None
    ping = Ping(status=status, fields=payload)
    for key in ("run_id", "ping_id"):
        if isinstance(payload.get(key), str):
            setattr(ping, key, payload.pop(key))
    client = Client(settings)
    try:
        result = client.send(ping, settings.url_for_token(args.target))
    finally:
        client.close(0)
    if result.outcome == "filtered":
        print("telemhq: a plugin's telemhq_filter_ping dropped the ping; not sent", file=sys.stderr)
        return 0
    if result.response is not None:
        print(json.dumps(result.response, indent=2), file=out)
    if not result.ok:
        print(f"telemhq: ping not delivered: {result.error}", file=sys.stderr)
        return 1
    return 0


def _cmd_run(args: argparse.Namespace, out: IO[str]) -> int:
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise CliError("run needs a command: telemhq run --token TOKEN -- CMD ARGS")
    try:
        settings = load_settings()
    except ConfigError as exc:  # the command runs all the same, unmonitored
        print(f"telemhq: monitoring is off, running the command without it: {exc}", file=sys.stderr)
        settings = Settings(disabled=True)
    client = Client(settings)
    job = args.job or command_job(cmd)
    monitored = start_run(job, token=args.token, send_start=args.start or None, client=client)
    try:
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    except OSError as exc:
        monitored.finish("failure", error=exc, exit_code=127)
        client.close()
        print(f"telemhq: cannot run {cmd[0]}: {exc.strerror}", file=sys.stderr)
        return 127
    tail = _pump_stderr(proc)
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: proc.send_signal(signum))
    try:
        code = proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    tail.join()
    exit_code = code if code >= 0 else 128 - code
    if code == 0:
        monitored.finish("success", exit_code=0)
    else:
        text = b"".join(tail.chunks).decode("utf-8", "replace")[-STDERR_TAIL:]
        message = f"{cmd[0]} exited with status {exit_code}"
        monitored.finish(
            "failure", error=ErrorInfo("ExitStatus", message, text or None), exit_code=exit_code
        )
    client.close()
    return exit_code


#: interpreters whose job is the script (or ``-m`` module) they run, not themselves.
_INTERPRETER = re.compile(r"(python|pypy|bash|sh|zsh|node|ruby|perl|rscript)[\d.]*(\.exe)?", re.I)
#: interpreter options that take a value (``python -W ignore x.py``).
_OPTION_ARGS = frozenset({"-W", "-X", "-Q"})


def command_job(cmd: Sequence[str]) -> str:
    """The job name of a command: the script an interpreter runs, without its extension
    (``python x.py`` and ``./x.py`` are ``x``), the module of ``python -m pkg.mod``, else the
    program's name (``-c`` code has no name of its own)."""
    program = Path(cmd[0]).name
    if not _INTERPRETER.fullmatch(program):
        return Path(program).stem or program
    args = iter(cmd[1:])
    for arg in args:
        if arg == "-m":
            return next(args, program)
        if arg == "-c":
            return program
        if arg in _OPTION_ARGS:
            next(args, None)
        elif not arg.startswith("-"):
            return Path(arg).stem or program
    return program


class _StderrTail(threading.Thread):
    """Copies the child's stderr through to ours, keeping the last few KB for the ping."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(name="telemhq-stderr", daemon=True)
        self.stream = stream
        self.chunks: collections.deque[bytes] = collections.deque()
        self._size = 0

    def run(self) -> None:
        sink = sys.stderr.buffer if hasattr(sys.stderr, "buffer") else None
        for chunk in iter(lambda: self.stream.read1(8192), b""):  # type: ignore[attr-defined]
            if sink is not None:
                sink.write(chunk)
                sink.flush()
            self.chunks.append(chunk)
            self._size += len(chunk)
            while self._size - len(self.chunks[0]) >= STDERR_TAIL:
                self._size -= len(self.chunks.popleft())


def _pump_stderr(proc: subprocess.Popen[bytes]) -> _StderrTail:
    assert proc.stderr is not None
    pump = _StderrTail(proc.stderr)
    pump.start()
    return pump


def _cmd_check(args: argparse.Namespace, out: IO[str], stdin: IO[str]) -> int:
    payload = _read_payload(args, stdin)
    assertions = [parse_assertion(text) for text in args.expressions]
    history, timezone = _check_history(args)
    results = evaluate_all(
        assertions, payload, history, now=_check_time(args.at), timezone=args.timezone or timezone
    )
    for result in results:
        mark = "PASS" if result.passed else "FAIL"
        if not result.evaluated:
            mark = "SKIP"  # too little history: neither passes nor fails
        print(f"{mark}  {result.expression}  ({result.reason})", file=out)
    return 0 if all(r.passed for r in results) else 1


def _check_history(args: argparse.Namespace) -> tuple[History | None, str | None]:
    """The past runs ``--history`` or ``--tracker`` names, and the tracker's timezone."""
    try:
        if args.history is not None:
            return read_runs_file(args.history), None
        if args.tracker is not None:
            api_key = args.check_api_key or os.environ.get("TELEMHQ_API_KEY")
            if not api_key:
                raise CliError("--tracker needs an API key: set TELEMHQ_API_KEY or --api-key")
            settings = load_settings()
            return fetch_history(settings.base_url, args.tracker, api_key, timeout=settings.timeout)
    except RunsFileError as exc:
        raise CliError(str(exc)) from None
    return None, None


def _check_time(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"--at {text!r} is not an ISO 8601 time") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)


def _cmd_sync(args: argparse.Namespace, out: IO[str]) -> int:
    path = args.config or Path(os.environ.get("TELEMHQ_CONFIG") or "telemhq.toml")
    try:
        jobs = read_jobs(path)
    except JobsFileError as exc:
        raise CliError(str(exc)) from None
    settings = load_settings(config_file=path)
    api_key = args.api_key or settings.api_key
    if not api_key:
        raise CliError(
            "sync needs a read-write API key: set TELEMHQ_API_KEY, api_key in the file, "
            "or pass --api-key"
        )
    if settings.disabled:
        raise CliError("TELEMHQ_DISABLED is set: nothing to sync")
    client = Client(settings)
    results = sync(
        jobs,
        orchestrator=args.tag,
        prune=args.prune,
        api_key=api_key,
        client=client,
        background=False,
        cached=False,
        dry_run=args.dry_run,
    ).results
    client.close()
    if args.dry_run:
        print(f"dry run: nothing written to {settings.base_url}", file=out)
    verbs = {"created": "create", "updated": "update", "paused": "pause"}
    width = max((len(r.job) for r in results), default=0)
    counts: collections.Counter[str] = collections.Counter()
    for result in results:
        outcome: str = result.outcome
        if args.dry_run and outcome in verbs:
            outcome = f"would {verbs[outcome]}"
        counts[outcome] += 1
        detail = result.detail or ", ".join(result.changed)
        print(f"{outcome:<16} {result.job:<{width}}  {detail}".rstrip(), file=out)
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
    print(f"{len(jobs)} job(s): {summary or 'nothing to do'}", file=out)
    return 1 if counts["error"] else 0


def _adapter_command(name: str) -> Callable[[Sequence[str]], int] | None:
    """The ``main(argv)`` an installed adapter registers for ``telemhq <name> ...`` (entry point
    group ``telemhq.commands``), so core runs adapter commands without importing adapters."""
    for entry in entry_points(group=COMMANDS_GROUP):
        if entry.name == name:
            command: Callable[[Sequence[str]], int] = entry.load()
            return command
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``telemhq`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in BUILTIN_COMMANDS and not argv[0].startswith("-"):
        command = _adapter_command(argv[0])
        if command is not None:
            return command(argv[1:])
    args = _parser().parse_args(argv)
    try:
        if args.command == "ping":
            return _cmd_ping(args, sys.stdout, sys.stdin)
        if args.command == "run":
            return _cmd_run(args, sys.stdout)
        if args.command == "sync":
            return _cmd_sync(args, sys.stdout)
        if args.command == "silence":
            return _cmd_silence(args, sys.stdout)
        if args.command == "agent":
            return agent_command(args, sys.stdout)
        return _cmd_check(args, sys.stdout, sys.stdin)
    except (CliError, ConfigError, AgentError) as exc:
        print(f"telemhq: error: {exc}", file=sys.stderr)
        return 2
    except AssertionSyntaxError as exc:
        print(f"telemhq: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
