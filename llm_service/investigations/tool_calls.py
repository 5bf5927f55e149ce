"""One step's tool calls as the loop runs them and echoes them back to the provider.

The calls come from the model and may be malformed in every field. Each gets an id that is
unique in its step and safe on any provider's wire (the model's own when it is), its arguments
parsed within bounds (or kept as text for the tool runner to report), and an echo for the
assistant message that every provider accepts: a wire-safe name and a JSON object as arguments.
A malformed call is echoed in that safe form and answered with a tool error, so the next request
is still valid and the run goes on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llm_service.investigations.evidence import parse_arguments
from llm_service.llm.gateway import ToolCall

# What OpenAI and Anthropic both accept as a function name and as a tool call id.
WIRE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
INVALID_NAME = "invalid_tool_name"
MAX_TOOL_CALLS_PER_STEP = 16


@dataclass(frozen=True)
class StepCall:
    """One tool call of a step, ready to run and to echo."""

    id: str
    name: str
    raw_arguments: str
    arguments: str | dict[str, Any]

    def echo(self) -> dict[str, Any]:
        """The call as the assistant message carries it on the next request."""
        return {
            "id": self.id,
            "type": "function",
            "function": {
                "name": self.name if WIRE_NAME.match(self.name) else INVALID_NAME,
                "arguments": self.raw_arguments
                if isinstance(self.arguments, dict) and self.raw_arguments.strip()
                else "{}",
            },
        }


def step_calls(tool_calls: Sequence[ToolCall], step: int) -> list[StepCall]:
    """The step's calls with unique wire-safe ids and bounded arguments, in order."""
    taken: set[str] = set()
    calls: list[StepCall] = []
    for index, call in enumerate(tool_calls):
        ident = call.id
        if not WIRE_NAME.match(ident) or ident in taken:
            ident = f"call_{step}_{index}"
            while ident in taken:
                ident += "_"
        taken.add(ident)
        arguments = parse_arguments(call.arguments)
        calls.append(StepCall(ident, call.name, call.arguments, arguments))
    return calls
