"""Wire constants shared by the supervisor and the SDK shim: one place for frame layouts and kinds.

Bus frames are `[topic, envelope]`: the topic is the event type in UTF-8 (ZeroMQ filters on its
prefix), the envelope is msgpack `[source, id, time, data, seq]`. Topics that start with `INTERNAL_PREFIX`
belong to the SDK (handshake probes) and never reach a callback; nor do sequence syncs, whose topic is
an event type followed by `SYNC_SUFFIX`, so that exactly the subscribers of that type receive them.

The child channel carries msgpack maps `{"kind": ..., ...}` from each child's DEALER socket to the
supervisor's ROUTER socket, and the supervisor's replies back.
"""

from __future__ import annotations

from typing import Any, Final, Literal, NotRequired, TypedDict

# Bus
INTERNAL_PREFIX: Final = b"\x00"
PROBE_PREFIX: Final = b"\x00probe."
ENVELOPE_FIELDS: Final = 5  # source, id, time, data, seq
# `seq` counts a publisher's events per topic from 1 (0: not counted), so that a subscriber can
# tell that ZeroMQ dropped some on the way (a high-water mark overflowed) and count them.
SYNC_SUFFIX: Final = b"\x00"  # `[type + SYNC_SUFFIX, msgpack [id prefix, last seq, time, first]]`
SYNC_FIELDS: Final = 3  # and a 4th, optional: when the publisher sent seq 1 on the topic
# A publisher that went quiet sends a sync per topic (on its heartbeat ticks): without it, the
# events lost at the end of a burst would count only when the topic's next event arrived.

# The version of the child channel's and the fork server's messages: bumped by any change that a
# supervisor of the previous version would misread. A supervisor keeps the code it started with,
# but a module process it spawns (or a fork server it revives) imports module_sdk from disk: after
# an upgrade on disk the two differ, and the new side says so instead of failing obscurely.
VERSION: Final = 1


def version_mismatch(theirs: object) -> str | None:
    """What to say when the supervisor speaks protocol `theirs`, or None when it is ours. None
    is a supervisor from before versions were sent, whose messages are version 1's."""
    if (1 if theirs is None else theirs) == VERSION:
        return None
    said = f"protocol {theirs}" if isinstance(theirs, int) else "an unknown protocol"
    return (
        f"the running supervisor speaks {said}, the module_sdk on disk protocol {VERSION}:"
        " the code was upgraded while the supervisor ran; restart it"
        " (`orchestrator down`, then `orchestrator up`)"
    )


# Metric names a module may not define (module_sdk.metrics refuses them at the call, the
# supervisor leaves them out): the supervisor's own families, prometheus_client's process_* and
# python_*, and what Prometheus itself writes for each target (up, scrape_*) and for its alerts.
# A module's `up 0` would make the usual `up == 0` alert fire for a healthy target.
RESERVED_METRIC_PREFIXES: Final = ("orchestrator_", "process_", "python_", "scrape_")
RESERVED_METRIC_NAMES: Final = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})


def reserved_metric_name(sample: str) -> bool:
    """Whether a sample name (a metric's, or one its kind adds a suffix to) is one a module may
    not put in the exposition."""
    return sample in RESERVED_METRIC_NAMES or sample.startswith(RESERVED_METRIC_PREFIXES)


# Child channel message kinds (their fields: the TypedDicts below)
HELLO: Final = "hello"  # child -> supervisor: asks for its spec
SPEC: Final = "spec"  # supervisor -> child: everything the child needs to run the module
READY: Final = "ready"  # child -> supervisor: initialize() returned, the bus is connected
ERROR: Final = "error"  # child -> supervisor: what went wrong, before a failing exit
HEARTBEAT: Final = "heartbeat"  # child -> supervisor: alive, with its counters
UNHEALTHY: Final = "unhealthy"  # child -> supervisor: health() failed health_retries times in a row
MESSAGE_LIMIT: Final = 500  # characters of a child's health message the supervisor keeps
RUN: Final = "run"  # supervisor -> child: call the module's run() now (its schedule is due)
RUN_RESULT: Final = "run_result"  # child -> supervisor: how that run() ended


# The fields of each child-channel message: both sides use these types, so that a field renamed on
# one side is a type error on the other.
class Hello(TypedDict):
    kind: Literal["hello"]
    pid: int
    name: str  # the module


class Ready(TypedDict):
    kind: Literal["ready"]
    pid: int
    contained: bool  # it joined the cgroup it was given
    run: NotRequired[bool]  # the module defines run(): a schedule calls it in this process


class Heartbeat(TypedDict):
    kind: Literal["heartbeat"]
    pid: int
    counters: dict[str, int]  # events_in, events_out, callback_errors, bad_frames, dropped,
    # and retries, breaker_opens (module_sdk.resilience)
    busy_for: float  # seconds the callback running now has taken so far (0 when idle)
    metrics: NotRequired[list[Any]]  # the module's own (module_sdk.metrics), when they changed


class Unhealthy(TypedDict):
    kind: Literal["unhealthy"]
    pid: int
    error: str  # what the failing check said (bounded: see module_sdk.health.bounded_message)
    failures: int  # failed checks in a row, this one included


class Error(TypedDict):
    kind: Literal["error"]
    pid: int
    stage: str  # load, initialize, bus
    error: str
    traceback: str


class Run(TypedDict):
    kind: Literal["run"]
    id: int  # echoed in the result


class RunResult(TypedDict):
    kind: Literal["run_result"]
    pid: int
    id: int
    ok: bool  # run() returned (False: it raised)
    error: str  # what it raised, one line
    seconds: float  # how long it took


ChildMessage = Hello | Ready | Heartbeat | Unhealthy | Error | RunResult


class ErrorHandling(TypedDict):
    """`main.yaml`'s `error_handling:`: the defaults of `@retry` and `@circuit_breaker`."""

    retry_max_attempts: int
    retry_wait_min: float
    retry_wait_max: float
    circuit_breaker_fail_max: int
    circuit_breaker_reset_timeout: float


class Spec(TypedDict):
    """The supervisor's answer to hello: everything the child needs to run its module."""

    kind: Literal["spec"]
    protocol: NotRequired[int]  # VERSION (absent from supervisors before there was one)
    path: str  # the module's file or package directory
    config: dict[str, Any]  # its `config` from modules.yaml
    xsub: str  # the broker's endpoints
    xpub: str
    heartbeat_interval: float  # seconds
    handshake_timeout: float  # seconds the bus probe may take, at most
    high_water_mark: int
    max_message_size: int  # bytes
    log_level: str
    log_format: str  # text or json (module_sdk.logformat)
    curve: dict[str, str] | None  # the client keys of a tcp bus
    log: str  # the module's log file: should the supervisor die, the module says so there
    error_handling: NotRequired[ErrorHandling]
    concurrency: NotRequired[int]  # callback threads granted (module_sdk.dispatch); 1 if absent
    ready: str  # auto: ready once initialize() returns; manual: once it calls event_bus.ready()
    health_interval: float  # seconds between calls of the module's health(), if it has one
    health_retries: int  # failed checks in a row that make it unhealthy
    groups: NotRequired[str | None]  # the broker's groups socket (grouped subscriptions)
    group: NotRequired[str | None]  # the module's default group (`work_group:` in modules.yaml)
    redeliver: NotRequired[bool]  # its grouped events go to another member if it crashes


# Environment of a child process
ENV_CHANNEL: Final = "ORCHESTRATOR_CHANNEL"  # the supervisor's child-channel endpoint
ENV_MODULE: Final = "ORCHESTRATOR_MODULE"  # the module's name
ENV_LIFELINE: Final = "ORCHESTRATOR_LIFELINE_FD"  # read end of a pipe only the supervisor writes
ENV_SUPERVISOR_PID: Final = "ORCHESTRATOR_SUPERVISOR_PID"  # our parent, once adopted
# The routing id of a module process's child channel: its name and a secret (see
# orchestrator/child_channel.py), so that no other process can speak for it.
ENV_CHANNEL_ID: Final = "ORCHESTRATOR_CHANNEL_ID"
ENV_CGROUP: Final = "ORCHESTRATOR_CGROUP"  # the cgroup v2 directory to join before module code runs
STANDBY_GO: Final = b"g"  # written on a standby's pipe: take over now (module_sdk/standby.py)
# Module processes per fork server request (an output pipe and an environment each: a message
# carries 253 descriptors at most).
FORK_BATCH_MAX: Final = 64

# Exit codes of the shim, so that the supervisor can tell what went wrong
EXIT_OK: Final = 0
EXIT_LOAD_FAILED: Final = 70  # the module file could not be imported or lacks the interface
EXIT_INIT_FAILED: Final = 71  # initialize() raised
EXIT_BUS_FAILED: Final = 72  # the bus handshake did not complete
EXIT_ORPHANED: Final = 73  # the supervisor went away
EXIT_SHUTDOWN_FAILED: Final = 74  # shutdown() raised

EXIT_REASONS: Final = {
    EXIT_LOAD_FAILED: "module failed to load",
    EXIT_INIT_FAILED: "initialize() raised",
    EXIT_BUS_FAILED: "bus handshake failed",
    EXIT_ORPHANED: "supervisor went away",
    EXIT_SHUTDOWN_FAILED: "shutdown() raised",
}
