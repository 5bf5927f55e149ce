"""Untrusted text rules: bounded idempotency keys, no NUL."""

from __future__ import annotations

import re

import asyncpg
import pytest

from llm_service.errors import InvalidRequest
from llm_service.input_rules import NO_NUL, check_idempotency_key, is_blank, storable, trim
from llm_service.tenants.service import create_tenant


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


@pytest.mark.parametrize(
    "text",
    ["", " ", "\t\n\r", "\u00a0", "\u3000", "\u200b", "\ufeff", "\u2028\u2029", "\u00ad\u2060",
     "\u200e\u200f\u202e", "\u3164\u115f\u1160\uffa0\u2800", "\x07\x1b", "\U000e0041"],
)  # fmt: skip
def test_whitespace_and_invisible_characters_alone_are_blank(text: str) -> None:
    assert is_blank(text) and trim(text) == ""


@pytest.mark.parametrize(
    ("text", "trimmed"),
    [
        ("\u200b Why did revenue fall? \ufeff", "Why did revenue fall?"),
        ("cafe\u0301", "cafe\u0301"),  # a combining accent is content, even at the end
        ("a\u00a0b", "a\u00a0b"),  # inside the text, spaces stay
        ("\u2764\ufe0f", "\u2764\ufe0f"),  # an emoji's variation selector stays
        ("?", "?"),
    ],
)
def test_trim_removes_only_the_invisible_ends(text: str, trimmed: str) -> None:
    assert trim(text) == trimmed and not is_blank(text)


@pytest.mark.parametrize("name", ["\u200b\u200b", "\u00a0", "\u3000\t"])
async def test_a_blank_tenant_name_is_refused(owner_pool: asyncpg.Pool, name: str) -> None:
    with pytest.raises(InvalidRequest, match="blank"):
        await create_tenant(owner_pool, name)
