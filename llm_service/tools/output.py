"""Size-capping tool output: drop rows from the ends of its lists until the JSON fits."""

from __future__ import annotations

import json
from typing import Any

_SEPARATOR = 2  # ", " between list items in json.dumps' default form


def _size(value: object) -> int:
    return len(json.dumps(value))


def cap_output(output: dict[str, Any], max_chars: int) -> tuple[dict[str, Any], bool]:
    """The output, or a copy whose JSON is at most `max_chars` long, and whether rows were cut.

    Rows are dropped from the end of the longest top-level list of objects (the later list on
    a tie; lists are sorted most important first), and the copy says so: ``truncated: true`` and
    ``omitted_rows``. If even empty lists do not fit, only a short note remains. The result is
    always valid JSON.
    """
    if _size(output) <= max_chars:
        return output, False
    capped: dict[str, Any] = {
        key: list(value) if isinstance(value, list) else value for key, value in output.items()
    }
    # Rows are objects; a list of plain values (the channels asked for, the warnings) is what
    # the answer is about and stays whole.
    lists = [
        key
        for key, value in capped.items()
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value)
    ]
    sizes = {key: [_size(row) + _SEPARATOR for row in capped[key]] for key in lists}
    capped["truncated"] = True
    capped["omitted_rows"] = 0
    total = _size(capped) + len(str(sum(len(capped[key]) for key in lists)))
    while lists and total > max_chars:
        key = max(lists, key=lambda k: (len(capped[k]), lists.index(k)))
        capped[key].pop()
        total -= sizes[key].pop()
        capped["omitted_rows"] += 1
        if not capped[key]:
            lists.remove(key)
        if total <= max_chars:  # the estimate can be off by a separator: confirm
            total = _size(capped)
    if _size(capped) > max_chars:
        omitted = sum(len(v) for v in output.values() if isinstance(v, list))
        return {
            "truncated": True,
            "omitted_rows": omitted,
            "note": "too large to show; use a shorter period or a lower limit",
        }, True
    return capped, True
