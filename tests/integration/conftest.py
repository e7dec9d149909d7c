"""Fixtures for tests that run real supervisors, brokers and module processes."""

from collections.abc import Iterator

import pytest
from project import Project, projects


@pytest.fixture
def project() -> Iterator[Project]:
    """An empty project; whatever it started is stopped and removed after the test."""
    yield from projects()
