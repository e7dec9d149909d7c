"""`cluster:` in main.yaml: what it accepts, its defaults, one message per error, secrets hidden."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from orchestrator.config import ConfigError, Redactor, load_config
from orchestrator.config.model import ClusterCredentials, ClusterTLS

SERVERS = "servers: [nats://127.0.0.1:4222]"


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("NATS_TOKEN", raising=False)
    directory = tmp_path / "config"
    directory.mkdir()
    (directory / "modules.yaml").write_text("modules: []\n")
    return directory


def load(config: Path, main: str, env: str | None = None) -> object:
    (config / "main.yaml").write_text(main)
    if env is not None:
        (config / ".env").write_text(env)
    return load_config(config)


def error(config: Path, main: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(config, main)
    return str(info.value).split("main.yaml: ", 1)[1]


def test_absent_or_null_is_off(config: Path) -> None:
    assert load_config_of(config, "").cluster is None
    assert load_config_of(config, "cluster: null").cluster is None


def load_config_of(config: Path, main: str) -> object:
    (config / "main.yaml").write_text(main)
    return load_config(config)


def test_defaults(config: Path) -> None:
    cluster = load_config_of(config, f"cluster: {{{SERVERS}}}").cluster  # type: ignore[attr-defined]
    assert cluster.servers == ("nats://127.0.0.1:4222",)
    assert cluster.name == "orchestrator"
    assert cluster.host == socket.gethostname()
    assert cluster.export == ("*",)
    assert cluster.credentials is None and cluster.tls is None


def test_everything_set(config: Path, tmp_path: Path) -> None:
    (config / "secrets").mkdir()
    for name in ("secrets/x.creds", "ca.pem"):
        (config / name).write_text("")
    for name in ("c.pem", "k.pem"):
        (tmp_path / name).write_text("")
    main = (
        "cluster:\n  servers: [nats://a:4222, tls://b:4222]\n  name: prod-1\n  host: edge.box_1\n"
        "  export: ['orders.*', sensor.read]\n  credentials: {creds: secrets/x.creds}\n"
        f"  tls: {{ca: ca.pem, cert: {tmp_path}/c.pem, key: {tmp_path}/k.pem}}\n"
    )
    cluster = load_config_of(config, main).cluster  # type: ignore[attr-defined]
    assert cluster.servers == ("nats://a:4222", "tls://b:4222")
    assert (cluster.name, cluster.host) == ("prod-1", "edge.box_1")
    assert cluster.export == ("orders.*", "sensor.read")
    assert cluster.credentials == ClusterCredentials(creds=config.resolve() / "secrets/x.creds")
    assert cluster.tls == ClusterTLS(
        ca=config.resolve() / "ca.pem", cert=tmp_path / "c.pem", key=tmp_path / "k.pem"
    )


ERRORS = [
    ("cluster: [nats://a]", "cluster: expected a mapping, got a list"),
    ("cluster: {name: x}", "cluster.servers: required key is missing"),
    (
        "cluster: {servers: []}",
        "cluster.servers: expected a non-empty list of nats:// or tls:// URLs",
    ),
    ("cluster: {servers: nats://a}", "cluster.servers: expected a list, got 'nats://a'"),
    (
        "cluster: {servers: [nats://a, 'http://b:80']}",
        "cluster.servers[1]: expected a nats:// or tls:// URL, got 'http://b:80'",
    ),
    (
        "cluster: {servers: ['nats://bob:s3cr3t pw@nats-1:4222']}",
        "cluster.servers[0]: a user or password in a server URL is not allowed: use "
        "cluster.credentials",
    ),
    (
        f"cluster: {{{SERVERS}, name: a.b}}",
        "cluster.name: expected a NATS subject token (letters, digits, _ and -), got 'a.b'",
    ),
    (
        f"cluster: {{{SERVERS}, host: 'a b'}}",
        "cluster.host: expected a host name (letters, digits, _, - and .), got 'a b'",
    ),
    (
        f"cluster: {{{SERVERS}, export: ['x y']}}",
        "cluster.export[0]: invalid subscription pattern 'x y': expected an event type "
        "('test.ping'), a prefix ('test.*') or '*'",
    ),
    (
        f"cluster: {{{SERVERS}, colour: red}}",
        "cluster.colour: unknown key (expected one of: credentials, export, host, name, "
        "servers, tls)",
    ),
    (
        f"cluster: {{{SERVERS}, credentials: {{token: abcd, creds: main.yaml}}}}",
        "cluster.credentials: expected exactly one of: token, user + password, nkey_seed, "
        "creds; got token and creds",
    ),
    (
        f"cluster: {{{SERVERS}, credentials: {{user: me}}}}",
        "cluster.credentials.password: user and password go together",
    ),
    (
        f"cluster: {{{SERVERS}, credentials: {{password: hunter22}}}}",
        "cluster.credentials.user: user and password go together",
    ),
    (
        f"cluster: {{{SERVERS}, credentials: {{token: 42}}}}",
        "cluster.credentials.token: expected a non-empty string, got ***",
    ),
    (
        f"cluster: {{{SERVERS}, credentials: {{nkey: x}}}}",
        "cluster.credentials.nkey: unknown key (expected one of: creds, nkey_seed, password, "
        "token, user)",
    ),
    (
        f"cluster: {{{SERVERS}, tls: {{ca: nowhere.pem}}}}",
        "cluster.tls.ca: no such file: {config}/nowhere.pem",
    ),
    (
        f"cluster: {{{SERVERS}, credentials: {{creds: ../x.creds}}}}",
        "cluster.credentials.creds: no such file: {root}/x.creds",
    ),
    (
        f"cluster: {{{SERVERS}, tls: {{cert: main.yaml}}}}",
        "cluster.tls.key: cert and key go together",
    ),
    (
        f"cluster: {{{SERVERS}, tls: {{ca: ''}}}}",
        "cluster.tls.ca: expected a non-empty string, got ''",
    ),
]


@pytest.mark.parametrize(("main", "message"), ERRORS, ids=[m for _, m in ERRORS])
def test_error_messages(config: Path, main: str, message: str) -> None:
    expected = message.format(config=config.resolve(), root=config.resolve().parent)
    assert error(config, main) == expected


def test_a_token_from_the_environment_is_a_secret_and_never_shown(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NATS_TOKEN", "s3cr3t-token-value")
    loaded = load(config, f"cluster: {{{SERVERS}, credentials: {{token: '${{NATS_TOKEN}}'}}}}")
    cluster = loaded.cluster  # type: ignore[attr-defined]
    assert cluster.credentials.token == "s3cr3t-token-value"
    assert "s3cr3t-token-value" in loaded.secrets  # type: ignore[attr-defined]
    assert "s3cr3t" not in repr(cluster)
    shown = Redactor(()).redact({"token": "written-in-the-file", "password": "pw-in-the-file"})
    assert shown == {"token": "***", "password": "***"}
