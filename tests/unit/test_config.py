"""Tests of orchestrator.config: loading, validation messages, ${VAR} interpolation, redaction."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import leaks, make_secret

from orchestrator.config import (
    AppConfig,
    ConfigError,
    RedactingFilter,
    Redactor,
    SupervisionSettings,
    Webhook,
    load_config,
)

ALPHA = "{name: alpha, path: ../mods/alpha.py}"
MODULE_KEYS = (
    "backoff_initial, backoff_max, backoff_multiplier, concurrency, config, cpu_quota, "
    "depends_on, enabled, env, filesystem, group, health_interval, health_retries, "
    "heartbeat_interval, heartbeat_timeout, instances, log_level, max_restarts, "
    "memory_limit_mb, memory_max_mb, name, overlap, path, pids_max, python, ready, "
    "redeliver, requirements, restart, restart_window, rlimits, schedule, stable_after, "
    "standby, start_method, start_timeout, stop_timeout, timezone, umask, user, work_group"
)
MAIN_KEYS = (
    "app, bus, cluster, error_handling, hot_reload, logging, metrics, notifications, resources, "
    "supervision"
)


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project root (the cwd) with `config/`, a module file and a package under `mods/`."""
    monkeypatch.chdir(tmp_path)
    for name in ("WEBHOOK_API_KEY", "PORT", "HOST", "MISSING"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "config").mkdir()
    mods = tmp_path / "mods"
    (mods / "beta").mkdir(parents=True)
    (mods / "alpha.py").write_text("")
    (mods / "beta" / "__init__.py").write_text("")
    (mods / "nopkg").mkdir()
    (mods / "notes.txt").write_text("")
    os.mkfifo(mods / "pipe.py")  # a module file that would block whoever reads it
    return tmp_path.resolve()


def write(main: str = "", modules: str = "modules: []", env: str | None = None) -> Path:
    config = Path("config")
    (config / "main.yaml").write_text(main)
    (config / "modules.yaml").write_text(modules)
    if env is not None:
        (config / ".env").write_text(env)
    return config


def load_error(main: str = "", modules: str = "modules: []", env: str | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(main, modules, env))
    return str(info.value)


def test_defaults(root: Path) -> None:
    config = load_config(write("", ""))
    assert isinstance(config, AppConfig)
    assert config.config_dir == root / "config"
    assert config.main_file == root / "config" / "main.yaml"
    assert config.modules_file == root / "config" / "modules.yaml"
    assert config.logging.directory == root / "logs"
    assert config.logging.level == "INFO"
    assert config.supervision == SupervisionSettings()
    assert config.bus.xsub_port == 5555
    assert config.modules == ()
    assert config.secrets == frozenset()
    assert config.hot_reload is False


def test_full_config(root: Path) -> None:
    main = """
app: {name: demo, version: "2.0"}
resources: {process_memory_mb: 256, reserved_ram_percent: 0.5, max_processes: 4}
logging: {level: debug, directory: var/log, max_file_size_mb: 1, backup_count: 0}
error_handling: {retry_max_attempts: 1, retry_wait_min: 0, retry_wait_max: 0}
supervision: {restart: always, max_restarts: 2, heartbeat_interval: 2, memory_limit_mb: 100}
bus: {transport: tcp, host: 127.0.0.2, xsub_port: 6000, xpub_port: 6001}
notifications:
  webhooks:
    - url: https://hooks.example/x
      headers: {X-Token: abc}
hot_reload: true
"""
    modules = """
modules:
  - {name: alpha, path: ../mods/alpha.py, config: {rate: 5, nested: {a: [1, 2]}}}
  - name: beta
    path: ../mods/beta
    enabled: false
    env: {COUNT: 3, RATIO: 0.5, MODE: fast}
    max_restarts: 9
    memory_limit_mb: null
    heartbeat_timeout: 30
"""
    config = load_config(write(main, modules))
    assert config.app.version == "2.0"
    assert config.resources.reserved_ram_percent == 0.5
    assert config.resources.max_processes == 4
    assert config.logging.level == "DEBUG"
    assert config.logging.directory == root / "var" / "log"
    assert config.logging.max_file_size_mb == 1.0
    assert config.error_handling.retry_wait_max == 0.0
    assert config.bus.transport == "tcp"
    assert config.notifications.webhooks == (
        Webhook(url="https://hooks.example/x", headers={"X-Token": "abc"}),
    )
    assert config.hot_reload is True
    alpha, beta = config.modules
    assert alpha.path == root / "mods" / "alpha.py"
    assert alpha.config == {"rate": 5, "nested": {"a": [1, 2]}}
    assert alpha.supervision == config.supervision
    assert alpha.supervision.restart == "always"
    assert beta.path == root / "mods" / "beta"
    assert beta.env == {"COUNT": "3", "RATIO": "0.5", "MODE": "fast"}
    assert config.enabled_modules == (alpha,)
    # overrides merge over main.yaml's supervision, which merges over the model defaults
    assert beta.supervision.max_restarts == 9
    assert beta.supervision.heartbeat_timeout == 30.0
    assert beta.supervision.memory_limit_mb is None
    assert beta.supervision.heartbeat_interval == 2.0
    assert beta.supervision.restart == "always"
    assert beta.supervision.stop_timeout == SupervisionSettings().stop_timeout


def test_an_env_value_is_the_text_written_not_what_yaml_1_1_makes_of_it(root: Path) -> None:
    env = "{MODE: 0644, VER: 1.10, T: 12:30, HEX: 0x1F, PORT: 8080, FLAG: yes, D: 2024-01-02}"
    modules = f"modules: [{{name: a, path: ../mods/alpha.py, env: {env}, config: {{m: 0644}}}}]"
    module = load_config(write(modules=modules)).modules[0]
    assert module.env == {
        "MODE": "0644",  # not '420'
        "VER": "1.10",  # not '1.1'
        "T": "12:30",  # not '750'
        "HEX": "0x1F",  # not '31'
        "PORT": "8080",
        "FLAG": "yes",
        "D": "2024-01-02",
    }
    assert module.config == {"m": 420}  # elsewhere, YAML reads it as YAML does


def test_a_mapping_used_as_env_through_an_alias_keeps_its_types_elsewhere(root: Path) -> None:
    """`env: *c` turned the numbers of `config: &c {...}` into strings too (a review)."""
    modules = (
        "modules:\n  - name: a\n    path: ../mods/alpha.py\n"
        "    config: &c {PORT: 8080, RATIO: 0.5}\n    env: *c\n"
    )
    module = load_config(write(modules=modules)).modules[0]
    assert module.config == {"PORT": 8080, "RATIO": 0.5}
    assert module.env == {"PORT": "8080", "RATIO": "0.5"}


def test_absolute_logging_directory_and_disabled_missing_path(root: Path) -> None:
    modules = "modules:\n  - {name: gone, path: ../mods/gone.py, enabled: false}"
    config = load_config(write(f"logging: {{directory: {root}/elsewhere}}", modules))
    assert config.logging.directory == root / "elsewhere"
    assert config.modules[0].path == root / "mods" / "gone.py"
    assert not config.modules[0].enabled


# "<yaml> => <message>": the YAML of main.yaml (modules.yaml: `modules: []`), then the error's
# message after "config/main.yaml: "; {root} stands for the project root.
MAIN_ERRORS = [
    f"bogus: 1 => bogus: unknown key (expected one of: {MAIN_KEYS})",
    "notifications: {webhooks: [{url: 'http://h/x', headers: {'Bad Name': '1'}}]} => "
    "notifications.webhooks[0].headers.Bad Name: expected an HTTP header name, got 'Bad Name'",
    'notifications: {webhooks: [{url: "http://h/x", headers: {X-Key: "a\\r\\nInjected: 1"}}]}'
    " => notifications.webhooks[0].headers.X-Key: a header value cannot hold control characters "
    "(CR, LF)",
    'app: {name: "shop\\nINFO forged line"} => app.name: expected one line of up to 128 '
    "printable characters, got 'shop\\nINFO forged line'",
    'cluster: {servers: ["nats://a\\u0001b:4222"]} => cluster.servers[0]: expected a nats:// or '
    "tls:// URL, got 'nats://a\\x01b:4222'",
    "bus: {high_water_mark: 1000000000000} => bus.high_water_mark: expected an integer between 0 "
    "and 2147483647, got 1000000000000",
    "bus: {max_message_size_mb: 0.0000001} => bus.max_message_size_mb: expected a number >= 0.0625,"
    " got 1e-07",
    "logging: {backup_count: 100000} => logging.backup_count: expected an integer between 0 and "
    "1000, got 100000",
    "supervision: {max_restarts: 100000000000000000000000000000} => supervision.max_restarts: "
    "expected an integer >= 0, at most 1000000000, got 100000000000000000000000000000",
    "logging: {levle: INFO} => logging.levle: unknown key; did you mean 'level'? (expected one of: backup_count, "
    "compress, directory, format, level, max_age, max_file_size_mb, rotate)",
    "logging: {rotate: weekly} => logging.rotate: expected one of size, daily, got 'weekly'",
    "logging: {max_age: 7} => logging.max_age: expected a duration such as 7d, 12h or 30m, got 7",
    "logging: {max_age: 0d} => logging.max_age: expected a duration such as 7d, 12h or 30m, "
    "got '0d'",
    "logging: {compress: true} => logging.compress: expected one of none, gzip, got true",
    "- a => expected a mapping at the top level, got a list",
    "logging: [1] => logging: expected a mapping, got a list",
    "logging: {level: verbose} => logging.level: "
    "expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'verbose'",
    "hot_reload: 'yes' => hot_reload: expected true or false, got 'yes'",
    "resources: {process_memory_mb: 0} => resources.process_memory_mb: "
    "expected an integer >= 1, got 0",
    "resources: {thread_per_core: 2.0} => resources.thread_per_core: "
    "expected an integer >= 1, got 2.0",
    "resources: {reserved_ram_percent: 1} => resources.reserved_ram_percent: "
    "expected a number >= 0 and < 1, got 1",
    "resources: {max_processes: x} => resources.max_processes: "
    "expected an integer >= 1 or null, got 'x'",
    "supervision: {restart_window: -1} => supervision.restart_window: "
    "expected a number > 0, got -1",
    "supervision: {stop_timeout: true} => supervision.stop_timeout: "
    "expected a number > 0, got true",
    "supervision: {restart: sometimes} => supervision.restart: "
    "expected one of always, on-failure, never, got 'sometimes'",
    "supervision: {backoff_multiplier: 0.5} => supervision.backoff_multiplier: "
    "expected a number >= 1, got 0.5",
    "supervision: {heartbeat_interval: 2, heartbeat_timeout: 1} => supervision.heartbeat_timeout: "
    "heartbeat_timeout (1) must be greater than heartbeat_interval (2)",
    "supervision: {backoff_initial: 5, backoff_max: 1} => supervision.backoff_max: "
    "backoff_max (1) must be at least backoff_initial (5)",
    "supervision: {health_interval: 0} => supervision.health_interval: "
    "expected a number >= 0.05, got 0",
    "supervision: {health_interval: 0.0000001} => supervision.health_interval: "
    "expected a number >= 0.05, got 1e-07",
    "supervision: {heartbeat_interval: 0.0000001} => supervision.heartbeat_interval: "
    "expected a number >= 0.05, got 1e-07",
    "resources: {usage_log_interval: 0.0000001} => resources.usage_log_interval: "
    "expected a number >= 1, got 1e-07",
    "logging: {max_file_size_mb: 0.0000001} => logging.max_file_size_mb: "
    "expected a number >= 0.001, got 1e-07",
    "supervision: {health_retries: 0} => supervision.health_retries: "
    "expected an integer >= 1, got 0",
    "supervision: {ready: later} => supervision.ready: expected one of auto, manual, got 'later'",
    "bus: {transport: udp} => bus.transport: expected one of ipc, tcp, got 'udp'",
    "bus: {xsub_port: 70000} => bus.xsub_port: expected an integer between 1 and 65535, got 70000",
    "bus: {xpub_port: 5555} => bus.xpub_port: xpub_port must differ from xsub_port (both are 5555)",
    "bus: {groups_port: 5556} => bus.groups_port: groups_port must differ from xsub_port and "
    "xpub_port (5556)",
    "bus: {transport: tcp, host: 10.0.0.1} => bus.host: the tcp bus binds loopback addresses only "
    "(127.0.0.1, ::1, localhost), got '10.0.0.1': other hosts are to join through cluster mode, "
    "never an open ZeroMQ port",
    "error_handling: {retry_wait_min: 5, retry_wait_max: 2} => error_handling.retry_wait_max: "
    "retry_wait_max (2) must be at least retry_wait_min (5)",
    "notifications: {webhooks: [{url: ftp://x}]} => notifications.webhooks[0].url: "
    "expected an http:// or https:// URL, got 'ftp://x'",
    "notifications: {webhooks: [{events: []}]} => notifications.webhooks[0].url: "
    "required key is missing",
    "notifications: {webhooks: [{url: 'http://x', headers: {A: 1}}]} => "
    "notifications.webhooks[0].headers.A: expected a string, got 1",
    "app: {name: 'a${oops'} => app.name: malformed ${...} reference (write $${ for a literal ${)",
]
# The same for modules.yaml (main.yaml empty); `- ` entries are under `modules:`.
MODULES_ERRORS = [
    "extra: 1 => extra: unknown key (expected one of: modules)",
    "modules: {a: 1} => modules: expected a list, got a mapping",
    "modules: [alpha] => modules[0]: expected a mapping, got 'alpha'",
    f"modules: [{{name: a, path: x.py, colour: red}}] => modules[0].colour: "
    f"unknown key (expected one of: {MODULE_KEYS})",
    "modules: [{path: x.py}] => modules[0].name: required key is missing",
    "modules: [{name: a, path: ../mods/alpha.py, health_interval: 0.01}] => "
    "modules[0].health_interval: expected a number >= 0.05, got 0.01",
    "modules: [{name: a, path: ../mods/alpha.py, work_group: 'a b'}] => modules[0].work_group: expected a "
    "group name of up to 64 letters, digits, '_', '.', ':', '#' or '-', starting with a letter, "
    "digit or '_', got 'a b'",
    "modules: [{name: a, path: ../mods/alpha.py, redeliver: 3}] => modules[0].redeliver: "
    "expected true or false, got 3",
    "modules: [{name: 'bad name', path: x.py}] => modules[0].name: expected a name of up to 64 "
    "letters, digits, '_', '.' or '-', starting with a letter or digit, got 'bad name'",
    # logs/app.log is the supervisor's: a module `app` shared it (two writers, two rotators)
    "modules: [{name: app, path: ../mods/alpha.py}] => modules[0].name: 'app' is reserved: "
    "logs/app.log is the supervisor's own log; choose another name",
    f"modules: [{ALPHA}, {{name: b, path: ../mods/alpha.py, depends_on: [App]}}] => "
    "modules[1].depends_on[0]: 'App' is reserved: logs/app.log is the supervisor's own log; "
    "choose another name",
    f"modules: [{ALPHA}, {{name: b, path: ../mods/alpha.py, max_restarts: three}}] => "
    "modules[1].max_restarts: expected an integer >= 0, got 'three'",
    "modules: [{name: a, path: ../mods/alpha.py, concurrency: 0}] => "
    "modules[0].concurrency: expected an integer between 1 and 256, got 0",
    f"modules: [{ALPHA}, {{name: b, path: ../mods/beta}}, {ALPHA}] => "
    "modules[2].name: duplicate module name 'alpha' (first at modules[0])",
    "modules: [{name: a, path: ../mods/alpha.py, config: [1]}] => "
    "modules[0].config: expected a mapping, got a list",
    "modules: [{name: a, path: ../mods/alpha.py, config: {x: {1: 2}}}] => "
    "modules[0].config.x.1: expected a string key, got 1",
    "modules: [{name: a, path: ../mods/alpha.py, env: {DEBUG: [1]}}] => "
    "modules[0].env.DEBUG: expected a string, got a list",
    "modules: [{name: a, path: ../mods/alpha.py, env: {DEBUG: }}] => "
    "modules[0].env.DEBUG: expected a string, got null",
    "modules: [{name: a, path: ../mods/alpha.py, env: {'A=B': 1}}] => "
    "modules[0].env.A=B: expected a variable name without '=' or NUL characters, got 'A=B'",
    "modules: [{name: a, path: ../mods/alpha.py, env: {'': 1}}] => "
    "modules[0].env.: expected a variable name without '=' or NUL characters, got ''",
    'modules: [{name: a, path: ../mods/alpha.py, env: {A: "x\\0y"}}] => '
    "modules[0].env.A: a value cannot contain a NUL character",
    'modules: [{name: a, path: "../mods/al\\0pha.py"}] => '
    "modules[0].path: a NUL character cannot be in it",
    "modules: [{name: a, path: ../mods/alpha.py, stop_timeout: 1" + "0" * 400 + "}] => "
    "modules[0].stop_timeout: expected a number > 0, at most 1e+09, got 1" + "0" * 400,
    "modules: [{name: a, path: ../mods/alpha.py, start_timeout: .inf}] => "
    "modules[0].start_timeout: expected a number > 0, at most 1e+09, got inf",
    "modules: [{name: a, path: ../mods/alpha.py, stop_timeout: .nan}] => "
    "modules[0].stop_timeout: expected a number > 0, at most 1e+09, got nan",
    "modules: [{name: a, path: ../mods/alpha.py, backoff_max: 1.0e+12}] => "
    "modules[0].backoff_max: expected a number >= 0, at most 1e+09, got 1000000000000.0",
    "modules: [{name: a, path: ../mods/alpha.py, ready: true}] => "
    "modules[0].ready: expected one of auto, manual, got true",
    "modules: [{name: a, path: ../mods/alpha.py, heartbeat_interval: 20}] => "
    "modules[0].heartbeat_interval: heartbeat_timeout (10) must be greater than "
    "heartbeat_interval (20)",
    "modules: [{name: a, path: ../mods/gone.py}] => "
    "modules[0].path: no such file: {root}/mods/gone.py (a path is relative to modules.yaml)",
    "modules: [{name: a, path: ../mods/nopkg, enabled: false}] => "
    "modules[0].path: {root}/mods/nopkg is a directory without __init__.py",
    "modules: [{name: a, path: ../mods/notes.txt}] => "
    "modules[0].path: {root}/mods/notes.txt is not a .py file",
    "modules: [{name: a, path: ../mods/pipe.py}] => "
    "modules[0].path: {root}/mods/pipe.py is not a regular file",
    "modules: [{name: a, path: ../mods/alpha.py, config: {k: '${MISSING}'}}] => "
    "modules[0].config.k: environment variable MISSING is not set (nor in config/.env)",
    "modules: [{name: a, path: ../mods/alpha.py, depends_on: [b]}] => "
    "modules[0].depends_on: unknown module 'b'",
    "modules: [{name: a, path: ../mods/alpha.py, config: {since: 2024-01-01}}] => "
    "modules[0].config.since: expected a string, number, boolean, null, list or mapping, "
    "got date 2024-01-01 (quote it to pass it as a string)",
    "modules: [{name: a, path: ../mods/alpha.py, depends_on: a}] => "
    "modules[0].depends_on: 'a' cannot depend on itself",
    "modules: [{name: a, path: ../mods/alpha.py, depends_on: [b]}, "
    "{name: b, path: ../mods/alpha.py, enabled: false}] => modules[0].depends_on: 'b' is disabled",
    "modules: [{name: a, path: ../mods/alpha.py, depends_on: [c]}, "
    "{name: b, path: ../mods/alpha.py, depends_on: [a]}, "
    "{name: c, path: ../mods/alpha.py, depends_on: [b]}] => "
    "modules[0].depends_on: dependency cycle: a -> c -> b -> a",
]


@pytest.mark.parametrize("case", MAIN_ERRORS)
def test_main_error_messages(root: Path, case: str) -> None:
    source, message = case.split(" => ")
    expected = "config/main.yaml: " + message.replace("{root}", str(root))
    assert load_error(main=source) == expected


@pytest.mark.parametrize("case", MODULES_ERRORS)
def test_modules_error_messages(root: Path, case: str) -> None:
    source, message = case.split(" => ")
    expected = "config/modules.yaml: " + message.replace("{root}", str(root))
    assert load_error(modules=source) == expected


def test_invalid_yaml_shows_line_and_column(root: Path) -> None:
    message = load_error("app:\n  name: demo\n  version: x: y\n")
    # libyaml says "... not allowed in this context", PyYAML's own parser "... not allowed here"
    assert message.startswith(
        "config/main.yaml: line 3, column 13: invalid YAML: mapping values are not allowed"
    ), message


def test_missing_files(root: Path) -> None:
    """main.yaml is optional (every key has a default); modules.yaml is what there is to run."""
    with pytest.raises(ConfigError) as info:
        load_config(Path("config"))
    assert (info.value.file, info.value.location) == ("config/modules.yaml", "")
    assert str(info.value).startswith("config/modules.yaml: file not found; it lists the modules")
    (root / "config" / "modules.yaml").write_text("modules: []\n")
    assert load_config(Path("config")).modules == ()


def test_interpolation_sources(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_API_KEY", "from-environment")
    monkeypatch.setenv("HOST", "")
    env = "WEBHOOK_API_KEY=from-dotenv\nPORT=7000\n"
    main = """
app: {version: "n-${PORT}-${HOST:-localhost} $${KEEP} ${UNSET:-fallback}"}
notifications:
  webhooks: [{url: "https://x/${WEBHOOK_API_KEY}", headers: {Authorization: "Bearer ${PORT}"}}]
"""
    config = load_config(write(main, env=env))
    # .env; a default for an empty value and for an unset one; an escape
    assert config.app.version == "n-7000-localhost ${KEEP} fallback"
    hook = config.notifications.webhooks[0]
    assert hook.url == "https://x/from-environment"  # the environment wins over .env
    assert hook.headers == {"Authorization": "Bearer 7000"}
    assert config.secrets == {"7000", "from-environment"}  # not the defaults, written in the file


@pytest.mark.parametrize("environ", [{}, {"A": "aaa"}, {"B": "bee"}])
def test_a_nested_reference_in_a_default_is_an_error(
    root: Path, monkeypatch: pytest.MonkeyPatch, environ: dict[str, str]
) -> None:
    for name in ("A", "B"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    # Read as ${A:-${B} then "}": '${B' with A unset, 'aaa}' with A set.
    message = load_error(
        modules="modules: [{name: a, path: ../mods/alpha.py, config: {x: '${A:-${B}}'}}]"
    )
    assert message == (
        "config/modules.yaml: modules[0].config.x: the default of ${A:-...} cannot hold a "
        "${...} reference"
    )


DOTENV_MODULE = "modules: [{name: a, path: ../mods/alpha.py, config: {a: '${A}', x: '${X}'}}]"


@pytest.mark.parametrize(
    ("dotenv", "missing"),
    [("A=pre-${X}\n", "X"), ("A=${Y}\nY=later\nX=1\n", "Y"), ('A="${Y}"\nX=1\n', "Y")],
)
def test_a_dotenv_reference_to_a_variable_not_set_above_is_an_error(
    root: Path, monkeypatch: pytest.MonkeyPatch, dotenv: str, missing: str
) -> None:
    for name in ("A", "X", "Y"):
        monkeypatch.delenv(name, raising=False)
    message = load_error(modules=DOTENV_MODULE, env=dotenv)  # not silently an empty string
    assert (
        message
        == f"config/.env: A: environment variable {missing} is not set (nor on a line above)"
    )


def test_dotenv_references_follow_the_rules_of_the_yaml_files(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("X", "envval")
    monkeypatch.delenv("A", raising=False)
    dotenv = "X=fileval\nA=${X}|$${X}|'${X}'|${UNSET_HERE:-d}\nB='${X}'\n"
    config = load_config(write(modules=DOTENV_MODULE.replace("'${X}'", "'${X} ${B}'"), env=dotenv))
    # The environment wins inside .env too; $${ is a literal ${; single quotes are as written.
    assert config.modules[0].config == {"a": "envval|${X}|'envval'|d", "x": "envval ${X}"}


def test_a_default_is_not_a_secret(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODE", raising=False)
    modules = 'modules: [{name: a, path: ../mods/alpha.py, config: {mode: "${MODE:-running}"}}]'
    config = load_config(write(modules=modules))
    assert config.modules[0].config == {"mode": "running"}
    assert config.secrets == frozenset()  # else "running" is *** in every line of app.log
    monkeypatch.setenv("MODE", "from-env")
    assert load_config(write(modules=modules)).secrets == {"from-env"}


def test_a_module_config_may_hold_any_string_a_nul_included(root: Path) -> None:
    config = load_config(
        write(modules='modules: [{name: a, path: ../mods/alpha.py, config: {sep: "\\0"}}]')
    )
    assert config.modules[0].config == {"sep": "\0"}  # msgpack carries it to the module


def test_a_dotenv_line_that_cannot_be_parsed_is_an_error_naming_the_line_not_its_text(
    root: Path,
) -> None:
    message = load_error(env="OK=1\nMY TOKEN=s3cret\n")
    assert message == "config/.env: line 2: cannot parse it: expected NAME=value, # comment"


def test_interpolation_keeps_strings_and_scrubs_errors(root: Path) -> None:
    message = load_error("bus: {xsub_port: '${PORT}'}", env="PORT=5555")
    assert message == (
        "config/main.yaml: bus.xsub_port: expected an integer between 1 and 65535, got '***'"
    )


def test_redactor_scrub() -> None:
    redactor = Redactor({"hunter2!", "hunter2!extra", "abc", ""})
    assert redactor.scrub("pw=hunter2!extra, again hunter2! abc") == "pw=***, again *** abc"
    assert Redactor(set()).scrub("nothing to hide") == "nothing to hide"


def test_redactor_redact() -> None:
    redactor = Redactor({"s3cr3t-value", "abc"})
    tree = {
        "url": "https://x/?k=s3cr3t-value",
        "short": "abc",
        "not_short": "abcd",
        "X-Api-Key": "visible-in-yaml",
        "db_password": "",
        "token": None,
        "nested": [{"Secret": 5}, ("keep", "s3cr3t-value")],
        "port": 5555,
    }
    redacted = redactor.redact(tree)
    assert redacted == {
        "url": "***",
        "short": "***",
        "not_short": "abcd",
        "X-Api-Key": "***",
        "db_password": "",
        "token": None,
        "nested": [{"Secret": "***"}, ("keep", "***")],
        "port": 5555,
    }
    assert tree["url"] == "https://x/?k=s3cr3t-value"  # the input is untouched


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_redacting_filter() -> None:
    handler = Capture()
    handler.addFilter(RedactingFilter(Redactor({"tok-1234"})))
    logger = logging.getLogger("test_config.redacting_filter")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("calling with %s and %d", "tok-1234", 7)
        logger.warning("bad format %d", "tok-1234")
        try:
            raise RuntimeError("failed with tok-1234")
        except RuntimeError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    assert handler.lines[0] == "calling with *** and 7"
    assert handler.lines[1].startswith("bad format %d") and "***" in handler.lines[1]
    assert "RuntimeError: failed with ***" in handler.lines[2]
    assert all("tok-1234" not in line for line in handler.lines)


# -- secrets in error messages: scrubbed whole, before the message is cut or escaped -------------

SECRET_LENGTHS = (4, 20, 75, 76, 77, 120, 1000)


QUOTING_ERRORS = {  # each quotes the value of ${TOKEN} in its message
    "number": ("main", "supervision: {stop_timeout: '${TOKEN}'}"),
    "choice": ("main", "logging: {level: '${TOKEN}'}"),
    "url": ("main", "notifications: {webhooks: [{url: '${TOKEN}'}]}"),
    # (work_group, depends_on: shown as written, their values are no secrets)
    "log level": ("modules", "modules: [{name: a, path: ../mods/alpha.py, log_level: '${TOKEN}'}]"),
    "restart": ("modules", "modules: [{name: a, path: ../mods/alpha.py, restart: '${TOKEN}'}]"),
}


@pytest.mark.parametrize("length", SECRET_LENGTHS)
@pytest.mark.parametrize("kind", QUOTING_ERRORS)
def test_a_quoted_secret_never_shows(root: Path, kind: str, length: int) -> None:
    file, source = QUOTING_ERRORS[kind]
    for secret in (make_secret(length), make_secret(length, "abcdefg'hijklm\\nopq\"rstu\tvwxyz\n")):
        env = "TOKEN=" + ('"' + secret.replace("\\", "\\\\").replace('"', '\\"') + '"')
        env = env.replace("\n", "\\n").replace("\t", "\\t")
        message = load_error(env=env, **{file: source})
        assert "***" in message, message
        assert not leaks(secret, message), message
        assert "\n" not in message


def dotenv(**values: str) -> str:
    """`.env` lines that set each of `values` to exactly that text."""
    lines = []
    for name, value in values.items():
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        lines.append(f'{name}="{escaped}"\n')
    return "".join(lines)


ESCAPING_ERRORS = {  # each would show the value of ${TOKEN} as Python's repr escapes it
    "requirements": (
        "modules: [{name: a, path: ../mods/alpha.py, requirements: ['-e ${TOKEN}']}]",
        "ab'cd\"SplitSecretQQ",  # shlex cannot split it: an unclosed quote
    ),
    "python": (
        "modules: [{name: a, path: ../mods/alpha.py, python: '${TOKEN}'}]",
        "PySecretQQ'x\"",  # not on PATH
    ),
}


@pytest.mark.parametrize("kind", ESCAPING_ERRORS)
def test_a_secret_with_quotes_is_quoted_whole_in_errors(root: Path, kind: str) -> None:
    source, secret = ESCAPING_ERRORS[kind]
    message = load_error(modules=source, env=dotenv(TOKEN=secret))
    assert message.startswith(f"config/modules.yaml: modules[0].{kind}"), message
    assert "***" in message and not leaks(secret, message), message


PATH_SECRET = "./zz-PathSecretA/../PathSecretQQ"  # normalised, only its end would be left
PATH_ERRORS = {  # each names a file made from the value of ${TOKEN}, which does not exist
    "modules.python": (
        "",
        "modules: [{name: a, path: ../mods/alpha.py, python: '${TOKEN}'}]",
        "*** is not an executable file",
    ),
    "cluster": (
        "cluster: {servers: ['nats://127.0.0.1:4222'], tls: {ca: '${TOKEN}'}}",
        "modules: []",
        "no such file: ***",
    ),
}


@pytest.mark.parametrize("kind", PATH_ERRORS)
def test_a_path_made_from_a_secret_is_hidden_whole_in_errors(root: Path, kind: str) -> None:
    main, modules, expected = PATH_ERRORS[kind]
    message = load_error(main, modules, env=dotenv(TOKEN=PATH_SECRET))
    assert message.endswith(expected) and not leaks(PATH_SECRET, message), message


def test_a_path_made_from_a_short_value_is_shown_normalised(root: Path) -> None:
    # Values under 4 characters are not scrubbed from free text: nor is a path hidden for one.
    message = load_error(
        modules="modules: [{name: a, path: ../mods/alpha.py, python: '${DIR}/../gone'}]",
        env="DIR=abc",
    )
    assert message.endswith(f"modules[0].python: {root}/config/gone is not an executable file")


def test_a_value_shown_as_written_is_filled_in_but_not_a_secret(root: Path) -> None:
    """Names, paths, schedules, groups are shown as written in status, metrics and events: a
    ${VAR} there (common in containers: `path: ${MODULES}/x.py`) is filled in, and its value is
    not a secret (it would be *** in app.log but shown everywhere else)."""
    env = dotenv(
        NAME="hidden",
        DIR="../mods",
        CRON="0 9 * * *",
        ZONE="Europe/Paris",
        FS="/srv",
        GRP="workers",
        OWNER="nobody",
        VERSION="1.2.3",
        TOKEN="s3cr3t-token",
    )
    modules = (
        "modules:\n"
        "  - {name: 'w-${NAME}', path: '${DIR}/alpha.py', schedule: '${CRON}',"
        " timezone: '${ZONE}', filesystem: {read_write: ['${FS}']}, work_group: '${GRP}',"
        " depends_on: ['${NAME}'], config: {token: '${TOKEN}'}}\n"
        "  - {name: '${NAME}', path: ../mods/alpha.py}\n"
    )
    config = load_config(write("app: {name: '${NAME}', version: '${VERSION}'}", modules, env))
    job, hidden = config.modules
    assert (config.app.name, config.app.version) == ("hidden", "1.2.3")
    assert (job.name, job.path, job.schedule) == ("w-hidden", root / "mods/alpha.py", "0 9 * * *")
    assert (job.timezone, job.work_group, hidden.name) == ("Europe/Paris", "workers", "hidden")
    assert config.secrets == {"s3cr3t-token"}


def test_a_long_value_is_cut_for_display_after_scrubbing(root: Path) -> None:
    long_value = "v" * 5000
    message = load_error(f"supervision: {{stop_timeout: '{long_value}'}}")
    assert len(message) < 700, message
    assert message.startswith("config/main.yaml: supervision.stop_timeout: expected a number > 0")
    assert "..." in message and message.endswith("vvv'")


def test_a_value_under_a_secret_key_is_masked_in_errors(root: Path) -> None:
    message = load_error(
        "notifications: {webhooks: [{url: 'https://x', headers: {Authorization: 123456789}}]}"
    )
    assert message == (
        "config/main.yaml: notifications.webhooks[0].headers.Authorization: "
        "expected a string, got ***"
    )


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda env: env.mkdir(), "a directory"),
        (os.mkfifo, "not a regular file"),
        (lambda env: env.symlink_to(env.parent / "missing"), "a symbolic link to a file that"),
    ],
)
def test_a_dot_env_that_is_no_file_is_refused_not_ignored(
    root: Path, make: Callable[[Path], None], what: str
) -> None:
    config = write(modules="modules: []")
    make(config / ".env")  # its values (secrets, settings) would silently be the defaults
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert str(info.value).startswith(f"{config / '.env'}: cannot read file: {what}"), info.value


def test_a_tab_in_the_indentation_is_named(root: Path) -> None:
    message = load_error(modules="modules:\n\t- {name: alpha, path: ../mods/alpha.py}\n")
    assert (
        "line 2, column 1: invalid YAML:" in message
        and "(a tab: YAML indents with spaces only)" in message
    )
