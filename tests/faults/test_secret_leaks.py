"""A config error that quotes a value filled in from ${VAR} never shows the value, however long,
nor any 8-character slice of it: not in `up -d`, `test` or `reload` output, nor in app.log.
(Secrets under 4 characters are not scrubbed out of free text, as `Redactor` documents.)"""

from __future__ import annotations

import json

import yaml
from click.testing import CliRunner
from helpers import leaks, make_secret, wait_until
from project import Project, describe

from orchestrator import exit_codes
from orchestrator.cli import cli

LENGTHS = (4, 20, 75, 76, 77, 120, 1000)


SECRETS = [make_secret(n) for n in LENGTHS] + [
    make_secret(n, "abcdefg'hijklm\\nopq\"rstu\tvwxyz\n") for n in (20, 120)
]


def dotenv_line(name: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'{name}="{escaped.replace(chr(9), chr(92) + "t")}"\n'


def run_cli(project: Project, *args: str) -> tuple[int, str]:
    """`orchestrator ARGS -c CONFIG` in this process (it talks to the real supervisor over its real
    socket; a process per call would cost seconds here): its exit code and output."""
    result = CliRunner().invoke(
        cli,
        [*args, "-c", str(project.config_dir)],
        env={"ORCHESTRATOR_RUN_BASE": str(project.run_base), "ORCHESTRATOR_CONFIG": None},
        catch_exceptions=False,
    )
    return result.exit_code, result.output


def test_a_quoted_secret_of_any_length_never_shows(project: Project) -> None:
    project.env.pop("TOKEN", None)
    idle = {"name": "idle", "path": project.probe("idle")}
    project.configure([idle])
    good_main = (project.config_dir / "main.yaml").read_text()
    good_modules = (project.config_dir / "modules.yaml").read_text()
    main = yaml.safe_load(good_main)
    # Each error quotes the value of ${TOKEN}: a number, a URL, a choice, a level.
    bad_configs = [
        ("main.yaml", {**main, "supervision": {"stop_timeout": "${TOKEN}"}}),
        ("main.yaml", {**main, "notifications": {"webhooks": [{"url": "${TOKEN}"}]}}),
        ("modules.yaml", {"modules": [{**idle, "restart": "${TOKEN}"}]}),
        ("modules.yaml", {"modules": [{**idle, "log_level": "${TOKEN}"}]}),
    ]
    project.up()

    outputs: list[tuple[str, str, str]] = []  # (secret, where, text)
    for index, secret in enumerate(SECRETS):
        (project.config_dir / ".env").write_text(dotenv_line("TOKEN", secret))
        bad_file, bad = bad_configs[index % len(bad_configs)]
        for file, good in (("main.yaml", good_main), ("modules.yaml", good_modules)):
            text = yaml.safe_dump(bad) if file == bad_file else good
            (project.config_dir / file).write_text(text)
        for command in (("up", "-d"), ("test",), ("reload",)):
            code, output = run_cli(project, *command)
            assert code == exit_codes.BAD_CONFIG, output
            assert f"{bad_file}: " in output and "***" in output, output
            outputs.append((secret, " ".join(command), output))
        if secret == SECRETS[LENGTHS.index(120)]:  # the case, through real processes too
            for command in (("up", "-d"), ("test",), ("reload",)):
                result = project.cli(*command, check=exit_codes.BAD_CONFIG)
                assert "***" in result.stderr, describe(result)
                outputs.append((secret, " ".join(command), result.stdout + result.stderr))

    app_log = (project.root / "logs" / "app.log").read_text()
    assert app_log.count("config reload rejected") == len(SECRETS) + 1
    status = json.dumps(project.status())
    for secret in SECRETS:
        outputs += [(secret, "app.log", app_log), (secret, "status", status)]
    for secret, where, text in outputs:
        assert not leaks(secret, text), f"a {len(secret)}-character secret in {where}: {text}"


def test_a_secret_new_in_a_reload_is_hidden_from_the_reload_log(project: Project) -> None:
    """The reload logs its plan before it applies the new config: the new config's secrets must be
    hidden from that line too (here a new module's name holds a value new in `.env`)."""
    secret = "leakedname"
    idle = {"name": "idle", "path": project.probe("idle")}
    project.configure([idle])
    project.up()
    (project.config_dir / ".env").write_text(dotenv_line("NEW_TOKEN", secret))
    added = {"name": f"{secret}-worker", "path": idle["path"], "config": {"t": "${NEW_TOKEN}"}}
    project.configure([idle, added])

    project.cli("reload", "--dry-run", check=0)
    project.cli("reload", check=0)

    app_log = project.root / "logs" / "app.log"
    wait_until(lambda: "reload: start" in app_log.read_text(), what="the reload's plan logged")
    text = app_log.read_text()
    assert "reload: start ***-worker" in text, text
    assert not leaks(secret, text), text
