"""Fixtures for the hostile tests: what a module, a peer, a CLI call or a config can throw at a
running system. They use the same real projects as tests/integration/."""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))  # for `project`

from project import Project, projects


@pytest.fixture
def project() -> Iterator[Project]:
    """An empty project; whatever it started is stopped and removed after the test."""
    yield from projects()
