"""`orchestrator systemd-unit`: a systemd unit that runs this project's supervisor."""

from __future__ import annotations

import os
import pwd
import shutil
import sys
from pathlib import Path

import click

from orchestrator.cli.common import App, abort, config_option
from orchestrator.config import AppConfig

_STOP_MARGIN = 15  # seconds systemd waits past the longest stop_timeout before SIGKILL
_WATCHDOG = 30  # seconds: a supervisor loop silent this long is restarted by systemd


@click.command(name="systemd-unit")
@config_option
@click.option(
    "--user",
    "user_unit",
    is_flag=True,
    help="A user unit (systemctl --user; ~/.config/systemd/user/), not a system one.",
)
def systemd_unit(app: App, user_unit: bool) -> None:
    """Print a systemd unit that runs this project's supervisor (Type=notify).

    The supervisor tells systemd when every module has started (READY=1), keeps a one-line
    STATUS= of the modules' states, pings the watchdog from its loop, and stops gracefully on
    SIGTERM. Install it, for example:

    \b
      orchestrator systemd-unit | sudo tee /etc/systemd/system/myproject.service
      sudo systemctl daemon-reload && sudo systemctl enable --now myproject
    """
    try:
        text = unit_text(app.load(), user_unit=user_unit)
    except ValueError as exc:
        abort(str(exc))
    click.echo(text, nl=False)


def unit_text(config: AppConfig, *, user_unit: bool) -> str:
    """The unit for `config`'s project, the `orchestrator` of this installation running it.
    Raises ValueError for a path no unit file can hold (a newline in it, say)."""
    command = _orchestrator_command()
    config_dir = str(config.config_dir.resolve())
    working_dir = str(config.config_dir.resolve().parent)
    for what, text in (("the config directory", config_dir), ("orchestrator", command)):
        if not text.isprintable():
            raise ValueError(f"{what} ({text!r}): a unit file cannot hold a control character")
    if working_dir.endswith("\\"):  # a setting's last backslash joins the next line to it
        raise ValueError(f"the project directory ({working_dir!r}) ends in a backslash")
    stop = max(
        [m.supervision.stop_timeout for m in config.modules] + [config.supervision.stop_timeout]
    )
    service = [
        "Type=notify",
        "NotifyAccess=main",
        f"WorkingDirectory={_literal(working_dir)}",
        f"ExecStart={command} up -c {_quoted(config_dir)}",
        f"ExecReload={command} reload -c {_quoted(config_dir)}",
        "Environment=PYTHONUNBUFFERED=1",
        "# SIGTERM to the supervisor only: it stops the modules itself, gracefully;",
        "# whatever is left at TimeoutStopSec is killed, all of it.",
        "KillMode=mixed",
        f"TimeoutStopSec={int(stop) + _STOP_MARGIN}",
        "Restart=on-failure",
        "RestartSec=2",
        f"WatchdogSec={_WATCHDOG}",
        "# The supervisor puts each module in a cgroup of its own, below its own.",
        "Delegate=yes",
    ]
    if not user_unit and os.geteuid() != 0:
        service.insert(2, f"User={_user()}")
    lines = [
        "[Unit]",
        _literal(
            f"Description=orchestrator: {config.app.name} {config.app.version} ({config_dir})"
        ),
        *(["After=network-online.target", "Wants=network-online.target"] if not user_unit else []),
        "",
        "[Service]",
        *service,
        "",
        "[Install]",
        f"WantedBy={'default.target' if user_unit else 'multi-user.target'}",
    ]
    return "\n".join(lines) + "\n"


def _orchestrator_command() -> str:
    """The `orchestrator` script of this interpreter's environment, or `python -m orchestrator`."""
    script = Path(sys.executable).parent / "orchestrator"
    if script.is_file() and os.access(script, os.X_OK):
        return _quoted(str(script))
    found = shutil.which("orchestrator")
    if found is not None and Path(found).resolve().parent == Path(sys.executable).resolve().parent:
        return _quoted(found)
    return f"{_quoted(sys.executable)} -m orchestrator"


def _quoted(text: str) -> str:
    """A word of a unit's command line, as systemd reads it back: `%` (a specifier, `%h`) as
    `%%`, `$` (a variable) as `$$`, and in double quotes, with `\\` and `"` escaped, if it
    holds a space, a quote or a backslash (systemd unescapes C-style inside quotes)."""
    text = _literal(text).replace("$", "$$")
    if text and not any(c.isspace() or c in "\"'\\" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _literal(text: str) -> str:
    """A setting's value as systemd reads it back: `%` starts a specifier, `%%` is one `%`."""
    return text.replace("%", "%%")


def _user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name
