"""What `Redactor` hides in text, with thousands of secrets that share prefixes and overlap: the
same as a search of each position, left to right, for the longest secret that starts there."""

from __future__ import annotations

import json
import random

import pytest
from helpers import leaks

from module_sdk.logformat import json_string
from orchestrator.config import Redactor
from orchestrator.config.redact import MASK, MIN_SCRUB_LENGTH


def reference_spans(secrets: set[str], text: str) -> list[tuple[int, int]]:
    """Leftmost first, the longest at each place, none overlapping: what one alternation regex of
    the secrets (and their JSON and repr forms), longest first, found."""
    shown = {
        form
        for secret in secrets
        if len(secret) >= MIN_SCRUB_LENGTH
        for form in (secret, repr(secret)[1:-1], repr('"' + secret)[2:-1])
    }
    forms = shown | {json.dumps(form, ensure_ascii=False)[1:-1] for form in shown}
    by_first: dict[str, list[str]] = {}
    for form in sorted(forms, key=len, reverse=True):
        by_first.setdefault(form[0], []).append(form)
    spans, at = [], 0
    while at < len(text):
        found = next((f for f in by_first.get(text[at], ()) if text.startswith(f, at)), None)
        if found is None:
            at += 1
        else:
            spans.append((at, at + len(found)))
            at += len(found)
    return spans


def masked(text: str, spans: list[tuple[int, int]]) -> str:
    pieces, last = [], 0
    for start, end in spans:
        pieces += [text[last:start], MASK]
        last = end
    return "".join([*pieces, text[last:]])


def test_thousands_of_overlapping_secrets_are_hidden_as_one_search_would() -> None:
    rng = random.Random(3)
    alphabet = "ab\"'\\é\udcff"  # escaped forms, a 2-byte character, a lone surrogate
    secrets = {"".join(rng.choices(alphabet, k=rng.randint(1, 12))) for _ in range(5000)}
    chosen = sorted(secrets)
    text = "".join(rng.choice(chosen) + rng.choice(("", " ", "x", "\n")) for _ in range(2000))
    redactor = Redactor(secrets)

    expected = reference_spans(secrets, text)
    assert len(expected) > 500
    assert redactor.spans(text) == expected
    assert redactor.scrub(text) == masked(text, expected)


def test_secrets_added_later_are_hidden_with_those_before() -> None:
    redactor = Redactor({"abcd"})
    redactor.add({"abcdef", "cdefgh", "xyz"})  # the longest at a place wins; 3 characters never
    assert redactor.scrub("abcdefgh abcdxyz") == "***gh ***xyz"
    assert redactor.spans("é abcd") == [(2, 6)]  # in characters, not bytes
    assert Redactor(["", "abc"]).scrub("abc") == "abc"


REPR_SECRETS = (
    "ab'cd\"SplitSecretQQ",  # both quotes: repr escapes the '
    "it's-a-secret",  # a ' alone: repr quotes with ", or escapes it beside a "
    'say "hi" secret',
    "back\\slash\ttab\nnewline",
    "\x1bescape\u200bwidth",  # non-printable characters, escaped by repr and JSON
)


@pytest.mark.parametrize("secret", REPR_SECRETS)
def test_a_secret_as_repr_writes_it_is_hidden(secret: str) -> None:
    redactor = Redactor({secret})
    quoted = repr(secret)
    assert redactor.scrub(quoted) == f"{quoted[0]}***{quoted[0]}"
    # In a longer string, or a container's repr, with either quoting style around it.
    for shown in (repr(secret + '"'), repr("'" + secret), repr({"token": secret}), str([secret])):
        scrubbed = redactor.scrub(shown)
        assert "***" in scrubbed and not leaks(secret, scrubbed), scrubbed
        scrubbed = redactor.scrub(json_string(shown))  # logged with %r, in JSON logs
        assert "***" in scrubbed and not leaks(secret, scrubbed), scrubbed


def test_a_long_secret_is_hidden_without_a_build_quadratic_in_its_length() -> None:
    # A private key or a credentials file in one variable. The automaton the library picks by
    # default for few patterns took 16 s to build for a 20,000-character secret, growing as its
    # square: this one would take minutes, and the per-test timeout fails it.
    secret = "".join(random.Random(7).choice("ABCDEFGH\n-+/=") for _ in range(100_000))
    redactor = Redactor([secret])
    assert redactor.scrub(f"key: {secret}.") == f"key: {MASK}."
    assert redactor.scrub(secret[:-1]) == secret[:-1]  # all of it, or it is not the secret
