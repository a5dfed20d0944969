"""One JSON reading for payloads (server and ``telemhq check``): integers stay exact at any size,
and big integers compare exactly in assertions."""

from __future__ import annotations

import json

import pytest

from telemhq_plugins.core import jsontext
from telemhq_plugins.core.assertions import parse_assertion
from telemhq_plugins.core.cli import main

BIG = 2**64 + 1  # 18446744073709551617: a float rounds it to 2**64


@pytest.mark.parametrize(
    "value", [BIG, 2**64, -(2**63) - 1, 10**200, -(10**30), 2**63 - 1, 0, 12345678901234567890]
)
def test_integers_are_read_exactly_at_any_size(value: int) -> None:
    text = json.dumps({"n": value, "nested": {"list": [value, 1.5, "x"]}})
    parsed = jsontext.loads(text.encode())
    assert parsed == {"n": value, "nested": {"list": [value, 1.5, "x"]}}
    assert type(parsed["n"]) is int
    assert jsontext.loads(text) == parsed
    assert jsontext.loads(jsontext.dumps(parsed)) == parsed


@pytest.mark.parametrize(
    "document",
    [
        b'{"n": NaN}',
        b'{"n": Infinity}',
        b'{"n": 1e400}',
        b'{"n": 1' + b"0" * 400 + b"}",  # infinite as a float
        b'{"s": "\\ud800"}',  # a lone surrogate
        b"\xef\xbb\xbf{}",  # a byte order mark
        b'{"s": "\xff"}',  # not UTF-8
        b"[" * 2000 + b"]" * 2000,
        b'{"n": 12345678901234567890123',  # cut short, with a long number in it
    ],
)
def test_what_is_refused_is_refused_whatever_the_digits(document: bytes) -> None:
    with pytest.raises(jsontext.JSONDecodeError):
        jsontext.loads(document)


@pytest.mark.parametrize(
    ("assertion", "payload", "passed"),
    [
        (f"n > {2**64}", {"n": BIG}, True),
        (f"n = {2**64}", {"n": BIG}, False),
        (f"n = {BIG}", {"n": BIG}, True),
        (f"n != {2**64}", {"n": BIG}, True),
        (f"n >= {BIG + 1}", {"n": BIG}, False),
        (f"n < {-(2**63)}", {"n": -(2**63) - 1}, True),
        (f"n in [{2**64}, {BIG}]", {"n": BIG}, True),
        (f"n > {2**64}", {"n": str(BIG)}, True),  # an integer string is exact too
        (f"n = {2**64}", {"n": f" {BIG} "}, False),
        ("n > 1.5", {"n": BIG}, True),
        (f"n > {2**64}", {"n": 1.8446744073709552e19}, False),  # a float stays a float
    ],
)
def test_big_integers_compare_exactly(
    assertion: str, payload: dict[str, int], passed: bool
) -> None:
    parsed = jsontext.loads(json.dumps(payload))
    assert parse_assertion(assertion).evaluate(parsed).passed is passed


def test_telemhq_check_reads_big_integers_exactly(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", f"n > {2**64}", "--json", json.dumps({"n": BIG})])
    assert code == 0, capsys.readouterr()
