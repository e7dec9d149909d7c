"""The supervisor's publisher: what it hands the broker, syncs of its sequence numbers included."""

from __future__ import annotations

from pathlib import Path

import zmq

from module_sdk.codec import decode_envelope, decode_sync
from module_sdk.protocol import SYNC_SUFFIX
from orchestrator.events import SYNC_INTERVAL, SystemEvents


def _received(pull: zmq.Socket[bytes], count: int) -> list[list[bytes]]:
    frames = []
    for _ in range(count):
        assert pull.poll(5000), f"got {len(frames)} of {count} messages"
        frames.append(pull.recv_multipart())
    return frames


def test_system_events_sync_the_last_sequence_number_of_each_topic(tmp_path: Path) -> None:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pull = context.socket(zmq.PULL)
    endpoint = f"ipc://{tmp_path / 'inject.sock'}"
    pull.bind(endpoint)
    events = SystemEvents(context, endpoint)
    try:
        for n in range(3):
            events.publish("module.error", name=f"m{n}")
        events.publish("app.started", name="app")
        published = _received(pull, 4)
        assert [decode_envelope(body)[4] for _, body in published] == [1, 2, 3, 1]
        events.sync(100.0)
        syncs = {topic: decode_sync(body) for topic, body in _received(pull, 2)}
        assert syncs[b"module.error" + SYNC_SUFFIX][1] == 3
        assert syncs[b"app.started" + SYNC_SUFFIX][1] == 1
        prefix = syncs[b"app.started" + SYNC_SUFFIX][0]
        assert decode_envelope(published[0][1])[1].startswith(prefix)
        events.sync(100.0 + SYNC_INTERVAL / 2)  # not yet due again
        assert not pull.poll(100)
    finally:
        events.close()
        pull.close(linger=0)
        context.term()
