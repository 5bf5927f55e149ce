"""Untrusted text rules: bounded idempotency keys, no NUL."""

from __future__ import annotations

import re

import pytest

from llm_service.errors import InvalidRequest
from llm_service.input_rules import NO_NUL, check_idempotency_key, storable


@pytest.mark.parametrize("key", [None, "k", "x" * 200, "'; DROP TABLE investigations; --"])
def test_keys_of_one_to_200_characters_are_accepted(key: str | None) -> None:
    check_idempotency_key(key)


@pytest.mark.parametrize("key", ["", "x" * 201, "a\x00b"])
def test_empty_overlong_and_nul_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidRequest, match="Idempotency-Key"):
        check_idempotency_key(key)


def test_no_nul_pattern_matches_text_without_nul_only() -> None:
    assert re.fullmatch(NO_NUL, "Why did revenue fall? €")
    assert re.fullmatch(NO_NUL, "")
    assert not re.fullmatch(NO_NUL, "why\x00")


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("a\x00b", "a\ufffdb"),
        ("raw \ud800 surrogate", "raw \ufffd surrogate"),
        ('{"x": "a\\u0000b"}', '{"x": "a\\ufffdb"}'),
        ('{"x": "\\ud800 lone high"}', '{"x": "\\ufffd lone high"}'),
        ('{"x": "lone low \\udc00"}', '{"x": "lone low \\ufffd"}'),
        ('{"x": "\\ud83d\\ude00 a pair is kept"}', '{"x": "\\ud83d\\ude00 a pair is kept"}'),
        ('{"x": "\\\\u0000 escaped"}', '{"x": "\\\\u0000 escaped"}'),
        ("emoji 😀 and € stay", "emoji 😀 and € stay"),
    ],
)
def test_storable_replaces_what_postgresql_cannot_hold(written: str, stored: str) -> None:
    assert storable(written) == stored
