"""The files of a new project (`orchestrator init`). `main.yaml` is generated from the config
model's defaults, so it shows every key the loader accepts, with the value it has when left out."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path, PurePath
from typing import Any, Literal

from orchestrator.config.loader import MAIN_FILE, MAIN_KEYS, MODULES_FILE
from orchestrator.config.model import AppConfig
from orchestrator.scaffold.module import entry_text, module_entry, module_files, yaml_scalar

EXAMPLE_MODULE = "example"
MODULES_DIR = "modules-backend"  # where `orchestrator new` puts modules, beside config/
ENV_EXAMPLE = ".env.example"
GITIGNORE_FILE = ".gitignore"

NOTES: dict[str, str] = {
    "app.name": "names the deployment in logs and events",
    "resources.process_memory_mb": "memory budgeted per module process",
    "resources.reserved_ram_percent": "fraction of RAM kept for the system",
    "resources.thread_per_core": "thread limit = CPUs x this",
    "resources.usage_log_interval": "seconds between resources.usage events",
    "resources.max_processes": "a cap under the limit derived from RAM",
    "logging.directory": "relative to the project root (above config/)",
    "logging.max_file_size_mb": "each log file rotates at this size",
    "logging.backup_count": "rotated files kept per log",
    "logging.max_age": "delete rotated files older: 7d, 12h (null: keep)",
    "error_handling.retry_max_attempts": "webhook delivery attempts; @retry's default",
    "error_handling.retry_wait_min": "seconds between attempts, growing",
    "error_handling.circuit_breaker_fail_max": "failures before a breaker opens",
    "error_handling.circuit_breaker_reset_timeout": "seconds a breaker stays open",
    "supervision": "defaults; a module's entry may override any",
    "supervision.restart": "always, on-failure (not after exit 0) or never",
    "supervision.max_restarts": "more within restart_window seconds: failed",
    "supervision.stable_after": "seconds of running that reset the backoff",
    "supervision.backoff_initial": "seconds before a crash loop's first restart",
    "supervision.backoff_multiplier": "each next delay is this many times longer",
    "supervision.backoff_max": "the longest delay, in seconds",
    "supervision.start_timeout": "seconds to say ready, else the start failed",
    "supervision.stop_timeout": "seconds from SIGTERM to SIGKILL",
    "supervision.heartbeat_timeout": "silent (or stuck in a callback) this long: hung",
    "supervision.memory_limit_mb": "restart a module that uses more (null: no limit)",
    "supervision.start_method": "fork a warm template (fast) or spawn a new process",
    "supervision.concurrency": "callbacks at once, in order per event type",
    "supervision.health_interval": "seconds between calls of a module's health()",
    "supervision.health_retries": "failed health() calls in a row: restart",
    "supervision.ready": "auto, or manual: running once it calls ready()",
    "bus.transport": "ipc (sockets in the run directory) or tcp (loopback)",
    "bus.host": "host and ports of the tcp transport",
    "bus.max_message_size_mb": "larger events are refused",
    "bus.high_water_mark": "events queued per socket before ZeroMQ drops",
    "bus.broker_memory_limit_mb": "the broker process is restarted past this",
    "notifications.webhooks": "a list of entries like this one:",
    "notifications.webhooks[].url": "required",
    "notifications.webhooks[].events": "event patterns, as modules subscribe",
    "notifications.webhooks[].headers": 'e.g. {Authorization: "Bearer ${TOKEN}"}',
    "hot_reload": "restart a module when its code is saved",
    "metrics.listen": "off; 127.0.0.1:9464 serves /metrics and a page",
    "metrics.allow_remote": "true to listen beyond loopback (no auth!)",
    "cluster": "off: one host; to join others through NATS:",
}
"""One-line notes shown beside keys of the generated main.yaml. A key with a fixed set of values
and no note gets its choices listed, from its type."""

CLUSTER_LINES = (
    ("servers: [nats://127.0.0.1:4222]", "required: the NATS servers (nats:// or tls://)"),
    ("name: orchestrator", "the subject prefix, one NATS token"),
    ("host: <this host's name>", "how other hosts name this one"),
    ('export: ["*"]', "event patterns that leave this host"),
    ("credentials: {token: ${NATS_TOKEN}}", "or user+password, nkey_seed, creds"),
    ("tls: {ca: ca.pem, cert: c.pem, key: k.pem}", "file paths, relative to config/"),
)
"""The keys of `cluster:`, shown as a comment within the comment: uncommenting `cluster: null`
leaves it off, as every uncommented line must give the default."""

PLACEHOLDERS: dict[str, Any] = {"notifications.webhooks[].url": "https://example.com/hook"}
"""What the generated main.yaml shows for a key that has no default."""

_NOTE_COLUMN = 44

MAIN_HEADER = """\
# Global settings of the supervisor. Every key is optional: each is shown here, commented out, with
# the value it has when left out. To change one, uncomment it and the line of its section.
# Values may use ${VAR} or ${VAR:-default}, filled from the environment or from config/.env (see
# config/.env.example). orchestrator's README, "Configuration reference", says more about each.
"""

MODULES_HEADER = """\
# The modules the supervisor runs. Each entry: `name`, `path` (a .py file or a package directory,
# relative to this file) and optionally `enabled`, `config` (what the module's initialize()
# receives), `env`, `depends_on` and any key of main.yaml's `supervision:`, for this module only.
# `orchestrator new NAME --add` writes a new module and adds its entry here.
"""

ENV_TEXT = """\
# Copy this file to config/.env (which .gitignore keeps out of version control) and fill it in.
# main.yaml and modules.yaml refer to a variable as ${NAME} or ${NAME:-default}; the environment
# wins over .env. Values filled in this way are treated as secrets: modules get them intact, logs,
# `orchestrator status` and events show *** instead.
#
# EXAMPLE_API_TOKEN=change-me
"""

GITIGNORE = """\
logs/
.env
__pycache__/
.pytest_cache/
.orchestrator/
"""


def main_yaml() -> str:
    """`main.yaml` with every key commented out, at its default."""
    hints = typing.get_type_hints(AppConfig)
    defaults = AppConfig(config_dir=Path(), main_file=Path(), modules_file=Path())
    lines = [MAIN_HEADER.rstrip("\n")]
    for key in MAIN_KEYS:
        value = getattr(defaults, key)
        lines.append("")
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            lines.append(_line(0, f"{key}:", NOTES.get(key)))
            section_hints = typing.get_type_hints(type(value))
            for field in dataclasses.fields(value):
                dotted = f"{key}.{field.name}"
                note = _note(dotted, section_hints[field.name])
                shown = yaml_scalar(_plain(getattr(value, field.name)))
                lines.append(_line(1, f"{field.name}: {shown}", note))
                lines.extend(_item_lines(section_hints[field.name], f"{dotted}[]"))
        else:
            lines.append(_line(0, f"{key}: {yaml_scalar(_plain(value))}", _note(key, hints[key])))
        if key == "cluster":
            lines.extend(_line(1, f"# {text}", note) for text, note in CLUSTER_LINES)
    return "\n".join(lines) + "\n"


def _item_lines(hint: Any, dotted: str) -> list[str]:
    """For a list of mappings (`tuple[Webhook, ...]`), the keys of one item, as a comment within
    the comment (uncommenting the list's line leaves them commented): its defaults, or a
    placeholder for a required key."""
    args = typing.get_args(hint) if typing.get_origin(hint) is tuple else ()
    if not args or not dataclasses.is_dataclass(args[0]):
        return []
    item_type = args[0]
    item_hints = typing.get_type_hints(item_type)
    lines = []
    for index, field in enumerate(dataclasses.fields(item_type)):
        lead = "# - " if index == 0 else "#   "
        if field.default is not dataclasses.MISSING:
            shown = yaml_scalar(_plain(field.default))
        elif field.default_factory is not dataclasses.MISSING:
            shown = yaml_scalar(_plain(field.default_factory()))
        else:
            shown = yaml_scalar(PLACEHOLDERS[f"{dotted}.{field.name}"])
        note = _note(f"{dotted}.{field.name}", item_hints[field.name])
        lines.append(_line(1, f"{lead}{field.name}: {shown}", note))
    return lines


def modules_yaml(entries: list[dict[str, Any]]) -> str:
    """`modules.yaml` listing `entries`."""
    return MODULES_HEADER + "modules:\n" + "".join(entry_text(entry) for entry in entries)


def project_files(example: str = EXAMPLE_MODULE) -> dict[str, str]:
    """Every file of a new project, by path relative to its root."""
    module_dir = f"{MODULES_DIR}/{example}"
    files = {
        f"config/{MAIN_FILE}": main_yaml(),
        f"config/{MODULES_FILE}": modules_yaml([module_entry(example, f"../{module_dir}")]),
        f"config/{ENV_EXAMPLE}": ENV_TEXT,
        GITIGNORE_FILE: GITIGNORE,
    }
    for relative, text in module_files(example).items():
        files[f"{module_dir}/{relative}"] = text
    return files


def _line(depth: int, text: str, note: str | None) -> str:
    body = "# " + "  " * depth + text
    return f"{body.ljust(_NOTE_COLUMN - 2)}  # {note}" if note else body


def _note(dotted: str, hint: Any) -> str | None:
    choices = choices_of(hint)
    return NOTES.get(dotted) or (" | ".join(choices) if choices else None)


def choices_of(hint: Any) -> tuple[str, ...]:
    """The values a `Literal[...]` type allows (none for any other type)."""
    if typing.get_origin(hint) is Literal:
        return tuple(str(choice) for choice in typing.get_args(hint))
    return ()


def _plain(value: Any) -> Any:
    """A default as YAML shows it: paths as strings, tuples as lists."""
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
