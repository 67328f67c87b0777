"""Read how long a provider asks us to wait from its HTTP response headers.

Headers understood, as OpenAI, Azure and OpenRouter send them:
`Retry-After` (seconds or an HTTP date), `retry-after-ms`,
`x-ratelimit-remaining-requests` / `-tokens` and `x-ratelimit-reset-requests` /
`-tokens` (durations such as "1s", "6m0s", "120ms", or plain seconds).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

__all__ = ["parse_duration", "retry_after_seconds", "exhausted_reset_seconds"]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> float | None:
    """Parse "1s", "6m0s", "120ms", "1h2m3.5s" or "0.5" into seconds."""
    text = text.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(a + b for a, b in parts) != text:
        return None
    return sum(float(amount) * _UNIT_SECONDS[unit] for amount, unit in parts)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Return the wait a 429 or 503 response asks for, in seconds, or None."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    return exhausted_reset_seconds(headers, require_exhausted=False)


def exhausted_reset_seconds(
    headers: Mapping[str, str], *, require_exhausted: bool = True
) -> float | None:
    """Return the reset time of a request or token budget, in seconds.

    With `require_exhausted`, only a budget whose remaining count is 0 counts:
    that lets a run pause before it is answered 429 at all.
    """
    waits = []
    for kind in ("requests", "tokens"):
        reset = headers.get(f"x-ratelimit-reset-{kind}")
        if not reset:
            continue
        if require_exhausted:
            remaining = headers.get(f"x-ratelimit-remaining-{kind}")
            if remaining is None or remaining.strip() not in {"0", "0.0"}:
                continue
        seconds = parse_duration(reset)
        if seconds is not None:
            waits.append(seconds)
    return max(waits) if waits else None
