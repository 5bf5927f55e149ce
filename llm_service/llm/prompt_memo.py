"""What the calls of one conversation share: each message redacted and counted once, not per call.

An investigation sends its whole conversation on every step, so redacting and counting it from
scratch each time costs O(steps^2). A `PromptMemo` (one per run) keeps, per position, the message
as it was seen (a structural copy), its redacted form, its PII findings and its token count; a
later call reuses them only where the message at that position is still EQUAL to what was seen,
so a message added, replaced or changed in place since is redacted and counted afresh. The
tokens of the tool definitions and of a response schema are kept the same way, per process (every
run sends the same ones).

The count is litellm's own arithmetic, taken apart: `token_counter(messages=ms, tools=ts)` is the
sum of each message's count, plus 3 for the reply primer, plus the tool definitions' share
(tests compare the two on whole conversations). Each call of `token_counter` first sets up its
counting (model family, tokenizer, tool template: ~0.15 ms, seven times the tiktoken encoding of a
typical message); for litellm's own counter the memo keeps that set-up per model and counts each
new message with litellm's per-message arithmetic (`_count_messages`), the same numbers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llm_service.pii.redact import PiiFinding, redact_message

#: litellm's `token_counter` (keyword arguments: model, messages, tools, text).
TokenCounter = Callable[..., int]

# The reply primer per (model, counter): counted once per process, not once per run (a call of
# litellm's token_counter costs ~0.3 ms of set-up whatever it counts).
_PRIMERS: dict[tuple[str, TokenCounter], int] = {}
#: One message's tokens, without the reply primer.
MessageCounter = Callable[[dict[str, Any]], int]
# litellm's per-message counting set up once per model (None: not available, use the counter).
_SET_UP: dict[str, MessageCounter | None] = {}
# The tokens of the last tool definitions / response schema seen per (model, counter, what,
# system message or not): every run sends the same ones, counted once per process (~1.4 ms a
# run), reused only for a value EQUAL to the one counted.
_EXTRAS: dict[tuple[str, TokenCounter, str, bool], tuple[Any, int]] = {}


@dataclass(frozen=True, slots=True)
class PreparedPrompt:
    """A prompt ready to send: its redacted messages, their PII findings, its input tokens."""

    messages: list[dict[str, Any]]
    findings: list[PiiFinding]
    input_tokens: int


# What a message counted while litellm's counting was off is kept as: equal to no message.
_RECOUNT = object()


@dataclass(frozen=True, slots=True)
class _Seen:
    original: Any  # a structural copy of the message as it was (what later ones must equal)
    redacted: dict[str, Any]
    findings: list[PiiFinding]
    tokens: int


class PromptMemo:
    """One conversation's redactions and token counts, kept between its calls (not thread-safe;
    one per run, used from its task)."""

    def __init__(self, model: str, token_counter: TokenCounter) -> None:
        """A memo counting tokens for `model` with litellm's `token_counter`."""
        self.model = model
        self._count = token_counter
        self._seen: list[_Seen] = []
        self._primer = _primer(model, token_counter)
        self._count_one = _message_counter(model, token_counter, self._primer)

    def prepare(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> PreparedPrompt:
        """`messages` redacted (fresh containers each call: the caller may alter them), their
        findings, and the input tokens of the request (messages, tools and response schema)."""
        seen = self._update(messages)
        findings = [finding for entry in seen for finding in entry.findings]
        return PreparedPrompt(
            messages=[_copy(entry.redacted) for entry in seen],
            findings=findings,
            input_tokens=self._tokens(seen, tools, response_format),
        )

    def count(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> int:
        """The input tokens of `messages` (redacted, as sent) and `tools`."""
        return self._tokens(self._update(messages), tools, None)

    def _update(self, messages: list[dict[str, Any]]) -> list[_Seen]:
        seen = self._seen
        # A count made while litellm's counting is off (0) is not kept: counted again later.
        disabled = _disabled(self._count)
        for index, message in enumerate(messages):
            if index < len(seen) and _same(seen[index].original, message):
                continue
            redacted, findings = redact_message(message, index)
            original = _RECOUNT if disabled else _copy(message)
            entry = _Seen(original, redacted, findings, self._count_one(redacted))
            if index < len(seen):
                seen[index] = entry
            else:
                seen.append(entry)
        return seen[: len(messages)]

    def _tokens(
        self,
        seen: list[_Seen],
        tools: list[dict[str, Any]] | None,
        response_format: dict[str, Any] | None,
    ) -> int:
        if _disabled(self._count):  # token_counter answers 0
            return 0
        messages = [entry.redacted for entry in seen]
        primer = _primer(self.model, self._count)  # not the one taken while counting was off
        total = primer + sum(entry.tokens for entry in seen)
        return total + _extras(self.model, self._count, messages, tools, response_format)


def count_prompt(
    model: str,
    token_counter: TokenCounter,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    response_format: dict[str, Any] | None = None,
) -> int:
    """The input tokens of a prompt as sent (no redaction here) as `token_counter` counts them,
    with litellm's counting set up once per model instead of once per call."""
    if _disabled(token_counter):  # token_counter answers 0 (and nothing is kept)
        return 0
    # litellm's Message objects (its token_counter takes them): counted as it sees them.
    if token_counter is _litellm_counter() and not all(isinstance(m, dict) for m in messages):
        from litellm.utils import convert_list_message_to_dict

        messages = convert_list_message_to_dict(messages)
    primer = _primer(model, token_counter)
    count_one = _message_counter(model, token_counter, primer)
    total = primer + sum(count_one(message) for message in messages)
    return total + _extras(model, token_counter, messages, tools, response_format)


def _primer(model: str, token_counter: TokenCounter) -> int:
    # litellm adds the reply primer (3 tokens) to every count of messages: the empty prompt.
    primer = _PRIMERS.get((model, token_counter))
    if primer is None:
        primer = int(token_counter(model=model, messages=[]))
        if not _disabled(token_counter):  # a 0 while disabled is no count to keep
            _PRIMERS[(model, token_counter)] = primer
    return primer


def _litellm_counter() -> TokenCounter | None:
    import litellm

    counter: TokenCounter | None = getattr(litellm, "token_counter", None)
    return counter


def _disabled(token_counter: TokenCounter) -> bool:
    """litellm's counter with its counting switched off (`litellm.disable_token_counter`, read
    per call as token_counter reads it): it answers 0 for everything."""
    import litellm

    return token_counter is _litellm_counter() and litellm.disable_token_counter is True


def _extras(
    model: str,
    token_counter: TokenCounter,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    response_format: dict[str, Any] | None,
) -> int:
    """The tokens of the tool definitions and the response schema (0 without them)."""
    total = 0
    if tools:
        # litellm discounts the tool definitions when a system message is present.
        system = any(message.get("role") == "system" for message in messages)
        total += _extra(model, token_counter, "tools", system, tools)
    if response_format:  # the schema is part of the prompt the provider bills
        total += _extra(model, token_counter, "response_format", False, response_format)
    return total


def _extra(model: str, token_counter: TokenCounter, what: str, system: bool, value: Any) -> int:
    key = (model, token_counter, what, system)
    if _disabled(token_counter):
        return 0
    kept = _EXTRAS.get(key)
    if kept is not None and _same(kept[0], value):
        return kept[1]
    if what == "tools":
        probe = [{"role": "system" if system else "user", "content": ""}]
        tokens = int(token_counter(model=model, messages=probe, tools=value)) - int(
            token_counter(model=model, messages=probe)
        )
    else:
        tokens = int(token_counter(model=model, text=json.dumps(value)))
    _EXTRAS[key] = (_copy(value), tokens)
    return tokens


def _message_counter(model: str, token_counter: TokenCounter, primer: int) -> MessageCounter:
    """One message's tokens as `token_counter(model=model, messages=[m]) - primer` counts them.

    For litellm's own `token_counter`, its per-message arithmetic with the set-up done once per
    model; any other counter (or litellm's with counting disabled) is called for each message.
    """

    def generic(message: dict[str, Any]) -> int:
        return int(token_counter(model=model, messages=[message])) - primer

    import litellm

    if token_counter is not getattr(litellm, "token_counter", None):
        return generic
    if model not in _SET_UP:
        _SET_UP[model] = _litellm_message_counter(model)
    direct = _SET_UP[model]
    if direct is None:
        return generic

    def counted(message: dict[str, Any]) -> int:
        if litellm.disable_token_counter is True:  # read per call, as token_counter does
            return generic(message)
        return direct(message)

    return counted


def _litellm_message_counter(model: str) -> MessageCounter | None:
    """litellm's `_count_messages` for one message with its `_MessageCountParams` built once,
    or None when this litellm has no such internals (the counter is then called per message)."""
    try:
        from litellm.litellm_core_utils.token_counter import (
            _count_messages,
            _MessageCountParams,
        )

        params = _MessageCountParams(model, None)
    except (ImportError, AttributeError, TypeError):
        return None

    def count(message: dict[str, Any]) -> int:
        one: list[Any] = [message]  # litellm types messages as its TypedDicts
        return int(_count_messages(params, one, False, None))

    return count


def _same(kept: Any, value: Any) -> bool:
    """`value` is `kept` (a `_copy`) to the letter, not merely ==: 1, 1.0 and True are equal in
    Python but written differently ("1", "1.0", "True"/"true"), and so are dicts whose keys come in
    another order: each would be counted with another number of tokens. A tuple is not its
    copy's list (counted afresh: litellm may format one otherwise)."""
    if type(kept) is not type(value):
        return False
    if isinstance(kept, dict):
        return (
            len(kept) == len(value)
            and all(type(a) is type(b) and a == b for a, b in zip(kept, value, strict=True))
            and all(_same(kept[key], value[key]) for key in kept)
        )
    if isinstance(kept, list):
        return len(kept) == len(value) and all(map(_same, kept, value))
    if isinstance(kept, float):  # 0.0 == -0.0, but the sign is written
        return repr(kept) == repr(value)
    return bool(kept == value)


def _copy(value: Any) -> Any:
    """A structural copy of JSON-like data: new dicts and lists, the same (immutable) leaves."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(item) for item in value]
    return value
