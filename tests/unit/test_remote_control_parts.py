"""The pure parts of control across hosts: sealed requests, the forwarder, the remote control
(the table of hosts is in test_peer_table)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest
from test_peer_table import note

from orchestrator.cluster.signing import MAX_AGE, RefusedError, Sealer, control_key
from orchestrator.forwarder import MAX_PENDING, Forwarder

KEY = control_key({"token": "s3cret"})


def test_a_request_sealed_with_the_clusters_credentials_opens_once() -> None:
    beta = Sealer(KEY, "beta", not_before=0.0)
    data, nonce = Sealer(KEY, "alpha").seal("beta", {"cmd": "restart", "name": "x"})
    assert beta.open(data) == ("alpha", {"cmd": "restart", "name": "x"}, nonce)
    with pytest.raises(RefusedError, match="replayed"):
        beta.open(data)
    with pytest.raises(RefusedError, match="before this host's bridge started"):
        Sealer(KEY, "beta").open(data)  # a bridge started since: it forgot the nonces


def test_replies_are_signed_for_their_request_only() -> None:
    alpha, beta = Sealer(KEY, "alpha"), Sealer(KEY, "beta", not_before=0.0)
    _, nonce = alpha.seal("beta", {"cmd": "status"})
    reply = beta.seal_reply(nonce, {"ok": True, "data": 1})
    assert alpha.open_reply(reply, nonce) == {"ok": True, "data": 1}
    with pytest.raises(RefusedError, match="another request"):
        alpha.open_reply(reply, b"other nonce!")
    forged = Sealer(control_key({"token": "guess"}), "beta").seal_reply(nonce, {"ok": True})
    for bad in (forged, msgpack.packb({"ok": True}), Sealer(None, "x").seal_reply(nonce, {})):
        with pytest.raises(RefusedError):
            alpha.open_reply(bad, nonce)


@pytest.mark.parametrize(
    ("sealer", "opener", "match"),
    [
        (Sealer(control_key({"token": "other"}), "alpha"), Sealer(KEY, "beta"), "credentials"),
        (Sealer(None, "alpha"), Sealer(KEY, "beta"), "credentials"),  # unsigned
        (Sealer(KEY, "alpha"), Sealer(KEY, "gamma"), "addressed to 'beta'"),
    ],
)
def test_a_request_from_other_credentials_or_for_another_host_is_refused(
    sealer: Sealer, opener: Sealer, match: str
) -> None:
    with pytest.raises(RefusedError, match=match):
        opener.open(sealer.seal("beta", {"cmd": "status"})[0])


def test_a_stale_request_or_garbage_is_refused() -> None:
    data, _ = Sealer(KEY, "alpha").seal("beta", {"cmd": "status"})
    sent = msgpack.unpackb(msgpack.unpackb(data)[0])["sent"]
    with pytest.raises(RefusedError, match="clock"):
        Sealer(KEY, "beta", not_before=0.0).open(data, now=sent + MAX_AGE + 1)
    body = msgpack.unpackb(msgpack.unpackb(data)[0])
    nan = Sealer(None, "alpha").sign(msgpack.packb({**body, "sent": float("nan")}))
    with pytest.raises(RefusedError, match="clock"):
        Sealer(None, "beta", not_before=0.0).open(nan)
    for garbage in (b"", b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"a": 1}), b"x" * 70_000):
        with pytest.raises(RefusedError):
            Sealer(KEY, "beta").open(garbage)


def test_keys_come_from_every_kind_of_credential(tmp_path: Path) -> None:
    seed = tmp_path / "seed.nk"
    seed.write_text("SUAIBDPBAUTW\n")
    keys = {
        control_key({"token": "a"}),
        control_key({"token": "b"}),
        control_key({"user": "u", "password": "p"}),
        control_key({"nkey_seed": str(seed)}),
    }
    assert len(keys) == 4 and None not in keys
    assert control_key({}) is None


class Bridge:
    def __init__(self) -> None:
        self.pid: int | None = 10
        self.sent: list[tuple[bytes, dict[str, Any]]] = []


def forwarder() -> tuple[Forwarder, Bridge]:
    bridge = Bridge()

    def send(identity: bytes, message: dict[str, Any]) -> bool:
        bridge.sent.append((identity, message))
        return True  # the link took it

    return Forwarder(send, lambda: bridge.pid), bridge


def test_a_forward_waits_for_the_bridges_reply() -> None:
    forward, bridge = forwarder()
    assert isinstance(forward.forward("beta", {"cmd": "status"}, 1.0), dict)  # not attached
    assert not forward.attach(b"link", "wrong key")
    assert forward.attach(b"link", forward.key)
    waiter = forward.forward("beta", {"cmd": "status"}, 1.0)
    assert callable(waiter) and waiter() is None
    ((identity, message),) = bridge.sent
    assert identity == b"link" and message["host"] == "beta"
    assert not forward.answered("wrong", message["forward"], {"ok": True})
    assert forward.answered(forward.key, message["forward"], {"ok": True, "data": 1})
    assert waiter() == {"ok": True, "data": 1}
    assert not forward.answered(forward.key, message["forward"], {"ok": True})  # once


def test_a_forward_fails_when_the_bridge_goes_and_pending_ones_are_bounded() -> None:
    forward, bridge = forwarder()
    forward.attach(b"link", forward.key)
    waiter = forward.forward("beta", {"cmd": "status"}, 1.0)
    assert callable(waiter)
    bridge.pid = 11  # restarted
    answer = waiter()
    assert answer is not None and answer["data"] == {"kind": "unreachable"}
    assert isinstance(forward.forward("beta", None, 1.0), dict)  # the new one has not attached
    forward.attach(b"link2", forward.key)
    for _ in range(MAX_PENDING):
        assert callable(forward.forward("beta", None, 1.0))
    refused = forward.forward("beta", None, 1.0)
    assert isinstance(refused, dict) and "already waiting" in refused["error"]


def test_a_signed_request_for_a_command_that_is_no_string_gets_a_usage_answer() -> None:
    """`{"cmd": ["x"]}` raised TypeError (unhashable) in the callback: no answer, and the error
    showed as the NATS connection's state."""
    import asyncio

    from orchestrator.cluster.remote import RemoteControl

    class Nats:
        max_payload = 1 << 20

        def __init__(self) -> None:
            self.published: list[tuple[str, bytes]] = []

        async def publish(self, subject: str, payload: bytes) -> None:
            self.published.append((subject, payload))

    class Msg:
        subject, reply = "c.ctl.beta", "_INBOX.c.alpha.1"

        def __init__(self, data: bytes) -> None:
            self.data = data

    beta = Sealer(KEY, "beta", not_before=0.0)
    control = RemoteControl(name="c", host="beta", link=None, hosts=None, sealer=beta)  # type: ignore[arg-type]
    control._nc = nats = Nats()  # type: ignore[assignment]
    for cmd in (["x"], {"a": 1}, None, "rm"):
        data, nonce = Sealer(KEY, "alpha").seal("beta", {"cmd": cmd})
        asyncio.run(control.serve(Msg(data)))  # type: ignore[arg-type]
        answer = Sealer(KEY, "alpha").open_reply(nats.published[-1][1], nonce)
        assert answer["ok"] is False and answer["data"]["kind"] == "usage", answer


class InboxNats:
    """A NATS client whose replies to a request come from `answer(sealed)`, in order, as a
    real server's inbox subscription would deliver them (at most `max_msgs`, if it is set)."""

    max_payload = 1 << 20
    is_connected = True

    def __init__(self, answer: Any) -> None:
        self._answer = answer
        self._cb: Any = None
        self._max: int | None = None

    def new_inbox(self) -> str:
        return "_INBOX.c.alpha.1"

    async def subscribe(self, subject: str, cb: Any, max_msgs: int | None = None) -> Any:
        self._cb, self._max = cb, max_msgs
        return self

    async def unsubscribe(self) -> None:
        pass

    async def publish(self, subject: str, payload: bytes, reply: str = "") -> None:
        for n, data in enumerate(self._answer(payload)):
            if self._max is None or n < self._max:
                await self._cb(data if isinstance(data, ReplyMsg) else ReplyMsg(data))


class ReplyMsg:
    def __init__(self, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.data, self.headers = data, headers


NO_RESPONDERS = ReplyMsg(b"", {"Status": "503"})  # as nats-py gives it (and anyone can send it)


def ask(
    answer: Any, monkeypatch: pytest.MonkeyPatch, heard: tuple[str, ...] = ("beta",)
) -> dict[str, Any]:
    import asyncio

    from orchestrator.cluster import remote

    monkeypatch.setattr(remote, "ACK_TIMEOUT", 0.2)  # for the cases where nothing signed comes
    alpha = Sealer(KEY, "alpha")
    table = SimpleNamespace(peers=dict.fromkeys(heard))
    hosts = SimpleNamespace(reachable=lambda: ["gamma"], table=table)
    control = remote.RemoteControl(name="c", host="alpha", link=None, hosts=hosts, sealer=alpha)  # type: ignore[arg-type]
    control._nc = InboxNats(answer)  # type: ignore[assignment]
    return asyncio.run(control.ask("beta", {"cmd": "restart", "name": "x"}, 1.0))


def test_a_host_never_heard_of_is_said_unreachable_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Waiting ACK_TIMEOUT before taking NATS's "no one listens" guards a host that is there
    against a forged one; for a host never heard of (a typo) it only made the CLI wait 3 s."""
    from orchestrator.cluster import remote

    real = remote.ACK_TIMEOUT

    def nobody(sealed: bytes) -> list[Any]:
        monkeypatch.setattr(remote, "ACK_TIMEOUT", 3600.0)  # would hang the test if waited
        return [NO_RESPONDERS]

    try:
        answer = ask(nobody, monkeypatch, heard=())
    finally:
        remote.ACK_TIMEOUT = real
    assert answer["data"]["kind"] == "unreachable" and "no host 'beta'" in answer["error"]


def test_a_forged_refusal_does_not_hide_the_hosts_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Anyone on NATS can answer on a request's inbox: an unsigned refusal that comes first made
    `restart beta/x` fail for a restart beta carried out (and the inbox took two replies only)."""
    forged = msgpack.packb({"ok": False, "error": "refused: forged", "data": {"kind": "refused"}})

    def beta(sealed: bytes, *, signed: bool = True) -> list[Any]:
        _, _, nonce = Sealer(KEY, "beta", not_before=0.0).open(sealed)
        replies: list[Any] = [NO_RESPONDERS, msgpack.packb("garbage"), forged]
        if signed:
            ack = Sealer(KEY, "beta").seal_reply(nonce, {"ack": True, "by": "i1"})
            replies += [ack, ack]  # a copy of it (replayed by anyone who reads the inbox)
            replies.append(Sealer(KEY, "beta").seal_reply(nonce, {"ok": True, "data": 1}))
        return replies

    assert ask(beta, monkeypatch) == {"ok": True, "data": 1}
    alone = ask(lambda sealed: beta(sealed, signed=False), monkeypatch)  # a real refusal
    assert alone["data"]["kind"] == "refused" and "forged" in alone["error"]
    nobody = ask(lambda sealed: [NO_RESPONDERS], monkeypatch)
    assert nobody["data"]["kind"] == "unreachable" and "no host 'beta' answers" in nobody["error"]


def test_two_hosts_of_one_name_answering_are_said_to_be_twins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both acknowledged and carried out `restart beta/x`; the CLI said the reply was malformed."""

    def twins(sealed: bytes) -> list[bytes]:
        _, _, nonce = Sealer(KEY, "beta", not_before=0.0).open(sealed)
        acks = [Sealer(KEY, "beta").seal_reply(nonce, {"ack": True, "by": i}) for i in "12"]
        done = Sealer(KEY, "beta").seal_reply(nonce, {"ok": True, "data": 1})
        return [*acks, done, done]

    answer = ask(twins, monkeypatch)
    assert answer["ok"] is False and "two hosts answer as 'beta'" in answer["error"], answer


def test_a_twin_host_is_shown_in_status_and_the_cluster_view() -> None:
    """Two hosts of one `cluster.host` both answer requests and mix up host-named events: said
    in `app.log` only, it was easy to miss."""
    from orchestrator.bridge_process import BridgeProcess
    from orchestrator.cli.cluster_view import render_cluster
    from orchestrator.cli.status import _system_line
    from orchestrator.cluster.hosts import Hosts

    hosts = Hosts(name="c", host="alpha", instance="me", link=None, sealer=None, say=print)  # type: ignore[arg-type]
    assert "calls itself" not in render_cluster(hosts.view())
    hosts.table.heard(note("alpha", "twin", sent=100.0), 100.0)
    assert "another host also calls itself 'alpha'" in render_cluster(hosts.view())
    process = BridgeProcess.__new__(BridgeProcess)  # its line handling only
    process.twins = 0
    process._host_changed("twin alpha pid 7")
    assert process.twins == 1
    row = {"name": "bridge", "state": "running", "pid": 5, "restarts": 0, "last_exit": None}
    line = _system_line({**row, "host": "alpha", "twins": process.twins})
    assert "another host also calls itself so" in line, line
    assert "calls itself" not in _system_line({**row, "host": "alpha", "twins": 0})


def test_a_forward_the_link_does_not_take_fails_at_once_and_waits_for_nothing() -> None:
    bridge = Bridge()
    forward = Forwarder(lambda identity, message: False, lambda: bridge.pid)  # link full
    assert forward.attach(b"link", forward.key)
    reply = forward.forward("beta", {"cmd": "status"}, 1.0)
    assert isinstance(reply, dict) and not reply["ok"]
    assert reply["data"] == {"kind": "unreachable"} and "not taking requests" in reply["error"]
    assert not forward.answered(forward.key, 1, {"ok": True})  # nothing was left waiting
