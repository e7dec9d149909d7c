"""A small HTTP server in a thread of its own, for the metrics endpoint and the status page.

It runs an asyncio loop, so that idle or slow clients cost a little memory, not a thread each, and
every client is bounded: 50 new connections a second, 32 at once, a request head of 8 KiB read
within 5 s, an answer written within 10 s (and 2 s more for the client to close), in chunks of
64 KiB (a client that does not read holds one chunk, not a copy of the answer) each taken within
2 s, GET and HEAD only, one request per connection. When all 32 are taken, a new connection takes
the place of the oldest one answered that waits for its client to close, or else of the oldest one
still sending its request head, or else of the writer whose client took nothing for the longest,
if that is half a second or more (a client that trickles its head, slowloris, never closes or
never reads cannot hold the endpoint); only when every one of them is being answered and read is
it closed at once. Unless told otherwise, only requests to a loopback name (localhost, 127.0.0.1,
[::1]) are answered: a web page whose name an attacker re-points at 127.0.0.1 (DNS rebinding)
gets a 421. Nothing here touches the supervisor's loop: the routes read the snapshot
that loop published.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, Collection
from dataclasses import field

from orchestrator.metrics.ratelog import RateLimitedLog
from orchestrator.record import record

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 32
RATE = 50  # connections accepted per second, at most
HEAD_MAX = 8192  # bytes of request line and headers
READ_TIMEOUT = 5.0  # seconds for the whole request head
WRITE_TIMEOUT = 10.0  # seconds for the whole answer
LINGER = 2.0  # seconds for the client to close once answered (then we close anyway)
LINGER_BYTES = 256 * 1024  # of unread input discarded meanwhile, at most
WRITE_CHUNK = 64 * 1024  # bytes handed to a connection's transport at a time
# Seconds the client has to take each chunk (32 KiB/s: a tenth of what the whole answer within
# WRITE_TIMEOUT needs at the bounds, 3 MB), else it is dropped: 32 connections that asked for a
# large answer and never read it held every slot for WRITE_TIMEOUT, and Prometheus was refused.
WRITE_STALL = 2.0
STALLED = 0.5  # seconds a writer's client took nothing: it gives its place to a new connection
ACCEPT_BACKOFF = 0.1  # seconds without accepting after accept() failed (out of descriptors)
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    421: "Misdirected Request",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@record
class Response:
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


# route(path, accept header) -> the answer
Route = Callable[[str, str], Awaitable[Response]]


class HttpServer:
    """Serves `route` on `sock` from a daemon thread until `stop()`."""

    def __init__(
        self,
        sock: socket.socket,
        route: Route,
        *,
        max_connections: int = MAX_CONNECTIONS,
        read_timeout: float = READ_TIMEOUT,
        write_timeout: float = WRITE_TIMEOUT,
        write_stall: float = WRITE_STALL,
        rate: float = RATE,
        hosts: Collection[str] | None = None,
    ) -> None:
        """`hosts`: the Host header values answered (any, when None); a request without a Host
        header is answered too (HTTP/1.0: no browser sends one)."""
        self._sock = sock
        self._route = route
        self._max_connections = max_connections
        self._read_timeout = read_timeout
        self._write_timeout = write_timeout
        self._write_stall = write_stall
        self._rate = rate
        self._hosts = None if hosts is None else frozenset(host.lower() for host in hosts)
        self._route_failed = RateLimitedLog(log)
        self._accept_failed = RateLimitedLog(log)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._connections = 0
        self.accepted = 0  # connections accepted (refused ones too)
        self.refused = 0  # connections closed at once: too many open, all being answered
        self.evicted = 0  # connections closed for a new one while still sending their head
        # The clients still reading their request head, and those answered that linger for
        # the client to close, oldest first: both give their place to a new connection.
        self._reading: dict[asyncio.Task[None], None] = {}
        self._lingering: dict[asyncio.Task[None], None] = {}
        # The clients being answered, and when each last took a chunk (or its answer began).
        self._writing: dict[asyncio.Task[None], float] = {}
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-http", daemon=True)

    @staticmethod
    def listen(host: str, port: int) -> socket.socket:
        """Bind and listen (in the caller's thread, so that an error reaches the caller)."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family, backlog=64, reuse_port=False)

    @staticmethod
    def local_hosts(sock: socket.socket) -> tuple[str, ...]:
        """The Host header values that name this machine's loopback at `sock`'s port: the usual
        names, and the address it is bound to (127.0.0.2, say)."""
        bound, port = sock.getsockname()[:2]
        names = dict.fromkeys((*LOOPBACK_NAMES, f"[{bound}]" if ":" in bound else bound))
        return (*names, *(f"{name}:{port}" for name in names))

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()
        self._started.wait(5.0)

    def stop(self, timeout: float = 2.0) -> None:
        """Close the listening socket and every connection; wait at most `timeout` seconds."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # its loop has ended already
                loop.call_soon_threadsafe(stopping.set)
        self._thread.join(timeout)
        self._sock.close()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except Exception:
            log.exception("the metrics endpoint stopped on an error")

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._sock.setblocking(False)
        clients: set[asyncio.Task[None]] = set()
        accepting = asyncio.create_task(self._accept(clients))
        accepting.add_done_callback(_accepting_ended)
        self._started.set()
        await self._stopping.wait()
        accepting.cancel()
        for task in clients:
            task.cancel()
        await asyncio.gather(accepting, *clients, return_exceptions=True)

    async def _accept(self, clients: set[asyncio.Task[None]]) -> None:
        """Accept at most `rate` connections a second (in bursts of as many): past that it stops
        accepting for a while, and the kernel's backlog holds or refuses the rest at no cost to
        this process. The supervisor shares this process, and its interpreter lock, with us."""
        loop = asyncio.get_running_loop()
        budget, last = self._rate, loop.time()
        while True:
            try:
                conn, _ = await loop.sock_accept(self._sock)
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS...: the next one may work
                self._accept_failed(logging.ERROR, "the metrics endpoint cannot accept: %s", exc)
                await asyncio.sleep(ACCEPT_BACKOFF)
                continue
            now = loop.time()
            budget, last = min(self._rate, budget + (now - last) * self._rate), now
            if budget < 1:
                await asyncio.sleep((1 - budget) / self._rate)
                budget, last = 1.0, loop.time()
            budget -= 1
            self.accepted += 1
            if self._connections >= self._max_connections:
                # Answered ones first (they only wait for the client to close), then those
                # still sending their head, oldest first, then a writer whose client stalls.
                evictable = self._lingering or self._reading
                oldest = next(iter(evictable)) if evictable else self._stalled_writer(now)
                if oldest is None:
                    self.refused += 1
                    conn.close()
                    continue
                # Out of all (a 431 lingers with its head unread): chosen once, evicted once.
                self._reading.pop(oldest, None)
                self._lingering.pop(oldest, None)
                self._writing.pop(oldest, None)
                oldest.cancel()  # its slot frees as it ends: one over the bound until then
                self.evicted += 1
            self._connections += 1
            task = asyncio.create_task(self._client(conn))
            self._reading[task] = None
            clients.add(task)
            task.add_done_callback(functools.partial(self._ended, clients, conn))

    def _ended(
        self, clients: set[asyncio.Task[None]], conn: socket.socket, task: asyncio.Task[None]
    ) -> None:
        """A client's slot is free. Here, not in the client's own `finally`: a task cancelled
        (evicted) before it started never runs it, and its socket is still to be closed."""
        clients.discard(task)
        self._reading.pop(task, None)
        self._lingering.pop(task, None)
        self._writing.pop(task, None)
        self._connections -= 1
        if task.cancelled():
            conn.close()  # a no-op if its transport closed it already

    async def _client(self, conn: socket.socket) -> None:
        writer: asyncio.StreamWriter | None = None
        answered = False
        try:
            reader, writer = await asyncio.open_connection(sock=conn, limit=HEAD_MAX)
            response = await self._answer(reader)
            writer.transport.set_write_buffer_limits(0)  # drain() returns once all is sent
            self._writing[_this_task()] = asyncio.get_running_loop().time()
            async with asyncio.timeout(self._write_timeout):  # in this task: see _write
                await self._write(writer, response)
            self._writing.pop(_this_task(), None)
            answered = True
            self._lingering[_this_task()] = None
            await _linger(reader, writer)
        except (TimeoutError, OSError):  # ConnectionError among them
            pass
        finally:
            if writer is None:
                conn.close()
            elif answered:
                writer.transport.close()  # its buffer is empty: a plain FIN
            else:
                writer.transport.abort()  # out of time: what is left unsent is dropped

    async def _answer(self, reader: asyncio.StreamReader) -> Response:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._read_timeout)
            finally:
                self._reading.pop(_this_task(), None)  # past its head: never evicted as a reader
        except TimeoutError:
            return _plain(408, "request head not received in time\n")
        except asyncio.LimitOverrunError:
            return _plain(431, f"request head over {HEAD_MAX} bytes\n")
        except asyncio.IncompleteReadError:
            return _plain(400, "incomplete request\n")
        lines = head[:-4].decode("latin-1").split("\r\n")
        if any(_CONTROL.intersection(line) for line in lines):  # a bare LF or CR among them
            return _plain(400, "control characters in the request head\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return _plain(400, "malformed request line\n")
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            return _plain(405, "only GET and HEAD\n", {"Allow": "GET, HEAD"})
        fields: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields.setdefault(name.strip().lower(), []).append(value.strip())
        hosts = fields.get("host", [])
        if len(hosts) > 1:
            return _plain(400, "more than one Host header\n")
        if hosts and self._hosts is not None and hosts[0].lower() not in self._hosts:
            return _plain(421, "this endpoint answers to localhost, 127.0.0.1 and [::1] only\n")
        accept = ",".join(fields.get("accept", []))
        try:
            response = await self._route(target.split("?", 1)[0], accept)
        except Exception:
            self._route_failed(
                logging.ERROR,
                "the metrics endpoint failed to answer %r",
                target[:200],
                exc_info=True,
            )
            return _plain(500, "internal error (see the supervisor's log)\n")
        if method == "HEAD":
            length = {"Content-Length": str(len(response.body))}
            return Response(response.status, response.content_type, b"", response.headers | length)
        return response

    async def _write(self, writer: asyncio.StreamWriter, response: Response) -> None:
        length = len(response.body)
        headers = {
            "Content-Type": response.content_type,
            "Content-Length": str(length),
            "Connection": "close",
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            **response.headers,
        }
        status = f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Error')}\r\n"
        head = status + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        writer.write(head.encode("latin-1"))
        body = memoryview(response.body)
        for start in range(0, length, WRITE_CHUNK):
            writer.write(body[start : start + WRITE_CHUNK])
            await self._taken(writer)
        await self._taken(writer)  # the head, when there is no body

    async def _taken(self, writer: asyncio.StreamWriter) -> None:
        """Wait for the socket to take all that was written, WRITE_STALL seconds at most (a
        TimeoutError drops the client), and note when it did."""
        async with asyncio.timeout(self._write_stall):
            await writer.drain()
        task = _this_task()
        if task in self._writing:  # not evicted meanwhile
            self._writing[task] = asyncio.get_running_loop().time()

    def _stalled_writer(self, now: float) -> asyncio.Task[None] | None:
        """The writer whose client took nothing for the longest, if that is STALLED or more."""
        if not self._writing:
            return None
        task, since = min(self._writing.items(), key=lambda item: item[1])
        return task if now - since >= STALLED else None


# Bytes no request head may hold (tab is allowed in header values).
_CONTROL = frozenset(chr(code) for code in (*range(0x20), 0x7F)) - {"\t"}


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Once the whole answer is sent: close our side and let the client close its own (for
    LINGER seconds at most), reading what it still sends. Closing a socket with unread input
    sends a reset, which can destroy the end of the answer before the client has read it."""
    writer.write_eof()
    read = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(LINGER):
            while read <= LINGER_BYTES and (chunk := await reader.read(4096)):
                read += len(chunk)


def _this_task() -> asyncio.Task[None]:
    task = asyncio.current_task()
    assert task is not None  # a client's coroutine runs as a task of its own
    return task


def _accepting_ended(task: asyncio.Task[None]) -> None:
    """The accept loop only ends when the server stops (cancelled): anything else is a bug that
    would leave the endpoint deaf, so it is said."""
    if task.cancelled():
        return
    error = task.exception()
    log.error("the metrics endpoint stopped accepting connections", exc_info=error)


def _plain(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status, "text/plain; charset=utf-8", text.encode(), headers or {})
