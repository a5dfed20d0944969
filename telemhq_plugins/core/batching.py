"""Batching: several pings in one ``POST <base>/ping/_batch``, and what its answer settles.

The path and the largest number of pings in one batch are shared with the reference server,
which defines its endpoint with these constants.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any, Final

import orjson

from telemhq_plugins.core.logs import log_once
from telemhq_plugins.core.payload import Ping
from telemhq_plugins.core.results import DeliveryResult

__all__ = [
    "BATCH_MAX_BYTES",
    "BATCH_MAX_PINGS",
    "BATCH_PATH",
    "Entry",
    "batch_requests",
    "batch_url",
    "item_result",
    "read_answers",
]

logger = logging.getLogger("telemhq")

#: The batch endpoint, under the server's base URL.
BATCH_PATH: Final = "/ping/_batch"
#: The most pings one batch request may carry.
BATCH_MAX_PINGS: Final = 1_000
#: The most body bytes the client puts in one batch request (pings are cut into several
#: requests beyond it).
BATCH_MAX_BYTES: Final = 512_000

#: one ping of a batch: its id, URL, body, and the ``Ping`` when a plugin hook wants it.
Entry = tuple[str, str, bytes, Ping | None]


def batch_url(url: str, origin: str) -> str | None:
    """``<base>/ping/_batch`` for a ping URL ``<base>/ping/...`` (``origin``: its
    ``scheme://host:port``), None when the URL has no ``/ping/`` part."""
    at = url.find("/ping/", len(origin))
    if at < 0:
        return None
    return url[:at] + BATCH_PATH


def batch_requests(
    batch_url: str, group: Sequence[Entry], max_bytes: int
) -> Iterator[tuple[int, int, bytes]]:
    """The request bodies that carry ``group``: ``(start, end, body)`` for ``group[start:end]``,
    each body at most about ``max_bytes`` (a single ping may pass it alone)."""
    prefix = len(batch_url) - len(BATCH_PATH) + len("/ping/")
    heads: dict[str, bytes] = {}  # b'{"ping":"<token>","body":' per URL
    for _, url, _, _ in group:
        if url not in heads:
            heads[url] = b'{"ping":' + orjson.dumps(url[prefix:]) + b',"body":'
    start = 0
    while start < len(group):
        end, size = start, 0
        while end < len(group) and (end == start or size < max_bytes):
            size += len(group[end][2]) + 64
            end += 1
        part = group[start:end]
        if len(heads) == 1:  # the usual batch: one URL, so one join and no copy per ping
            [head] = heads.values()
            items = head + (b"}," + head).join([body for _, _, body, _ in part]) + b"}"
        else:
            items = b",".join([heads[url] + body + b"}" for _, url, body, _ in part])
        yield start, end, b'{"pings":[' + items + b"]}"
        start = end


def read_answers(content: bytes, count: int) -> list[Any] | None:
    """The per-ping answers of a batch request answered 200, None when the answer is not
    the batch endpoint's (``{"results": [...]}`` with one entry per ping)."""
    data = json_object(content)
    answers = None if data is None else data.get("results")
    if not isinstance(answers, list) or len(answers) != count:
        return None
    return answers


def item_result(answer: Any) -> DeliveryResult | None:
    """A batch answer's entry ``{"status": 200, ...the single-ping answer}`` as a result;
    None when the entry settles nothing (a server error or 429: the one-ping path retries)."""
    if not isinstance(answer, dict) or not isinstance(answer.get("status"), int):
        return None
    status: int = answer["status"]
    if 200 <= status < 300:
        return DeliveryResult("delivered", status, 1, answer)
    if status != 429 and 400 <= status < 500:
        error = f"HTTP {status}: {answer.get('error', '')}"
        log_once(
            logger,
            logging.ERROR,
            ("rejected-batch", status),
            "TelemHQ: server rejected a ping (%s); not retried",
            error,
        )
        return DeliveryResult("rejected", status, 1, answer, error)
    return None


def json_object(content: bytes) -> dict[str, Any] | None:
    """``content`` as a JSON object, None when it is not one."""
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None
