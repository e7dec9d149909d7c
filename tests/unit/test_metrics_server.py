"""The endpoint's HTTP server against slow, huge and many clients: each is cut off within its
bounds, and well-behaved clients are served meanwhile or right after."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from helpers import wait_until

from orchestrator.metrics.server import HEAD_MAX, HttpServer, Response

MAX = 4  # connections at once, in these tests


async def echo(path: str, accept: str) -> Response:
    return Response(200, "text/plain", f"{path} {accept}".encode())


@pytest.fixture
def server() -> Iterator[HttpServer]:
    http = HttpServer(
        HttpServer.listen("127.0.0.1", 0), echo, max_connections=MAX, read_timeout=0.5
    )
    http.start()
    yield http
    http.stop()


def url(http: HttpServer, path: str = "/x") -> str:
    host, port = http.address
    return f"http://{host}:{port}{path}"


def raw(http: HttpServer, data: bytes) -> bytes:
    with socket.create_connection(http.address, timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_get_head_and_refusals(server: HttpServer) -> None:
    got = httpx.get(url(server, "/a?b=c"), headers={"Accept": "text/x"}, timeout=5)
    assert (got.status_code, got.text) == (200, "/a text/x")
    assert got.headers["connection"] == "close"
    head = httpx.head(url(server), timeout=5)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len("/x */*"))
    assert httpx.post(url(server), content=b"x", timeout=5).status_code == 405
    assert raw(server, b"nonsense\r\n\r\n").startswith(b"HTTP/1.1 400")
    huge = b"GET / HTTP/1.1\r\nX: " + b"a" * (HEAD_MAX + 10) + b"\r\n\r\n"
    assert raw(server, huge).startswith(b"HTTP/1.1 431")


def test_a_slow_client_is_cut_off_and_others_are_served_meanwhile(server: HttpServer) -> None:
    slow = socket.create_connection(server.address, timeout=5)
    slow.sendall(b"GET /slow HTTP/1.1\r\n")  # and never the end of its head
    try:
        assert httpx.get(url(server), timeout=5).status_code == 200
        assert slow.recv(100).startswith(b"HTTP/1.1 408")  # after read_timeout
    finally:
        slow.close()


def test_many_connections_beyond_the_bound_are_closed_at_once(server: HttpServer) -> None:
    idle = [socket.create_connection(server.address, timeout=5) for _ in range(MAX)]
    try:
        wait_until(lambda: server._connections == MAX, 5, "every idle connection counted")
        extra = socket.create_connection(server.address, timeout=5)
        with extra:
            try:
                closed = extra.recv(100) == b""
            except ConnectionResetError:
                closed = True
            assert closed and server.refused >= 1
    finally:
        for sock in idle:
            sock.close()
    # Their slots free up as they are cut off (or closed): the endpoint serves again.
    wait_until(lambda: served(server), 5, "served again")


def test_new_connections_are_accepted_at_a_bounded_rate() -> None:
    """A client that opens connections as fast as it can gets `rate` a second through; the rest
    wait in the kernel's backlog (or are refused by it) at no cost to the process."""
    rate = 20
    http = HttpServer(HttpServer.listen("127.0.0.1", 0), echo, rate=rate, read_timeout=0.2)
    http.start()
    opened: list[socket.socket] = []
    try:
        started = time.monotonic()
        for _ in range(60):  # within the listen backlog (64)
            opened.append(socket.create_connection(http.address, timeout=5))
        wait_until(lambda: http.accepted >= 2 * rate, 10, "the first two seconds' worth")
        elapsed = time.monotonic() - started
        # The first burst, then `rate` a second: never all 60 at once.
        assert http.accepted <= rate + rate * elapsed + 1, (http.accepted, elapsed)
    finally:
        for sock in opened:
            sock.close()
        http.stop()


def served(http: HttpServer) -> bool:
    try:
        return httpx.get(url(http), timeout=5).status_code == 200
    except httpx.HTTPError:  # refused: a slot is not free yet
        return False


def test_a_failing_route_is_a_500_and_the_server_goes_on() -> None:
    async def broken(path: str, accept: str) -> Response:
        if path == "/bad":
            raise RuntimeError("a bug")
        return await echo(path, accept)

    http = HttpServer(HttpServer.listen("127.0.0.1", 0), broken)
    http.start()
    try:
        assert httpx.get(url(http, "/bad"), timeout=5).status_code == 500
        assert httpx.get(url(http, "/ok"), timeout=5).text == "/ok */*"
    finally:
        http.stop()
