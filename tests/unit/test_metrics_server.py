"""The endpoint's HTTP server against slow, huge and many clients: each is cut off within its
bounds, and well-behaved clients are served meanwhile or right after."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

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


def test_idle_connections_give_their_place_to_a_new_one(server: HttpServer) -> None:
    """Slowloris: clients that trickle (or never send) their request head hold every slot. A
    new connection takes the place of the oldest of them, so a scraper is still answered."""
    idle = [socket.create_connection(server.address, timeout=5) for _ in range(MAX)]
    try:
        for sock in idle:
            sock.sendall(b"GET / HTTP/1.1\r\n")  # and never the rest
        wait_until(lambda: server._connections == MAX, 5, "every idle connection counted")
        for _ in range(3):
            assert httpx.get(url(server), timeout=5).status_code == 200
        assert server.evicted == 1 and server.refused == 0  # then its slot was free
        try:
            dropped = idle[0].recv(100) == b""
        except ConnectionResetError:
            dropped = True
        assert dropped  # the oldest went first
    finally:
        for sock in idle:
            sock.close()


async def held(path: str, accept: str) -> Response:
    await asyncio.sleep(2.0 if path == "/hold" else 0)
    return Response(200, "text/plain", path.encode())


def test_connections_beyond_the_bound_are_closed_when_all_are_being_answered() -> None:
    http = HttpServer(HttpServer.listen("127.0.0.1", 0), held, max_connections=MAX)
    http.start()
    holding = [socket.create_connection(http.address, timeout=5) for _ in range(MAX)]
    try:
        for sock in holding:
            sock.sendall(b"GET /hold HTTP/1.1\r\n\r\n")
        wait_until(lambda: http._connections == MAX and not http._reading, 5, "all answering")
        with socket.create_connection(http.address, timeout=5) as extra:
            try:
                closed = extra.recv(100) == b""
            except ConnectionResetError:
                closed = True
        assert closed and http.refused == 1 and http.evicted == 0
        for sock in holding:  # each is answered, whole
            assert sock.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        for sock in holding:
            sock.close()
        http.stop()


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


def test_a_large_answer_reaches_a_slow_reader_whole() -> None:
    """With small socket buffers the answer leaves in many sends: it is still sent to its last
    byte (not cut where `drain()` returns, at the low-water mark); extra input the client sent (a second request) does not reset the connection."""
    size = 1_000_000

    async def large(path: str, accept: str) -> Response:
        return Response(200, "text/plain", b"x" * size)

    listening = HttpServer.listen("127.0.0.1", 0)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)  # inherited by each client
    http = HttpServer(listening, large)
    http.start()
    try:
        for extra in (b"", b"GET /again HTTP/1.1\r\n\r\n"):
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.settimeout(10)
                sock.connect(http.address)
                sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" + extra)
                data = b""
                while chunk := sock.recv(4096):
                    data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and len(body) == size, (extra, len(body))
    finally:
        http.stop()


class FlakySocket(socket.socket):
    """A listening socket whose accept() fails as if out of descriptors, `failures` times."""

    failures = 3
    error: Exception = OSError(errno.EMFILE, "Too many open files")

    def accept(self) -> tuple[socket.socket, Any]:
        if self.failures > 0:
            self.failures -= 1
            raise self.error
        return super().accept()


def flaky(error: Exception, failures: int) -> FlakySocket:
    listening = HttpServer.listen("127.0.0.1", 0)
    sock = FlakySocket(listening.family, listening.type, fileno=listening.detach())
    sock.error, sock.failures = error, failures
    return sock


def test_accept_errors_are_logged_once_and_accepting_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sock = flaky(OSError(errno.EMFILE, "Too many open files"), 3)
    http = HttpServer(sock, echo)
    http.start()
    try:
        with caplog.at_level(logging.ERROR, logger="orchestrator.metrics.server"):
            assert httpx.get(url(http), timeout=5).status_code == 200
        assert sock.failures == 0
        lines = [r for r in caplog.records if "cannot accept" in r.getMessage()]
        assert len(lines) == 1 and "Too many open files" in lines[0].getMessage()
    finally:
        http.stop()


def test_an_accept_loop_that_ends_says_so(caplog: pytest.LogCaptureFixture) -> None:
    sock = flaky(RuntimeError("a bug"), 1)
    http = HttpServer(sock, echo)
    with caplog.at_level(logging.ERROR, logger="orchestrator.metrics.server"):
        http.start()
        try:
            with socket.create_connection(http.address, timeout=5):
                wait_until(
                    lambda: any("stopped accepting" in r.getMessage() for r in caplog.records),
                    5,
                    "the accept loop's end logged",
                )
        finally:
            http.stop()


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nAccept: text/plain\nSet-Cookie: x=1\r\n\r\n",  # a bare LF
        b"GET / HTTP/1.1\r\nAccept: a\rb\r\n\r\n",
        b"GET /\x00 HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: \x7f\r\n\r\n",
    ],
)
def test_control_characters_in_the_head_are_a_400(server: HttpServer, head: bytes) -> None:
    answer = raw(server, head)
    assert answer.startswith(b"HTTP/1.1 400") and b"Set-Cookie" not in answer, answer


def test_a_tab_in_a_header_value_is_fine(server: HttpServer) -> None:
    assert raw(server, b"GET /t HTTP/1.1\r\nAccept: a\tb\r\n\r\n").endswith(b"/t a\tb")


def test_only_loopback_host_names_are_answered() -> None:
    sock = HttpServer.listen("127.0.0.1", 0)
    http = HttpServer(sock, echo, hosts=HttpServer.local_hosts(sock))
    http.start()
    port = http.address[1]
    try:
        for host in ("localhost", f"localhost:{port}", "127.0.0.1", f"127.0.0.1:{port}", "[::1]"):
            got = httpx.get(url(http), headers={"Host": host}, timeout=5)
            assert got.status_code == 200, host
        for host in ("evil.example", f"evil.example:{port}", "localhost:1", "127.0.0.1.nip.io"):
            assert httpx.get(url(http), headers={"Host": host}, timeout=5).status_code == 421, host
        # HTTP/1.0 without a Host: not a browser.
        assert raw(http, b"GET /x HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 200")
        two = b"GET /x HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n"
        assert raw(http, two).startswith(b"HTTP/1.1 400")
    finally:
        http.stop()


def test_the_bound_loopback_address_is_a_local_host_name() -> None:
    with HttpServer.listen("127.0.0.2", 0) as sock:
        port = sock.getsockname()[1]
        assert {"127.0.0.2", f"127.0.0.2:{port}", "localhost", f"[::1]:{port}"} <= set(
            HttpServer.local_hosts(sock)
        )
        assert "127.0.0.2:1" not in HttpServer.local_hosts(sock)


def test_without_hosts_any_host_is_answered(server: HttpServer) -> None:
    got = httpx.get(url(server), headers={"Host": "metrics.example:80"}, timeout=5)
    assert got.status_code == 200


def test_route_failures_are_logged_at_most_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(path: str, accept: str) -> Response:
        raise RuntimeError("a bug")

    http = HttpServer(HttpServer.listen("127.0.0.1", 0), broken)
    http.start()
    try:
        with caplog.at_level(logging.ERROR, logger="orchestrator.metrics.server"):
            for _ in range(5):
                assert httpx.get(url(http), timeout=5).status_code == 500
        assert len([r for r in caplog.records if "failed to answer" in r.getMessage()]) == 1
    finally:
        http.stop()


def test_a_burst_past_the_bound_evicts_without_losing_slots() -> None:
    """Connections waiting in the backlog are accepted in one burst, and evicted before their
    task has run: each is still closed and its slot counted free (a slot once leaked this way
    stayed taken for good)."""
    http = HttpServer(HttpServer.listen("127.0.0.1", 0), echo, max_connections=MAX)
    burst = [socket.create_connection(http.address, timeout=5) for _ in range(4 * MAX)]
    http.start()
    try:
        wait_until(lambda: http.accepted == 4 * MAX, 10, "the burst accepted")
        wait_until(lambda: http._connections <= MAX, 5, "evicted slots counted free")
        assert http.evicted == 3 * MAX
        for sock in burst[: 3 * MAX]:  # closed (or reset) at once
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(100) == b""
    finally:
        for sock in burst:
            sock.close()
    try:
        wait_until(lambda: http._connections == 0, 5, "every slot free once they all close")
        assert served(http)
    finally:
        http.stop()


def test_answered_clients_that_never_close_give_their_place_first(server: HttpServer) -> None:
    """A client that sends a whole request, reads nothing and never closes holds its slot for
    the linger: a scraper must still get in (20 a second of them denied every scrape)."""
    holding = [socket.create_connection(server.address, timeout=5) for _ in range(MAX)]
    try:
        for sock in holding:
            sock.sendall(b"GET /x HTTP/1.1\r\n\r\n")
        wait_until(lambda: len(server._lingering) == MAX, 5, "all answered, lingering")
        assert httpx.get(url(server), timeout=5).status_code == 200
        assert server.evicted == 1 and server.refused == 0
        assert holding[0].recv(100).startswith(b"HTTP/1.1 200")  # it had its whole answer
    finally:
        for sock in holding:
            sock.close()


def test_a_connection_is_evicted_once_whatever_it_was_waiting_for(server: HttpServer) -> None:
    """A 431 is answered without its head read whole: it lingered and still counted as a
    reader, was evicted twice, and one more client than the bound stayed."""
    with socket.create_connection(server.address, timeout=5) as huge:
        huge.sendall(b"GET / HTTP/1.1\r\nX: " + b"a" * (HEAD_MAX + 10))
        assert huge.recv(12) == b"HTTP/1.1 431"
        wait_until(lambda: len(server._lingering) == 1, 5, "the 431 lingering")
        held = [socket.create_connection(server.address, timeout=5) for _ in range(2 * MAX)]
        try:
            wait_until(lambda: server.accepted == 1 + 2 * MAX, 5, "all accepted")
            wait_until(lambda: server.evicted == MAX + 1, 5, "the 431 and the oldest evicted")
            wait_until(lambda: server._connections == MAX, 5, "the bound held")
            assert len(server._reading) == MAX
        finally:
            for sock in held:
                sock.close()
