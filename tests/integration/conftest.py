"""Fixtures for tests that run real supervisors, brokers and module processes."""

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for `project`, in any import mode

from cluster_hosts import configure, wait_connected
from nats_server import NatsServer
from project import Project, projects


@pytest.fixture
def project() -> Iterator[Project]:
    """An empty project; whatever it started is stopped and removed after the test."""
    yield from projects()


@pytest.fixture(scope="module")
def server() -> Iterator[NatsServer]:
    """One nats-server for the cluster tests of a test file."""
    with tempfile.TemporaryDirectory(prefix="nats-") as tmp:
        nats = NatsServer(Path(tmp) / "nats.log")
        yield nats
        nats.stop()


@pytest.fixture(scope="module")
def hosts(server: NatsServer) -> Iterator[tuple[Project, Project]]:
    """alpha (exports x.* and module.*) and beta (exports everything), both up and connected:
    shared by the tests of a file, which leave them as they found them."""
    alpha_projects, beta_projects = projects(), projects()
    alpha, beta = next(alpha_projects), next(beta_projects)
    try:
        configure(alpha, "alpha", {"servers": [server.url], "export": ["x.*", "module.*"]})
        configure(beta, "beta", {"servers": [server.url]})
        alpha.up()
        beta.up()
        wait_connected(alpha)
        wait_connected(beta)
        yield alpha, beta
    finally:
        for generator in (alpha_projects, beta_projects):
            generator.close()
