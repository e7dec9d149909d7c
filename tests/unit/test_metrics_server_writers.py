"""Clients that ask for a large answer and never read it: with a 3 MB /metrics, 32 of them held
every slot for the whole write timeout, and 28 of 32 real scrapes were refused. A writer whose
client takes nothing is dropped, and gives its place to a new connection once it stalls."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest
from helpers import wait_until

from orchestrator.metrics.server import WRITE_STALL, HttpServer, Response

MAX = 4  # connections at once, in these tests
LARGE = 4_000_000  # bytes: far more than the sockets' buffers hold
FOREVER = 120.0  # seconds: a bound these tests never reach


async def route(path: str, accept: str) -> Response:
    return Response(200, "text/plain", b"x" * LARGE if path == "/large" else b"small")


def server(write_stall: float) -> HttpServer:
    listening = HttpServer.listen("127.0.0.1", 0)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)  # inherited by each client
    return HttpServer(
        listening, route, max_connections=MAX, write_timeout=FOREVER, write_stall=write_stall
    )


@pytest.fixture
def never_reading() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def ask_and_never_read(http: HttpServer, opened: list[socket.socket]) -> None:
    sock = socket.socket()
    opened.append(sock)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
    sock.settimeout(5)
    sock.connect(http.address)
    sock.sendall(b"GET /large HTTP/1.1\r\nHost: localhost\r\n\r\n")


def served(http: HttpServer) -> bool:
    host, port = http.address
    try:
        return httpx.get(f"http://{host}:{port}/small", timeout=5).text == "small"
    except httpx.HTTPError:  # refused: every slot taken
        return False


def test_a_client_that_takes_nothing_is_dropped(never_reading: list[socket.socket]) -> None:
    http = server(write_stall=0.3)
    http.start()
    try:
        ask_and_never_read(http, never_reading)
        wait_until(lambda: http._connections == 1, 10, "the answer begun")
        wait_until(lambda: http._connections == 0, 10, "the client dropped")
        assert http.evicted == 0 and http.refused == 0
    finally:
        http.stop()


def test_stalled_writers_give_their_place_to_a_scrape(never_reading: list[socket.socket]) -> None:
    """Even where a stall takes long to drop a client, a new connection is not refused while a
    writer stalls: it takes the place of the one whose client took nothing for the longest."""
    http = server(write_stall=FOREVER)
    http.start()
    try:
        for _ in range(MAX):
            ask_and_never_read(http, never_reading)
        wait_until(lambda: len(http._writing) == MAX, 10, "every slot answering")
        wait_until(lambda: served(http), 10, "a scrape served")
        assert http.evicted >= 1 and http._connections <= MAX
    finally:
        http.stop()


def test_a_client_that_reads_is_neither_dropped_nor_evicted() -> None:
    http = server(write_stall=WRITE_STALL)
    http.start()
    try:
        host, port = http.address
        with httpx.stream("GET", f"http://{host}:{port}/large", timeout=10) as got:
            assert sum(len(chunk) for chunk in got.iter_bytes()) == LARGE
        assert http.evicted == 0 and http.refused == 0
    finally:
        http.stop()
