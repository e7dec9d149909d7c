"""The supervisor's two listening sockets, both ROUTERs on ipc in its run directory (0600): the
control socket (CLI requests, the bridge's link) and the child channel (module processes'
hello, ready, heartbeats). What bounds them is set here, before `bind()`: libzmq copies a
listener's options into each connection it accepts, so options set later did nothing (the
channel's receive limit of 32 was 1000)."""

from __future__ import annotations

import os

import zmq

from orchestrator import control
from orchestrator.metrics.module_metrics import MAX_CHANNEL_MESSAGE
from orchestrator.rundir import RunDir

# Received per module process: a few heartbeats behind at most. A flood waits in its sender, not
# in the supervisor's memory (1000 x 16 MiB by default).
CHANNEL_RECEIVE_HWM = 32
CHANNEL_SEND_HWM = 1000  # to one module process: commands and runs, never dropped in practice


def control_socket(context: zmq.Context[zmq.Socket[bytes]], run_dir: RunDir) -> zmq.Socket[bytes]:
    """The control socket: a few messages queued per client each way, and a reply that one
    cannot take (it does not read them, or has left) an error rather than a silent drop."""
    sock = _listener(context, control.MAX_FRAME, send_hwm=control.HWM, receive_hwm=control.HWM)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    return _bind(sock, run_dir.control)


def channel_socket(context: zmq.Context[zmq.Socket[bytes]], run_dir: RunDir) -> zmq.Socket[bytes]:
    """The child channel."""
    sock = _listener(
        context,
        MAX_CHANNEL_MESSAGE,
        send_hwm=CHANNEL_SEND_HWM,
        receive_hwm=CHANNEL_RECEIVE_HWM,
    )
    return _bind(sock, run_dir.child_channel)


def _listener(
    context: zmq.Context[zmq.Socket[bytes]], max_message: int, *, send_hwm: int, receive_hwm: int
) -> zmq.Socket[bytes]:
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, max_message)
    sock.setsockopt(zmq.SNDHWM, send_hwm)
    sock.setsockopt(zmq.RCVHWM, receive_hwm)
    return sock


def _bind(sock: zmq.Socket[bytes], endpoint: str) -> zmq.Socket[bytes]:
    try:
        sock.bind(endpoint)
        os.chmod(endpoint.removeprefix("ipc://"), 0o600)
    except BaseException:
        sock.close(linger=0)
        raise
    return sock


def rebind(sock: zmq.Socket[bytes], endpoint: str) -> None:
    """Listen on `endpoint` again (after `unbind`, see fd_budget.ControlGuard); the socket stays
    open whatever happens."""
    sock.bind(endpoint)
    os.chmod(endpoint.removeprefix("ipc://"), 0o600)
