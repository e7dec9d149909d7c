"""Webhook alerts against a real HTTP server on 127.0.0.1: payload, patterns, retries, the circuit
breaker, hanging endpoints, secrets and shutdown."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import wait_until
from project import Project
from webhook_server import HANG, Server

from orchestrator.config.model import ErrorHandlingSection, NotificationsSection, Webhook
from orchestrator.config.redact import Redactor
from orchestrator.notify import WebhookNotifier

FAST = ErrorHandlingSection(
    retry_max_attempts=3,
    retry_wait_min=0.01,
    retry_wait_max=0.05,
    circuit_breaker_fail_max=2,
    circuit_breaker_reset_timeout=60.0,
)
SECRET = "s3cr3t-Tok3n-value"


@pytest.fixture
def server() -> Iterator[Callable[[], Server]]:
    started: list[Server] = []

    def start() -> Server:
        started.append(Server())
        return started[-1]

    yield start
    for each in started:
        each.stop()


@pytest.fixture
def notifier() -> Iterator[Callable[..., WebhookNotifier]]:
    made: list[WebhookNotifier] = []

    def make(
        *hooks: Webhook, errors: ErrorHandlingSection = FAST, **kwargs: Any
    ) -> WebhookNotifier:
        made.append(
            WebhookNotifier(
                NotificationsSection(webhooks=hooks), errors, Redactor([SECRET]), "shop", **kwargs
            )
        )
        return made[-1]

    yield make
    for each in made:
        each.close(timeout=1.0)


def stat(notifier: WebhookNotifier, key: str) -> Any:
    (only,) = notifier.stats().values()
    return only[key]


ERROR = {"name": "worker", "error": "boom", "reason": "crashed", "exit_code": 3, "signal": None}


def test_a_matching_event_is_posted_with_the_payload_and_headers(server, notifier) -> None:
    srv = server()
    headers = {"Authorization": f"Bearer {SECRET}", "X-Team": "ops"}
    notes = notifier(Webhook(url=srv.url, headers=headers))
    assert notes.wants("module.error") and notes.wants("module.failed")
    assert not notes.wants("module.loaded")

    notes.notify("module.error", ERROR, ["starting", "Traceback: boom"])

    wait_until(lambda: stat(notes, "delivered") == 1, what="delivery", details=notes.stats)
    (request,) = srv.requests
    assert request["path"] == "/hook"
    assert request["headers"]["Authorization"] == f"Bearer {SECRET}"  # the credential, as is
    assert request["headers"]["X-Team"] == "ops"
    assert request["headers"]["Content-Type"] == "application/json"
    (payload,) = srv.payloads()
    assert payload["event"] == "module.error"
    assert payload["module"] == "worker"
    assert payload["host"] == socket.gethostname()
    assert abs(payload["time"] - time.time()) < 60
    assert payload["app"] == "shop"
    assert payload["data"] == ERROR
    assert payload["log_tail"] == ["starting", "Traceback: boom"]


def test_only_matching_events_are_sent_and_prefix_patterns_match(server, notifier) -> None:
    exact, prefix = server(), server()
    notes = notifier(Webhook(url=exact.url), Webhook(url=prefix.url, events=("module.*",)))
    for event in ("module.loaded", "app.started", "module.failed", "module.error"):
        notes.notify(event, {"name": "worker"}, [])

    # Each webhook gets its notifications in order: a wrongly sent one would come first.
    wait_until(lambda: len(exact.requests) >= 2, what="the exact webhook's deliveries")
    expected = ["module.failed", "module.error"]
    assert [p["event"] for p in exact.payloads()] == expected
    wait_until(lambda: len(prefix.requests) >= 3, what="the prefix webhook's deliveries")
    assert [p["event"] for p in prefix.payloads()] == ["module.loaded", *expected]


def test_a_500_is_retried_and_logged_once_without_secrets(server, notifier, caplog) -> None:
    caplog.set_level(logging.DEBUG)  # everything, httpx's own request log included
    srv = server()
    srv.script = [500]
    url = f"{srv.url}?token={SECRET}"
    notes = notifier(Webhook(url=url, headers={"X-Api-Key": SECRET}))

    notes.notify("module.failed", {"name": "worker", "reason": "restart limit"}, [])

    wait_until(lambda: stat(notes, "delivered") == 1, what="delivery", details=notes.stats)
    assert len(srv.requests) == 2
    assert all(r["headers"]["X-Api-Key"] == SECRET for r in srv.requests)
    assert stat(notes, "failed") == 0
    assert f"webhook {srv.url}: delivery failing (HTTP 500); retrying" in caplog.text
    assert f"webhook {srv.url}: delivering again" in caplog.text
    assert SECRET not in caplog.text and "token" not in caplog.text
    assert list(notes.stats()) == [srv.url]


def test_a_4xx_is_not_retried(server, notifier, caplog) -> None:
    srv = server()
    srv.default = 404
    notes = notifier(Webhook(url=srv.url))

    notes.notify("module.error", ERROR, [])

    wait_until(lambda: stat(notes, "failed") == 1, what="a failed delivery", details=notes.stats)
    assert len(srv.requests) == 1
    assert "delivery failing (HTTP 404); not retrying" in caplog.text


def test_the_breaker_opens_after_exhausted_deliveries(server, notifier, caplog) -> None:
    srv = server()
    srv.default = 500
    errors = ErrorHandlingSection(
        retry_max_attempts=2, retry_wait_min=0.01, retry_wait_max=0.05, circuit_breaker_fail_max=2
    )
    notes = notifier(Webhook(url=srv.url), errors=errors)

    for failed in (1, 2):
        notes.notify("module.error", ERROR, [])
        wait_until(lambda: stat(notes, "failed") == failed, what=f"failure {failed}")  # noqa: B023
    assert len(srv.requests) == 4  # two attempts each
    assert stat(notes, "breaker") == "open"

    notes.notify("module.error", ERROR, [])
    wait_until(lambda: stat(notes, "skipped_open") == 1, what="a skip", details=notes.stats)
    assert len(srv.requests) == 4
    assert caplog.text.count("delivery failing") == 1  # once per state change, not per attempt
    assert f"webhook {srv.url}: circuit open for 60s" in caplog.text


def test_a_hanging_endpoint_delays_no_other_webhook(server, notifier) -> None:
    hanging, healthy = server(), server()
    hanging.default = HANG
    notes = notifier(
        Webhook(url=hanging.url, events=("module.error",)),
        Webhook(url=healthy.url, events=("module.failed",)),
    )

    notes.notify("module.error", ERROR, [])
    wait_until(lambda: hanging.hanging == 1, what="the hanging request")
    notes.notify("module.failed", {"name": "worker"}, [])  # returns at once: it only queues

    # Under 3 s, while the first request still hangs: one webhook does not wait for another.
    wait_until(lambda: healthy.requests, timeout=2.0, what="the healthy webhook's delivery")
    assert hanging.hanging == 1
    hanging.release.set()  # only to let teardown go faster


def test_secrets_in_data_and_log_tail_are_scrubbed(server, notifier) -> None:
    srv = server()
    notes = notifier(Webhook(url=srv.url))
    data = {
        "name": "db",
        "error": f"login failed with {SECRET}",
        "config": {"password": "hunter2", "hosts": [f"x{SECRET}y", "ok"]},
        "blob": SECRET.encode(),
    }

    notes.notify("module.error", data, [f"connecting with {SECRET}", "done"])

    wait_until(lambda: srv.requests, what="delivery")
    assert SECRET.encode() not in srv.requests[0]["raw"]
    assert b"hunter2" not in srv.requests[0]["raw"]
    (payload,) = srv.payloads()
    assert payload["data"]["error"] == "login failed with ***"
    assert payload["data"]["config"] == {"password": "***", "hosts": ["x***y", "ok"]}
    assert payload["data"]["blob"] == "***"
    assert payload["log_tail"] == ["connecting with ***", "done"]


def test_a_full_queue_drops_the_oldest(server, notifier, caplog) -> None:
    srv = server()
    srv.default = HANG
    notes = notifier(Webhook(url=srv.url), queue_limit=5)
    notes.notify("module.error", {"name": "first"}, [])
    wait_until(lambda: srv.hanging == 1, what="the hanging request")

    for n in range(8):
        notes.notify("module.error", {"name": f"m{n}"}, [])

    assert stat(notes, "dropped") == 3 and stat(notes, "queued") == 5
    assert caplog.text.count("dropping the oldest") == 1
    srv.release.set()
    wait_until(lambda: stat(notes, "delivered") == 6, what="the rest delivered")
    assert [p["module"] for p in srv.payloads()] == ["first", "m3", "m4", "m5", "m6", "m7"]


@pytest.mark.timeout(15)
def test_close_returns_despite_a_hanging_endpoint(server, notifier) -> None:
    srv = server()
    srv.default = HANG
    notes = notifier(Webhook(url=srv.url))
    notes.notify("module.error", ERROR, [])
    notes.notify("module.error", ERROR, [])
    wait_until(lambda: srv.hanging == 1, what="the hanging request")
    assert notes.running

    notes.close(timeout=0.5)

    assert not notes.running
    assert stat(notes, "dropped") == 2  # the one in flight and the one queued
    notes.notify("module.error", ERROR, [])  # a no-op once closed
    assert not notes.wants("module.error")
    assert len(srv.requests) == 1


def test_without_webhooks_nothing_runs(notifier) -> None:
    notes = notifier()
    notes.notify("module.error", ERROR, [])
    assert not notes.wants("module.error")
    assert not notes.running
    assert notes.stats() == {}
    assert not any(t.name == "webhook-notifier" for t in threading.enumerate())


def test_importing_the_notifier_loads_no_http_client() -> None:
    code = (
        "import sys, orchestrator.notify.webhooks\n"
        "print(sorted(m for m in ('httpx', 'tenacity', 'asyncio') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_supervisor_alerts_a_webhook_and_a_hanging_one_does_not_slow_restarts(
    project: Project, server: Callable[[], Server]
) -> None:
    good, stuck = server(), server()
    stuck.default = HANG
    project.env["HOOK_TOKEN"] = SECRET
    project.configure(
        [{"name": "idle", "path": project.probe("idle")}],
        notifications={
            "webhooks": [
                {"url": stuck.url, "events": ["module.*"]},
                {"url": good.url, "headers": {"Authorization": "Bearer ${HOOK_TOKEN}"}},
            ]
        },
        error_handling={"retry_max_attempts": 1, "retry_wait_min": 0.01, "retry_wait_max": 0.05},
    )
    first = project.up()["modules"][0]["pid"]
    wait_until(lambda: stuck.hanging, 10, "the hanging endpoint holding module.loaded")
    for victim in range(3):  # each crash restarts at once, whatever the hanging webhook does
        pid = project.module("idle")["pid"]
        os.kill(pid, signal.SIGKILL)
        project.wait_module("idle", state="running", restarts=victim + 1)
    wait_until(lambda: len(good.payloads()) >= 3, 10, "three module.error alerts")
    alert = good.payloads()[0]
    assert alert["event"] == "module.error" and alert["module"] == "idle"
    assert alert["data"]["signal"] == signal.SIGKILL and alert["data"]["name"] == "idle"
    assert any("idle module says hi" in line for line in alert["log_tail"])
    assert good.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert first != project.module("idle")["pid"]
    assert SECRET not in (project.root / "logs" / "app.log").read_text()
    webhooks = wait_until(
        lambda: (hooks := project.status()["webhooks"])[good.url]["delivered"] >= 3 and hooks,
        10,
        "the deliveries counted in status --json",
    )
    assert webhooks[good.url]["breaker"] == "closed" and webhooks[good.url]["failed"] == 0
    assert set(webhooks) == {good.url, stuck.url}  # (how far the hanging one got: timing)
    # A reload that changes another webhook: the good one's counts go on (a drop to 0 was a
    # counter reset to Prometheus).
    delivered = webhooks[good.url]["delivered"]
    project.configure(
        [{"name": "idle", "path": project.probe("idle")}],
        notifications={
            "webhooks": [
                {"url": stuck.url, "events": ["app.*"]},
                {"url": good.url, "headers": {"Authorization": "Bearer ${HOOK_TOKEN}"}},
            ]
        },
        error_handling={"retry_max_attempts": 1, "retry_wait_min": 0.01, "retry_wait_max": 0.05},
    )
    project.cli("reload", check=0)
    assert project.status()["webhooks"][good.url]["delivered"] >= delivered
