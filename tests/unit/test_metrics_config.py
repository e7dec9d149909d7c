"""`metrics:` in main.yaml: HOST:PORT parsing, the loopback rule, and errors naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import ConfigError, MetricsSection, load_config


def load(tmp_path: Path, main: str) -> MetricsSection:
    (tmp_path / "main.yaml").write_text(main)
    (tmp_path / "modules.yaml").write_text("modules: []")
    return load_config(tmp_path).metrics


def test_off_by_default(tmp_path: Path) -> None:
    section = load(tmp_path, "")
    assert section == MetricsSection() and section.listen is None
    assert load(tmp_path, "metrics: {listen: null}").listen is None


@pytest.mark.parametrize(
    ("text", "listen"),
    [
        ("metrics: {listen: '127.0.0.1:9464'}", ("127.0.0.1", 9464)),
        ("metrics: {listen: 'localhost:0'}", ("localhost", 0)),
        ("metrics: {listen: '[::1]:9464'}", ("::1", 9464)),
        ("metrics: {listen: '0.0.0.0:9464', allow_remote: true}", ("0.0.0.0", 9464)),
        ("metrics: {listen: '[::]:80', allow_remote: true}", ("::", 80)),
    ],
)
def test_listen_forms(tmp_path: Path, text: str, listen: tuple[str, int]) -> None:
    assert load(tmp_path, text).listen == listen


FORM = (
    "expected HOST:PORT (127.0.0.1:9464, [::1]:9464, localhost:9464; port 0 picks a free one), got "
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("metrics: {listen: 9464}", "metrics.listen: " + FORM + "9464"),
        ("metrics: {listen: '9464'}", "metrics.listen: " + FORM + "'9464'"),
        ("metrics: {listen: ':9464'}", "metrics.listen: " + FORM + "':9464'"),
        ("metrics: {listen: '::1:9464'}", "metrics.listen: " + FORM + "'::1:9464'"),
        ("metrics: {listen: '127.0.0.1:70000'}", "metrics.listen: " + FORM + "'127.0.0.1:70000'"),
        ("metrics: {listen: 'example.com:80'}", "metrics.listen: " + FORM + "'example.com:80'"),
        ("metrics: {listen: '127.0.0.1:-1'}", "metrics.listen: " + FORM + "'127.0.0.1:-1'"),
        (
            "metrics: {listen: '10.1.2.3:9464'}",
            "metrics.listen: '10.1.2.3:9464' is not on a loopback address: the metrics endpoint and status"
            " page have no authentication; set `metrics.allow_remote: true` to serve them to"
            " other hosts (behind a firewall or a proxy)",
        ),
        (
            "metrics: {allow_remote: 'yes'}",
            "metrics.allow_remote: expected true or false, got 'yes'",
        ),
        (
            "metrics: {port: 9464}",
            "metrics.port: unknown key (expected one of: allow_remote, listen)",
        ),
        ("metrics: [1]", "metrics: expected a mapping, got a list"),
    ],
)
def test_errors_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert str(info.value) == f"{tmp_path / 'main.yaml'}: {message}"


def test_a_secret_port_is_never_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METRICS_ADDR", "10.9.8.7:9999")
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "metrics: {listen: '${METRICS_ADDR}'}")
    assert "10.9.8.7" not in str(info.value) and "***" in str(info.value)
