"""Wire constants shared by the supervisor and the SDK shim: one place for frame layouts and kinds.

Bus frames are `[topic, envelope]`: the topic is the event type in UTF-8 (ZeroMQ filters on its
prefix), the envelope is msgpack `[source, id, time, data, seq]`. Topics that start with `INTERNAL_PREFIX`
belong to the SDK (handshake probes) and never reach a callback; nor do sequence syncs, whose topic is
an event type followed by `SYNC_SUFFIX`, so that exactly the subscribers of that type receive them.

The child channel carries msgpack maps `{"kind": ..., ...}` from each child's DEALER socket to the
supervisor's ROUTER socket, and the supervisor's replies back.
"""

from __future__ import annotations

from typing import Final

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

# Child channel message kinds
HELLO: Final = "hello"  # child -> supervisor: {name, pid}
SPEC: Final = "spec"  # supervisor -> child: everything the child needs to run the module
READY: Final = (
    "ready"  # child -> supervisor: initialize() returned, the bus is connected; {contained}
)
ERROR: Final = "error"  # child -> supervisor: {stage, error, traceback} before a failing exit
HEARTBEAT: Final = "heartbeat"  # child -> supervisor: {pid, counters, busy_for, metrics?}

# Environment of a child process
ENV_CHANNEL: Final = "ORCHESTRATOR_CHANNEL"  # the supervisor's child-channel endpoint
ENV_MODULE: Final = "ORCHESTRATOR_MODULE"  # the module's name
ENV_LIFELINE: Final = "ORCHESTRATOR_LIFELINE_FD"  # read end of a pipe only the supervisor writes
ENV_SUPERVISOR_PID: Final = "ORCHESTRATOR_SUPERVISOR_PID"  # our parent, once adopted
ENV_CGROUP: Final = "ORCHESTRATOR_CGROUP"  # the cgroup v2 directory to join before module code runs

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
