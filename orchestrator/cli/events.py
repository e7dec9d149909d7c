"""`orchestrator events [PATTERN...] [--json]`."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import click
import zmq

from module_sdk.bus import HandshakeTimeoutError, ZmqEventBus
from module_sdk.event import Event, Pattern
from orchestrator.cli.common import App, abort, config_option


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
@click.option("--timeout", type=click.FloatRange(min=0), help="Stop after this many seconds.")
def events(
    app: App, patterns: list[str], as_json: bool, count: int | None, timeout: float | None
) -> None:
    """Print the events on the bus as they pass, one line each: time, type, source, data.

    PATTERN is an event type (test.ping), a prefix (test.*) or * (the default), as modules
    subscribe. Runs until Ctrl+C, or --count events, or --timeout seconds.
    """
    bus_info = app.request("status")["bus"]
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    curve = app.request("bus_client") if bus_info.get("transport") == "tcp" else None
    bus = ZmqEventBus(context, "cli", bus_info["xsub"], bus_info["xpub"], curve=curve)
    done = threading.Event()
    seen = 0
    lock = threading.Lock()

    def show(event: Event) -> None:
        nonlocal seen
        with lock:
            if done.is_set():
                return
            click.echo(_format(event, as_json))
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
    except KeyboardInterrupt:
        pass
    finally:
        done.set()
        bus.close(timeout=1.0)
        context.destroy(linger=0)


def _format(event: Event, as_json: bool) -> str:
    if as_json:
        record = {
            "time": event.time,
            "type": event.type,
            "source": event.source,
            "id": event.id,
            "data": event.data,
        }
        return json.dumps(record, default=_jsonable, sort_keys=True)
    stamp = (
        time.strftime("%H:%M:%S", time.localtime(event.time)) + f".{int(event.time % 1 * 1000):03d}"
    )
    data = json.dumps(event.data, default=_jsonable)
    return f"{stamp}  {event.type}  {event.source}  {data}"


def _jsonable(value: Any) -> Any:
    return value.hex() if isinstance(value, bytes) else repr(value)
