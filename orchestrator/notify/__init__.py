"""Outbound alerts: built-in events sent to the webhooks that `notifications:` in `main.yaml` lists."""

from orchestrator.notify.webhooks import WebhookNotifier

__all__ = ["WebhookNotifier"]
