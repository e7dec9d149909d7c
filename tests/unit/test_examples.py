"""The pipeline example in examples/ is the one the README shows, and a valid project."""

from __future__ import annotations

import re
from pathlib import Path

from orchestrator.config import load_config

REPO = Path(__file__).resolve().parents[2]
PIPELINE = REPO / "examples" / "pipeline"


def test_the_readme_shows_the_pipeline_project_as_it_is() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("### A worked example: a pipeline", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```\w+\n(.*?)```", section, re.S)
    assert len(blocks) == 4
    for body in blocks:
        path = body.splitlines()[0].lstrip("# ").split(":")[0]
        assert (PIPELINE / path).read_text() == body, path


def test_the_pipeline_config_is_valid() -> None:
    config = load_config(PIPELINE / "config")
    assert [spec.name for spec in config.enabled_instances] == [
        "producer",
        "worker#1",
        "worker#2",
        "worker#3",
        "worker#4",
        "consumer",
    ]
    assert config.modules[0].schedule == "* * * * *"
