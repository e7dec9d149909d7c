"""A module that floods its output: every line reaches its log, in order and stamped (its own, a
subprocess's on fd 1, its fd 2); a module printing forever blocks neither itself nor the
supervisor; rotated logs are gzipped, complete and private."""

from __future__ import annotations

import gzip
import json
import re
import stat

from helpers import wait_until
from project import Project
from webhook_server import Server

FLOODER = """
import os
import subprocess
import sys
import threading
from typing import Any

_stop = threading.Event()


def initialize(event_bus: object, config: dict[str, Any]) -> None:
    for n in range(int(config["lines"])):
        print(f"flood {n:06d} " + "x" * 40)
    code = "import os; os.write(1, b'from a subprocess on fd 1\\\\n')"
    subprocess.run([sys.executable, "-c", code], check=True)
    os.write(2, b"from fd 2 of the module itself\\n")
    print("flood batch done", flush=True)
    if config.get("forever"):
        threading.Thread(target=_forever, daemon=True).start()


def _forever() -> None:
    n = 0
    while not _stop.is_set():
        print(f"forever {n}")
        n += 1


def shutdown() -> None:
    _stop.set()
"""

DIES_TALKING = """
import os
import sys
import threading
import time


def initialize(event_bus: object, config: object) -> None:
    def talk_and_die() -> None:
        time.sleep(0.3)
        for n in range(3000):
            print(f"chatter {n}")
        sys.stdout.write("last words, no newline")
        sys.stdout.flush()
        os._exit(3)

    threading.Thread(target=talk_and_die, daemon=True).start()


def shutdown() -> None:
    pass
"""

_STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


def _log_text(project: Project, name: str) -> str:
    path = project.root / "logs" / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def _log_with(project: Project, name: str, marker: str) -> str:
    """The module's log once it holds `marker`; "" before."""
    text = _log_text(project, name)
    return text if marker in text else ""


def _batch(text: str) -> list[str]:
    """The lines of the flooder's batch, up to `flood batch done`, without their stamps."""
    lines = [_STAMP.sub("", line, count=1) for line in text.splitlines()]
    wanted = ("flood ", "from a subprocess", "from fd 2")
    return [line for line in lines if line.startswith(wanted)]


def test_a_flood_is_captured_whole_and_blocks_nobody(project: Project) -> None:
    lines = 20_000
    project.configure(
        [
            {
                "name": "flooder",
                "path": project.write_module("flooder.py", FLOODER),
                "config": {"lines": lines, "forever": True},
            },
            {"name": "neighbour", "path": project.probe("idle")},
        ],
        logging={"level": "INFO", "directory": "logs", "max_file_size_mb": 200},
    )
    project.up()
    text = wait_until(
        lambda: _log_with(project, "flooder", "flood batch done"),
        30,
        "the flooder's batch in its log",
        lambda: _log_text(project, "flooder")[-500:],
    )
    batch = _batch(text)
    expected = [f"flood {n:06d} " + "x" * 40 for n in range(lines)]
    assert batch[:lines] == expected, "lines missing or out of order"
    assert batch[lines:] == [
        "from a subprocess on fd 1",
        "from fd 2 of the module itself",
        "flood batch done",
    ]
    flood_lines = [line for line in text.splitlines() if "flood " in line or "from " in line]
    assert all(_STAMP.match(line) for line in flood_lines), "a line without its time"

    # It prints forever now: the supervisor still answers, restarts a neighbour, and the
    # flooder is neither restarted nor stuck (its output keeps coming).
    project.cli("restart", "neighbour", check=0)
    row = project.module("flooder")
    assert (row["state"], row["restarts"]) == ("running", 0), row
    size = (project.root / "logs" / "flooder.log").stat().st_size
    wait_until(
        lambda: (project.root / "logs" / "flooder.log").stat().st_size > size + 100_000,
        10,
        "the flooder's output to keep coming",
    )
    project.cli("down", "--timeout", "5", check=0, timeout=30)


def test_a_flood_in_json_logs_is_one_object_per_line(project: Project) -> None:
    lines = 5_000
    project.configure(
        [
            {
                "name": "flooder",
                "path": project.write_module("flooder.py", FLOODER),
                "config": {"lines": lines},
            }
        ],
        logging={"level": "INFO", "directory": "logs", "format": "json"},
    )
    project.up()
    text = wait_until(
        lambda: _log_with(project, "flooder", '"flood batch done"'),
        30,
        "the flooder's batch in its log",
    )
    records = [json.loads(line) for line in text.splitlines()]  # every line is an object
    printed = [r["message"] for r in records if r["logger"] == "print"]
    assert [m for m in printed if m.startswith("flood ")][:lines] == [
        f"flood {n:06d} " + "x" * 40 for n in range(lines)
    ]
    assert "from a subprocess on fd 1" in printed and "from fd 2 of the module itself" in printed
    assert all(
        r["module"] == "flooder" and r["level"] == "INFO" for r in records if r["logger"] == "print"
    )


def test_rotated_module_logs_are_gzipped_whole_and_private(project: Project) -> None:
    project.configure(
        [
            {
                "name": "chatter",
                "path": project.probe("chatter"),
                "config": {"interval": 0.001, "pad": 200},
            }
        ],
        logging={
            "level": "INFO",
            "directory": "logs",
            "max_file_size_mb": 0.002,
            "backup_count": 3,
            "compress": "gzip",
            "rotate": "daily",
            "max_age": "7d",
        },
    )
    project.up()
    logs = project.root / "logs"
    wait_until((logs / "chatter.log.3.gz").exists, 20, "chatter.log to rotate three times")
    project.cli("down", "--timeout", "5", check=0, timeout=30)  # waits for compressions
    packed = sorted(logs.glob("chatter.log.*"))
    assert [p.name for p in packed] == ["chatter.log.1.gz", "chatter.log.2.gz", "chatter.log.3.gz"]
    numbers: list[int] = []
    for path in reversed(packed):  # oldest first
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        text = gzip.decompress(path.read_bytes()).decode()
        numbers += [int(n) for n in re.findall(r"chatter (\d+) ", text)]
    numbers += [int(n) for n in re.findall(r"chatter (\d+) ", (logs / "chatter.log").read_text())]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), "a gap or a repeat"


def test_a_crashed_modules_last_words_are_in_its_log_before_its_exit_is_told(
    project: Project,
) -> None:
    """The webhook of a crash carries the log's last lines as they were when the exit was
    handled: the pipe is read to its end first, even if it was resting."""
    hook = Server()
    try:
        project.configure(
            [
                {
                    "name": "talker",
                    "path": project.write_module("talker.py", DIES_TALKING),
                    "restart": "never",
                }
            ],
            notifications={"webhooks": [{"url": hook.url, "events": ["module.error"]}]},
        )
        project.up()
        payload = wait_until(
            lambda: next(iter(hook.payloads()), None), 20, "the module.error webhook"
        )
        tail = payload["log_tail"]
        assert tail and _STAMP.sub("", tail[-1]) == "last words, no newline", tail
    finally:
        hook.stop()
