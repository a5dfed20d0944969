"""Integers beyond 64 bits: the server and ``telemhq check`` give the same verdict (one
reading, one evaluation), comparing integers exactly; stored and answered exactly too."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from telemhq_plugins.core.cli import main as telemhq
from tests.server.helpers import AppClient, make_tracker, runs_of

TWO64 = 2**64
CASES = [
    (f"n > {TWO64}", {"n": TWO64 + 1}),
    (f"n = {TWO64}", {"n": TWO64 + 1}),
    (f"n = {TWO64 + 1}", {"n": TWO64 + 1}),
    (f"n != {TWO64}", {"n": TWO64 + 1}),
    (f"n < {-(2**63)}", {"n": -(2**63) - 1}),
    (f"n >= {10**30 + 1}", {"n": 10**30}),
    (f"n in [{TWO64}, {TWO64 + 2}]", {"n": TWO64 + 1}),
    (f"n > {TWO64}", {"n": str(TWO64 + 1)}),
]


def cli_verdict(assertion: str, payload: dict[str, object]) -> bool:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = telemhq(["check", assertion, "--json", json.dumps(payload)])
    return code == 0


@pytest.mark.parametrize(("assertion", "payload"), CASES, ids=[c[0] for c in CASES])
def test_the_server_and_telemhq_check_agree(
    client: AppClient, assertion: str, payload: dict[str, object]
) -> None:
    tracker = make_tracker(client, assertions=[assertion])
    answer = client.post(f"/ping/{tracker['token']}", content=json.dumps(payload).encode())
    assert answer.status_code == 200, answer.text
    verdict = answer.json()["assertions"][0]
    assert verdict["passed"] is cli_verdict(assertion, payload)
    assert verdict["actual"] == payload["n"]  # answered exactly
    [run] = runs_of(client, tracker["id"])
    assert run["payload"] == payload  # stored exactly
    assert run["assertions"][0]["actual"] == payload["n"]


def test_the_expected_verdicts() -> None:
    assert [cli_verdict(a, p) for a, p in CASES] == [
        True,
        False,
        True,
        True,
        True,
        False,
        False,
        True,
    ]
