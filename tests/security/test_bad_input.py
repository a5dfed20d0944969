"""Hostile and odd ping bodies, on SQLite and PostgreSQL alike: the same table of inputs is
accepted or refused the same way on both, and a ping that cannot be stored fails alone (400),
never the group-commit batch it shares with other senders' pings."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from telemhq_server.db import utcnow
from telemhq_server.ingest import Pending

from tests.server.helpers import AppClient, make_tracker, runs_of

BIG = 2**64 + 1
#: (name, raw body, expected status)
TABLE: list[tuple[str, bytes, int]] = [
    ("nul in ping_id", b'{"ping_id": "x\\u0000y"}', 400),
    ("nul in run_id", b'{"run_id": "r\\u0000"}', 400),
    ("nul in a key and a value", b'{"k\\u0000": "v\\u0000", "ping_id": "nul-kv"}', 200),
    ("empty ping_id", b'{"ping_id": ""}', 400),
    ("ping_id too long", json.dumps({"ping_id": "x" * 201}).encode(), 400),
    ("ping_id of 200", json.dumps({"ping_id": "y" * 200}).encode(), 200),
    ("ping_id not a string", b'{"ping_id": 5}', 400),
    ("astral ping_id", json.dumps({"ping_id": "\U0001f600 é"}).encode(), 200),
    ("unknown status", b'{"status": "bogus"}', 400),
    ("status a list", b'{"status": []}', 400),
    ("status an object", b'{"status": {"a": 1}}', 400),
    ("negative duration", b'{"duration": -1}', 400),
    ("duration a string", b'{"duration": "5"}', 400),
    ("huge duration", b'{"duration": 1e308, "ping_id": "huge-duration"}', 200),
    ("integer beyond 64 bits", f'{{"n": {BIG}, "ping_id": "big"}}'.encode(), 200),
    ("not JSON", b"{", 400),
    ("not an object", b"[1]", 400),
    ("NaN", b'{"n": NaN}', 400),
    ("infinite number", b'{"n": 1e400}', 400),
    ("lone surrogate", b'{"s": "\\ud800"}', 400),
    ("not UTF-8", b'{"s": "\xff"}', 400),
    ("byte order mark", b"\xef\xbb\xbf{}", 400),
    ("too deep", b'{"a": ' + b"[" * 2000 + b"]" * 2000 + b"}", 400),
]


def test_the_same_inputs_are_accepted_and_refused_alike_in_one_batch(
    client: AppClient,
) -> None:
    bad = make_tracker(client, assertions=[f"n > {BIG - 1}"])
    good = make_tracker(client)
    urls = [f"/ping/{bad['token']}"] * len(TABLE)
    calls = [
        (lambda url=url, raw=raw: client.client.post(url, content=raw))
        for url, (_, raw, _) in zip(urls, TABLE, strict=True)
    ]
    # Other senders' pings queued in the same moment: the same group-commit transaction.
    good_calls = [
        (lambda i=i: client.client.post(f"/ping/{good['token']}", json={"ping_id": f"g{i}"}))
        for i in range(20)
    ]
    answers = client.gather([*calls, *good_calls])
    got = {name: a.status_code for (name, _, _), a in zip(TABLE, answers, strict=False)}
    assert got == {name: status for name, _, status in TABLE}
    assert [a.status_code for a in answers[len(TABLE) :]] == [200] * 20
    assert len(runs_of(client, good["id"])) == 20
    stored = {run["ping_id"]: run for run in runs_of(client, bad["id"])}
    accepted = [name for name, _, status in TABLE if status == 200]
    assert len(stored) == len(accepted)
    # Stored as sent: the big integer exact, in the payload and in the verdict.
    assert stored["big"]["payload"]["n"] == BIG
    assert stored["big"]["assertions"][0]["passed"] is True
    assert stored["nul-kv"]["payload"] == {"k\x00": "v\x00", "ping_id": "nul-kv"}
    for name, _, status in TABLE:
        answer = answers[[n for n, _, _ in TABLE].index(name)].json()
        assert answer["ok"] is (status == 200), (name, answer)
        if status == 400:
            assert answer["error"], name


def test_the_batch_endpoint_answers_each_entry_alike(client: AppClient) -> None:
    tracker = make_tracker(client)
    entries: list[Any] = [
        {"ping": tracker["token"], "body": {"ping_id": "x\x00y"}},
        {"ping": tracker["token"], "body": {"ping_id": "fine"}},
        {"ping": tracker["token"], "body": {"n": BIG, "ping_id": "big"}},
        {"ping": tracker["token"], "body": {"run_id": "\x00"}},
    ]
    answer = client.post("/ping/_batch", json={"pings": entries})
    assert answer.status_code == 200, answer.text
    assert [r["status"] for r in answer.json()["results"]] == [400, 200, 200, 400]
    stored = {run["ping_id"]: run for run in runs_of(client, tracker["id"])}
    assert set(stored) == {"fine", "big"}
    assert stored["big"]["payload"]["n"] == BIG


def test_a_ping_the_database_refuses_fails_alone(app: Any, client: AppClient) -> None:
    """Past the handler's checks (the writer's own guard): a value the database refuses
    fails its ping alone, the rest of the transaction is stored and answered."""
    one, two = make_tracker(client), make_tracker(client)
    postgres = app.engine.dialect.name == "postgresql"

    def pending(tracker: dict[str, Any], ping_id: str) -> Pending:
        return Pending(
            tracker["id"], tracker["token"], "success", "{}", ping_id, None, None, [], utcnow()
        )

    items = [pending(one, f"a{i}") for i in range(10)]
    items.insert(5, pending(two, "bad\x00id"))
    items += [pending(two, f"b{i}") for i in range(10)]

    async def burst() -> list[tuple[int, dict[str, Any]]]:
        return list(await asyncio.gather(*(app.writer.submit(p) for p in items)))

    answers = client.call(burst)
    codes = [code for code, _ in answers]
    assert codes[:5] + codes[6:] == [200] * 20
    assert codes[5] == (400 if postgres else 200)  # SQLite can store it; the handler refuses
    assert len(runs_of(client, one["id"])) == 10
    assert len(runs_of(client, two["id"])) == (10 if postgres else 11)
