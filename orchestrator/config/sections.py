"""One builder per section of `main.yaml`: each validates a raw (interpolated) mapping, refuses
unknown keys and returns the section's dataclass. `where` is the section's location (`logging`)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any, cast, get_args
from urllib.parse import urlsplit

from module_sdk.event import Pattern
from orchestrator.config.errors import ConfigError
from orchestrator.config.model import (
    AppSection,
    BusSection,
    BusTransport,
    ErrorHandlingSection,
    LogCompress,
    LogFormat,
    LoggingSection,
    LogLevel,
    LogRotate,
    NotificationsSection,
    ReadyMode,
    ResourcesSection,
    RestartMode,
    StartMethod,
    SupervisionSettings,
    Webhook,
)
from orchestrator.config.validate import (
    Validator,
    check_keys,
    child,
    describe,
    expect_bool,
    expect_choice,
    expect_int,
    expect_list,
    expect_mapping,
    expect_number,
    expect_optional_int,
    expect_str,
    item,
    validate_fields,
)

RESTART_MODES: tuple[str, ...] = get_args(RestartMode)
START_METHODS: tuple[str, ...] = get_args(StartMethod)
TRANSPORTS: tuple[str, ...] = get_args(BusTransport)
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)
LOG_FORMATS: tuple[str, ...] = get_args(LogFormat)
READY_MODES: tuple[str, ...] = get_args(ReadyMode)

MAX_CONCURRENCY = 256  # callback threads one module may ask for
MAX_LABEL = 128  # characters of app.name and app.version
MAX_BACKUPS = 1000  # rotated files one log keeps: each rotation renames every one of them
LOG_ROTATIONS: tuple[str, ...] = get_args(LogRotate)
LOG_COMPRESSIONS: tuple[str, ...] = get_args(LogCompress)
MIN_INTERVAL = 0.05
"""Seconds between heartbeats, or health checks, at the least: a tighter loop only burns a core
(1e-7 kept the supervisor at 95% CPU and app.log growing 65 KB/s)."""
MIN_USAGE_LOG_INTERVAL = 1.0
"""Seconds between usage lines and `resources.usage` events at the least: each one is a line in
app.log and an event to every subscriber."""
MIN_LOG_FILE_MB = 0.001
"""The smallest `logging.max_file_size_mb`: about 1 KiB (less rounds down to 0 bytes, which
would never rotate)."""
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")

SUPERVISION_FIELDS: dict[str, Validator] = {
    "restart": partial(expect_choice, choices=RESTART_MODES),
    "max_restarts": partial(expect_int, minimum=0),
    "restart_window": partial(expect_number, gt=0),
    "stable_after": partial(expect_number, gt=0),
    "backoff_initial": partial(expect_number, ge=0),
    "backoff_multiplier": partial(expect_number, ge=1),
    "backoff_max": partial(expect_number, ge=0),
    "start_timeout": partial(expect_number, gt=0),
    "stop_timeout": partial(expect_number, gt=0),
    "heartbeat_interval": partial(expect_number, ge=MIN_INTERVAL),
    "heartbeat_timeout": partial(expect_number, gt=0),
    "memory_limit_mb": partial(expect_optional_int, minimum=1),
    "start_method": partial(expect_choice, choices=START_METHODS),
    "concurrency": partial(expect_int, minimum=1, maximum=MAX_CONCURRENCY),
    "health_interval": partial(expect_number, ge=MIN_INTERVAL),
    "health_retries": partial(expect_int, minimum=1),
    "ready": partial(expect_choice, choices=READY_MODES),
    "standby": expect_bool,
}
"""The supervision keys, valid under `main.yaml` `supervision:` and flat in a module entry."""


def build_app(raw: Any, file: str, where: str) -> AppSection:
    """`app:` name and version, both strings of one printable line (they are in log lines)."""
    fields: dict[str, Validator] = {
        "name": partial(_label, allow_empty=False),
        "version": partial(_label, allow_empty=True),
    }
    return AppSection(
        **validate_fields(expect_mapping(raw, file, where, allow_null=True), fields, file, where)
    )


def _label(value: Any, file: str, where: str, *, allow_empty: bool) -> str:
    """Up to `MAX_LABEL` printable characters: a newline in a log line would forge another."""
    text = expect_str(value, file, where, allow_empty=allow_empty)
    if len(text) > MAX_LABEL or not text.isprintable():
        raise ConfigError(
            file,
            where,
            f"expected one line of up to {MAX_LABEL} printable characters, got {describe(text)}",
        )
    return text


def build_resources(raw: Any, file: str, where: str) -> ResourcesSection:
    """`resources:` process and thread limits."""
    fields: dict[str, Validator] = {
        "process_memory_mb": partial(expect_int, minimum=1),
        "reserved_ram_percent": partial(expect_number, ge=0, lt=1),
        "thread_per_core": partial(expect_int, minimum=1),
        "usage_log_interval": partial(expect_number, ge=MIN_USAGE_LOG_INTERVAL),
        "max_processes": partial(expect_optional_int, minimum=1),
    }
    values = validate_fields(expect_mapping(raw, file, where, allow_null=True), fields, file, where)
    return ResourcesSection(**values)


def log_level(value: Any, file: str, where: str) -> str:
    if isinstance(value, str) and value.upper() in LOG_LEVELS:
        return value.upper()
    raise ConfigError(
        file, where, f"expected one of {', '.join(LOG_LEVELS)}, got {describe(value)}"
    )


def _log_format(value: Any, file: str, where: str) -> LogFormat:
    if value in LOG_FORMATS:
        return cast(LogFormat, value)
    raise ConfigError(file, where, f"expected text or json, got {describe(value)}")


def _max_age(value: Any, file: str, where: str) -> float | None:
    """`7d`, `12h`, `30m`, `90s` or `2w`, in seconds; null for no limit."""
    if value is None:
        return None
    match = _AGE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None or float(match.group(1)) <= 0:
        raise ConfigError(
            file, where, f"expected a duration such as 7d, 12h or 30m, got {describe(value)}"
        )
    return float(match.group(1)) * _AGE_UNITS[match.group(2)]


def build_logging(raw: Any, file: str, where: str, project_root: Path) -> LoggingSection:
    """`logging:`; the level is case-insensitive, the directory is made absolute against
    `project_root` (the default `logs` too)."""
    fields: dict[str, Validator] = {
        "level": log_level,
        "directory": partial(expect_str, allow_empty=False),
        "max_file_size_mb": partial(expect_number, ge=MIN_LOG_FILE_MB),
        "backup_count": partial(expect_int, minimum=0, maximum=MAX_BACKUPS),
        "format": _log_format,
        "rotate": partial(expect_choice, choices=LOG_ROTATIONS),
        "max_age": _max_age,
        "compress": partial(expect_choice, choices=LOG_COMPRESSIONS),
    }
    values = validate_fields(expect_mapping(raw, file, where, allow_null=True), fields, file, where)
    directory = Path(values.pop("directory", LoggingSection.directory))
    return LoggingSection(**values, directory=(project_root / directory).resolve())


def build_error_handling(raw: Any, file: str, where: str) -> ErrorHandlingSection:
    """`error_handling:` retry and circuit-breaker settings."""
    fields: dict[str, Validator] = {
        "retry_max_attempts": partial(expect_int, minimum=1),
        "retry_wait_min": partial(expect_number, ge=0),
        "retry_wait_max": partial(expect_number, ge=0),
        "circuit_breaker_fail_max": partial(expect_int, minimum=1),
        "circuit_breaker_reset_timeout": partial(expect_number, gt=0),
    }
    values = validate_fields(expect_mapping(raw, file, where, allow_null=True), fields, file, where)
    section = ErrorHandlingSection(**values)
    if section.retry_wait_max < section.retry_wait_min:
        raise ConfigError(
            file,
            child(where, "retry_wait_max"),
            f"retry_wait_max ({section.retry_wait_max:g}) must be at least "
            f"retry_wait_min ({section.retry_wait_min:g})",
        )
    return section


def check_supervision(
    settings: SupervisionSettings,
    file: str,
    where: str,
    overridden: Mapping[str, Any] | None = None,
) -> SupervisionSettings:
    """The cross-field checks, on complete (merged) settings. The error is located at the later
    key (`heartbeat_timeout`, `backoff_max`) unless only the other one is in `overridden` (the keys
    a module entry sets); `where` is the mapping holding the keys."""
    pairs = (
        ("heartbeat_interval", "heartbeat_timeout", "greater than"),
        ("backoff_initial", "backoff_max", "at least"),
    )
    for low_key, high_key, relation in pairs:
        low, high = getattr(settings, low_key), getattr(settings, high_key)
        if high > low or (relation == "at least" and high == low):
            continue
        key = high_key
        if overridden is not None and high_key not in overridden and low_key in overridden:
            key = low_key
        raise ConfigError(
            file, child(where, key), f"{high_key} ({high:g}) must be {relation} {low_key} ({low:g})"
        )
    return settings


def build_supervision(raw: Any, file: str, where: str) -> SupervisionSettings:
    """`supervision:` the defaults every module inherits."""
    values = validate_fields(
        expect_mapping(raw, file, where, allow_null=True), SUPERVISION_FIELDS, file, where
    )
    return check_supervision(SupervisionSettings(**values), file, where)


MIN_MESSAGE_SIZE_MB = 0.0625


def build_bus(raw: Any, file: str, where: str) -> BusSection:
    """`bus:` transport and endpoints; the three ports must differ."""
    fields: dict[str, Validator] = {
        "transport": partial(expect_choice, choices=TRANSPORTS),
        "host": partial(expect_str, allow_empty=False),
        "xsub_port": partial(expect_int, minimum=1, maximum=65535),
        "xpub_port": partial(expect_int, minimum=1, maximum=65535),
        "groups_port": partial(expect_optional_int, minimum=1, maximum=65535),
        # The supervisor's own events must fit (64 KiB: resources.usage of hundreds of modules).
        "max_message_size_mb": partial(expect_number, ge=MIN_MESSAGE_SIZE_MB),
        "high_water_mark": partial(expect_int, minimum=0, maximum=2**31 - 1),  # a C int
        "broker_memory_limit_mb": partial(expect_number, gt=0),
    }
    values = validate_fields(expect_mapping(raw, file, where, allow_null=True), fields, file, where)
    section = BusSection(**values)
    if section.transport == "tcp" and not _loopback(section.host):
        raise ConfigError(
            file,
            child(where, "host"),
            f"the tcp bus binds loopback addresses only (127.0.0.1, ::1, localhost), got"
            f" {describe(section.host)}: other hosts are to join through cluster mode, never an"
            " open ZeroMQ port",
        )
    if section.xpub_port == section.xsub_port:
        raise ConfigError(
            file,
            child(where, "xpub_port"),
            f"xpub_port must differ from xsub_port (both are {section.xpub_port})",
        )
    if section.groups_port is not None and section.groups_port in (
        section.xsub_port,
        section.xpub_port,
    ):
        raise ConfigError(
            file,
            child(where, "groups_port"),
            f"groups_port must differ from xsub_port and xpub_port ({section.groups_port})",
        )
    return section


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url(value: Any, file: str, where: str) -> str:
    """An http(s) URL with a host (and a valid port if it says one): what would only fail at
    the first delivery is refused at load."""
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ConfigError(
            file, where, f"expected an http:// or https:// URL, got {describe(value)}"
        )
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises on a port that is not a number from 0 to 65535)
    except ValueError as exc:
        raise ConfigError(file, where, f"not a valid URL ({exc}): {describe(value)}") from None
    if not parts.hostname:
        raise ConfigError(file, where, f"a URL without a host: {describe(value)}")
    if any(char.isspace() or not char.isprintable() for char in value):
        raise ConfigError(
            file, where, f"a URL with a space or a control character in it: {describe(value)}"
        )
    return value


def _events(value: Any, file: str, where: str) -> tuple[str, ...]:
    """Event patterns, as modules subscribe: `module.error`, `module.*` or `*`."""
    events = expect_list(value, file, where)
    patterns = []
    for index, event in enumerate(events):
        text = expect_str(event, file, item(where, index), allow_empty=False)
        try:
            Pattern.parse(text)
        except ValueError as exc:
            raise ConfigError(file, item(where, index), str(exc)) from None
        patterns.append(text)
    return tuple(patterns)


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110)


def _headers(value: Any, file: str, where: str) -> dict[str, str]:
    """HTTP headers: token names, values without control characters (a CR or LF would end the
    header and start one of the value's choosing). Values are not shown: they may be secrets."""
    headers = expect_mapping(value, file, where, allow_null=True)
    checked: dict[str, str] = {}
    for key, text in headers.items():
        at = child(where, key)
        if not _HEADER_NAME.fullmatch(key):
            raise ConfigError(file, at, f"expected an HTTP header name, got {describe(key)}")
        value_text = expect_str(text, file, at)
        if any(not c.isprintable() and c != "\t" for c in value_text):
            raise ConfigError(file, at, "a header value cannot hold control characters (CR, LF)")
        checked[key] = value_text
    return checked


def build_webhook(raw: Any, file: str, where: str) -> Webhook:
    """One `notifications.webhooks` entry: `url` required, `events` and `headers` optional."""
    fields: dict[str, Validator] = {"url": _url, "events": _events, "headers": _headers}
    values = validate_fields(expect_mapping(raw, file, where), fields, file, where)
    if "url" not in values:
        raise ConfigError(file, child(where, "url"), "required key is missing")
    return Webhook(**values)


def build_notifications(raw: Any, file: str, where: str) -> NotificationsSection:
    """`notifications:` the webhooks to call."""
    mapping = expect_mapping(raw, file, where, allow_null=True)
    check_keys(mapping, ("webhooks",), file, where)
    hooks_where = child(where, "webhooks")
    hooks = expect_list(mapping.get("webhooks"), file, hooks_where, allow_null=True)
    return NotificationsSection(
        webhooks=tuple(
            build_webhook(hook, file, item(hooks_where, index)) for index, hook in enumerate(hooks)
        )
    )
