"""Run one tool call for the model: validate, query read-only under RLS, redact, cap, report.

Nothing here raises for a bad call: unknown tools, malformed or invalid arguments and database
errors (a statement timeout above all) come back as ``ToolOutcome.error``, a message written
for the model. Each call takes its own pooled connection, so the calls of one step can run
concurrently (``asyncio.gather``); nothing is shared between calls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast
from uuid import UUID

import asyncpg
from pydantic import ValidationError

from llm_service.db.pool import tenant_transaction
from llm_service.db.queries import set_statement_timeout
from llm_service.errors import ServiceError
from llm_service.input_rules import storable
from llm_service.pii.redact import redact_json, redact_text
from llm_service.tools.headline import with_headline
from llm_service.tools.output import cap_output
from llm_service.tools.parse import BadArguments, parse_arguments
from llm_service.tools.specs import TOOLS, ToolArgs, ToolSpec

logger = logging.getLogger(__name__)

DEFAULT_STATEMENT_TIMEOUT_MS = 2000
DEFAULT_MAX_OUTPUT_CHARS = 6000
# The most of a malformed call's arguments kept in its record (and shown back to the model).
MAX_RECORDED_CHARS = 2000
MAX_NAME_CHARS = 100


@dataclass(frozen=True)
class ToolOutcome:
    """What one tool call did: its (redacted) output or an error for the model, and its cost."""

    name: str
    arguments: dict[str, Any] | str
    output: dict[str, Any] | None
    truncated: bool
    error: str | None
    duration_ms: int
    pii_findings: int = 0


class ToolCallError(Exception):
    """A tool call the model got wrong or the database refused; the message is for the model."""


def _parse(raw_arguments: object) -> dict[str, Any]:
    try:
        return parse_arguments(raw_arguments)
    except BadArguments as exc:
        raise ToolCallError(str(exc)) from None


def _recordable(raw_arguments: object) -> dict[str, Any] | str:
    """Arguments as they are kept: a bounded dict as is, anything else as text cut to
    MAX_RECORDED_CHARS."""
    if isinstance(raw_arguments, Mapping):
        try:
            return parse_arguments(raw_arguments)
        except BadArguments as exc:
            return str(exc)
    text = raw_arguments if isinstance(raw_arguments, str) else storable(raw_arguments)
    if len(text) > MAX_RECORDED_CHARS:
        return text[:MAX_RECORDED_CHARS] + f"... [{len(text) - MAX_RECORDED_CHARS} more characters]"
    return text


def _validation_message(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"]) or "arguments"
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{where}: {message}")
    return "invalid arguments: " + "; ".join(problems)


def _validate(spec: ToolSpec, arguments: dict[str, Any]) -> ToolArgs:
    try:
        return spec.args_model.model_validate(arguments)
    except ValidationError as exc:
        raise ToolCallError(_validation_message(exc)) from None


async def _execute(
    pool: asyncpg.Pool, tenant_id: UUID | str, spec: ToolSpec, args: ToolArgs, timeout_ms: int
) -> dict[str, Any]:
    try:
        async with tenant_transaction(pool, tenant_id, readonly=True) as conn:
            await set_statement_timeout(conn, timeout_ms)
            result = await spec.execute(conn, args)
    except asyncpg.QueryCanceledError:
        raise ToolCallError(
            f"the query took too long (over {timeout_ms} ms) and was stopped; try a shorter "
            "period, a channel filter or a smaller limit"
        ) from None
    except ServiceError as exc:
        raise ToolCallError(exc.message) from None
    except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError):
        logger.warning("tool %s: database unavailable", spec.name, exc_info=True)
        raise ToolCallError("the database is unavailable right now; try again later") from None
    except asyncpg.PostgresError as exc:
        logger.warning("tool %s failed in the database", spec.name, exc_info=True)
        raise ToolCallError(f"the query failed in the database ({exc.sqlstate})") from None
    output: dict[str, Any] = result.model_dump(mode="json")
    return output


async def run_tool(
    pool: asyncpg.Pool,
    tenant_id: UUID | str,
    name: str,
    raw_arguments: str | dict[str, Any],
    *,
    statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
) -> ToolOutcome:
    """Run one tool call in a READ ONLY tenant transaction; never raises for a bad call."""
    if statement_timeout_ms < 1 or max_output_chars < 1:
        raise ValueError("statement_timeout_ms and max_output_chars must be positive")
    started = time.perf_counter()
    # The name is the model's text, kept and echoed in errors: no PII in it (a real tool's
    # name has none, so it is unchanged).
    name = redact_text(name[:MAX_NAME_CHARS])[0]
    arguments: dict[str, Any] | str = _recordable(raw_arguments)
    findings = 0
    output: dict[str, Any] | None = None
    truncated = False
    error: str | None = None
    try:
        spec = TOOLS.get(name)
        if spec is None:
            raise ToolCallError(f"unknown tool {name[:80]!r}; the tools are: {', '.join(TOOLS)}")
        parsed = _parse(raw_arguments)
        arguments = parsed
        args = _validate(spec, parsed)
        raw_output = with_headline(
            name, await _execute(pool, tenant_id, spec, args, statement_timeout_ms)
        )
        redacted, found = redact_json(raw_output)  # a dict in, a dict out
        findings = len(found)
        output, truncated = cap_output(cast(dict[str, Any], redacted), max_output_chars)
    except ToolCallError as exc:
        error = str(exc)
    except Exception:  # a bug must not end the run; the model gets a plain message
        logger.exception("tool %s crashed", name)
        error = f"the tool {name!r} failed unexpectedly; try another approach"
    safe_arguments, arg_findings = redact_json(arguments)
    return ToolOutcome(
        name=name,
        arguments=safe_arguments if isinstance(safe_arguments, dict | str) else str(arguments),
        output=output,
        truncated=truncated,
        error=error,
        duration_ms=round((time.perf_counter() - started) * 1000),
        pii_findings=findings + len(arg_findings),
    )
