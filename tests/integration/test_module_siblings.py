"""Files beside a file module import as they would for `python module.py`, but never in place of
what the SDK imports for itself: `retry` and `circuit_breaker` load tenacity and pybreaker on
first use, after the module's directory went first on `sys.path` (see also
test_isolation.py's modules named like Python modules)."""

from __future__ import annotations

import pytest
from helpers import wait_until
from project import Project

SHADOW = "raise ImportError('a file of the module, not the {name} the SDK imports')\n"

USES_RESILIENCE = """
import helper
from module_sdk import circuit_breaker, retry


@retry(max_attempts=2)
def answer():
    return helper.ANSWER


@circuit_breaker
def guarded():
    return answer()


def initialize(event_bus, config):
    print("answer", guarded(), flush=True)


def shutdown():
    pass
"""


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_a_file_beside_a_module_named_like_an_sdk_dependency_does_not_replace_it(
    project: Project, start_method: str
) -> None:
    # tenacity.py and pybreaker.py broke `from module_sdk import retry` with their ImportError;
    # calendar.py stands for what those two import in turn (the module process had not yet).
    for name in ("tenacity", "pybreaker", "calendar"):
        (project.root / "modules" / f"{name}.py").write_text(SHADOW.format(name=name))
    (project.root / "modules" / "helper.py").write_text("ANSWER = 42\n")  # still its own
    path = project.write_module("resilient.py", USES_RESILIENCE)
    project.configure([{"name": "resilient", "path": path, "start_method": start_method}])
    project.up()
    wait_until(
        lambda: "answer 42" in project.log("resilient"),
        10,
        "the module's line",
        lambda: project.log("resilient"),
    )
    assert "a file of the module" not in project.log("resilient")
