"""The per-run prompt memo: earlier messages redacted and counted once, later ones never missed."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

import llm_service.llm.prompt_memo as memo_module
from llm_service.investigations.agent import _report_format
from llm_service.llm.litellm_setup import load_litellm
from llm_service.llm.prompt_memo import PromptMemo, count_prompt
from llm_service.pii.redact import redact_messages
from llm_service.tools.specs import openai_tool_schemas

MODEL = "openai/gpt-4o-mini"
EMAIL = "jane.doe@example.com"
PHONE = "+44 20 7946 0958"


def _conversation() -> list[dict[str, Any]]:
    """A conversation as the agent builds it: system, question, a tool step, its results."""
    return [
        {"role": "system", "content": "You are a careful analyst. Today is 2026-12-07 (UTC)."},
        {"role": "user", "content": "Why did paid social revenue fall in the last 14 days?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "channel_performance",
                        "arguments": json.dumps({"start": "2026-11-23", "end": "2026-12-08"}),
                    },
                }
            ],
        },
        {
            "role": "tool",
            "tool_call_id": "call_1",
            "content": json.dumps(
                {"evidence_id": "e-1", "result": {"rows": [{"channel": "email", "cents": 1200}]}}
            ),
        },
    ]


def _counting(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count the memo's redactions by message (the real redaction still runs)."""
    seen: Counter[str] = Counter()
    real = memo_module.redact_message

    def counted(message: dict[str, Any], index: int) -> Any:
        seen[json.dumps([index, message], sort_keys=True)] += 1
        return real(message, index)

    monkeypatch.setattr(memo_module, "redact_message", counted)
    return seen


def _memo() -> PromptMemo:
    return PromptMemo(MODEL, load_litellm().token_counter)


def test_a_message_added_later_is_redacted_in_the_next_prompt() -> None:
    memo = _memo()
    messages = _conversation()
    memo.prepare(messages)
    # Step 3's tool result carries PII the tool did not catch (an error echoing the model).
    messages.append(
        {
            "role": "tool",
            "tool_call_id": "call_2",
            "content": json.dumps({"evidence_id": "e-2", "error": f"unknown tool {EMAIL!r}"}),
        }
    )
    messages.append({"role": "user", "content": f"call me on {PHONE}"})
    prompt = memo.prepare(messages)
    sent = json.dumps(prompt.messages)
    assert EMAIL not in sent and "[REDACTED:email]" in sent
    assert "7946" not in sent and "[REDACTED:phone]" in sent
    assert {f.kind for f in prompt.findings} == {"email", "phone"}
    assert [f.location.split(".")[0] for f in prompt.findings] == ["messages[4]", "messages[5]"]


def test_a_message_changed_in_place_is_redacted_again() -> None:
    memo = _memo()
    messages = _conversation()
    memo.prepare(messages)
    # The same dict objects, altered after they were redacted and sent once.
    messages[1]["content"] = f"Why did {EMAIL} stop buying?"
    messages[2]["tool_calls"][0]["function"]["arguments"] = json.dumps({"email": EMAIL})
    prompt = memo.prepare(messages)
    sent = json.dumps(prompt.messages)
    assert EMAIL not in sent
    assert prompt.messages[1]["content"] == "Why did [REDACTED:email] stop buying?"
    assert json.loads(prompt.messages[2]["tool_calls"][0]["function"]["arguments"]) == {
        "email": "[REDACTED:personal_key]"
    }


def test_a_message_replaced_at_the_same_position_is_redacted() -> None:
    memo = _memo()
    messages = _conversation()
    # The per-step limits note sits last, then an assistant message takes its place.
    memo.prepare([*messages, {"role": "user", "content": "[limits] step 1"}])
    prompt = memo.prepare([*messages, {"role": "user", "content": f"mail {EMAIL}"}])
    assert prompt.messages[-1]["content"] == "mail [REDACTED:email]"


def test_what_the_caller_does_to_a_prompt_does_not_reach_the_next_one() -> None:
    memo = _memo()
    messages = _conversation()
    first = memo.prepare(messages)
    first.messages[1]["content"] = EMAIL  # e.g. a transport rewriting the list it was given
    first.messages[2]["tool_calls"][0]["function"]["name"] = EMAIL
    second = memo.prepare(messages)
    assert EMAIL not in json.dumps(second.messages)
    assert second.messages == redact_messages(messages)[0]


def test_earlier_messages_are_redacted_once_per_run(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _counting(monkeypatch)
    memo = _memo()
    messages = _conversation()
    for step in range(1, 6):
        prompt = memo.prepare([*messages, {"role": "user", "content": f"[limits] step {step}"}])
        assert prompt.messages[: len(messages)] == redact_messages(messages)[0]
        memo.count(messages)  # the wrap-up reserve counts the same conversation
        messages.append({"role": "tool", "tool_call_id": f"c{step}", "content": f"r{step}"})
    assert max(seen.values()) == 1, "a message was redacted twice"
    # 4 first messages, 5 limits notes, 4 tool results (the 5th was never sent).
    assert sum(seen.values()) == 4 + 5 + 4


@pytest.mark.parametrize("with_system", [True, False])
def test_the_count_is_litellms_count_of_the_whole_prompt(with_system: bool) -> None:
    litellm = load_litellm()
    tools = openai_tool_schemas()
    schema = _report_format(MODEL)
    assert schema is not None
    memo = _memo()
    messages = _conversation() if with_system else _conversation()[1:]
    messages.append({"role": "user", "content": f"contact {EMAIL} or {PHONE}"})
    for extra in range(3):
        prompt = memo.prepare(messages, tools, schema)
        redacted = redact_messages(messages)[0]
        expected = litellm.token_counter(model=MODEL, messages=redacted, tools=tools)
        expected += litellm.token_counter(model=MODEL, text=json.dumps(schema))
        assert prompt.input_tokens == expected
        assert memo.count(messages) == litellm.token_counter(model=MODEL, messages=redacted)
        assert memo.count(messages, tools) == litellm.token_counter(
            model=MODEL, messages=redacted, tools=tools
        )
        messages.append({"role": "assistant", "content": "x " * (50 * (extra + 1))})


def test_changed_tools_are_counted_again() -> None:
    litellm = load_litellm()
    tools = openai_tool_schemas()
    memo = _memo()
    messages = _conversation()
    memo.prepare(messages, tools)
    tools[0]["function"]["description"] += " " + "much longer now " * 40
    redacted = redact_messages(messages)[0]
    assert memo.prepare(messages, tools).input_tokens == litellm.token_counter(
        model=MODEL, messages=redacted, tools=tools
    )


def test_the_reply_primer_is_counted_once_per_model_and_counter_not_per_run() -> None:
    real = load_litellm().token_counter
    empty_counts: list[str] = []

    def counter(**kwargs: Any) -> int:
        if kwargs.get("messages") == [] and "tools" not in kwargs:
            empty_counts.append(kwargs["model"])
        return int(real(**kwargs))

    runs = [PromptMemo(MODEL, counter) for _ in range(3)]
    assert empty_counts == [MODEL]
    other = PromptMemo("openai/gpt-4o", counter)
    assert empty_counts == [MODEL, "openai/gpt-4o"]
    # The kept primer is the counter's own answer: every run's count still equals litellm's.
    messages = _conversation()
    expected = int(real(model=MODEL, messages=redact_messages(messages)[0]))
    assert {memo.count(messages) for memo in runs} == {expected}
    assert other.count(messages) == int(
        real(model="openai/gpt-4o", messages=redact_messages(messages)[0])
    )


_ODD_MESSAGES: list[dict[str, Any]] = [
    {"role": "user", "content": "é" * 300 + " 日本語のテキスト " + "🙂" * 40},
    {"role": "user", "name": "analyst_7", "content": "a named speaker"},
    {"role": "assistant", "content": None, "tool_calls": []},
    {
        "role": "assistant",
        "content": "two calls",
        "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "x", "arguments": "{}"}},
            {"id": "b", "type": "function", "function": {"name": "y", "arguments": '{"k": 1}'}},
        ],
    },
    {"role": "user", "content": [{"type": "text", "text": "a content list"}]},
    {"role": "tool", "tool_call_id": "c", "content": "1234567890 " * 20_000},  # past exact chars
    {"role": "user", "content": ""},
    {"role": "user", "content": "extra keys", "unknown_key": {"nested": [1, 2]}},
]


@pytest.mark.parametrize("message", _ODD_MESSAGES, ids=lambda m: str(m)[:30])
def test_each_message_counts_as_litellms_token_counter_counts_it(message: dict[str, Any]) -> None:
    """The memo's per-message count (litellm's arithmetic, set up once) is token_counter's."""
    litellm = load_litellm()
    memo = _memo()
    conversation = [_conversation()[0], message]
    redacted = redact_messages(conversation)[0]
    assert memo.count(conversation) == litellm.token_counter(model=MODEL, messages=redacted)


def test_a_model_switch_counts_with_that_models_tokenizer() -> None:
    """The set-up kept per model is that model's: gpt-4 (cl100k) and gpt-4o (o200k) differ."""
    litellm = load_litellm()
    text = [{"role": "user", "content": "Attribution über alle Kanäle — 日本語 " * 30}]
    counts = {}
    for model in ("openai/gpt-4", "openai/gpt-4o-mini"):
        counts[model] = PromptMemo(model, litellm.token_counter).count(text)
        assert counts[model] == litellm.token_counter(model=model, messages=text)
    assert counts["openai/gpt-4"] != counts["openai/gpt-4o-mini"]


def test_the_tools_are_counted_once_per_process_and_again_when_they_change() -> None:
    real = load_litellm().token_counter
    tool_counts: list[int] = []

    def counter(**kwargs: Any) -> int:
        if kwargs.get("tools"):
            tool_counts.append(len(kwargs["tools"]))
        return int(real(**kwargs))

    messages = _conversation()
    redacted = redact_messages(messages)[0]
    tools = openai_tool_schemas()
    expected = real(model=MODEL, messages=redacted, tools=tools)
    # Three runs (three memos) sending the same tools: counted by the first only.
    for _ in range(3):
        assert PromptMemo(MODEL, counter).prepare(messages, openai_tool_schemas()).input_tokens == (
            expected
        )
    assert tool_counts == [len(tools)]
    # A run whose tools differ (one fewer) is counted afresh, and so is the next with the first.
    fewer = openai_tool_schemas()[1:]
    assert PromptMemo(MODEL, counter).prepare(messages, fewer).input_tokens == real(
        model=MODEL, messages=redacted, tools=fewer
    )
    assert PromptMemo(MODEL, counter).prepare(messages, tools).input_tokens == expected
    assert tool_counts == [len(tools), len(fewer), len(tools)]


def test_a_tool_changed_in_place_after_counting_is_counted_again() -> None:
    litellm = load_litellm()
    messages = _conversation()
    tools = openai_tool_schemas()
    PromptMemo(MODEL, litellm.token_counter).prepare(messages, tools)
    tools[0]["function"]["description"] = "changed after the first run counted it " * 20
    redacted = redact_messages(messages)[0]
    assert PromptMemo(MODEL, litellm.token_counter).prepare(messages, tools).input_tokens == (
        litellm.token_counter(model=MODEL, messages=redacted, tools=tools)
    )


@pytest.mark.parametrize("message", _ODD_MESSAGES, ids=lambda m: str(m)[:30])
@pytest.mark.parametrize("with_extras", [False, True])
def test_a_one_shot_prompt_counts_as_litellms_token_counter_counts_it(
    message: dict[str, Any], with_extras: bool
) -> None:
    """`count_prompt` (a call without a memo) is token_counter's count: messages, tools, schema."""
    litellm = load_litellm()
    tools = openai_tool_schemas() if with_extras else None
    schema = _report_format(MODEL) if with_extras else None
    for prompt in ([message], [_conversation()[0], message], [*_conversation(), message]):
        expected = litellm.token_counter(model=MODEL, messages=prompt, tools=tools)
        if schema is not None:
            expected += litellm.token_counter(model=MODEL, text=json.dumps(schema))
        assert count_prompt(MODEL, litellm.token_counter, prompt, tools, schema) == expected


def test_a_one_shot_prompt_sets_up_litellms_counting_once_per_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The set-up (tokenizer, model family) is kept per model: calls after the first count only."""
    from litellm.litellm_core_utils import token_counter as litellm_counting

    litellm = load_litellm()
    built: list[str] = []
    real = litellm_counting._MessageCountParams

    def counted(model: str, *args: Any) -> Any:
        built.append(model)
        return real(model, *args)

    monkeypatch.setattr(litellm_counting, "_MessageCountParams", counted)
    monkeypatch.setattr(memo_module, "_SET_UP", {})
    monkeypatch.setattr(memo_module, "_PRIMERS", {})  # the primer is token_counter's own call
    prompts = [[{"role": "user", "content": f"question {n} from {EMAIL}"}] for n in range(5)]
    counts = [count_prompt(MODEL, litellm.token_counter, prompt) for prompt in prompts]
    assert built.count(MODEL) <= 2  # the kept set-up, and the primer's one token_counter call
    built.clear()
    assert [count_prompt(MODEL, litellm.token_counter, prompt) for prompt in prompts] == counts
    assert built == []  # set up: every later call only counts
    monkeypatch.setattr(litellm_counting, "_MessageCountParams", real)
    assert counts == [litellm.token_counter(model=MODEL, messages=p) for p in prompts]
