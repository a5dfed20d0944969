"""Code blocks of the README and the docs, read as the tests run them.

A block that a test runs carries a marker on the line above its fence::

    <!-- snippet: readme-env -->
    ```bash
    export TELEMHQ_BASE_URL=http://127.0.0.1:8000 TELEMHQ_PING_KEY=<the ping key it printed>
    ```

``snippet(doc, name)`` returns it; ``exports(block, ...)`` reads the variables a bash block
exports, with the documented local server and placeholders replaced by the server under test;
``run_bash(block, ...)`` runs a bash block's commands. Nothing here depends on an orchestrator,
so every environment's doc tests use it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.kit import statuses_oldest_first, wait_for_runs
from tests.live_server import LiveServer

__all__ = [
    "DOCS_BASE_URL",
    "ROOT",
    "Block",
    "assert_one_success_each",
    "blocks",
    "exports",
    "run_bash",
    "run_command",
    "snippet",
    "venv_env",
]

ROOT = Path(__file__).resolve().parents[1]
#: The server the docs show, replaced by the live one in the tests.
DOCS_BASE_URL = "http://127.0.0.1:8000"

_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)[^\n]*$")
_MARKER = re.compile(r"^\s*<!-- snippet: (?P<name>[\w.-]+) -->\s*$")
_PLACEHOLDER = re.compile(r"<[^<>\n]+>")
_HOLE = "__placeholder__"


@dataclass(frozen=True, slots=True)
class Block:
    """One fenced code block: its language, its code, the marker above it (if any), the
    document and the line of its opening fence (1-based), and the section heading it is in."""

    lang: str
    code: str
    name: str | None
    doc: Path
    line: int
    section: str


def blocks(doc: Path) -> list[Block]:
    """Every fenced block of ``doc``, in order."""
    lines = doc.read_text().splitlines()
    found: list[Block] = []
    section = ""
    marker: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#") and not line.startswith("#!"):
            section = line.lstrip("#").strip()
        if (m := _MARKER.match(line)) is not None:
            marker = m["name"]
            i += 1
            continue
        fence = _FENCE.match(line)
        if fence is None:
            if line.strip():
                marker = None  # a marker names the block right below it only
            i += 1
            continue
        indent = len(fence["indent"])
        body: list[str] = []
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            body.append(lines[j][indent:])
            j += 1
        code = "\n".join(body) + "\n"
        found.append(Block(fence["lang"], code, marker, doc, i + 1, section))
        marker = None
        i = j + 1
    return found


def snippet(doc: Path, name: str) -> Block:
    """The block marked ``<!-- snippet: name -->`` in ``doc``."""
    named = [b for b in blocks(doc) if b.name == name]
    if len(named) != 1:
        raise AssertionError(f"{doc.name}: expected one block marked {name!r}, found {len(named)}")
    return named[0]


def exports(block: Block, *, base_url: str, ping_key: str) -> dict[str, str]:
    """The variables the bash ``block`` exports, as the server under test needs them: the
    documented ``http://127.0.0.1:8000`` becomes ``base_url``, a ``<placeholder>`` for
    ``TELEMHQ_PING_KEY`` the ``ping_key``. Any other placeholder is an error: the docs would
    then ask the reader for something the test cannot know."""
    found: dict[str, str] = {}
    for line in block.code.splitlines():
        # A placeholder may hold spaces (``<your ping key>``): one word for shlex.
        words = shlex.split(_PLACEHOLDER.sub(_HOLE, line), comments=True)
        if not words or words[0] != "export":
            continue
        for word in words[1:]:
            var, _, value = word.partition("=")
            if var == "TELEMHQ_PING_KEY" and value == _HOLE:
                value = ping_key
            elif _HOLE in value:
                raise AssertionError(f"{block.doc.name}:{block.line}: {var} is a placeholder")
            found[var] = value.replace(DOCS_BASE_URL, base_url)
    return found


def venv_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with this interpreter's ``bin`` first on ``PATH``: ``python``, ``telemhq``,
    ``celery``, ``airflow`` in a block are this environment's."""
    bin_dir = str(Path(sys.executable).parent)
    return {**env, "PATH": bin_dir + os.pathsep + env.get("PATH", os.defpath)}


def _run(
    command: list[str], env: Mapping[str, str], cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        env=venv_env(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_command(
    command: list[str], *, env: Mapping[str, str], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` as a reader would (this environment's programs first on ``PATH``);
    fails with its output when it exits non-zero."""
    done = _run(command, env, cwd, timeout)
    assert done.returncode == 0, f"{command}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def assert_one_success_each(server: LiveServer, expected: Mapping[str, Mapping[str, Any]]) -> None:
    """Each tracker slug of ``expected`` has one run, a success, whose payload has the fields
    given (the tracker may appear a moment after the command returns)."""
    for slug, fields in expected.items():
        runs = wait_for_runs(server, slug, 1)
        assert statuses_oldest_first(runs) == ["success"], runs
        payload = runs[0]["payload"]
        assert {field: payload.get(field) for field in fields} == dict(fields), payload


def run_bash(
    block: Block, *, env: Mapping[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the bash ``block`` as a script (each command runs, whatever the previous one's exit
    status), with ``env`` and this environment's programs first on ``PATH``. ``pip install``
    lines are left out (the environment is installed already), and so are ``export`` lines:
    their values, placeholders replaced, come in ``env`` (see :func:`exports`)."""
    script = "\n".join(
        line
        for line in block.code.splitlines()
        if not line.lstrip().startswith(("pip install", "export "))
    )
    return _run(["bash", "-c", script], env, cwd, timeout)
