"""A model's tool arguments, parsed from untrusted JSON text within a size and a depth bound.

Every tool takes one flat JSON object of a few short fields, so anything much larger or deeper
is refused before `json.loads` sees it (10^5 nested brackets would otherwise raise
RecursionError, and a 10 MB string would be parsed, stored and echoed). Strict JSON only: NaN
and Infinity are refused, and so are integers of more digits than any argument could need.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

MAX_ARGUMENT_CHARS = 8_000
MAX_ARGUMENT_DEPTH = 8
MAX_INTEGER_DIGITS = 20


class BadArguments(ValueError):
    """Arguments that are not one bounded JSON object; the message is for the model."""


def _refuse_constant(name: str) -> Any:
    raise BadArguments(f"the arguments are not valid JSON ({name} is not a JSON number)")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise BadArguments(
            f"an integer in the arguments has too many digits (at most {MAX_INTEGER_DIGITS})"
        )
    return int(text)


def _text_depth_exceeds(text: str, limit: int) -> bool:
    """True when brackets outside JSON strings nest deeper than `limit` (one linear pass)."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _value_depth_exceeds(value: Any, limit: int) -> bool:
    """True when containers in an already parsed value nest deeper than `limit` (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping | list | tuple):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, Mapping) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def _too_deep() -> BadArguments:
    return BadArguments(
        f"the arguments are nested deeper than {MAX_ARGUMENT_DEPTH} levels; "
        "send one flat JSON object"
    )


def parse_arguments(raw: object) -> dict[str, Any]:
    """The arguments as a dict (empty text is {}), or BadArguments saying what is wrong."""
    if isinstance(raw, Mapping):
        if _value_depth_exceeds(raw, MAX_ARGUMENT_DEPTH):
            raise _too_deep()
        return dict(raw)
    if not isinstance(raw, str):
        raise BadArguments("the arguments must be a JSON object")
    if len(raw) > MAX_ARGUMENT_CHARS:
        raise BadArguments(
            f"the arguments are too large ({len(raw)} characters; at most "
            f"{MAX_ARGUMENT_CHARS}); send one small JSON object"
        )
    text = raw.strip()
    if not text:
        return {}
    if _text_depth_exceeds(text, MAX_ARGUMENT_DEPTH):
        raise _too_deep()
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_int=_bounded_int)
    except json.JSONDecodeError as exc:
        raise BadArguments(
            f"the arguments are not valid JSON ({exc.msg} at position {exc.pos}); "
            "send one JSON object"
        ) from None
    except BadArguments:
        raise
    except (ValueError, RecursionError):
        raise BadArguments("the arguments are not valid JSON; send one JSON object") from None
    if not isinstance(value, dict):
        raise BadArguments("the arguments must be a JSON object")
    return value
