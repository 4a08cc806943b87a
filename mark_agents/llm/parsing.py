"""Finding the JSON in a model's reply: small models wrap it in ```json fences or put prose around it."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)```", re.DOTALL)
_DECODER = json.JSONDecoder()
#: How many candidate start positions to try before giving up (bounds the work on long prose).
_MAX_STARTS = 50


def extract_json(text: str) -> Any:
    """The first JSON object or array in ``text``.

    Tries, in order: the whole text, the contents of each code fence, then each ``{`` / ``[`` position
    (so leading prose and trailing remarks are ignored). Raises ValueError saying why nothing parsed.
    """
    stripped = text.strip()
    if not stripped:
        raise ValueError("the reply is empty")
    try:
        return json.loads(stripped)
    except json.JSONDecodeError as err:
        first_error = err
    for block in _FENCE.findall(stripped):
        try:
            return json.loads(block.strip())
        except json.JSONDecodeError:
            continue
    starts = [i for i, ch in enumerate(stripped) if ch in "{["][:_MAX_STARTS]
    for start in starts:
        try:
            value, _end = _DECODER.raw_decode(stripped, start)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict | list):
            return value
    if not starts:
        raise ValueError("the reply contains no JSON object")
    raise ValueError(
        f"the reply is not valid JSON ({first_error.msg} at line {first_error.lineno} "
        f"column {first_error.colno}); it may be truncated"
    )


def describe_validation_error(err: ValidationError) -> str:
    """A compact, URL-free summary of a pydantic error, for logs and the repair prompt."""
    parts = []
    for e in err.errors(include_url=False)[:10]:
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        parts.append(f"{loc}: {e['msg']}")
    more = err.error_count() - len(parts)
    if more > 0:
        parts.append(f"... and {more} more")
    return "schema mismatch: " + "; ".join(parts)
