"""A loopback TCP proxy that holds every byte for a fixed one-way delay in each direction: a
server across a network, on one machine, for the benchmarks.

Run: ``python benchmarks/delay_proxy.py --target http://127.0.0.1:8000 --rtt 100`` (prints
``listening on http://127.0.0.1:PORT``, then forwards until it is stopped), or from a benchmark:

    with delay_proxy.running("http://127.0.0.1:8000", rtt_ms=100) as url:
        ...point the client at url...

``--rtt 100`` delays each direction by 50 ms, so a request and its answer take 100 ms more than
on loopback. The first bytes of a connection are held one round trip more, as the TCP handshake
holds them on a real network (``connect()`` returns at once here; the request it sends then
reaches the server one round trip late instead). TLS is not modelled: over HTTPS a new
connection costs one or two round trips more again. Bytes keep their order; the delay is added
to each chunk as it is read, so a stream is not slowed beyond the delay itself.

The proxy runs in its own process (:func:`running` starts one): in the benchmark's process it
would compete for the interpreter with the orchestrator being measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from urllib.parse import urlsplit

__all__ = ["DelayProxy", "running"]

_CHUNK = 65536


class DelayProxy:
    """Forwards connections on ``listen`` to ``target``, each direction ``one_way`` seconds late."""

    def __init__(
        self,
        target: tuple[str, int],
        one_way: float,
        *,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        handshake: bool = True,
    ) -> None:
        self.target = target
        self.one_way = one_way
        self.listen = listen
        self.handshake = handshake
        self.connections = 0

    async def serve(self, started: asyncio.Future[int] | None = None) -> None:
        server = await asyncio.start_server(self._connection, *self.listen)
        port: int = server.sockets[0].getsockname()[1]
        if started is not None:
            started.set_result(port)
        async with server:
            await server.serve_forever()

    async def _connection(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        loop = asyncio.get_running_loop()
        # A real connect() returns one round trip after it began: what is sent on it leaves
        # no earlier than that, and reaches the server the one-way delay later.
        not_before = loop.time() + (2 * self.one_way if self.handshake else 0)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            self._pipe(client_reader, upstream_writer, not_before),
            self._pipe(upstream_reader, client_writer, 0.0),
            return_exceptions=True,
        )
        for writer in (client_writer, upstream_writer):
            writer.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, not_before: float
    ) -> None:
        """Copy ``reader`` to ``writer``, each chunk written ``one_way`` after it was read, or
        after ``not_before`` if that is later; end of stream is passed on as late."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        with contextlib.suppress(OSError):
                            writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(send())
        try:
            while data := await reader.read(_CHUNK):
                queue.put_nowait((max(loop.time(), not_before) + self.one_way, data))
        except OSError:
            pass  # reset by the peer: end the stream as if closed
        queue.put_nowait((max(loop.time(), not_before) + self.one_way, b""))
        try:
            await sender
        except OSError:
            reader.feed_eof()


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "//" in url else f"//{url}")
    if parts.hostname is None or parts.port is None:
        raise SystemExit(f"--target needs a host and a port: {url!r}")
    return parts.hostname, parts.port


@contextlib.contextmanager
def running(target: str, rtt_ms: float) -> Iterator[str]:
    """A proxy process to ``target`` (a base URL) adding ``rtt_ms`` to each round trip; yields
    the base URL to use instead, and stops the proxy after the block."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--target", target, "--rtt", str(rtt_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"the delay proxy did not start: {line!r}")
        yield line.removeprefix("listening on ").strip()
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--target", required=True, help="where to forward: URL or HOST:PORT")
    parser.add_argument("--rtt", type=float, required=True, help="milliseconds per round trip")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (0: any free port)")
    parser.add_argument("--no-handshake", action="store_true", help="no extra round trip")
    args = parser.parse_args()
    proxy = DelayProxy(
        _host_port(args.target),
        args.rtt / 2000,
        listen=_host_port(args.listen),
        handshake=not args.no_handshake,
    )

    async def serve() -> None:
        started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(proxy.serve(started))
        port = await started
        scheme = urlsplit(args.target).scheme or "http"
        print(f"listening on {scheme}://{proxy.listen[0]}:{port}", flush=True)
        await task

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
