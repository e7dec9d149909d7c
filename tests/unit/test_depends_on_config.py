"""`depends_on:` with a per-edge `on_failure` policy: the accepted forms and the errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import ConfigError, load_config


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    (tmp_path / "m.py").write_text("")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "main.yaml").write_text("")
    return tmp_path / "config"


def _load(config_dir: Path, depends_on: str) -> dict[str, str]:
    (config_dir / "modules.yaml").write_text(
        "modules:\n"
        "  - {name: a, path: ../m.py}\n"
        "  - {name: b, path: ../m.py}\n"
        f"  - {{name: c, path: ../m.py, depends_on: {depends_on}}}\n"
    )
    spec = load_config(config_dir).modules[2]
    return {name: spec.on_failure(name) for name in spec.depends_on}


def test_plain_names_restart(config_dir: Path) -> None:
    assert _load(config_dir, "[a, b]") == {"a": "restart", "b": "restart"}
    assert _load(config_dir, "a") == {"a": "restart"}
    assert _load(config_dir, "[a, a]") == {"a": "restart"}


def test_per_edge_policy(config_dir: Path) -> None:
    edges = "[{name: a, on_failure: stop}, b]"
    assert _load(config_dir, edges) == {"a": "stop", "b": "restart"}
    edges = "[{name: a, on_failure: ignore}, {name: b, on_failure: restart}, {name: a}]"
    with pytest.raises(ConfigError, match=r"depends_on\[2\]: 'a' is listed twice, differently"):
        _load(config_dir, edges)
    assert _load(config_dir, "[{name: b}]") == {"b": "restart"}


@pytest.mark.parametrize(
    ("edges", "message"),
    [
        (
            "[{name: a, on_failure: later}]",
            "modules[2].depends_on[0].on_failure: expected one of restart, stop, ignore, "
            "got 'later'",
        ),
        ("[{on_failure: stop}]", "modules[2].depends_on[0].name: required key is missing"),
        (
            "[{name: a, when: x}]",
            "modules[2].depends_on[0].when: unknown key (expected one of: name, on_failure)",
        ),
        (
            "[3]",
            "modules[2].depends_on[0]: expected a module name or a mapping {name: NAME, "
            "on_failure: restart|stop|ignore}, got 3",
        ),
        ("[{name: z, on_failure: stop}]", "modules[2].depends_on: unknown module 'z'"),
        ("{a: stop}", "modules[2].depends_on: expected a list, got a mapping"),
    ],
)
def test_errors_name_file_and_field(config_dir: Path, edges: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(config_dir, edges)
    assert str(info.value).endswith("modules.yaml: " + message), str(info.value)
    assert "\n" not in str(info.value)
