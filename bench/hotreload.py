"""Hot reload: a module's file is saved, the module runs again with the new code.

Only measured when the supervisor reloads at all: with `hot_reload: true`, a first save that
brings no `module.loaded` within `DETECT_TIMEOUT` means the feature is not there (row "n/a").
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench import stats
from bench.probe import BusProbe
from bench.project import BenchError, Project, running
from bench.table import Row, Target

SAMPLES = 10
DETECT_TIMEOUT = 2.0
_SAMPLE_TIMEOUT = 5.0
_SPACING = 0.3  # between saves, so that a debounce window does not merge two of them
_MODULE = "mod-dummy-consumer"


def configure(project: Project) -> Path:
    """The demo with `hot_reload: true`; returns the file to save."""
    project.copy_demo()
    project.update_main(hot_reload=True)
    return project.root / "modules-backend" / _MODULE / "__init__.py"


def _save(path: Path, generation: int) -> None:
    """Rewrite the module file with a changed trailing comment (an editor's save)."""
    source = path.read_text().split("\n# bench save ")[0]
    path.write_text(f"{source}\n# bench save {generation}\n")


def measure(project: Project, samples: int = SAMPLES) -> dict[str, Any]:
    """Save the consumer's `__init__.py` `samples` times; each sample is the ms from the write to
    the supervisor's `module.loaded` for that module (a new process that said ready). Returns
    `{"implemented": False}` if the first save brings none."""
    target = configure(project)
    latencies: list[float] = []
    with running(project) as status:
        probe = BusProbe(status["bus"]["xsub"], status["bus"]["xpub"], ["module.loaded"])
        try:
            for generation in range(samples):
                time.sleep(_SPACING)
                start = time.perf_counter()
                _save(target, generation)
                timeout = DETECT_TIMEOUT if generation == 0 else _SAMPLE_TIMEOUT
                try:
                    _, arrived = probe.wait(
                        lambda e: e.data.get("name") == _MODULE, timeout, "module.loaded"
                    )
                except BenchError:
                    if generation == 0:
                        return {"implemented": False}
                    raise
                latencies.append((arrived - start) * 1000)
        finally:
            probe.close()
    return {"implemented": True, "latencies_ms": latencies}


def rows(result: dict[str, Any]) -> list[Row]:
    if not result["implemented"]:
        return [
            Row(
                "hot reload: save -> running, median",
                None,
                "ms",
                target=Target("<=", 150),
                note="n/a (not implemented)",
                verdict_override="n/a",
            )
        ]
    latencies = result["latencies_ms"]
    return [
        Row(
            "hot reload: save -> running, median",
            stats.median(latencies),
            "ms",
            target=Target("<=", 150),
            note=f"{len(latencies)} saves; p99 {stats.percentile(latencies, 99):.0f} ms",
            extra={"samples_ms": latencies},
        )
    ]
