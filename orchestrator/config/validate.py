"""Small reusable validators: each checks one raw YAML value and returns it normalised, or raises a
`ConfigError` saying what was expected and what was found (`expected ..., got ...`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from orchestrator.config.errors import ConfigError
from orchestrator.config.redact import MASK, is_secret_key

Validator = Callable[[Any, str, str], Any]
"""`validator(value, file, where) -> normalised value`; raises `ConfigError`."""


LARGEST_NUMBER = 1e9
"""The largest magnitude of a number setting without a bound of its own (about 31 years in
seconds): beyond it, turning a timeout into milliseconds for a poll, adding it to a clock, or
packing it in an answer overflows."""


def child(where: str, key: object) -> str:
    """The location of `key` under `where`: `logging` + `level` -> `logging.level`."""
    return f"{where}.{key}" if where else str(key)


def item(where: str, index: int) -> str:
    """The location of list item `index` under `where`: `modules` + 2 -> `modules[2]`."""
    return f"{where}[{index}]"


def describe(value: Any) -> str:
    """How a found value is shown in a message: strings quoted, YAML spelling for null/booleans.

    A string is quoted whole and unescaped: it may hold a secret, which must reach the scrubber
    intact; `ConfigError` cuts and escapes the message only when it is shown."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        quote = '"' if "'" in value and '"' not in value else "'"
        return f"{quote}{value}{quote}"
    return repr(value)


def found(value: Any, where: str) -> str:
    """`describe(value)`, or `***` when the key at `where` names a secret (`token`, `password`...)."""
    key = where.rsplit(".", 1)[-1]
    return MASK if is_secret_key(key) and value is not None else describe(value)


def _fail(file: str, where: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(file, where, f"expected {expected}, got {found(value, where)}")


def _int_expectation(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f"an integer between {minimum} and {maximum}"
    if minimum is not None:
        return f"an integer >= {minimum}"
    if maximum is not None:
        return f"an integer <= {maximum}"
    return "an integer"


def _int_ok(value: Any, minimum: int | None, maximum: int | None) -> bool:
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    return (minimum is None or value >= minimum) and (maximum is None or value <= maximum)


def _check_int(
    value: Any, file: str, where: str, *, minimum: int | None, maximum: int | None, suffix: str
) -> int:
    if not _int_ok(value, minimum, maximum):
        raise _fail(file, where, _int_expectation(minimum, maximum) + suffix, value)
    if maximum is None and not -LARGEST_NUMBER <= value <= LARGEST_NUMBER:
        expected = f"{_int_expectation(minimum, None)}, at most {LARGEST_NUMBER:.0f}{suffix}"
        raise _fail(file, where, expected, value)
    return int(value)


def expect_int(
    value: Any, file: str, where: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """An integer (not a boolean) within the inclusive bounds (and never beyond
    `LARGEST_NUMBER`, what every answer and message that carries it can encode)."""
    return _check_int(value, file, where, minimum=minimum, maximum=maximum, suffix="")


def expect_optional_int(
    value: Any, file: str, where: str, *, minimum: int | None = None, maximum: int | None = None
) -> int | None:
    """Like `expect_int`, but null is accepted and returned as None."""
    if value is None:
        return None
    return _check_int(value, file, where, minimum=minimum, maximum=maximum, suffix=" or null")


def expect_number(
    value: Any,
    file: str,
    where: str,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
) -> float:
    """An int or float (not a boolean), returned as float, with optional `>`, `>=`, `<` bounds,
    and never beyond `LARGEST_NUMBER` (`.inf` and `.nan` are refused with the rest)."""
    bounds = [
        f"{op} {bound:g}" for op, bound in ((">", gt), (">=", ge), ("<", lt)) if bound is not None
    ]
    expected = "a number" + (" " + " and ".join(bounds) if bounds else "")
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _fail(file, where, expected, value)
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        number = math.inf
    if not -LARGEST_NUMBER <= number <= LARGEST_NUMBER:  # NaN compares false too
        raise _fail(file, where, f"{expected}, at most {LARGEST_NUMBER:g}", value)
    if (
        (gt is not None and not number > gt)
        or (ge is not None and not number >= ge)
        or (lt is not None and not number < lt)
    ):
        raise _fail(file, where, expected, value)
    return number


def expect_bool(value: Any, file: str, where: str) -> bool:
    """A real YAML boolean (`true`/`false`); strings such as `'yes'` are refused."""
    if not isinstance(value, bool):
        raise _fail(file, where, "true or false", value)
    return value


def expect_str(value: Any, file: str, where: str, *, allow_empty: bool = True) -> str:
    """A string; with `allow_empty=False`, a non-empty one. Never one with a NUL character: every
    setting string is a path, a name, an address or an argument, none of which can hold one (a
    module's own `config:` is not checked here)."""
    if not isinstance(value, str) or (not allow_empty and not value):
        raise _fail(file, where, "a string" if allow_empty else "a non-empty string", value)
    if "\0" in value:  # the value is not shown: it may be a secret
        raise ConfigError(file, where, "a NUL character cannot be in it")
    return value


def expect_choice(value: Any, file: str, where: str, choices: Iterable[str]) -> str:
    """One of `choices`, exactly."""
    options = tuple(choices)
    if not isinstance(value, str) or value not in options:
        raise _fail(file, where, "one of " + ", ".join(options), value)
    return value


def expect_mapping(
    value: Any, file: str, where: str, *, allow_null: bool = False
) -> dict[str, Any]:
    """A mapping whose keys are all strings (a shallow copy); null is `{}` when `allow_null`."""
    if value is None and allow_null:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(file, where, "a mapping", value)
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(
                file, child(where, key), f"expected a string key, got {describe(key)}"
            )
    return dict(value)


def expect_list(value: Any, file: str, where: str, *, allow_null: bool = False) -> list[Any]:
    """A list (a shallow copy); null is `[]` when `allow_null`."""
    if value is None and allow_null:
        return []
    if not isinstance(value, list):
        raise _fail(file, where, "a list", value)
    return list(value)


def check_keys(raw: Mapping[str, Any], allowed: Iterable[str], file: str, where: str) -> None:
    """Refuse any key of `raw` not in `allowed`, listing the allowed keys."""
    known = sorted(allowed)
    for key in raw:
        if key not in known:
            import difflib  # noqa: PLC0415  (an error's hint only: not in every supervisor)

            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.8)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                file, child(where, key), f"unknown key{hint} (expected one of: {', '.join(known)})"
            )


def validate_fields(
    raw: Mapping[str, Any], fields: Mapping[str, Validator], file: str, where: str
) -> dict[str, Any]:
    """Check `raw` against `fields` (key -> validator): unknown keys are refused, absent keys are
    left out of the result (so the dataclass default applies)."""
    check_keys(raw, fields, file, where)
    return {key: fields[key](value, file, child(where, key)) for key, value in raw.items()}
