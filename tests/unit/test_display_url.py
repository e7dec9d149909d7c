"""A webhook's URL as logs, `status` and /metrics show it: cut to scheme, host and path, and
never a piece of a secret, even one the cut would split (a whole `${HOOK_URL}`, say)."""

from __future__ import annotations

import pytest

from orchestrator.config.model import ErrorHandlingSection, NotificationsSection, Webhook
from orchestrator.config.redact import Redactor
from orchestrator.notify import WebhookNotifier
from orchestrator.notify.payload import display_url

TOKEN = "SECRETDISCORDTOKEN"


@pytest.mark.parametrize(
    ("url", "secret", "shown"),
    [
        # Nothing secret: the query, fragment and user info go, the host is lowercased.
        ("https://user:pw@Hooks.Example:8443/a/b?q=1#f", None, "https://hooks.example:8443/a/b"),
        # The whole URL is a secret: the cut would have shown most of it.
        (f"https://discord.example/api/webhooks/1/{TOKEN}?wait=true", "*", "https://***"),
        (f"https://Hooks.Slack.com/services/T1/{TOKEN}", "*", "https://***"),
        (f"https://hooks.example/{TOKEN}#frag", "*", "https://***"),
        (f"https://user:pw@hooks.example/{TOKEN}", "*", "https://***"),
        # A secret in the path: the host still says where notices go.
        (f"https://hooks.example/services/{TOKEN}", TOKEN, "https://hooks.example/***"),
        (
            f"https://hooks.example/services/{TOKEN}?wait=1",
            f"{TOKEN}?wait",
            "https://hooks.example/***",
        ),
        # A secret only where nothing is shown: the usual cut.
        (f"https://user:{TOKEN}@hooks.example/x?y=1", TOKEN, "https://hooks.example/x"),
        (f"https://hooks.example/x?token={TOKEN}", TOKEN, "https://hooks.example/x"),
        # A secret in the host (a `${HOOKHOST}`): the port and path still tell webhooks apart.
        (f"https://{TOKEN}.example/x", TOKEN, "https://***/x"),
        ("http://127.0.0.1:8001/hook", "127.0.0.1", "http://***:8001/hook"),
        ("http://[fd00::1234]:8001/hook", "fd00::1234", "http://***:8001/hook"),
        ("http://127.0.0.1:8001/hook", "127.0.0.1:8001", "http://***/hook"),
        # A secret in the port alone.
        ("http://hooks.example:18001/hook", "18001", "http://hooks.example:***/hook"),
        ("http://hooks.example:18001/hook", "18001/hook", "http://hooks.example:***/***"),
    ],
)
def test_no_piece_of_a_secret_is_shown(url: str, secret: str | None, shown: str) -> None:
    redactor = Redactor([url if secret == "*" else secret] if secret else [])
    assert display_url(url, redactor) == shown
    assert TOKEN not in display_url(url, redactor) or secret is None


def test_a_secret_in_the_host_and_one_in_the_path_leave_the_port() -> None:
    redactor = Redactor(["10.1.2.3", TOKEN])
    assert display_url(f"http://10.1.2.3:8001/h/{TOKEN}", redactor) == "http://***:8001/***"


def test_webhooks_behind_a_secret_host_keep_distinct_labels() -> None:
    """Eight receivers on one `${HOOKHOST}` each show their own port, none the host; webhooks
    with nothing shown to tell them apart are numbered by their place in the list."""
    host = "127.0.0.1"
    hooks = [Webhook(url=f"http://{host}:{8001 + i}/hook") for i in range(8)]
    hooks += [Webhook(url=f"https://hooks.example/x?token={TOKEN}{i}") for i in range(2)]
    assert names(hooks, [host]) == [
        *(f"http://***:{8001 + i}/hook" for i in range(8)),
        "https://hooks.example/x",
        "https://hooks.example/x #10",
    ]
    whole = [Webhook(url=f"https://hooks.example/{TOKEN}{i}") for i in range(3)]
    secrets = [hook.url for hook in whole]
    assert names(whole, secrets) == ["https://***", "https://*** #2", "https://*** #3"]


def names(hooks: list[Webhook], secrets: list[str]) -> list[str]:
    """The names `status` and /metrics give these webhooks."""
    notifications = NotificationsSection(webhooks=tuple(hooks))
    notifier = WebhookNotifier(notifications, ErrorHandlingSection(), Redactor(secrets), "app")
    return list(notifier.stats())
