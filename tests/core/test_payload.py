"""The ping body: standard fields, odd values made JSON, size bounds with a record of the cuts."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import uuid
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from telemhq_plugins.core.payload import (
    MAX_BODY_BYTES,
    MAX_ERROR_MESSAGE,
    MAX_TRACEBACK,
    ErrorInfo,
    Ping,
    encode_body,
    jsonable,
)


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque thing>"


class Broken:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def full_ping() -> Ping:
    """A ping with every standard field set."""
    started = dt.datetime(2026, 11, 26, 4, 0, tzinfo=dt.UTC)
    return Ping(
        status="failure",
        job="etl_daily.load",
        orchestrator="airflow",
        run_id="r1",
        duration=1500.123456,
        started_at=started,
        finished_at=started + dt.timedelta(seconds=1.5),
        attempt=2,
        error=ErrorInfo("ValueError", "bad row", "Traceback..."),
        fields={"records_processed": 450, "airflow": {"dag_id": "etl_daily"}},
    )


def test_it_writes_the_standard_fields() -> None:
    ping = full_ping()
    body = json.loads(ping.to_json())
    assert body["status"] == "failure"
    assert body["run_id"] == "r1"
    assert uuid.UUID(body["ping_id"])
    assert body["duration"] == 1500.123
    assert body["started_at"] == "2026-11-26T04:00:00Z"
    assert body["finished_at"] == "2026-11-26T04:00:01.500000Z"
    assert body["attempt"] == 2
    assert body["error"] == {
        "type": "ValueError",
        "message": "bad row",
        "traceback": "Traceback...",
    }
    assert body["records_processed"] == 450
    assert body["airflow"] == {"dag_id": "etl_daily"}
    assert body["job"] == "etl_daily.load"


def test_it_gives_each_ping_its_own_id_and_each_run_its_own_id() -> None:
    a, b = Ping(), Ping()
    assert a.ping_id != b.ping_id
    assert a.run_id != b.run_id


def test_it_lets_standard_fields_win_over_custom_ones() -> None:
    body = json.loads(Ping(status="success", fields={"status": "hacked", "ping_id": 1}).to_json())
    assert body["status"] == "success"
    assert isinstance(body["ping_id"], str)


def test_it_converts_odd_values_and_never_fails() -> None:
    value: dict[str, Any] = {
        "when": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        "naive": dt.datetime(2026, 1, 2, 3, 4, 5),
        "day": dt.date(2026, 1, 2),
        "span": dt.timedelta(minutes=2),
        "money": decimal.Decimal("1.25"),
        "inf_money": decimal.Decimal("Infinity"),
        "nan": float("nan"),
        "inf": float("inf"),
        "raw": b"\xffbytes",
        "color": Color.RED,
        "point": Point(1, 2),
        "path": Path("/tmp/x"),
        "id": uuid.UUID(int=1),
        "set": {3},
        "opaque": Opaque(),
        "broken": Broken(),
        1: "int key",
    }
    body = json.loads(Ping(fields=value).to_json())
    assert body["when"] == "2026-01-02T03:04:05+02:00"  # the instant, in its own zone
    assert body["naive"] == "2026-01-02T03:04:05"
    assert body["day"] == "2026-01-02"
    assert body["span"] == 120.0
    assert body["money"] == 1.25
    assert body["inf_money"] is None
    assert body["nan"] is None
    assert body["inf"] is None
    assert body["raw"] == "\ufffdbytes"
    assert body["color"] == "red"
    assert body["point"] == {"x": 1, "y": 2}
    assert body["path"] == "/tmp/x"
    assert body["id"] == str(uuid.UUID(int=1))
    assert body["set"] == [3]
    assert body["opaque"] == "<Opaque thing>"
    assert body["broken"] == "<unserialisable Broken>"
    assert body["1"] == "int key"


def test_it_sends_what_orjson_refuses_through_the_lenient_path() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    fields = {"lone": "a\udc80b", "huge": 2**70, "loop": loop, (1, 2): "tuple key", "when": when}
    data = Ping(fields=fields).to_json()
    body = json.loads(data.decode("utf-8"))  # valid UTF-8 despite the lone surrogate
    assert body["lone"] == "a?b"
    assert body["huge"] == 2**70
    assert "nested too deep" in json.dumps(body["loop"])
    assert body["(1, 2)"] == "tuple key"
    assert body["when"] == "2026-01-02T03:04:05+02:00"  # as on the fast path
    assert body["status"] == "success"


def test_it_survives_cycles_by_bounding_depth() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    text = json.dumps(jsonable(loop))
    assert "nested too deep" in text


def test_it_bounds_the_error_message_and_keeps_the_traceback_tail() -> None:
    error = ErrorInfo("E", "m" * (MAX_ERROR_MESSAGE * 2), "head" + "t" * MAX_TRACEBACK + "END")
    data = error.to_dict()
    assert len(data["message"]) < MAX_ERROR_MESSAGE + 50
    assert data["message"].endswith("chars cut]...")
    assert data["traceback"].endswith("END")
    assert "chars cut" in data["traceback"]


def test_it_captures_an_exception_with_its_traceback() -> None:
    def fail() -> None:
        raise KeyError("order 42")

    try:
        fail()
    except KeyError as exc:
        info = ErrorInfo.from_exception(exc)
    assert info.type == "KeyError"
    assert info.message == "'order 42'"
    assert info.traceback is not None
    assert "in fail" in info.traceback


def test_it_bounds_the_whole_body_and_names_what_was_cut() -> None:
    ping = Ping(
        status="failure",
        error=ErrorInfo("E", "boom", "x" * 7_000),
        fields={"big": ["y" * 10_000] * 10, "small": 1},
    )
    data = ping.to_json()
    assert len(data) <= MAX_BODY_BYTES
    body = json.loads(data)
    assert body["_truncated"] == ["error.traceback", "big"]
    assert body["small"] == 1
    assert body["status"] == "failure"
    assert body["error"]["message"] == "boom"


@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text() | st.binary(),
        lambda children: st.lists(children) | st.dictionaries(st.text(), children),
        max_leaves=30,
    )
)
def test_it_serialises_anything(value: Any) -> None:
    data = Ping(fields={"value": value}).to_json()
    assert len(data) <= MAX_BODY_BYTES
    assert json.loads(data)["status"] == "success"


def test_it_makes_ids_unique_across_forked_processes() -> None:
    import os
    import uuid as uuid_mod

    from telemhq_plugins.core.payload import new_id

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids must not repeat the parent's
        os.write(write, ",".join(new_id() for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as fh:
        child = set(fh.read().split(","))
    parent = {new_id() for _ in range(100)}
    assert len(child) == len(parent) == 100
    assert not child & parent
    assert all(uuid_mod.UUID(i).variant == uuid_mod.RFC_4122 for i in parent)


def test_a_pings_parts_make_the_same_ping_and_body() -> None:
    """``Ping.parts()`` is in the dataclass's order (``Run`` builds its ping from such a
    tuple), and ``encode_body`` of the parts is the ping's body."""
    ping = full_ping()
    assert Ping(*ping.parts()) == ping
    assert encode_body(ping.parts()) == ping.to_json()
