"""`orchestrator publish TYPE [JSON]`."""

from __future__ import annotations

import json
import math
from typing import Any

import click
import msgpack

from module_sdk.event import validate_event_type
from orchestrator.cli.common import App, config_option, echo_json


def _event_type(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return validate_event_type(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


_MAX_DEPTH = 64  # nested lists and objects in an event's data, as in a config file


def _payload(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        data = json.loads(value, parse_constant=_not_json)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}") from None
    except ValueError as exc:  # NaN, Infinity: Python's json takes them, JSON has none
        raise click.BadParameter(str(exc)) from None
    except RecursionError:  # nested far too deep for the parser itself
        data = _TOO_DEEP
    if data is _TOO_DEEP or _too_deep(data):
        raise click.BadParameter(f"lists and objects nested more than {_MAX_DEPTH} deep")
    if _infinite(data):  # 1e400: too large a number becomes infinity, not an error
        raise click.BadParameter("a number too large for a float (it would be infinity)")
    try:
        msgpack.packb(data)
    except OverflowError:
        raise click.BadParameter("an integer beyond 64 bits: no event can carry it") from None
    except UnicodeEncodeError:
        raise click.BadParameter("a string that is not valid Unicode (a lone surrogate)") from None
    return data


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON (and no event can carry it portably)")


_TOO_DEEP = object()


def _infinite(data: Any) -> bool:
    """Whether a float of `data` is infinite (nested at most _MAX_DEPTH deep: checked first)."""
    if isinstance(data, float):
        return not math.isfinite(data)
    if isinstance(data, dict | list):
        return any(_infinite(item) for item in (data.values() if isinstance(data, dict) else data))
    return False


def _too_deep(data: Any) -> bool:
    """Whether `data` nests lists and objects more than `_MAX_DEPTH` deep (looked at without
    recursion: the nesting is the user's)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > _MAX_DEPTH:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


@click.command()
@click.argument("event_type", metavar="TYPE", callback=_event_type)
@click.argument("data", metavar="[JSON]", required=False, callback=_payload)
@config_option
@click.option("--json", "as_json", is_flag=True, help='Print {"type": ..., "id": ...}.')
def publish(app: App, event_type: str, data: Any, as_json: bool) -> None:
    """Publish one event of TYPE (like `test.ping`) on the running bus, with source `cli`.

    JSON is the event's data, for example '{"message": "hello"}'; without it the data is null.
    """
    answer = app.request("publish", type=event_type, data=data)
    if as_json:
        echo_json({"type": event_type, "id": answer["id"]})
        return
    click.echo(f"published {event_type} (id {answer['id']})")
