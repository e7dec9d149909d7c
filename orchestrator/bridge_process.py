"""The cluster bridge as a child process of the supervisor (`python -P -m orchestrator.cluster`),
restarted when it exits, like the broker.

The NATS client lives there, not in the supervisor: a network that hangs, a server that refuses
the credentials or a client bug stalls or ends the bridge alone. Its settings (credentials and
CURVE keys among them) go in an environment variable, never on its command line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import zmq

from orchestrator.cluster.bridge_lines import COUNTS, COUNTS_PREFIX, HOST_PREFIX, STATE_PREFIX
from orchestrator.cluster.settings import ENV_BRIDGE, BridgeSettings
from orchestrator.config import AppConfig, BusSection, Redactor
from orchestrator.helper_process import HelperProcess, WatchExit
from orchestrator.helper_spawn import Started

log = logging.getLogger(__name__)

_MEMORY_LIMIT_MB = 256.0  # a bridge is a small asyncio process; past this it leaks
_HOST_CHANGES = ("joined", "lost", "left")  # `host: <change> NAME [why]` -> event host.<change>
_PEER_STATE = {"joined": "up", "lost": "unreachable", "left": "left"}
_MAX_PEERS = 256  # as the bridge's table (peers.MAX_HOSTS)
Publish = Callable[..., None]  # publish(event_type, **data): a built-in event


class BridgeProcess(HelperProcess):
    """Starts the bridge, follows the NATS connection state it prints, restarts it on exit."""

    def __init__(
        self,
        settings: BridgeSettings,
        *,
        lifeline: int,
        poller: zmq.Poller,
        watch_exit: WatchExit,
        publish: Publish,
    ) -> None:
        super().__init__(
            name="bridge",
            module="orchestrator.cluster",
            args=[],
            memory_limit_mb=_MEMORY_LIMIT_MB,
            lifeline=lifeline,
            poller=poller,
            watch_exit=watch_exit,
            env={ENV_BRIDGE: settings.to_json()},
            restart_note=" (events to and from other hosts meanwhile are lost)",
            memory_setting="the bridge's limit of",
        )
        self.settings = settings
        self._publish = publish
        self.peers: dict[str, str] = {}  # other hosts this run of the bridge heard of: state
        self.twins = 0  # other hosts this run heard calling themselves as this one
        self.nats = "not connected yet"
        self.counts = dict.fromkeys(COUNTS, 0)  # this run's, then summed
        self._earlier = dict(self.counts)  # the sums of the runs before this one

    def start(self, started: Started | None = None) -> None:
        """Spawn the bridge (or take `started`); it connects to NATS by itself."""
        self.nats = "not connected yet"
        self.peers = {}  # the new run hears them again (and says they joined)
        self.twins = 0
        self._earlier = dict(self.totals())
        self.counts = dict.fromkeys(self.counts, 0)
        super().start(started)

    def totals(self) -> dict[str, int]:
        """Events exported, imported, not sent (lost), and messages from NATS refused or bad
        (see `cluster.counts`), over every run of the bridge."""
        return {key: self._earlier[key] + value for key, value in self.counts.items()}

    def on_line(self, line: str) -> None:
        """`nats: <state>` lines are the connection's state, `counts: ...` its event counts,
        `host: ...` another host joining, lost or leaving (a `host.*` event); any other is a log
        line."""
        if line.startswith(HOST_PREFIX):
            self._host_changed(line[len(HOST_PREFIX) :])
            return
        if line.startswith(COUNTS_PREFIX):
            numbers = line[len(COUNTS_PREFIX) :].split()
            if len(numbers) == len(self.counts) and all(
                n.isascii() and n.isdigit() for n in numbers
            ):
                self.counts = dict(zip(self.counts, map(int, numbers), strict=True))
            return
        if line.startswith(STATE_PREFIX):
            state = line[len(STATE_PREFIX) :]
            if not state[:1].isdigit():  # "N event(s) not sent" is a count, not a state
                self.nats = state
            level = logging.INFO if state.startswith("connected") else logging.WARNING
            log.log(level, "bridge: nats %s", state)
            return
        super().on_line(line)

    def _host_changed(self, text: str) -> None:
        change, _, rest = text.partition(" ")
        host, _, why = rest.partition(" ")
        if change == "twin":
            self.twins += 1
            log.warning(
                "cluster: another host also calls itself %r (%s): give each host its own"
                " cluster.host (status --cluster and host-named events mix them up)",
                host,
                why,
            )
        elif change == "skewed":
            log.warning("cluster: host %s is ignored: %s", host, why)
        elif change == "forgot":  # the bridge's table no longer holds it: nor does status
            self.peers.pop(host, None)
            log.info("cluster: host %s forgotten (%s)", host, why)
        elif change in _HOST_CHANGES and host:
            self.peers[host] = _PEER_STATE[change]
            if len(self.peers) > _MAX_PEERS:  # as the bridge's own table: forget one gone
                gone = next((h for h, state in self.peers.items() if state != "up"), host)
                self.peers.pop(gone)
            level = logging.INFO if change == "joined" else logging.WARNING
            log.log(level, "cluster: host %s %s%s", host, change, f" ({why})" if why else "")
            self._publish(f"host.{change}", host=host, **({"reason": why} if why else {}))

    def status(self) -> dict[str, Any]:
        """Its row under `system`, with the NATS connection's state."""
        row = super().status()
        row["nats"] = self.nats if self.pid is not None else "not connected (bridge not running)"
        row["host"] = self.settings.host
        row["twins"] = self.twins
        row["peers"] = {
            state: sorted(h for h, s in self.peers.items() if s == state)
            for state in ("up", "unreachable", "left")
        }
        row.update(self.totals())
        return row


def reconcile_bridge(
    bridge: BridgeProcess | None,
    config: AppConfig,
    *,
    bus: BusSection,
    xsub: str,
    xpub: str,
    curve: dict[str, str] | None,
    redactor: Redactor,
    lifeline: int,
    poller: zmq.Poller,
    watch_exit: WatchExit,
    control: str,
    link_key: str,
    publish: Publish,
    local_prefix: str = "",
) -> BridgeProcess | None:
    """The bridge `config` asks for: `bridge` itself if its settings are the same, else a new one,
    started (the old one stopped first), or None without `cluster:`. `bus` is the bus in force
    (a reload's `bus:` changes apply at the next `up`, as for the broker). Credentials written in
    the file (not from `${VAR}`) are given to `redactor` too."""
    cluster = config.cluster
    settings = None
    if cluster is not None:
        settings = BridgeSettings.of(
            cluster,
            xsub=xsub,
            xpub=xpub,
            lifeline=lifeline,
            curve=curve,
            high_water_mark=bus.high_water_mark,
            max_message_size=bus.max_message_bytes,
            control=control,
            link_key=link_key,
            local_prefix=local_prefix,
        )
        credentials = cluster.credentials
        if credentials is not None:
            redactor.add(s for s in (credentials.token, credentials.password) if s)
    if bridge is not None and bridge.settings == settings:
        return bridge
    if bridge is not None:
        log.info("cluster: the settings changed; stopping the bridge (pid %s)", bridge.pid)
        bridge.stop(timeout=1.0)
    if settings is None:
        return None
    bridge = BridgeProcess(
        settings, lifeline=lifeline, poller=poller, watch_exit=watch_exit, publish=publish
    )
    log.info("cluster: host %s joins %s", settings.host, ", ".join(settings.servers))
    try:
        bridge.start()
    except OSError as exc:  # no process to be had now (a process or fd limit): later
        log.error("the bridge cannot start: %s; trying again shortly", exc)
        bridge.schedule_restart()
    return bridge
