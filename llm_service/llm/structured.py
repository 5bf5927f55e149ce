"""Structured output: parse the model's JSON into a pydantic model; quarantine and repair once."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

import asyncpg
from pydantic import BaseModel, ValidationError

from budgets.ceiling import CeilingReached, RunCeiling
from llm_service.db.pool import tenant_transaction
from llm_service.errors import ServiceError
from llm_service.llm.gateway import LlmGateway, LlmRequest, LlmResult
from llm_service.llm.litellm_setup import load_litellm
from llm_service.llm.validation_repository import insert_validation_failure
from llm_service.pii.redact import redact_messages

T = TypeVar("T", bound=BaseModel)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


class InvalidModelOutput(ServiceError):
    """The model's answer failed validation, also after one repair attempt."""

    status = 503
    code = "invalid_model_output"


def supports_schema(model: str | None) -> bool:
    """Whether litellm says the model takes a JSON schema as `response_format`."""
    if not model:
        return False
    try:
        return bool(load_litellm().supports_response_schema(model=model))
    except Exception:  # an unmapped model: the prompt-only path
        return False


def response_format(schema: type[BaseModel], name: str) -> dict[str, Any]:
    """`response_format` asking for `schema` (OpenAI's json_schema form; for Anthropic models
    litellm turns it into a forced tool whose input is the answer)."""
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "schema": schema.model_json_schema(), "strict": False},
    }


def is_anthropic(model: str | None) -> bool:
    """Anthropic models get the schema as a forced tool, which rules out other tool calls."""
    return bool(model) and (str(model).startswith("anthropic/") or "claude" in str(model))


def parse_output(content: str | None, schema: type[T], check: Callable[[T], None] | None) -> T:
    """The model's content as `schema`; ValueError/ValidationError when it does not fit."""
    text = (content or "").strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    value = schema.model_validate_json(text)
    if check is not None:
        check(value)
    return value


async def quarantine(
    pool: asyncpg.Pool, request: LlmRequest, result: LlmResult, error: str
) -> None:
    """Keep the failed output for review in llm_validation_failures."""
    async with tenant_transaction(pool, request.tenant_id) as conn:
        await insert_validation_failure(
            conn,
            tenant_id=request.tenant_id,
            endpoint=request.endpoint,
            model=result.model,
            call_id=result.call_id,
            error=error[:4000],
            # The prompt as the provider saw it: redacted, never the caller's raw text.
            request_payload={"messages": redact_messages(request.messages[-4:])[0]},
            response_payload=(result.content or "")[:32_000],
        )


async def complete_structured(
    gateway: LlmGateway,
    request: LlmRequest,
    schema: type[T],
    *,
    ceiling: RunCeiling | None = None,
    deadline: float | None = None,
    check: Callable[[T], None] | None = None,
) -> tuple[T, list[LlmResult]]:
    """A completion validated as `schema` (plus `check`); one repair attempt if budget allows."""
    ceiling = ceiling or RunCeiling(gateway.settings.llm_call_max_cost_usd)
    results: list[LlmResult] = []
    current = request
    for attempt in (1, 2):
        result = await gateway.complete(current, ceiling=ceiling, deadline=deadline)
        results.append(result)
        try:
            return parse_output(result.content, schema, check), results
        except (ValidationError, ValueError) as exc:
            error = _describe(exc)
            await quarantine(gateway.pool, current, result, error)
            if attempt == 2:
                raise InvalidModelOutput(f"the model's answer was not valid: {error}") from exc
            current = _repair_request(current, result, error, schema)
    raise AssertionError("unreachable")  # pragma: no cover


def _repair_request(
    request: LlmRequest, result: LlmResult, error: str, schema: type[BaseModel]
) -> LlmRequest:
    messages: list[dict[str, Any]] = [
        *request.messages,
        {"role": "assistant", "content": result.content or ""},
        {
            "role": "user",
            "content": (
                "Your answer was not valid: " + error[:1500] + "\nReply again with ONLY a JSON "
                "object matching this schema, nothing else:\n"
                + json.dumps(schema.model_json_schema())
            ),
        },
    ]
    return LlmRequest(
        tenant_id=request.tenant_id,
        endpoint=request.endpoint,
        messages=messages,
        max_tokens=request.max_tokens,
        tools=None,
        investigation_id=request.investigation_id,
        budget_optimization_job_id=request.budget_optimization_job_id,
        for_wrapup=request.for_wrapup,
        min_output_tokens=request.min_output_tokens,
        response_format=request.response_format,
    )


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'output'}: {e['msg']}" for e in exc.errors()
        )[:2000]
    return str(exc)[:2000]


__all__ = ["CeilingReached", "InvalidModelOutput", "complete_structured", "parse_output"]
