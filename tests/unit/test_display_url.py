"""A webhook's URL as logs, `status` and /metrics show it: cut to scheme, host and path, and
never a piece of a secret, even one the cut would split (a whole `${HOOK_URL}`, say)."""

from __future__ import annotations

import pytest

from orchestrator.config.redact import Redactor
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
        # A secret in the host.
        (f"https://{TOKEN}.example/x", TOKEN, "https://***"),
    ],
)
def test_no_piece_of_a_secret_is_shown(url: str, secret: str | None, shown: str) -> None:
    redactor = Redactor([url if secret == "*" else secret] if secret else [])
    assert display_url(url, redactor) == shown
    assert TOKEN not in display_url(url, redactor) or secret is None
