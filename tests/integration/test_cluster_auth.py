"""Cluster mode against NATS servers that authenticate: a token, an NKey, TLS with a CA of our own.
A wrong credential leaves the host running, and its bridge's status row says why."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_hosts import bridge, configure, crosses, make_certificates, wait_connected
from helpers import wait_until
from nats_server import NatsServer
from project import projects

TOKEN = "t0ken-for-the-cluster-tests"


@pytest.fixture(scope="module")
def token_server() -> Iterator[NatsServer]:
    with tempfile.TemporaryDirectory(prefix="nats-") as tmp:
        nats = NatsServer(Path(tmp) / "nats.log", "--auth", TOKEN)
        yield nats
        nats.stop()


def test_a_token_server_admits_the_right_token_and_names_a_wrong_one(
    token_server: NatsServer,
) -> None:
    good_projects, bad_projects = projects(), projects()
    good, bad = next(good_projects), next(bad_projects)
    try:
        (good.config_dir / ".env").write_text(f"NATS_TOKEN={TOKEN}\n")
        configure(
            good,
            "alpha",
            {"servers": [token_server.url], "credentials": {"token": "${NATS_TOKEN}"}},
        )
        configure(
            bad,
            "beta",
            {"servers": [token_server.url], "credentials": {"token": "wrong-token-value"}},
        )
        good.up()
        bad.up()
        wait_connected(good)
        row = wait_until(
            lambda: (row := bridge(bad))["nats"].startswith("disconnected") and row,
            10,
            "the bridge with a wrong token says why",
        )
        assert "authorization" in row["nats"].lower(), row
        assert bad.module("recorder")["state"] == "running"
        table = bad.cli("status", check=0).stdout
        assert "nats disconnected" in table, table
        for project in (good, bad):  # neither token shows, in status or in the log
            shown = project.cli("status", "--json", check=0).stdout + project.log("app")
            assert TOKEN not in shown and "wrong-token-value" not in shown
    finally:
        for generator in (good_projects, bad_projects):
            generator.close()


def test_nkey_authentication(tmp_path: Path) -> None:
    """A server that admits one NKey user: the bridge signs its nonce with the seed file."""
    nkeys = pytest.importorskip("nkeys")
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    server_conf = tmp_path / "nats.conf"
    server_conf.write_text(f'authorization {{ users = [ {{ nkey: "{public}" }} ] }}\n')
    node = NatsServer(tmp_path / "nats.log", "-c", str(server_conf))
    gamma_projects = projects()
    gamma = next(gamma_projects)
    try:
        (gamma.config_dir / "user.nk").write_bytes(seed + b"\n")
        configure(gamma, "gamma", {"servers": [node.url], "credentials": {"nkey_seed": "user.nk"}})
        gamma.up()
        wait_connected(gamma)
        (gamma.config_dir / "other.nk").write_bytes(
            nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER) + b"\n"
        )
        configure(gamma, "gamma", {"servers": [node.url], "credentials": {"nkey_seed": "other.nk"}})
        gamma.cli("reload", check=0)
        row = wait_until(
            lambda: (row := bridge(gamma))["nats"].startswith("disconnected") and row,
            10,
            "an unknown NKey refused",
        )
        assert "authorization" in row["nats"].lower(), row
    finally:
        gamma_projects.close()
        node.stop()


def test_tls_with_the_cluster_ca(tmp_path: Path) -> None:
    make_certificates(tmp_path)
    tls = [
        "--tls",
        "--tlscert",
        str(tmp_path / "server.pem"),
        "--tlskey",
        str(tmp_path / "server.key"),
    ]
    node = NatsServer(tmp_path / "nats.log", *tls)
    gamma_projects = projects()
    gamma = next(gamma_projects)
    try:
        shutil.copy(tmp_path / "ca.pem", gamma.config_dir / "ca.pem")
        url = f"tls://127.0.0.1:{node.port}"
        configure(gamma, "gamma", {"servers": [url], "tls": {"ca": "ca.pem"}})
        gamma.up()
        assert wait_connected(gamma)["nats"] == f"connected to {url}"
        configure(gamma, "gamma", {"servers": [url]})  # the system CAs do not know ours
        gamma.cli("reload", check=0)
        row = wait_until(
            lambda: (row := bridge(gamma))["nats"].startswith("disconnected") and row,
            10,
            "a server certificate that no known CA signed, refused",
        )
        assert "certificate" in row["nats"].lower(), row
    finally:
        gamma_projects.close()
        node.stop()


def test_only_hosts_with_the_clusters_credentials_control_each_other(tmp_path: Path) -> None:
    """alpha and beta join as user `ops`, gamma as `monitor`: NATS admits all three, but beta
    takes a restart from alpha only; gamma's request is refused (exit 1), and says why. `ops`
    has only the permissions the README lists (for any host: wildcards)."""
    subjects = '["orchestrator.ev.>", "orchestrator.host.>", "orchestrator.ctl.>", "_INBOX.orchestrator.>"]'
    server_conf = tmp_path / "nats.conf"
    server_conf.write_text(
        'authorization { users = [ {user: "ops", password: "ops-pass-1", permissions:'
        f" {{publish: {subjects}, subscribe: {subjects}}}}},"
        ' {user: "monitor", password: "monitor-pass-2"} ] }\n'
    )
    node = NatsServer(tmp_path / "nats.log", "-c", str(server_conf))
    generators = [projects() for _ in range(3)]
    alpha, beta, gamma = (next(generator) for generator in generators)
    try:
        for project, host, user in ((alpha, "alpha", "ops"), (beta, "beta", "ops")):
            credentials = {"user": user, "password": "ops-pass-1"}
            configure(project, host, {"servers": [node.url], "credentials": credentials})
        credentials = {"user": "monitor", "password": "monitor-pass-2"}
        configure(gamma, "gamma", {"servers": [node.url], "credentials": credentials})
        for project in (alpha, beta, gamma):
            project.up()
            wait_connected(project)
        wait_until(crosses(alpha, beta), 10, "an event from alpha to beta")
        wait_until(crosses(beta, alpha), 10, "an event from beta to alpha")
        before = beta.module("recorder")["pid"]
        alpha.cli("restart", "beta/recorder", check=0)
        assert beta.module("recorder")["pid"] != before
        refused = gamma.cli("restart", "beta/recorder", check=1)
        assert "refused by host 'beta': not signed with this cluster's credentials" in (
            refused.stderr
        ), refused.stderr
        assert "refused a control request" in beta.log("app")
        for project in (alpha, beta, gamma):  # no password shows, nor a permission violation
            log = project.log("app")
            assert "violation" not in log.lower(), log
            assert "ops-pass-1" not in log and "monitor-pass-2" not in log
    finally:
        for generator in generators:
            generator.close()
        node.stop()
