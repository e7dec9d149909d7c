"""What `init` and `new` write: the generated main.yaml against the loader, the module template,
the edit of modules.yaml, and all-or-nothing writing."""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import typing
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.config import ConfigError, load_config
from orchestrator.config.loader import MAIN_KEYS
from orchestrator.config.model import AppConfig
from orchestrator.scaffold import files as files_module
from orchestrator.scaffold.files import FileSet, WriteError
from orchestrator.scaffold.module import module_entry, module_files
from orchestrator.scaffold.modules_file import CannotEditError, with_entry
from orchestrator.scaffold.project import NOTES, choices_of, main_yaml, project_files

KEY_LINE = re.compile(r"^# ( *[a-z_]+:.*)$")  # a commented-out key (prose and notes do not match)
ITEM_KEY = re.compile(r"^# +# (?:- |  )([a-z_]+):")  # a key of the example list item


def uncomment(text: str) -> str:
    return "\n".join(
        m.group(1) if (m := KEY_LINE.match(line)) else line for line in text.splitlines()
    )


def accepted_keys(config: Path, main: object) -> set[str]:
    """The keys the loader lists as expected where `main` has an unknown key `not_a_key`."""
    (config / "main.yaml").write_text(yaml.safe_dump(main))
    with pytest.raises(ConfigError) as info:
        load_config(config)
    found = re.search(r"unknown key \(expected one of: (.*)\)$", info.value.message)
    assert found, info.value.message
    return set(found.group(1).split(", "))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    directory = tmp_path / "config"
    directory.mkdir()
    (directory / "modules.yaml").write_text("modules: []\n")
    return directory


def test_main_yaml_as_written_and_uncommented_is_the_defaults(config: Path) -> None:
    text = main_yaml()
    assert yaml.safe_load(text) is None  # every key commented out
    (config / "main.yaml").unlink(missing_ok=True)
    defaults = load_config(config)
    (config / "main.yaml").write_text(text)
    assert load_config(config) == defaults
    (config / "main.yaml").write_text(uncomment(text))
    assert load_config(config) == defaults


def test_main_yaml_shows_every_key_the_loader_accepts(config: Path) -> None:
    shown = yaml.safe_load(uncomment(main_yaml()))
    assert list(shown) == list(MAIN_KEYS)
    assert accepted_keys(config, {"not_a_key": 1}) == set(shown)
    for key, section in shown.items():
        if isinstance(section, dict):
            assert accepted_keys(config, {key: {"not_a_key": 1}}) == set(section), key
    webhook = {"notifications": {"webhooks": [{"url": "https://x", "not_a_key": 1}]}}
    item_keys = {m.group(1) for line in main_yaml().splitlines() if (m := ITEM_KEY.match(line))}
    assert accepted_keys(config, webhook) == item_keys


def test_main_yaml_shows_every_cluster_key_commented_within_the_comment(config: Path) -> None:
    cluster = {"servers": ["nats://127.0.0.1:4222"], "not_a_key": 1}
    lead = re.compile(r"^#   # ([a-z_]+): ")
    shown = [m.group(1) for line in main_yaml().splitlines() if (m := lead.match(line))]
    assert set(shown) == accepted_keys(config, {"cluster": cluster}) - {"not_a_key"}
    assert "cluster" not in (yaml.safe_load(uncomment(main_yaml())) or {}) or (
        yaml.safe_load(uncomment(main_yaml()))["cluster"] is None
    )


def test_notes_name_shown_keys_and_lines_fit() -> None:
    text = main_yaml()
    shown = yaml.safe_load(uncomment(text))
    dotted = {key for key, value in shown.items() if not isinstance(value, dict)}
    for key, section in shown.items():
        if isinstance(section, dict):
            dotted |= {key, *(f"{key}.{name}" for name in section)}
    dotted |= {
        f"notifications.webhooks[].{m.group(1)}"
        for m in map(ITEM_KEY.match, text.splitlines())
        if m
    }
    assert set(NOTES) <= dotted, set(NOTES) - dotted
    assert max(len(line) for line in text.splitlines()) <= 100
    # A key with a fixed set of values shows them all, in its note or listed from its type.
    defaults = AppConfig(config_dir=Path(), main_file=Path(), modules_file=Path())
    for key in MAIN_KEYS:
        section = getattr(defaults, key)
        if not dataclasses.is_dataclass(section):
            continue
        for name, hint in typing.get_type_hints(type(section)).items():
            line = next(line for line in text.splitlines() if f"  {name}: " in line)
            assert all(choice in line.split("#")[-1] for choice in choices_of(hint)), line


def test_module_files_name_the_module_and_its_events() -> None:
    files = module_files("mod.hello-x")
    assert set(files) == {"__init__.py", "tests/test_mod_hello_x.py"}
    assert files["__init__.py"].startswith('"""mod.hello-x: ')
    assert 'log.info("mod.hello-x ready")' in files["__init__.py"]
    assert '"mod_hello_x.ping"' in files["__init__.py"]
    test = files["tests/test_mod_hello_x.py"]
    assert "`orchestrator test mod.hello-x`" in test and '"mod_hello_x.pong"' in test
    for source in files.values():
        compile(source, "<template>", "exec")


def test_project_files_list_the_example_module_they_contain(tmp_path: Path) -> None:
    for relative, text in project_files().items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    config = load_config(tmp_path / "config")
    assert [(m.name, m.path) for m in config.modules] == [
        ("example", tmp_path.resolve() / "modules-backend" / "example")
    ]
    ignored = (tmp_path / ".gitignore").read_text().splitlines()
    assert "logs/" in ignored and ".orchestrator/" in ignored  # modules' venvs


ENTRY = module_entry("new-one", "../modules-backend/new-one")
OLD = {"name": "old", "path": "../old.py"}


@pytest.mark.parametrize(
    ("text", "before"),
    [
        ("", []),
        ("# only a comment\n", []),
        ("modules:\n", []),
        ("modules: []\n", []),
        ("modules: []   # none yet\n# trailing comment\n", []),
        ("modules: ~\n", []),
        ("modules:\n  - name: old\n    path: ../old.py\n", [OLD]),
        ("modules:\n- name: old\n  path: ../old.py\n# the end\n", [OLD]),
        ("modules:\n    - name: old\n      path: ../old.py\n      config:\n        - x\n", None),
    ],
)
def test_with_entry_appends_to_the_list(text: str, before: list[object] | None) -> None:
    edited = with_entry(text, ENTRY)
    modules = yaml.safe_load(edited)["modules"]
    assert modules[-1] == ENTRY
    if before is not None:
        assert modules[:-1] == before
    for line in text.splitlines():  # the user's comments stay
        if line.startswith("#"):
            assert line in edited


@pytest.mark.parametrize(
    "text", ["modules: [{name: old, path: ../old.py}]\n", "modules: [\n]\n", "modules: 3\n", "[]\n"]
)
def test_with_entry_refuses_what_it_cannot_extend(text: str) -> None:
    with pytest.raises(CannotEditError):
        with_entry(text, ENTRY)


def test_with_entry_on_invalid_yaml_raises_its_error() -> None:
    with pytest.raises(yaml.YAMLError):
        with_entry("modules: [\n", ENTRY)


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_file_set_writes_all_and_keeps_a_replaced_file_mode(tmp_path: Path) -> None:
    (tmp_path / "keep.yaml").write_text("old\n")
    os.chmod(tmp_path / "keep.yaml", 0o640)
    plan = FileSet()
    plan.add(tmp_path / "a" / "b" / "one.txt", "1")
    plan.add(tmp_path / "a" / "two.txt", "2")
    plan.add(tmp_path / "keep.yaml", "new\n", replace=True)
    assert plan.conflicts() == []
    plan.commit()
    assert listing(tmp_path) == ["a", "a/b", "a/b/one.txt", "a/two.txt", "keep.yaml"]
    assert (tmp_path / "a" / "b" / "one.txt").read_text() == "1"
    assert (tmp_path / "keep.yaml").read_text() == "new\n"
    assert (tmp_path / "keep.yaml").stat().st_mode & 0o777 == 0o640


def test_file_set_failing_midway_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "existing").mkdir()
    (tmp_path / "keep.yaml").write_text("old\n")
    plan = FileSet()
    plan.add(tmp_path / "new" / "x.py", "x")
    plan.add(tmp_path / "existing" / "y.py", "y")
    plan.add(tmp_path / "keep.yaml", "new\n", replace=True)

    def full_disk(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files_module.os, "replace", full_disk)  # the last step: keep.yaml
    with pytest.raises(WriteError, match=r"keep\.yaml: No space left on device"):
        plan.commit()
    assert listing(tmp_path) == ["existing", "keep.yaml"]
    assert (tmp_path / "keep.yaml").read_text() == "old\n"
    monkeypatch.undo()
    plan.commit()
    assert listing(tmp_path) == ["existing", "existing/y.py", "keep.yaml", "new", "new/x.py"]


def test_file_set_refuses_a_file_that_appeared_meanwhile(tmp_path: Path) -> None:
    plan = FileSet()
    plan.add(tmp_path / "fresh" / "x.py", "x")
    plan.add(tmp_path / "late.txt", "mine")
    assert plan.conflicts() == []
    (tmp_path / "late.txt").write_text("theirs")
    with pytest.raises(WriteError, match=r"late\.txt: "):
        plan.commit()
    assert listing(tmp_path) == ["late.txt"]
    assert (tmp_path / "late.txt").read_text() == "theirs"
    assert plan.conflicts() == [tmp_path / "late.txt"]


def test_new_that_fails_while_adding_leaves_nothing_and_the_retry_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ORCHESTRATOR_CONFIG", raising=False)
    monkeypatch.setenv("ORCHESTRATOR_RUN_BASE", str(tmp_path / "run"))
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "modules.yaml").write_text("modules: []\n")
    before = listing(tmp_path)
    real_replace = os.replace

    def failing(*args: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(files_module.os, "replace", failing)  # modules.yaml, after the module
    runner = CliRunner()
    result = runner.invoke(cli, ["new", "mod-a", "--add"], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert "modules.yaml: Input/output error; nothing was written" in result.output
    assert listing(tmp_path) == before
    monkeypatch.setattr(files_module.os, "replace", real_replace)
    again = runner.invoke(cli, ["new", "mod-a", "--add"], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert yaml.safe_load((tmp_path / "config" / "modules.yaml").read_text())["modules"] == [
        module_entry("mod-a", "../modules-backend/mod-a")
    ]


def test_new_refuses_the_name_of_the_supervisors_own_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module `app` would write logs/app.log, the supervisor's: modules.yaml refuses it, and so
    does `new`, before it writes anything."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ORCHESTRATOR_CONFIG", raising=False)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "modules.yaml").write_text("modules: []\n")
    before = listing(tmp_path)
    result = CliRunner().invoke(cli, ["new", "App", "--add"], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "invalid module name 'App': reserved: logs/app.log is the supervisor's" in result.output
    assert listing(tmp_path) == before
