"""The ``prefect`` block's parameters: bounded, and never a secret (unit tests of one
function, no flow run)."""

from __future__ import annotations

from prefect.blocks.system import Secret
from pydantic import SecretStr

from telemhq_plugins.prefect._details import (
    MAX_PARAMETER_CHARS,
    MAX_PARAMETERS,
    parameters_block,
)


def test_secrets_never_leave_the_flow() -> None:
    raw = {
        "day": "2026-12-01",
        "password": "hunter2",
        "db_token": "t0k3n",
        "api": SecretStr("s3cret"),
        "vault": Secret(value="block-secret"),
        "config": {"host": "db", "auth": {"user": "u"}, "api_key": "k"},
    }
    serialized = {**raw, "api": "**********", "vault": {"value": "**********"}}
    block = parameters_block(serialized, raw)
    assert block == {"day": "2026-12-01", "config": {"host": "db"}}


def test_parameters_are_bounded() -> None:
    values = {f"p{i}": i for i in range(MAX_PARAMETERS + 10)}
    values["p0"] = "x" * 5_000  # type: ignore[assignment]
    values["p1"] = list(range(1_000))  # type: ignore[assignment]
    block = parameters_block(values, values)
    assert len(block) == MAX_PARAMETERS
    assert len(block["p0"]) == MAX_PARAMETER_CHARS + 3
    assert isinstance(block["p1"], str)
    assert block["p1"].startswith("[0,1,2")
    assert len(block["p1"]) == MAX_PARAMETER_CHARS + 3
