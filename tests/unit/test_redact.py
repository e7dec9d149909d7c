"""What `Redactor` hides in text, with thousands of secrets that share prefixes and overlap: the
same as a search of each position, left to right, for the longest secret that starts there."""

from __future__ import annotations

import json
import random

from orchestrator.config import Redactor
from orchestrator.config.redact import MASK, MIN_SCRUB_LENGTH


def reference_spans(secrets: set[str], text: str) -> list[tuple[int, int]]:
    """Leftmost first, the longest at each place, none overlapping: what one alternation regex of
    the secrets (and their JSON forms), longest first, found."""
    forms = {
        form
        for secret in secrets
        if len(secret) >= MIN_SCRUB_LENGTH
        for form in (secret, json.dumps(secret, ensure_ascii=False)[1:-1])
    }
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
    alphabet = 'ab"\\é\udcff'  # a JSON-escaped form, a 2-byte character, a lone surrogate
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
