"""The validated configuration: frozen dataclasses, one per section of `main.yaml` and one per
module.

Defaults here are the documented defaults; `loader.py` builds these objects from YAML and rejects
anything it does not recognise, so code that holds an `AppConfig` never re-checks a value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field, replace
from pathlib import Path
from typing import Any, Literal

from orchestrator.config.limits import ModuleLimits
from orchestrator.record import record

RestartMode = Literal["always", "on-failure", "never"]
StartMethod = Literal["fork", "spawn"]
ReadyMode = Literal["auto", "manual"]
BusTransport = Literal["ipc", "tcp"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LogFormat = Literal["text", "json"]
DependencyPolicy = Literal["restart", "stop", "ignore"]
DEPENDENCY_POLICIES: tuple[DependencyPolicy, ...] = ("restart", "stop", "ignore")
Overlap = Literal["skip", "queue", "allow"]

INSTANCE_MARK = "#"  # NAME#k: instance k of module NAME (never in a configured name)
LogRotate = Literal["size", "daily"]
LogCompress = Literal["none", "gzip"]


@record
class AppSection:
    """`app:` identifies the deployment in logs and events."""

    name: str = "orchestrator"
    version: str = "0.1.0"


@record
class ResourcesSection:
    """`resources:` the inputs of the process and thread limits derived from the machine."""

    process_memory_mb: int = 512
    reserved_ram_percent: float = 0.25  # a fraction of RAM kept for the system, despite the name
    thread_per_core: int = 2
    usage_log_interval: float = 60.0
    max_processes: int | None = None  # an explicit cap; the derived limit still applies


@record
class LoggingSection:
    """`logging:` where logs go and how they rotate; `directory` is resolved against the project
    root."""

    level: LogLevel = "INFO"
    directory: Path = Path("logs")
    max_file_size_mb: float = 10.0
    backup_count: int = 5
    format: LogFormat = "text"  # json: one JSON object per line, in app.log and module logs
    rotate: LogRotate = "size"  # daily: also at local midnight
    max_age: float | None = None  # seconds: rotated files older than this are deleted
    compress: LogCompress = "none"  # gzip: rotated files compressed, off the loop


@record
class ErrorHandlingSection:
    """`error_handling:` retry and circuit-breaker settings for outbound calls and module
    start-up, and the defaults of `@retry` and `@circuit_breaker` in modules."""

    retry_max_attempts: int = 3
    retry_wait_min: float = 1.0
    retry_wait_max: float = 10.0
    circuit_breaker_fail_max: int = 5
    circuit_breaker_reset_timeout: float = 60.0


@record
class SupervisionSettings:
    """How one module is supervised. `main.yaml` `supervision:` holds the defaults; a module's
    entry in `modules.yaml` may override any of these keys, flat, under the same names."""

    restart: RestartMode = "on-failure"
    max_restarts: int = 5
    restart_window: float = 60.0
    stable_after: float = 10.0
    backoff_initial: float = 0.1
    backoff_multiplier: float = 2.0
    backoff_max: float = 30.0
    start_timeout: float = 30.0
    stop_timeout: float = 5.0
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 10.0
    memory_limit_mb: int | None = None
    start_method: StartMethod = "fork"  # fork a warm template, or spawn a fresh interpreter
    # Callbacks that may run at once (a pool of threads; in order per event type); the sum over
    # the modules is capped by the thread limit (orchestrator.resources.grant_threads).
    concurrency: int = 1
    health_interval: float = 10.0  # seconds between calls of the module's health(), if any
    health_retries: int = 3  # failed health checks in a row before a restart
    ready: ReadyMode = "auto"  # manual: running once the module calls event_bus.ready()
    # A process forked ahead into the module's next cgroup, to take over at its restart
    # (orchestrator/standby.py): a restart without the wait for a cgroup move, ~2.5 MB each.
    standby: bool = True


@record
class BusSection:
    """`bus:` the broker's endpoints. `ipc` puts socket files in the run directory (owner-only);
    `tcp` binds `host` on the two ports so that modules on other hosts can join."""

    transport: BusTransport = "ipc"
    host: str = "127.0.0.1"
    xsub_port: int = 5555
    xpub_port: int = 5556
    # Grouped subscriptions (module_sdk/groups.py) on a tcp bus: off unless a port is given.
    groups_port: int | None = None
    max_message_size_mb: float = 64.0
    high_water_mark: int = 100_000
    # The broker process is killed and restarted past this (a peer holding huge numbers of
    # subscriptions grows it; the supervisor and the modules are not affected).
    broker_memory_limit_mb: float = 512.0

    @property
    def max_message_bytes(self) -> int:
        """`max_message_size_mb` in bytes, as ZeroMQ and the SDK take it."""
        return int(self.max_message_size_mb * 1024 * 1024)


@record
class Webhook:
    """One entry of `notifications.webhooks`."""

    url: str
    events: tuple[str, ...] = ("module.error", "module.failed")
    headers: Mapping[str, str] = field(default_factory=dict)


@record
class NotificationsSection:
    """`notifications:` outbound alerts."""

    webhooks: tuple[Webhook, ...] = ()


@record
class MetricsSection:
    """`metrics:` the Prometheus endpoint and status page, off unless `listen` is set (as
    `(host, port)`; port 0 picks a free one). A non-loopback host needs `allow_remote`."""

    listen: tuple[str, int] | None = None
    allow_remote: bool = False

    @property
    def host(self) -> str:
        return self.listen[0] if self.listen is not None else ""

    @property
    def port(self) -> int:
        return self.listen[1] if self.listen is not None else 0


@record
class ClusterCredentials:
    """`cluster.credentials:` how the bridge authenticates to NATS; exactly one way is set: a
    `token`, a `user` with a `password`, an NKey seed file or a `.creds` file (absolute paths)."""

    token: str | None = field(default=None, repr=False)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    nkey_seed: Path | None = None
    creds: Path | None = None


@record
class ClusterTLS:
    """`cluster.tls:` the CA that signs the servers' certificates and, for mutual TLS, this
    host's certificate and key (absolute paths)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


def _hostname() -> str:
    """This machine's name: the default name of a cluster node."""
    import socket  # noqa: PLC0415  (~6 ms: only a config with a cluster section needs it)

    return socket.gethostname()


@record
class ClusterSection:
    """`cluster:` joins this host to others through NATS (off when the section is absent).

    `name` prefixes every subject (one NATS token), `host` names this host to the others, and
    `export` lists the event patterns that leave this host, as modules subscribe."""

    servers: tuple[str, ...]
    name: str = "orchestrator"
    host: str = field(default_factory=_hostname)
    export: tuple[str, ...] = ("*",)
    credentials: ClusterCredentials | None = None
    tls: ClusterTLS | None = None


@record
class ModuleSpec:
    """One entry of `modules.yaml`, with its supervision settings already merged over the
    defaults."""

    name: str
    path: Path  # absolute: a `.py` file, or a package directory holding `__init__.py`
    enabled: bool = True
    config: Mapping[str, Any] = field(default_factory=dict)
    supervision: SupervisionSettings = field(default_factory=SupervisionSettings)
    env: Mapping[str, str] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()  # modules that must be running before this one starts
    log_level: LogLevel | None = None  # its own logging level; None: `logging.level`
    # What it does when a dependency stops running, for each edge that is not `restart`.
    dependency_policy: Mapping[str, DependencyPolicy] = field(default_factory=dict)

    instances: int | None = None  # None: one process named NAME; N: NAME#1..NAME#N
    instance_of: str | None = None  # set on an instance's spec: the entry's name
    schedule: str | None = None  # a cron expression (croniter; 6th field: seconds)
    timezone: str | None = None  # the schedule's zoneinfo name; None: the machine's
    overlap: Overlap = "skip"  # a due run while one is in progress: skip, queue or allow
    limits: ModuleLimits = field(default_factory=ModuleLimits)  # cgroup, rlimits, user, ...
    work_group: str | None = None  # the default group of its subscriptions (module_sdk.groups)
    redeliver: bool = False  # the default of its grouped subscriptions: redeliver if it crashes
    # Its own dependencies (orchestrator/venv/): the `requirements:` list, or the package
    # directory's requirements.txt, and the interpreter its venv is built from. All None: it runs
    # on the supervisor's interpreter.
    requirements: tuple[str, ...] | None = None
    requirements_file: Path | None = None
    python: Path | None = None

    def on_failure(self, dependency: str) -> DependencyPolicy:
        """What this module does when `dependency` stops running: restart, stop or ignore."""
        return self.dependency_policy.get(dependency, "restart")

    def instance_specs(self, count: int | None = None) -> tuple[ModuleSpec, ...]:
        """The processes this entry runs: itself, or with `instances` (or `count`) its
        instances `NAME#1`.. each a spec of its own (`instance_of` names the entry)."""
        count = self.instances if count is None else count
        if count is None:
            return (self,)
        return tuple(
            replace(
                self, name=f"{self.name}{INSTANCE_MARK}{k}", instances=None, instance_of=self.name
            )
            for k in range(1, count + 1)
        )

    @property
    def own_environment(self) -> bool:
        """Whether it runs in a venv of its own rather than on the supervisor's interpreter."""
        return (
            self.requirements is not None
            or self.requirements_file is not None
            or self.python is not None
        )


@record
class AppConfig:
    """Everything `main.yaml` and `modules.yaml` say, validated.

    `secrets` holds every value that was filled in from a `${VAR}`; `Redactor(secrets)` hides them.
    """

    config_dir: Path
    main_file: Path
    modules_file: Path
    app: AppSection = field(default_factory=AppSection)
    resources: ResourcesSection = field(default_factory=ResourcesSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    error_handling: ErrorHandlingSection = field(default_factory=ErrorHandlingSection)
    supervision: SupervisionSettings = field(default_factory=SupervisionSettings)
    bus: BusSection = field(default_factory=BusSection)
    notifications: NotificationsSection = field(default_factory=NotificationsSection)
    hot_reload: bool = False
    metrics: MetricsSection = field(default_factory=MetricsSection)
    cluster: ClusterSection | None = None
    modules: tuple[ModuleSpec, ...] = ()
    secrets: frozenset[str] = frozenset()

    @property
    def enabled_modules(self) -> tuple[ModuleSpec, ...]:
        """The modules that `up` starts, in file order."""
        return tuple(m for m in self.modules if m.enabled)

    @property
    def enabled_instances(self) -> tuple[ModuleSpec, ...]:
        """The module processes that `up` runs: `enabled_modules` with each `instances: N`
        entry expanded to its N instances."""
        return tuple(spec for m in self.enabled_modules for spec in m.instance_specs())

    def module(self, name: str) -> ModuleSpec | None:
        """The module called `name`, or None."""
        return next((m for m in self.modules if m.name == name), None)
