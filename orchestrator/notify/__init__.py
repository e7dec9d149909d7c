"""Outbound alerts: built-in events sent to the webhooks that `notifications:` in `main.yaml` lists."""

from orchestrator.notify.webhooks import WebhookNotifier, close_all

__all__ = ["WebhookNotifier", "close_all"]
