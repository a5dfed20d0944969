"""The instructions a Python child process executes, counted by valgrind's cachegrind (the
instruction benchmarks run their measured part as a child of themselves)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def count_instructions(script: str, args: list[str], *, timeout: float = 3600) -> int:
    """Instructions of ``python script *args`` (every thread), with a fixed hash seed."""
    command = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        os.path.abspath(script),
        *args,
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(
        command, check=False, capture_output=True, text=True, env=env, timeout=timeout
    )
    found = _REFS.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"valgrind run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))
