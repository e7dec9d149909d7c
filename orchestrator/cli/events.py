"""`orchestrator events [PATTERN...] [--json]`."""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from typing import Any

import click
import zmq

from module_sdk.bus import HandshakeTimeoutError, ZmqEventBus
from module_sdk.event import Event, Pattern
from orchestrator.cli.common import App, Seconds, abort, config_option
from orchestrator.cli.stdout import reader_gone, stop_writing
from orchestrator.config.errors import one_line

_MAX_DEPTH = 64  # levels of data shown (as `publish` takes): deeper is cut
_SEEN = 4096  # ids of events shown, remembered: patterns that overlap show an event once


def _patterns(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[str]:
    try:
        return [Pattern.parse(pattern).text for pattern in value or ("*",)]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.argument("patterns", nargs=-1, callback=_patterns)
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (JSON Lines).")
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many events.")
@click.option("--timeout", type=Seconds(min=0, max=1e9), help="Stop after this many seconds.")
def events(
    app: App, patterns: list[str], as_json: bool, count: int | None, timeout: float | None
) -> None:
    """Print the events on the bus as they pass, one line each: time, type, source, data.

    PATTERN is an event type (test.ping), a prefix (test.*) or * (the default), as modules
    subscribe. Runs until Ctrl+C, or --count events, or --timeout seconds.
    """
    asking = 10.0 if timeout is None else min(10.0, max(timeout, 1.0))  # --timeout bounds it
    bus_info = app.request("status", wait=asking)["bus"]
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    curve = app.request("bus_client") if bus_info.get("transport") == "tcp" else None
    bus = ZmqEventBus(context, "cli", bus_info["xsub"], bus_info["xpub"], curve=curve)
    done = threading.Event()
    seen = 0
    shown: OrderedDict[str, None] = OrderedDict()
    lock = threading.Lock()
    closed = threading.Event()  # stdout's reader went away (`| head -1`)
    unwritable: list[OSError] = []  # why stdout cannot be written, if it cannot

    def show(event: Event) -> None:
        nonlocal seen
        with lock:
            if done.is_set() or event.id in shown:
                return
            shown[event.id] = None
            if len(shown) > _SEEN:
                shown.popitem(last=False)
            try:
                click.echo(_format(event, as_json))
            except BrokenPipeError:
                closed.set()
                done.set()
                return
            except OSError as exc:  # a full disk, /dev/full: no event can be shown any more
                unwritable.append(exc)
                done.set()
                return
            seen += 1
            if count is not None and seen >= count:
                done.set()

    try:
        for pattern in patterns:
            bus.subscribe(pattern, show)
        try:
            bus.handshake(10.0)
        except HandshakeTimeoutError as exc:
            abort(f"cannot reach the bus at {bus_info['xpub']}: {exc}")
        bus.start()
        click.echo(f"listening for {', '.join(patterns)} (Ctrl+C to stop)", err=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done.wait(
            0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic()))
        ):
            if deadline is not None and time.monotonic() >= deadline:
                break
            if reader_gone():  # on a quiet bus, no write would tell
                closed.set()
                break
    except KeyboardInterrupt:
        pass
    finally:
        done.set()
        bus.close(timeout=1.0)
        context.destroy(linger=0)
        if closed.is_set() or unwritable:  # nothing more can go there, not even the last flush
            stop_writing()
    if unwritable:
        abort(f"cannot write the output: {unwritable[0].strerror or unwritable[0]}")


def _format(event: Event, as_json: bool) -> str:
    """One line for `event`, whatever a publisher put in it: its source and id one printable
    line (a forged line or a terminal escape is shown, not obeyed), its data valid JSON."""
    data = _shown(event.data, 0)
    source, event_id = one_line(str(event.source), 200), one_line(str(event.id), 200)
    if as_json:
        record = {
            "time": event.time if math.isfinite(event.time) else None,
            "type": event.type,
            "source": source,
            "id": event_id,
            "data": data,
        }
        return json.dumps(record, sort_keys=True, allow_nan=False)
    when = event.time if math.isfinite(event.time) and abs(event.time) < 1e11 else 0.0
    stamp = time.strftime("%H:%M:%S", time.localtime(when)) + f".{int(when % 1 * 1000):03d}"
    return f"{stamp}  {event.type}  {source}  {json.dumps(data, allow_nan=False)}"


def _shown(value: Any, depth: int) -> Any:
    """`value` as JSON can carry it: bytes as hex, map keys as strings, NaN and infinities as
    strings, anything else as its repr, and no deeper than _MAX_DEPTH."""
    if depth >= _MAX_DEPTH:
        return "..."
    if isinstance(value, dict):
        return {_key(key): _shown(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_shown(item, depth + 1) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return value.hex() if isinstance(value, bytes) else repr(value)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    return key.hex() if isinstance(key, bytes) else repr(key)
