"""A reload that changes `notifications` or `error_handling` builds a new notifier: each webhook of
an unchanged URL keeps its counters (Prometheus read their drop to 0 as a reset) and its circuit
breaker (an endpoint that was failing was hammered again)."""

from __future__ import annotations

from orchestrator.config.model import ErrorHandlingSection, NotificationsSection, Webhook
from orchestrator.config.redact import Redactor
from orchestrator.notify import WebhookNotifier

KEPT, GONE, NEW = "http://127.0.0.1:9/kept", "http://127.0.0.1:9/gone", "http://127.0.0.1:9/new"
ERRORS = ErrorHandlingSection(circuit_breaker_fail_max=2, circuit_breaker_reset_timeout=60.0)


def notifier(
    *hooks: Webhook, errors: ErrorHandlingSection = ERRORS, previous: WebhookNotifier | None = None
) -> WebhookNotifier:
    return WebhookNotifier(
        NotificationsSection(webhooks=hooks), errors, Redactor([]), "shop", previous=previous
    )


def test_an_unchanged_url_keeps_its_counters_and_its_open_breaker() -> None:
    before = notifier(Webhook(url=KEPT), Webhook(url=GONE))
    kept, gone = before.targets
    kept.delivered, kept.failed, kept.skipped_open, kept.dropped = 3, 5, 17, 2
    gone.delivered = 9
    for _ in range(2):
        kept.record(reachable=False)
    assert before.stats()[KEPT]["breaker"] == "open"
    changed = ErrorHandlingSection(circuit_breaker_fail_max=4, circuit_breaker_reset_timeout=30.0)
    after = notifier(
        Webhook(url=NEW), Webhook(url=KEPT, events=("module.*",)), errors=changed, previous=before
    )
    stats = after.stats()
    assert stats[KEPT] == {
        "delivered": 3,
        "failed": 5,
        "skipped_open": 17,
        "dropped": 2,
        "queued": 0,
        "breaker": "open",
    }
    assert stats[NEW]["delivered"] == 0 and stats[NEW]["breaker"] == "closed"
    assert GONE not in stats
    carried = after.targets[1]  # settings of the new config, state of the old
    assert carried._breaker.fail_max == 4 and carried._breaker.reset_timeout == 30.0


def test_a_url_listed_twice_keeps_each_ones_counters_in_order() -> None:
    before = notifier(Webhook(url=KEPT), Webhook(url=KEPT))
    for count, target in enumerate(before.targets, 1):
        target.delivered = count
    after = notifier(Webhook(url=KEPT), Webhook(url=KEPT), Webhook(url=KEPT), previous=before)
    assert [target.delivered for target in after.targets] == [1, 2, 0]
