"""Guards on litellm's reading of a provider's tool calls: one malformed call must not void a reply.

litellm 1.110 (`convert_dict_to_response`) builds each tool call with a pydantic model that
refuses a name or id that is not a string, and then `json.loads` every call's arguments to
undo OpenAI's "multi_tool_use.parallel" quirk, catching only JSONDecodeError: arguments nested
past the recursion limit raise RecursionError. Either way the whole reply became "Invalid
response object" and the run failed. Here a non-string name, id or arguments become their JSON
text (a missing function an empty one), and the quirk fix gives up on any error, returning the
calls unchanged; the tool runner then answers each malformed call with a tool error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any

from llm_service.input_rules import storable

logger = logging.getLogger(__name__)
_MARK = "_llm_service_tool_call_guards"


def _plain_tool_call(call: Any) -> Any:
    """A provider's tool call dict with every field litellm types as text made text."""
    if not isinstance(call, dict):
        return call
    function = call.get("function")
    if not isinstance(function, dict):
        function = {"name": None, "arguments": ""}
    name, arguments = function.get("name"), function.get("arguments")
    function = {
        **function,
        "name": name if name is None or isinstance(name, str) else storable(name),
        "arguments": arguments if isinstance(arguments, str | dict) else storable(arguments),
    }
    ident = call.get("id")
    return {
        **call,
        "id": ident if ident is None or isinstance(ident, str) else storable(ident),
        "function": function,
    }


def _guard_build(build: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def guarded(call: Any) -> Any:
        return build(_plain_tool_call(call))

    return guarded


def _guard_fix(fix: Callable[[list[Any]], Any]) -> Callable[[list[Any]], Any]:
    def guarded(tool_calls: list[Any]) -> Any:
        try:
            return fix(tool_calls)
        except (RecursionError, ValueError, TypeError, KeyError):
            return tool_calls

    return guarded


def install_tool_call_guards() -> None:
    """Wrap litellm's tool-call reading once; a litellm without these functions is left alone."""
    try:
        from litellm.litellm_core_utils.llm_response_utils import convert_dict_to_response
    except ImportError:  # another litellm layout: nothing to guard
        return
    module: ModuleType = convert_dict_to_response
    if getattr(module, _MARK, False):
        return
    build = getattr(module, "chat_completion_tool_call_from_dict", None)
    fix = getattr(module, "handle_invalid_parallel_tool_calls", None)
    if build is None or fix is None:
        logger.warning("litellm's tool-call reading has moved; its guards are not installed")
        return
    module.chat_completion_tool_call_from_dict = _guard_build(build)  # type: ignore[attr-defined]
    module.handle_invalid_parallel_tool_calls = _guard_fix(fix)  # type: ignore[attr-defined]
    setattr(module, _MARK, True)
