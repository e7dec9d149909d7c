"""The config loader's bounds: file size, alias expansion, nesting, interpolated size; duplicate
keys refused. A bomb must be refused before anything expands it: the bombs here are so large that
expanding one would never end (the per-test timeout would fail the test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.config import ConfigError, load_config, yamlfile
from orchestrator.config.yamlfile import MAX_BYTES, MAX_NODES

MODULE = "modules:\n  - name: a\n    path: ../mods/a.py\n"


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project (the cwd) with `config/` holding an empty main.yaml and one module file."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BIG", raising=False)
    (tmp_path / "config").mkdir()
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "a.py").write_text("")
    (tmp_path / "config" / "main.yaml").write_text("")
    (tmp_path / "config" / "modules.yaml").write_text(MODULE)
    return Path("config")


def load_error(config: Path, *, main: str | None = None, modules: str | None = None) -> str:
    if main is not None:
        (config / "main.yaml").write_text(main)
    if modules is not None:
        (config / "modules.yaml").write_text(modules)
    with pytest.raises(ConfigError) as info:
        load_config(config)
    return str(info.value)


def bomb(levels: int, width: int = 9, indent: str = "      ") -> str:
    """Anchors `l0`..`l{levels-1}`, each a list of `width` references to the one before:
    `width ** levels` strings once expanded."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "".join(f"{indent}{line}\n" for line in lines)


def test_an_alias_bomb_is_refused_before_it_expands(config: Path) -> None:
    # 9 ** 30 strings expanded: nothing that walked it would ever finish.
    message = load_error(config, modules=MODULE + "    config:\n" + bomb(30))
    expected = f"this value expands to more than {MAX_NODES} nodes (aliases counted as copies)"
    assert message.startswith("config/modules.yaml: line "), message
    assert message.endswith(expected), message
    assert "\n" not in message


def test_a_bomb_of_long_strings_is_refused(config: Path) -> None:
    text = "x" * 100_000
    source = f"    config:\n      s: &s '{text}'\n      t: [{', '.join(['*s'] * 12)}]\n"
    message = load_error(config, modules=MODULE + source)
    assert message.startswith("config/modules.yaml: line 6, column 10: "), message
    assert "expands to more than 1048576 characters" in message


def test_an_alias_inside_its_own_anchor_is_refused(config: Path) -> None:
    message = load_error(config, modules=MODULE + "    config: &loop {again: *loop}\n")
    assert (
        message == "config/modules.yaml: line 4, column 13: this value contains an alias to itself"
    )


def test_nesting_is_bounded(config: Path) -> None:
    deep = "[" * 70 + "]" * 70
    message = load_error(config, modules=MODULE + f"    config: {{x: {deep}}}\n")
    assert "this value nests collections more than 64 deep" in message


def test_anchors_in_real_use_still_work(config: Path) -> None:
    # Merge keys for shared settings, a reused list, and a reused value expanding to a few
    # thousand nodes: all fine, and a merged key may be overridden (that is not a duplicate).
    modules = (
        "modules:\n"
        "  - name: a\n"
        "    path: ../mods/a.py\n"
        "    config: &base\n"
        "      retries: 3\n"
        "      hosts: &hosts [alpha, beta]\n"
        "      table:\n" + bomb(4, indent="        ") + "  - name: b\n"
        "    path: ../mods/a.py\n"
        "    depends_on: [a]\n"
        "    config:\n"
        "      <<: *base\n"
        "      retries: 5\n"
        "      also: *hosts\n"
    )
    (config / "modules.yaml").write_text(modules)
    loaded = load_config(config)
    a, b = (spec.config for spec in loaded.modules)
    assert a["retries"] == 3 and b["retries"] == 5
    assert b["hosts"] == b["also"] == ["alpha", "beta"]
    assert len(b["table"]["l3"]) == 9 and b["table"]["l3"][8][8][8] == ["lol"] * 9


@pytest.mark.parametrize(
    ("main", "expected"),
    [
        (
            "hot_reload: false\nlogging: {level: INFO}\nhot_reload: true\n",
            "config/main.yaml: line 3, column 1: duplicate key 'hot_reload' (first at line 1)",
        ),
        (
            "supervision:\n  stop_timeout: 5\n  max_restarts: 2\n  stop_timeout: 9\n",
            "config/main.yaml: line 4, column 3: duplicate key 'stop_timeout' (first at line 2)",
        ),
        (
            "app: {name: a, 'name': b}\n",
            "config/main.yaml: line 1, column 16: duplicate key 'name' (first at line 1)",
        ),
    ],
)
def test_a_duplicate_key_is_named_with_its_line(config: Path, main: str, expected: str) -> None:
    assert load_error(config, main=main) == expected


def test_a_duplicate_key_in_a_module_entry(config: Path) -> None:
    message = load_error(config, modules=MODULE + "    enabled: true\n    name: b\n")
    assert (
        message == "config/modules.yaml: line 5, column 5: duplicate key 'name' (first at line 2)"
    )


def test_a_file_over_the_size_cap_is_refused_unread(config: Path) -> None:
    (config / "main.yaml").write_text("# " + "x" * MAX_BYTES + "\n")
    message = load_error(config)
    assert message == f"config/main.yaml: cannot read file: larger than {MAX_BYTES} bytes"
    (config / ".env").write_text("A=" + "x" * MAX_BYTES + "\n")
    (config / "main.yaml").write_text("")
    message = load_error(config)
    assert message == f"config/.env: cannot read file: larger than {MAX_BYTES} bytes"


def test_a_fifo_in_place_of_the_file_does_not_block(config: Path) -> None:
    (config / "main.yaml").unlink()
    os.mkfifo(config / "main.yaml")
    assert load_error(config) == "config/main.yaml: cannot read file: not a regular file"


def test_interpolated_values_are_bounded(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIG", "b" * 50_000)
    source = "    config:\n      s: &s '${BIG}'\n      t: [" + ", ".join(["*s"] * 30) + "]\n"
    message = load_error(config, modules=MODULE + source)
    assert message == (
        "config/modules.yaml: modules[0].config.t[19]: the values of ${...} references add up "
        "to more than 1048576 characters"
    )


REFUSED = [
    (bomb(30, indent=""), f"expands to more than {MAX_NODES} nodes"),
    ("a: &a [x, *a]\n", "contains an alias to itself"),
    ("a: 1\nb: 2\na: 3\n", "duplicate key 'a' (first at line 1)"),
    ("a: {1: x, 1.0: y}\n", "duplicate key 1.0 (first at line 1)"),
    ("a: " + "[" * 500 + "]" * 500 + "\n", "nest"),
]
MERGE = "base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  x: 3\n"

# The same checks where PyYAML has no libyaml, in a process of its own (the parser is chosen at
# import); prints each case's problem, then the merged document.
PURE_PYTHON = """
import json, sys
import yaml
del yaml.CSafeLoader
from orchestrator.config.yamlfile import BoundedLoader, RefusedYAMLError, load_yaml
assert BoundedLoader.__mro__[1] is yaml.SafeLoader
cases, merge = json.load(sys.stdin)
problems = []
for text in cases:
    try:
        load_yaml(text)
        problems.append(None)
    except RefusedYAMLError as exc:
        problems.append(exc.problem)
print(json.dumps([problems, load_yaml(merge)]))
"""


@pytest.mark.skipif(not hasattr(yaml, "CSafeLoader"), reason="PyYAML without libyaml")
@pytest.mark.parametrize(("text", "problem"), REFUSED)
def test_refused_with_libyaml(text: str, problem: str) -> None:
    assert yamlfile.BoundedLoader.__mro__[1] is yaml.CSafeLoader
    with pytest.raises(yamlfile.RefusedYAMLError) as info:
        yamlfile.load_yaml(text)
    assert problem in str(info.value.problem)
    assert yamlfile.load_yaml(MERGE) == {"base": {"x": 1, "y": 2}, "m": {"x": 3, "y": 2}}


def test_refused_with_the_pure_python_parser() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PURE_PYTHON],
        input=json.dumps([[text for text, _ in REFUSED], MERGE]),
        capture_output=True,
        text=True,
        check=True,
    )
    problems, merged = json.loads(result.stdout)
    for (_, expected), problem in zip(REFUSED, problems, strict=True):
        assert problem is not None and expected in problem, (expected, problem)
    assert merged == {"base": {"x": 1, "y": 2}, "m": {"x": 3, "y": 2}}


def test_a_dotenv_bomb_is_refused_before_it_is_expanded(config: Path) -> None:
    # Each line repeats the one before 200 times: 3 KB that would make 160 GB.
    lines = ["A=" + "x" * 100] + [
        f"V{i}=" + "${%s}" % ("A" if i == 1 else f"V{i - 1}") * 200 for i in range(1, 5)
    ]
    (config / ".env").write_text("\n".join(lines) + "\n")
    assert load_error(config) == (
        "config/.env: V2: the values of ${...} references add up to more than 1048576 characters"
    )


def test_dotenv_references_within_bounds_still_work(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FROM_ENV", "env")
    (config / ".env").write_text("HOST=db\nURL=pg://${HOST}:${PORT:-5432}/${FROM_ENV}\n")
    (config / "modules.yaml").write_text(MODULE + "    config: {url: '${URL}'}\n")
    assert load_config(config).modules[0].config == {"url": "pg://db:5432/env"}


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("2026-13-45", "cannot read '2026-13-45' as timestamp"),  # a date that does not exist
        ("2026-02-30 10:00:00", "cannot read '2026-02-30 10:00:00' as timestamp"),
        ("9" * 5000, "an integer of more than 4300 digits"),  # CPython's bound on int(str)
        ("0x" + "f" * 5000, "an integer of more than 4300 digits"),  # no bound: shown, it raises
        ("!!int x", "cannot read 'x' as int"),
        ("!!timestamp x", "cannot read 'x' as timestamp"),
        ("!!int ''", "cannot read '' as int"),  # IndexError: PyYAML reads its first character
        ("!!float '_'", "cannot read '_' as float"),
    ],
)
def test_a_value_yaml_cannot_read_is_refused_where_it_is_written(
    config: Path, value: str, problem: str
) -> None:
    message = load_error(config, modules=MODULE + f"    config: {{x: {value}}}\n")
    assert message == f"config/modules.yaml: line 4, column 17: {problem}"


@pytest.mark.parametrize(
    ("main", "where", "problem"),
    [
        ("supervision: {stop_timeout: 0x" + "f" * 5000 + "}", "line 1", "4300 digits"),
        ('metrics: {listen: "127.0.0.1:\u00b2"}', "metrics.listen", "expected HOST:PORT"),
        ("notifications: {webhooks: [{url: 'http://'}]}", "url", "a URL without a host"),
        ("notifications: {webhooks: [{url: 'http://a:99999999/'}]}", "url", "Port out of range"),
        ("notifications: {webhooks: [{url: 'http://a:x/'}]}", "url", "not a valid URL"),
        ("notifications: {webhooks: [{url: 'http://[::1/'}]}", "url", "Invalid IPv6 URL"),
        ("notifications: {webhooks: [{url: 'http://a b/'}]}", "url", "a space or a control"),
    ],
)
def test_values_that_raised_in_the_loader_are_config_errors(
    config: Path, main: str, where: str, problem: str
) -> None:
    message = load_error(config, main=main)
    assert message.startswith("config/main.yaml: ") and where in message and problem in message
    assert "\n" not in message


def test_a_module_group_past_any_gid_is_no_such_group(config: Path) -> None:
    message = load_error(config, modules=MODULE + "    group: 99999999999999999999999\n")
    assert message.endswith(
        "modules[0].group: no group with gid 99999999999999999999999 on this host"
    )


@pytest.mark.parametrize("number", [2**64, -(2**63) - 1])
def test_a_module_config_integer_msgpack_cannot_carry_is_refused(config: Path, number: int) -> None:
    message = load_error(config, modules=MODULE + f"    config: {{x: [{number}]}}\n")
    assert message.startswith("config/modules.yaml: modules[0].config.x[0]: an integer outside")
    (config / "modules.yaml").write_text(MODULE + f"    config: {{x: [{2**64 - 1}, {-(2**63)}]}}\n")
    load_config(config)  # the bounds themselves pass


def test_main_yaml_as_a_link_to_nothing_is_refused_not_read_as_defaults(config: Path) -> None:
    (config / "main.yaml").unlink()
    load_config(config)  # no main.yaml at all: the defaults
    (config / "main.yaml").symlink_to("/nonexistent/main.yaml")
    assert load_error(config) == (
        "config/main.yaml: cannot read file: a symbolic link to a file that does not exist"
    )
