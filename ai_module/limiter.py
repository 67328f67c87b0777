"""Rate limiters shared by every worker of a batch.

`_RPSLimiter` spaces request starts evenly at `rps` per second using the
generic cell rate algorithm (a virtual schedule, equivalent to a token bucket of
size `burst`): each acquire reserves the next free start time and sleeps until
it. With `burst` = b, at most rps + b starts fall in any 1-second window.

Reservation happens without awaiting, so it is atomic on one event loop however
many workers call `acquire()` at once. `pause(seconds)` moves every future start
past the pause, which is how one 429 with `Retry-After` holds back all workers.
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["_RPSLimiter", "TokenLimiter"]


class _RPSLimiter:
    """Request-start limiter; `rps=None` only applies pauses."""

    def __init__(self, rps: float | None, burst: int = 1) -> None:
        if rps is not None and rps <= 0:
            raise ValueError(f"rps must be positive or None, got {rps}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self.rps = rps
        self.burst = burst
        self._interval = 1.0 / rps if rps else 0.0
        # Starts may run ahead of the even pace by (burst - 1) intervals.
        self._tolerance = (burst - 1) * self._interval
        self._theoretical_arrival = 0.0
        self._paused_until = 0.0
        self.pauses = 0

    def _reserve(self, now: float) -> float:
        start = max(now, self._paused_until)
        if self._interval:
            start = max(start, self._theoretical_arrival - self._tolerance)
            self._theoretical_arrival = (
                max(self._theoretical_arrival, start) + self._interval
            )
        return start

    async def acquire(self) -> None:
        """Wait until this caller may start a request."""
        while True:
            now = time.monotonic()
            start = self._reserve(now)
            if start > now:
                await asyncio.sleep(start - now)
            # A pause that began while we slept invalidates the reserved slot.
            if self._paused_until <= start:
                return

    def pause(self, seconds: float) -> None:
        """Hold back every start for `seconds` from now (extends, never shortens)."""
        if seconds <= 0:
            return
        until = time.monotonic() + seconds
        if until > self._paused_until:
            self._paused_until = until
            self.pauses += 1

    @property
    def paused_for(self) -> float:
        """Seconds left in the current pause (0 when not paused)."""
        return max(0.0, self._paused_until - time.monotonic())


class TokenLimiter:
    """Tokens-per-minute budget: a token bucket holding one minute of tokens.

    Callers reserve an estimate before the call, since the real count is known
    only after the answer.
    """

    # NOTE: reservations are estimates (prompt characters / 4 + max_tokens) and
    # are not corrected with the usage the provider reports afterwards.

    def __init__(self, tokens_per_minute: int) -> None:
        if tokens_per_minute <= 0:
            raise ValueError(
                f"tokens_per_minute must be positive, got {tokens_per_minute}"
            )
        self.tokens_per_minute = tokens_per_minute
        self._seconds_per_token = 60.0 / tokens_per_minute
        self._theoretical_arrival = 0.0

    async def acquire(self, tokens: int) -> None:
        """Wait until `tokens` fit in the budget, then spend them."""
        tokens = min(max(tokens, 1), self.tokens_per_minute)
        cost = tokens * self._seconds_per_token
        now = time.monotonic()
        # The spend conforms once the bucket, one minute deep, has room for it.
        start = max(now, self._theoretical_arrival + cost - 60.0)
        self._theoretical_arrival = max(self._theoretical_arrival, start) + cost
        if start > now:
            await asyncio.sleep(start - now)
