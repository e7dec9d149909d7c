"""The broker as a child process of the supervisor (`python -m broker`), restarted when it exits.

libzmq's routing is driven by peers: a subscription, a connection, a frame. Whatever they can make
it do (crash on a pathological subscription, abort on a descriptor shortage, grow without bound)
now ends one broker process, which is back within milliseconds; modules reconnect and re-subscribe
by themselves (ZeroMQ does both), and the events lost meanwhile show as gaps in each publisher's
sequence numbers, counted in `status` as `dropped`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from broker import GROUPS_PREFIX, KEPT_PREFIX
from orchestrator.config import AppConfig
from orchestrator.helper_process import HelperProcess, HelperStartError, WatchExit
from orchestrator.helper_spawn import Started, helper_argv, spawn_helper

if TYPE_CHECKING:
    from orchestrator.boot import Boot
    from orchestrator.rundir import RunDir

BrokerStartError = HelperStartError
"""The broker could not bind its endpoints (or did not say so in time)."""
_KEEP = "--keep-group="  # an argument of the broker's: a redelivering group to queue for


class BrokerProcess(HelperProcess):
    """Starts the broker, reads what it prints, and restarts it with a short backoff."""

    silent_after = 5.0  # it says `alive` every second: five missed, it is stopped or hung

    def __init__(
        self,
        *,
        xsub: str,
        xpub: str,
        inject: str,
        groups: str | None = None,
        max_message_size: int,
        high_water_mark: int,
        memory_limit_mb: float,
        lifeline: int,
        poller: zmq.Poller,
        watch_exit: WatchExit,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._args = broker_args(
            xsub, xpub, inject, groups, max_message_size, high_water_mark, lifeline
        )
        super().__init__(
            name="broker",
            module="broker",
            args=self._args,
            memory_limit_mb=memory_limit_mb,
            lifeline=lifeline,
            poller=poller,
            watch_exit=watch_exit,
            env=env,
            memory_setting="bus.broker_memory_limit_mb",
        )
        self.group_stats: dict[str, Any] | None = None  # the broker's last `groups` line
        # The redelivering groups the broker reported last, (name, pattern): a restarted one
        # queues their events from its start, before their members join it again.
        self.kept: list[tuple[str, str]] = []
        self._parts: list[list[Any]] | None = None  # of a `kept` list being read

    def start(self, started: Started | None = None) -> None:
        """Start (or restart) the broker, or take the one `prestart` started: a new one knows
        no groups, whatever the last said."""
        self.group_stats = None
        # Those the last broker reported, every time (none at the first start: the argv that
        # `Boot.take_broker` compared); a later start without any keeps none of an earlier's.
        kept = [f"{_KEEP}{name} {pattern}" for name, pattern in self.kept]
        self.argv = [*(arg for arg in self.argv if not arg.startswith(_KEEP)), *kept]
        super().start(started)

    def restart_note(self) -> str:
        """What a broker restart loses: ungrouped events are counted (as gaps in sequence
        numbers), the grouped ones it had queued are not; its last report says how many."""
        queued = [
            f"{g['group']} ({g['pattern']}) {g['queued']}"
            for g in (self.group_stats or {}).get("groups", [])
            if isinstance(g, dict) and g.get("queued")
        ]
        return (
            " (modules reconnect by themselves; ungrouped events sent meanwhile are lost and"
            " counted as dropped; grouped events the broker had queued are lost, uncounted"
            + (f": {', '.join(queued[:8])} at its last report" if queued else "")
            + (f" and {len(queued) - 8} group(s) more" if len(queued) > 8 else "")
            + "; redelivering groups queue again at once, others once a member is back)"
        )

    def on_line(self, line: str) -> None:
        """The broker's `groups {json}` lines are its grouped-delivery counters, its `kept
        {json}` lines the redelivering groups with members; others are logs."""
        if line.startswith(KEPT_PREFIX):
            self._kept_part(line[len(KEPT_PREFIX) :])
            return
        if not line.startswith(GROUPS_PREFIX):
            super().on_line(line)
            return
        try:
            stats = json.loads(line[len(GROUPS_PREFIX) :])
        except ValueError:
            stats = None
        if isinstance(stats, dict):
            self.group_stats = stats

    def _kept_part(self, text: str) -> None:
        """One part of the list of groups a restarted broker is to keep: the list is taken once
        its last part is in, in order (a part out of order, or malformed, drops it)."""
        try:
            part = json.loads(text)
            number, total, pairs = part["part"], part["of"], part["groups"]
        except (ValueError, TypeError, KeyError):
            self._parts = None
            return
        if not (isinstance(number, int) and isinstance(total, int) and isinstance(pairs, list)):
            self._parts = None
            return
        if number == 0:
            self._parts = []
        if self._parts is None or number != len(self._parts):
            self._parts = None
            return
        self._parts.append(pairs)
        if number == total - 1:
            self.kept = kept_groups([pair for chunk in self._parts for pair in chunk])
            self._parts = None

    def memory_hint(self) -> str:
        """A broker grows with the subscriptions its peers hold."""
        return " (a peer holding too many subscriptions?)"

    def bus_status(self) -> dict[str, Any]:
        """The broker's part of `status --json` under `bus` (kept as it was before `system`)."""
        return {
            "broker_pid": self.pid,
            "broker_running": self.ready,
            "broker_restarts": self.restarts,
            "broker_last_exit": self.last_exit,
            "broker_rss_mb": None if self.rss_mb is None else round(self.rss_mb, 1),
            "groups": self.group_stats,
        }


def kept_groups(pairs: list[Any]) -> list[tuple[str, str]]:
    """The (name, pattern) pairs of a broker's `kept` lines: the redelivering groups that have
    members (one kept by a restart whose members never came back, their module removed, is not
    kept again: it would queue for nobody, broker after broker). Names and patterns without
    spaces; the broker checks them again when it takes them."""
    kept = []
    for pair in pairs:
        if not isinstance(pair, list) or len(pair) != 2:
            continue
        name, pattern = pair
        if isinstance(name, str) and isinstance(pattern, str) and " " not in name + pattern:
            kept.append((name, pattern))
    return kept


def bind_error(config: AppConfig, xsub: str, xpub: str, error: str) -> str:
    """The broker could not bind: name the setting behind the endpoint, for the user."""
    bus = config.bus
    for field, endpoint, port in (
        ("xsub_port", xsub, bus.xsub_port),
        ("xpub_port", xpub, bus.xpub_port),
        ("groups_port", f"tcp://{bus.host}:{bus.groups_port}", bus.groups_port or 0),
    ):
        prefix = f"cannot bind {endpoint}: "  # the ": " keeps port 5555 apart from 55556
        if bus.transport == "tcp" and prefix in error:
            return (
                f"{config.main_file.name}: bus.{field}: cannot bind port {port} on"
                f" {bus.host}: {error.split(prefix, 1)[1]} (another program, or another"
                " supervisor, is using it)"
            )
    return f"the bus cannot start: {error}"


def broker_args(  # noqa: PLR0917  (each is one flag of the broker's command line)
    xsub: str,
    xpub: str,
    inject: str,
    groups: str | None,
    max_message_size: int,
    high_water_mark: int,
    lifeline: int,
) -> list[str]:
    """The broker's command line arguments (see broker/__main__.py)."""
    return [
        "--xsub",
        xsub,
        "--xpub",
        xpub,
        "--inject",
        inject,
        *(["--groups", groups] if groups else []),
        "--max-message-size",
        str(max_message_size),
        "--hwm",
        str(high_water_mark),
        "--lifeline",
        str(lifeline),
    ]


def prestart(config: AppConfig, run_dir: RunDir, boot: Boot) -> None:
    """Start the broker of an ipc bus now, as soon as the run directory is ours, so that it
    boots while the supervisor imports the rest of itself and sets up, instead of after that
    (it was on the critical path of `up`): forked by the fork server's template, which has
    imported ZeroMQ already (no interpreter start-up: less CPU for a launch on few cores), or
    spawned where the supervisor could not reap a fork (not a subreaper). The supervisor's
    `BrokerProcess` takes it over if it is the broker it would start (`Boot.take_broker`). A
    tcp bus waits for the supervisor (its CURVE keys are made there). If no process can be had
    now, nothing is started: the supervisor's own start of the broker says why."""
    if config.bus.transport != "ipc":
        return
    args = broker_args(
        run_dir.xsub,
        run_dir.xpub,
        run_dir.inject,
        run_dir.groups,
        config.bus.max_message_bytes,
        config.bus.high_water_mark,
        boot.lifeline,
    )
    argv = helper_argv("broker", args)
    if boot.subreaper:
        try:
            pending = boot.forkserver.send_main("broker", args, os.environ, Path.cwd())
        except OSError:
            boot.forkserver.close()  # the next fork starts a template anew
        else:
            boot.early_broker = (pending, argv)
            return
    with contextlib.suppress(OSError):  # no process now: the supervisor tries, and says why
        boot.early_broker = spawn_helper(argv, os.environ, boot.lifeline)
