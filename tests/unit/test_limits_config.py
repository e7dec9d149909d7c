"""Validation of a module's limit and isolation keys (config/limits.py): values, and one-line
errors naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import ConfigError, load_config
from orchestrator.config.limits import UNLIMITED, FilesystemAccess, ModuleLimits


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    (tmp_path / "config").mkdir()
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "a.py").write_text("")
    (tmp_path / "config" / "main.yaml").write_text("")
    return tmp_path / "config"


def limits_of(config_dir: Path, keys: str) -> ModuleLimits:
    entry = f"{{name: a, path: ../mods/a.py, {keys}}}"
    (config_dir / "modules.yaml").write_text(f"modules: [{entry}]")
    return load_config(config_dir).modules[0].limits


def test_no_limit_keys_set_nothing(config_dir: Path) -> None:
    assert limits_of(config_dir, "enabled: true") == ModuleLimits()


def test_every_key_is_read(config_dir: Path) -> None:
    limits = limits_of(
        config_dir,
        "memory_max_mb: 256, cpu_quota: 0.5, pids_max: 64, "
        "rlimits: {nofile: 256, as: [1000000, unlimited], core: unlimited}, "
        "user: nobody, group: 0, umask: '027', "
        "filesystem: {read_only: [/usr], read_write: [../data]}",
    )
    assert limits.memory_max_mb == 256 and limits.cpu_quota == 0.5 and limits.pids_max == 64
    assert limits.rlimits == (
        ("nofile", 256, 256),
        ("as", 1000000, UNLIMITED),
        ("core", UNLIMITED, UNLIMITED),
    )
    assert limits.user == "nobody" and limits.group == "root" and limits.umask == 0o27
    data = (config_dir.parent / "data").resolve()
    assert limits.filesystem == FilesystemAccess(read_only=(Path("/usr"),), read_write=(data,))
    assert limits.cgroup_keys == {"memory_max_mb": 256, "cpu_quota": 0.5, "pids_max": 64}


@pytest.mark.parametrize(
    ("written", "umask"),
    [("0o22", 0o22), ("022", 0o22), ("'022'", 0o22), ("77", 0o77), ("27", 0o27), ("0", 0)],
)
def test_a_umask_is_octal_quoted_or_not_as_for_systemd(
    config_dir: Path, written: str, umask: int
) -> None:
    # YAML 1.1 reads an unquoted 77 as decimal 77 (octal 115: files -rw-rw--w-) and 022 as 18.
    assert limits_of(config_dir, f"umask: {written}").umask == umask


def test_a_umask_in_an_alias_is_octal_and_the_anchor_keeps_its_type(config_dir: Path) -> None:
    entry = "{name: a, path: ../mods/a.py, pids_max: &n 77, umask: *n}"
    (config_dir / "modules.yaml").write_text(f"modules: [{entry}]")
    limits = load_config(config_dir).modules[0].limits
    assert (limits.umask, limits.pids_max) == (0o77, 77)
    merged = "{<<: {umask: 27}, name: a, path: ../mods/a.py}"
    (config_dir / "modules.yaml").write_text(f"modules: [{merged}]")
    assert load_config(config_dir).modules[0].limits.umask == 0o27


ERRORS = [
    ("memory_max_mb: 0", "memory_max_mb: expected an integer >= 1 or null, got 0"),
    ("memory_max_mb: lots", "memory_max_mb: expected an integer >= 1 or null, got 'lots'"),
    ("cpu_quota: 0", "cpu_quota: expected a number > 0, got 0"),
    ("cpu_quota: 0.001", "cpu_quota: expected a fraction of a core >= 0.01, got 0.001"),
    ("cpu_quota: true", "cpu_quota: expected a number > 0, got true"),
    ("pids_max: -3", "pids_max: expected an integer >= 1 or null, got -3"),
    ("rlimits: [1]", "rlimits: expected a mapping, got a list"),
    (
        "rlimits: {nofiles: 1}",
        "rlimits.nofiles: unknown rlimit 'nofiles'; expected one of as, core, cpu, fsize, "
        "memlock, nofile, nproc, stack",
    ),
    (
        "rlimits: {nofile: -1}",
        f"rlimits.nofile: expected an integer between 0 and {2**63 - 1} or 'unlimited', got -1",
    ),
    (
        "rlimits: {as: [1000000000000000000000000000000, unlimited]}",
        f"rlimits.as[0]: expected an integer between 0 and {2**63 - 1} or 'unlimited', "
        "got 1000000000000000000000000000000",
    ),
    (
        "rlimits: {nofile: many}",
        f"rlimits.nofile: expected an integer between 0 and {2**63 - 1} or 'unlimited', got 'many'",
    ),
    (
        "rlimits: {core: [1, x]}",
        f"rlimits.core[1]: expected an integer between 0 and {2**63 - 1} or 'unlimited', got 'x'",
    ),
    ("rlimits: {nofile: [10, 5]}", "rlimits.nofile: the soft limit 10 exceeds the hard limit"),
    (
        "rlimits: {nofile: [unlimited, 5]}",
        "rlimits.nofile: the soft limit 'unlimited' exceeds the hard limit",
    ),
    (
        "rlimits: {nofile: [1, 2, 3]}",
        "rlimits.nofile: expected [soft, hard], got a list of 3 items",
    ),
    ("user: no-such-user-here", "user: no user 'no-such-user-here' on this host"),
    ("user: 3999999", "user: no user with uid 3999999 on this host"),
    ("user: ''", "user: expected a non-empty string, got ''"),
    ("group: no-such-group-here", "group: no group 'no-such-group-here' on this host"),
    ("umask: '999'", "umask: expected an octal umask such as '027' (0 to 777), got '999'"),
    ("umask: 1000", "umask: expected an octal umask such as '027' (0 to 777), got '1000'"),
    ("umask: 8", "umask: expected an octal umask such as '027' (0 to 777), got '8'"),
    ("umask: true", "umask: expected an octal umask such as '027' (0 to 777), got 'true'"),
    ("umask: !!int '7'", "umask: expected an octal umask such as '027' (0 to 777), got 7"),
    ("filesystem: [a]", "filesystem: expected a mapping, got a list"),
    ("filesystem: {read_only: /usr}", "filesystem.read_only: expected a list, got '/usr'"),
    ("filesystem: {read_only: [7]}", "filesystem.read_only[0]: expected a non-empty string, got 7"),
    (
        "filesystem: {write: []}",
        "filesystem.write: unknown key (expected one of: read_only, read_write)",
    ),
]


@pytest.mark.parametrize(("keys", "message"), ERRORS)
def test_bad_values_are_one_line_errors_naming_file_and_field(
    config_dir: Path, keys: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        limits_of(config_dir, keys)
    assert str(info.value) == f"{config_dir / 'modules.yaml'}: modules[0].{message}"


def test_another_user_needs_a_supervisor_running_as_root(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("orchestrator.config.limits.os.geteuid", lambda: 1000)
    with pytest.raises(ConfigError) as info:
        limits_of(config_dir, "group: 0")
    assert str(info.value).endswith(
        "modules[0].group: running a module as another group needs the supervisor to run as "
        "root (it runs as uid 1000)"
    )
