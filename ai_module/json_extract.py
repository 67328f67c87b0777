"""Find the JSON value in a model's answer.

Models wrap JSON in code fences or surround it with prose even when asked not
to. The answer is tried as-is first (the common case, and the fastest), then
inside a code fence, then from each `{` or `[` onwards with trailing text cut.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from ai_module.errors import InvalidJSONError

__all__ = ["extract_json"]

_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\r?\n(.*?)```", re.DOTALL)
_DECODER = json.JSONDecoder()
# Stop scanning for a JSON start after this many candidates; a long prose answer
# with many braces would otherwise cost quadratic time.
_MAX_CANDIDATES = 50


def extract_json(text: str) -> Any:
    """Return the first JSON value in `text`, or raise InvalidJSONError."""
    stripped = text.strip()
    try:
        return orjson.loads(stripped)
    except orjson.JSONDecodeError:
        pass

    for match in _FENCE.finditer(stripped):
        try:
            return orjson.loads(match.group(1).strip())
        except orjson.JSONDecodeError:
            continue

    candidates = 0
    for index, char in enumerate(stripped):
        if char not in "{[":
            continue
        candidates += 1
        if candidates > _MAX_CANDIDATES:
            break
        try:
            value, _ = _DECODER.raw_decode(stripped, index)
            return value
        except json.JSONDecodeError:
            continue

    excerpt = stripped[:160] + ("…" if len(stripped) > 160 else "")
    raise InvalidJSONError(f"response contains no JSON value: {excerpt!r}", text=text)
