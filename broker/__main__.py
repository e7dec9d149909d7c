"""`python -m broker`: the bus broker as a process of its own, started and restarted by the
supervisor, so that whatever a peer can make libzmq do to it (a crash, a descriptor shortage,
memory) costs a broker restart, never the supervisor.

Its first line on stdout says whether it forwards: `ready` once every endpoint is bound, or
`error: <why>` before it exits 1. It runs until SIGTERM, or until the supervisor dies (end of file
on the lifeline pipe, whose write end only the supervisor holds); it exits 1 if its grouped
delivery thread failed, so that the supervisor restarts it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import signal
import sys
from collections.abc import Callable
from typing import Any

import zmq

from broker import ENV_CURVE, GROUPS_PREFIX, KEPT_PREFIX
from broker.proxy import Broker, BrokerError

log = logging.getLogger("broker")
READY = "ready"
ALIVE = "alive"  # every second, once ready
ERROR_PREFIX = "error: "
MAX_GROUPS_LINE = 4000  # the supervisor reads lines of up to 4096 bytes


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m broker", description=__doc__)
    parser.add_argument("--xsub", required=True, help="endpoint publishers connect to")
    parser.add_argument("--xpub", required=True, help="endpoint subscribers connect to")
    parser.add_argument("--inject", help="endpoint of a PULL socket whose messages are published")
    parser.add_argument("--groups", help="endpoint of the ROUTER socket for grouped delivery")
    parser.add_argument(
        "--keep-group",
        action="append",
        default=[],
        metavar="NAME PATTERN",
        help="a redelivering group to queue for from the start (one argument: name, a space,"
        " pattern; given as --keep-group=...)",
    )
    parser.add_argument("--max-message-size", type=int, default=-1, help="bytes; -1: no limit")
    parser.add_argument("--hwm", type=int, default=100_000, help="high-water mark, messages")
    parser.add_argument("--lifeline", type=int, help="fd that reaches end of file when to stop")
    return parser.parse_args(argv)


def _reporter() -> Callable[[dict[str, Any]], None]:
    kept = KeptReport()

    def report(stats: dict[str, Any]) -> None:
        report_groups(stats)
        kept(stats)

    return report


def report_groups(stats: dict[str, Any]) -> None:
    """Print the grouped delivery's counters as one line, which the supervisor keeps for status
    (as many groups as fit in a line it reads whole; `more` counts the others). Each group is
    encoded once: this runs on the dispatcher thread, every second, with up to 1024 groups."""
    groups = [json.dumps(group) for group in stats["groups"]]
    others = {key: value for key, value in stats.items() if key != "groups"}
    # `more` as large as it can be: a shorter count only leaves the line shorter.
    room = MAX_GROUPS_LINE - len(_groups_line([], {**others, "more": len(groups)}))
    kept = 0
    for text in groups:
        room -= len(text) + (2 if kept else 0)  # ", " between two
        if room < 0:
            break
        kept += 1
    line = _groups_line(groups[:kept], {**others, "more": len(groups) - kept})
    print(f"{GROUPS_PREFIX}{line}", flush=True)


class KeptReport:
    """Prints the redelivering groups that have members whenever they change, whole, in as
    many lines as they take: the supervisor starts a restarted broker with them (the counters'
    line holds only the groups that fit in it)."""

    def __init__(self) -> None:
        self._last: list[list[str]] | None = None

    def __call__(self, stats: dict[str, Any]) -> None:
        kept = sorted(
            [group["group"], group["pattern"]]
            for group in stats["groups"]
            if group.get("redeliver") and (group.get("per_member") or group.get("kept"))
        )
        if kept == self._last:
            return
        self._last = kept
        parts: list[list[list[str]]] = [[]]
        size = 0
        for pair in kept:
            text = len(json.dumps(pair)) + 2
            if parts[-1] and size + text > MAX_GROUPS_LINE - 64:
                parts.append([])
                size = 0
            parts[-1].append(pair)
            size += text
        for number, part in enumerate(parts):
            line = json.dumps({"part": number, "of": len(parts), "groups": part})
            print(f"{KEPT_PREFIX}{line}", flush=True)


def _groups_line(groups: list[str], others: dict[str, Any]) -> str:
    """`{"groups": [...], ...others}` from groups encoded already."""
    return '{"groups": [' + ", ".join(groups) + "], " + json.dumps(others)[1:]


def main(argv: list[str] | None = None) -> int:
    """Bind, say so on stdout, forward until told to stop; returns the exit code."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
    signal.pthread_sigmask(signal.SIG_SETMASK, set())  # the spawner blocked some; exec kept that
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the supervisor's to handle
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: None)
    curve = os.environ.pop(ENV_CURVE, "")
    server_secret, _, client_public = curve.partition(" ")
    # The open-files limit is inherited: the supervisor raised it to the hard limit at start.
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    broker = Broker(
        context,
        args.xsub,
        args.xpub,
        max_message_size=args.max_message_size,
        high_water_mark=args.hwm,
        inject_endpoint=args.inject,
        curve=(server_secret.encode(), client_public.encode()) if curve else None,
        groups_endpoint=args.groups,
        on_group_stats=_reporter(),
        kept_groups=[
            (name.encode(), pattern.encode())
            for name, _, pattern in (kept.partition(" ") for kept in args.keep_group)
        ],
    )
    try:
        broker.start()
    except BrokerError as exc:
        print(f"{ERROR_PREFIX}{exc}", flush=True)
        return 1
    print(READY, flush=True)
    poller = select.poll()
    poller.register(wake_read, select.POLLIN)
    if args.lifeline is not None:
        poller.register(args.lifeline, select.POLLIN)
    while not poller.poll(1000):
        print(ALIVE, flush=True)  # a broker that stops saying this is stopped or hung
        if broker.groups is not None and not broker.groups.is_alive():
            log.error("grouped delivery stopped on a failure (see above): the broker exits")
            broker.stop()
            return 1  # the supervisor starts a broker again
    broker.stop()
    broker.join(1.0)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # the proxy threads' sockets need no orderly context teardown
