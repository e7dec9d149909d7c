"""What every command shares: the -c/--config option, the app object, and one way to fail."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from click.core import ParameterSource

from orchestrator import exit_codes
from orchestrator.config import AppConfig, ConfigError, load_config
from orchestrator.config.lenient import listed_modules, logs_directory
from orchestrator.config.loader import MODULES_FILE
from orchestrator.control import ControlClient, ControlError, NotRunningError
from orchestrator.project_lock import project_holder
from orchestrator.rundir import RunBaseError, RunDir

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_CONFIG = Path("config")
_EXIT_OF_KIND = {"unreachable": exit_codes.NOT_RUNNING, "usage": exit_codes.USAGE}
_REMOTE_SLACK = 15.0  # seconds past a remote request's own wait: more than the supervisor's
CONFIG_ENV = "ORCHESTRATOR_CONFIG"
CWD_GONE = "the current directory no longer exists; cd elsewhere or give -c with an absolute path"


def abort(message: str, code: int = exit_codes.FAILED) -> NoReturn:
    """Print `Error: message` to stderr and exit with `code`."""
    click.echo(f"Error: {message}", err=True)
    raise SystemExit(code)


def split_host(name: str) -> tuple[str | None, str]:
    """`HOST/NAME` -> (HOST, NAME), a module of another host of the cluster; `NAME` -> (None,
    NAME). Exits 2 if either part is empty."""
    host, slash, module = name.rpartition("/")
    if not slash:
        return None, name
    if not host or not module:
        abort(f"{name!r}: expected HOST/NAME, a module NAME on cluster host HOST", exit_codes.USAGE)
    return host, module


def echo_json(data: Any) -> None:
    """Print `data` as the one JSON document of a command's --json output."""
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def config_of(directory: Path) -> Path:
    """`directory`, or its `config/` if it is a project's root (as `init` makes one): -c PROJECT
    reaches the same supervisor as -c PROJECT/config, instead of one of a config that is not."""
    try:
        if (
            not (directory / MODULES_FILE).exists()
            and (directory / "config" / MODULES_FILE).is_file()
        ):
            return directory / "config"
    except OSError:  # a name too long, say: require_config_dir says so
        pass
    return directory


class App:
    """The config directory a command works on, and how to reach its supervisor."""

    def __init__(self, config_dir: Path) -> None:
        # Absolute from here on: what errors quote, and what a detached supervisor is handed.
        try:
            absolute = config_dir.absolute()
        except FileNotFoundError:  # relative to a working directory that was removed
            abort(CWD_GONE, exit_codes.BAD_CONFIG)
        self.config_dir = config_of(absolute)

    def require_config_dir(self) -> None:
        """Exit with code 3 and where it looked if there is no config directory there: none at
        all, or one without modules.yaml (what `config_of` knows a config directory by; `-c`
        given a project's module directory, say), unless a supervisor runs for it (its file
        removed meanwhile: `down`, `status` and `logs` must still reach it).

        Every command starts here, so that a missing config reads the same everywhere (and never
        as "no supervisor is running", which would be true but beside the point).
        """
        try:
            is_dir = self.config_dir.is_dir()
            holds = os.path.lexists(self.config_dir / MODULES_FILE)  # a broken link: load says
        except OSError as exc:  # a name too long for the file system, say
            abort(f"{self.config_dir}: {exc.strerror or exc}", exit_codes.BAD_CONFIG)
        if is_dir and (holds or self.run_dir.running_pid() is not None):
            return
        what = f" (it holds no {MODULES_FILE}, the list of modules to run)" if is_dir else ""
        abort(
            f"no config directory at {self.config_dir}{what}; run from your project's "
            f"directory, or point to its config with -c DIR or {CONFIG_ENV}=DIR"
            " (`orchestrator init` writes a new project)",
            exit_codes.BAD_CONFIG,
        )

    def load(self) -> AppConfig:
        """The validated config; exits with code 3 and a one-line error if it is missing or
        invalid."""
        self.require_config_dir()
        try:
            return load_config(self.config_dir)
        except ConfigError as exc:
            abort(str(exc), exit_codes.BAD_CONFIG)

    @cached_property
    def run_dir(self) -> RunDir:
        """The run directory of this config's supervisor; exits 1 if the environment names one
        no socket can be made in (`ORCHESTRATOR_RUN_BASE` too long, say)."""
        try:
            return RunDir(self.config_dir)
        except RunBaseError as exc:
            abort(str(exc), exit_codes.FAILED)

    def client(self) -> ControlClient:
        """A client for the running supervisor; exits with code 3 if the config directory does
        not exist, 4 if no supervisor runs for it."""
        self.require_config_dir()
        try:
            return ControlClient(self.run_dir)
        except NotRunningError:
            self.abort_if_elsewhere()
            abort(f"no supervisor is running for {self.config_dir}", exit_codes.NOT_RUNNING)

    def abort_if_elsewhere(self) -> None:
        """Exit 1 if no supervisor was found in this config's run directory, yet one holds the
        project's lock (in its logs directory) with another: the project was moved or renamed
        since `up`, or ORCHESTRATOR_RUN_BASE (or XDG_RUNTIME_DIR) differs from `up`'s. Saying
        "nothing runs" then would be wrong. The config is read leniently: one broken on disk
        is no reason to say so either (and one whose `logging.directory` changed since `up`
        names a directory its supervisor locks too, see `ProjectLock.also_hold`)."""
        holder = project_holder(logs_directory(self.config_dir))
        if holder is None:
            return
        pid, run_dir = holder
        if run_dir == str(self.run_dir.path):  # ours, on its way in or out
            return
        which = f"pid {pid}" if pid is not None else "its pid unknown"
        abort(
            f"a supervisor ({which}) runs for this project with the run directory"
            f" {run_dir or '?'}, not {self.run_dir.path}: the project was moved or renamed since"
            " it started, or ORCHESTRATOR_RUN_BASE or XDG_RUNTIME_DIR differ from its; reach it"
            " as it was started, or stop it with `kill -TERM"
            f" {pid if pid is not None else 'PID'}`"
        )

    def _known_to_config(self, name: str) -> None:
        """Exit 2 if the config names no module `name` (enabled or not)."""
        if self.config_dir.is_dir():
            known = [module.name for module in self.load().modules]
            if name.partition("#")[0] not in known:  # NAME#k: an instance of NAME
                abort(
                    f"no module named {name!r} in {self.config_dir / 'modules.yaml'}"
                    f" (modules: {', '.join(known) or 'none'})",
                    exit_codes.USAGE,
                )

    def request(self, cmd: str, wait: float = 10.0, **arguments: Any) -> Any:
        """Send a request; exit 4 if no supervisor runs, 2 if it names a module the supervisor
        does not have, 1 with its message if the request failed otherwise."""
        name = arguments.get("name")
        if isinstance(name, str) and self.run_dir.running_pid() is None:
            self._known_to_config(name)  # a typo is a usage error, running or not
        client = self.client()
        try:
            return client.request(cmd, wait, **arguments)
        except NotRunningError as exc:
            abort(str(exc), exit_codes.NOT_RUNNING)
        except ControlError as exc:
            kind = exc.data.get("kind") if isinstance(exc.data, dict) else None
            name = arguments.get("name")  # (a remote request's is inside: not this host's)
            if kind == "usage" and isinstance(name, str):  # a module it does not have, say
                abort(f"{exc}{self._not_reloaded(client, name)}", exit_codes.USAGE)
            if kind in _EXIT_OF_KIND:  # another host's answer, or none
                abort(str(exc), _EXIT_OF_KIND[kind])
            if kind == "timeout":  # asking again which modules it has would wait as long
                abort(str(exc), exit_codes.FAILED)
            # Not usage because the module is gone by now: a reload removing it while the request
            # was under way made the same failure exit 1 or 2 as the timing fell.
            abort(str(exc), exit_codes.FAILED)

    def remote(self, host: str, request: dict[str, Any], wait: float = 10.0) -> Any:
        """Send `request` to the supervisor of cluster host `host`, through this one; exits as
        `request` does, and 4 if that host does not answer (within `wait` seconds once it took
        the request)."""
        return self.request(
            "remote", wait=wait + _REMOTE_SLACK, host=host, request=request, timeout=wait
        )

    def _not_reloaded(self, client: ControlClient, name: str) -> str:
        """A hint if modules.yaml on disk lists module `name` (enabled) that the supervisor does
        not have: it runs the config it last loaded. Read here, leniently: the supervisor's
        loop parses no YAML for a hint."""
        listed = any(m.name == name and m.enabled for m in listed_modules(self.config_dir))
        if listed and not self._has_module(client, name):
            return (
                f"; {name} is in {MODULES_FILE} but not in the running config:"
                " run `orchestrator reload`"
            )
        return ""

    @staticmethod
    def _has_module(client: ControlClient, name: str) -> bool:
        """Whether the running supervisor has module `name` (True if it cannot tell: then the
        failure stands as it was)."""
        try:
            modules = client.request("status")["modules"]
        except (ControlError, NotRunningError, KeyError, TypeError):
            return True
        return any(name in (module.get("name"), module.get("instance_of")) for module in modules)


def module_request(
    app: App, cmd: str, name: str, wait: float, as_json: bool, **arguments: Any
) -> tuple[str, dict[str, Any]] | None:
    """Ask for `cmd` on module `name`, or, as `HOST/NAME`, on module NAME of cluster host HOST
    through that host's supervisor. With `as_json`, print the module's status once it is done
    and return None; else return what to call the module in a message ("NAME", "HOST/NAME")
    and the answer (another host's must name the module, or the command exits 1)."""
    host, module = split_host(name)
    if host is not None:
        request = {"cmd": cmd, "name": module, **arguments}
        data = expect(app.remote(host, request, wait), host, name=str)
        if as_json:
            echo_json(app.remote(host, {"cmd": "status", "name": module}))
            return None
        return f"{host}/{module}", data
    data = app.request(cmd, wait=wait, name=name, **arguments)
    if as_json:
        echo_json(app.request("status", name=name))
        return None
    return data["name"], data


def expect(data: Any, host: str, **fields: type) -> dict[str, Any]:
    """`data` (another host's answer) if it is a map with these fields of these types; else exit
    1 saying the answer was malformed."""
    if isinstance(data, dict) and all(isinstance(data.get(k), t) for k, t in fields.items()):
        return data
    abort(f"host {host!r} sent a malformed answer: expected {', '.join(fields)}")


class Seconds(click.FloatRange):
    """A number of seconds from 0 to `max`. NaN is none (click's FloatRange lets it through:
    every comparison with it is false, so a deadline of NaN never comes)."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail("nan is not a number of seconds", param, ctx)
        return number


def wait_option(what: str, default: float = 120.0) -> Callable[[F], F]:
    """`--wait S`: how long a command waits for `what` ("the module to run again"), up to a day."""
    return click.option(
        "--wait",
        type=Seconds(min=0, max=86400),
        default=default,
        show_default=True,
        help=f"Seconds to wait for {what}.",
    )


def config_option(command: F) -> F:
    """Add -c/--config DIR to a command and pass an `App` as its first argument.

    The directory comes from, first to last: -c after the command, -c before it (on the group,
    in `ctx.obj`), $ORCHESTRATOR_CONFIG, ./config.
    """

    def to_app(ctx: click.Context, param: click.Parameter, value: Path) -> App:
        given_here = ctx.get_parameter_source("app") is ParameterSource.COMMANDLINE
        before = ctx.find_object(GroupOptions)
        if not given_here and before is not None and before.config_dir is not None:
            return App(before.config_dir)
        return App(value)

    return click.option(
        "-c",
        "--config",
        "app",
        type=click.Path(file_okay=False, path_type=Path),
        default=DEFAULT_CONFIG,
        envvar=CONFIG_ENV,
        show_default=f"./config, or ${CONFIG_ENV}",
        callback=to_app,
        help="Directory holding main.yaml and modules.yaml (may also come before the command).",
    )(command)


class GroupOptions:
    """What the options given before the command hand down to it (as `ctx.obj`)."""

    def __init__(self, config_dir: Path | None) -> None:
        self.config_dir = config_dir


def group_config_option(group: F) -> F:
    """-c/--config DIR on the `orchestrator` group itself: `orchestrator -c DIR status`."""

    def remember(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
        ctx.obj = GroupOptions(value)
        return value

    return click.option(
        "-c",
        "--config",
        "config_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        expose_value=False,
        is_eager=True,
        callback=remember,
        help=f"Directory holding main.yaml and modules.yaml (default ./config, or ${CONFIG_ENV}). "
        "May come after the command instead; given in both places, the one after wins.",
    )(group)


@contextlib.contextmanager
def raising_on_stop_signals(stopped: Callable[[int], BaseException]) -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise `stopped(signum)` where the command is, as Ctrl+C
    raises KeyboardInterrupt: `timeout`, a closed terminal or a CI runner's SIGTERM then ends it
    through its own handling, not in the middle of it; the handlers before are put back after."""

    def stop(signum: int, _frame: object) -> None:
        raise stopped(signum)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
