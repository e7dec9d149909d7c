"""`logging.format: json`: one JSON object per line in app.log and each module's log, and the
module's own `log_level`; in text logs, the lines a module prints get the time too."""

from __future__ import annotations

import json
import re
from typing import Any

from helpers import wait_until
from project import Project

SECRET = 'se"cr\\et-value-1'  # a quote and a backslash: escaped in JSON, and still hidden

TALKER = """
import logging

log = logging.getLogger("talker.work")


def initialize(event_bus, config):
    log.debug("debug detail")
    log.info("info line, token %s", config["token"])
    try:
        raise ValueError("bad thing")
    except ValueError:
        log.exception("it failed")
    print("printed line", flush=True)
    print("done", flush=True)


def shutdown():
    pass
"""


def lines_of(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line]


def done(rows: list[dict[str, Any]]) -> bool:
    return any(row["message"] == "done" for row in rows)


def test_json_logs_for_the_supervisor_and_the_modules(project: Project) -> None:
    talker = project.write_module("talker.py", TALKER)
    project.env["TALKER_TOKEN"] = SECRET
    project.configure(
        [
            {
                "name": "loud",
                "path": talker,
                "log_level": "debug",
                "config": {"token": "${TALKER_TOKEN}"},
            },
            {"name": "quiet", "path": talker, "config": {"token": "${TALKER_TOKEN}"}},
        ],
        logging={"level": "INFO", "directory": "logs", "format": "json"},
    )
    project.up()
    loud = wait_until(
        lambda: (rows := lines_of(project.log("loud"))) and done(rows) and rows,
        10,
        "loud's log to end with its last print",
        lambda: project.log("loud"),
    )
    for row in loud:
        assert {"time", "level", "module", "logger", "message"} <= set(row), row
        assert row["module"] == "loud" and re.match(r"\d{4}-\d\d-\d\dT", row["time"]), row
    by_message = {row["message"]: row for row in loud}
    assert by_message["debug detail"]["level"] == "DEBUG"  # its own log_level
    assert by_message["info line, token ***"]["logger"] == "talker.work"
    failed = by_message["it failed"]
    assert failed["level"] == "ERROR" and "ValueError: bad thing" in failed["exception"]
    assert by_message["printed line"]["logger"] == "print"
    quiet = wait_until(
        lambda: (rows := lines_of(project.log("quiet"))) and done(rows) and rows,
        10,
        "quiet's log",
    )
    assert "debug detail" not in {row["message"] for row in quiet}  # logging.level: INFO
    app = lines_of(project.log("app"))
    assert app and all(row["module"] == "app" for row in app)
    assert any("loud running" in row["message"] for row in app), app[-5:]
    for name in ("app", "loud", "quiet"):
        text = project.log(name)
        assert SECRET not in text and json.dumps(SECRET)[1:-1] not in text


def test_printed_lines_get_the_time_in_text_logs(project: Project) -> None:
    talker = project.write_module("talker.py", TALKER)
    project.configure([{"name": "talker", "path": talker, "config": {"token": "x"}}])
    project.up()
    text = wait_until(
        lambda: re.search(r" done$", log := project.log("talker"), re.MULTILINE) and log,
        10,
        "the last print",
    )
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "
    assert re.search(rf"^{stamp}printed line$", text, re.MULTILINE), text
    assert re.search(rf"^{stamp}INFO talker.work: info line", text, re.MULTILINE), text
    assert not re.search(rf"{stamp}{stamp}", text), text  # logging's own lines: stamped once
