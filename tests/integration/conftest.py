"""Fixtures for tests that run real supervisors, brokers and module processes."""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for `project`, in any import mode

from project import Project, projects


@pytest.fixture
def project() -> Iterator[Project]:
    """An empty project; whatever it started is stopped and removed after the test."""
    yield from projects()
