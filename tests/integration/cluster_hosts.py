"""Helpers of the cluster tests: projects as hosts, their bridge's row, events across."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until
from project import Project

PATTERNS = ["x.*", "y.*", "module.*", "host.*"]


def configure(project: Project, host: str, cluster: dict[str, Any]) -> None:
    recorder = project.probe("recorder")
    project.configure(
        [
            {
                "name": "recorder",
                "path": recorder,
                "config": {"record": str(project.record_file), "patterns": PATTERNS},
            }
        ],
        cluster={"host": host, **cluster},
    )


def bridge(project: Project) -> dict[str, Any]:
    """The bridge's row of `status --json`."""
    return next(row for row in project.status()["system"] if row["name"] == "bridge")


def wait_connected(project: Project) -> dict[str, Any]:
    return wait_until(
        lambda: (row := bridge(project))["nats"].startswith("connected") and row,
        10,
        "the bridge connected to NATS",
        lambda: f"{bridge(project)}\n{project.log('app')}",
    )


def publish(project: Project, event_type: str, data: Any) -> str:
    result = project.cli("publish", event_type, json.dumps(data), "--json", check=0)
    return str(json.loads(result.stdout)["id"])


def received(project: Project, event_id: str) -> list[dict[str, Any]]:
    return [event for event in project.recorded() if event["id"] == event_id]


def wait_received(project: Project, event_id: str) -> dict[str, Any]:
    return wait_until(
        lambda: received(project, event_id),
        10,
        f"event {event_id} recorded",
        lambda: f"{project.recorded()}\n{project.log('app')}",
    )[0]


def crosses(source: Project, sink: Project) -> Callable[[], bool]:
    """A predicate that publishes one more event on `source` each time it is asked, and is true
    once any of them has reached `sink`."""
    sent: list[str] = []

    def crossed() -> bool:
        sent.append(publish(source, "x.failover", {}))
        return any(received(sink, event_id) for event_id in sent)

    return crossed


def project_modules(project: Project) -> list[dict[str, Any]]:
    recorder = "../modules/recorder.py"
    return [
        {
            "name": "recorder",
            "path": recorder,
            "config": {"record": str(project.record_file), "patterns": PATTERNS},
        }
    ]


def make_certificates(directory: Path) -> None:
    """A CA, and a server certificate for 127.0.0.1 that it signed (skips without openssl)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make test certificates with")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=directory)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    )
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    )
