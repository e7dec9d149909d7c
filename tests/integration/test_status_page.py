"""The status page in a real headless Chromium: what it shows once its script has fetched
/status.json and /page.json, and a screenshot among the test's files. Skipped, saying why, where
no Chromium is installed (`apt-get install chromium` on Debian)."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from helpers import wait_until
from project import Project

from orchestrator.config import AppConfig, MetricsSection
from orchestrator.config.model import ClusterSection
from orchestrator.metrics import MetricsEndpoint

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome", "headless_shell")


def browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path is not None:
            return path
    pytest.skip(f"no headless browser found (looked for {', '.join(BROWSERS)} on PATH)")


class Tables(HTMLParser):
    """The rows of each `<tbody id=...>`, as lists of cell texts; and the body's attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[list[str]]] = {}
        self.body: dict[str, str | None] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self.body = dict(attrs)
        elif tag == "tbody":
            self._table = dict(attrs).get("id")
            self.rows[str(self._table)] = []
        elif tag == "tr" and self._table is not None:
            self.rows[self._table].append([])
        elif tag == "td" and self._table is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._table is not None and self._cell is not None:
            self.rows[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tbody":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # The virtual time budget lets the page's script fetch and refresh; it waits out the fetches.
    command = [
        binary,
        "--headless",
        "--no-sandbox",  # as root, in a container
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_the_status_page_shows_hosts_modules_errors_and_events(
    project: Project, tmp_path: Path
) -> None:
    binary = browser()
    project.configure(
        [
            {"name": "idle", "path": project.probe("idle")},
            {"name": "broken", "path": project.probe("raises"), "restart": "never"},
        ],
        metrics={"listen": "127.0.0.1:0"},
        app={"name": "shop", "version": "2.1"},
    )
    project.cli("up", "-d", check=1)  # broken did not start: said, and the rest runs
    url = project.status()["metrics"]["url"]
    wait_until(lambda: project.module("broken")["state"] == "stopped", 15, "broken stopped")

    dom = chromium(binary, tmp_path / "profile", "--dump-dom", url).stdout
    page = Tables()
    page.feed(dom)
    assert page.body.get("data-loaded") == "yes", dom[-3000:]
    assert int(page.body.get("data-refreshes") or 0) >= 2, "the page refreshes by itself"
    (host,) = page.rows["hosts"]
    assert host[0].endswith("(this host)") and host[1] == "up" and host[4:6] == ["2", "1"], host
    modules = {row[0]: row for row in page.rows["modules"]}
    assert modules["idle"][1] == "running" and modules["idle"][5].endswith(" MB")
    assert modules["broken"][1] == "stopped"
    assert "boom: the probe failed on purpose" in modules["broken"][-1]
    (error,) = page.rows["errors"]
    assert error[0] == "broken" and "boom: the probe failed on purpose" in error[3], error
    events = [(row[1], row[2]) for row in page.rows["events"]]
    assert ("module.error", "broken") in events and ("module.loaded", "idle") in events, events

    shot = tmp_path / "status-page.png"
    chromium(
        binary,
        tmp_path / "profile",
        "--hide-scrollbars",
        "--window-size=1280,1000",
        f"--screenshot={shot}",
        url,
    )
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_a_peer_row_of_the_wrong_shape_does_not_break_the_page(tmp_path: Path) -> None:
    """Rows of the other hosts come from other supervisors through the bridge: one whose
    `modules` is not a list of rows is shown with what it has, and the page still loads."""
    binary = browser()
    hosts = [
        {"host": "beta", "state": "up", "modules": "not a list"},
        {"host": "gamma", "state": "up", "modules": [None, 5, {"state": "running"}]},
        "not a row",
    ]
    config = AppConfig(
        config_dir=tmp_path,
        main_file=tmp_path / "main.yaml",
        modules_file=tmp_path / "modules.yaml",
        metrics=MetricsSection(listen=("127.0.0.1", 0)),
        cluster=ClusterSection(servers=("nats://127.0.0.1:4222",), host="alpha"),
    )
    endpoint = MetricsEndpoint(
        config,
        status=lambda: {
            "supervisor": {"pid": 1, "uptime": 5.0, "started": time.time(), "shutting_down": False},
            "modules": [],
            "system": [],
            "webhooks": {},
            "config": {"rejected": None},
        },
        loop_lag=lambda: 0.0,
        cluster=lambda: {"ok": True, "data": {"hosts": hosts}},
    )
    stop = threading.Event()

    def loop() -> None:  # the supervisor's loop, as far as the endpoint knows
        while not stop.wait(0.05):
            endpoint.tick(time.monotonic())

    assert endpoint.start() is None
    ticking = threading.Thread(target=loop)
    ticking.start()
    try:
        url = endpoint.url()
        assert url is not None

        def listed() -> bool:
            page = httpx.get(url + "page.json", timeout=10).json()
            return len(page["hosts"] or []) == 2  # "not a row" is left out by the endpoint

        wait_until(listed, 15, "the other hosts in page.json")
        page = Tables()
        page.feed(chromium(binary, tmp_path / "profile", "--dump-dom", url).stdout)
        assert page.body.get("data-loaded") == "yes", page.rows
        rows = {row[0]: row for row in page.rows["hosts"]}
        assert rows.keys() == {"alpha (this host)", "beta", "gamma"}, rows
        assert rows["beta"][4:6] == ["0", "0"] and rows["gamma"][4:6] == ["3", "1"], rows
    finally:
        stop.set()
        ticking.join()
        endpoint.close()
