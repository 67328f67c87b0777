"""Rate limiters shared by every worker of a batch.

`_RPSLimiter` spaces request starts evenly at `rps` per second using the
generic cell rate algorithm (equivalent to a token bucket of size `burst`).
With `burst` = b, at most rps + b starts fall in any 1-second window.

Waiters queue on a FIFO lock and only the one at the head sleeps, then checks
the clock again before it starts. A schedule reserved in advance for every
waiter breaks the bound whenever the event loop stalls: waiters whose slots
passed during the stall wake together, next to waiters whose slots are on time.

`pause(seconds)` moves every future start past the pause, which is how one 429
with `Retry-After` delays all workers.
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
        self._queue = asyncio.Lock()
        self.pauses = 0

    def _earliest_start(self, now: float) -> float:
        return max(
            now,
            self._paused_until,
            self._theoretical_arrival - self._tolerance,
        )

    async def acquire(self) -> None:
        """Wait until this caller may start a request."""
        if not self._interval:
            # Unlimited: only a pause delays callers, and no order is kept.
            while (wait := self._paused_until - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            return
        async with self._queue:
            timer_lag = 0.0
            while True:
                now = time.monotonic()
                start = self._earliest_start(now)
                if start <= now:
                    break
                # Woken late or by a pause that began meanwhile, the next pass
                # recomputes from the clock rather than trusting this sleep.
                await asyncio.sleep(start - now)
                timer_lag = min(max(time.monotonic() - start, 0.0), self._interval)
            # Waking up to one interval after the planned start keeps the even
            # pace, so the usual timer lag does not slow the rate. A later start
            # (a stalled loop) restarts the pace from itself. Either way no
            # 1-second window contains more than rps + burst starts.
            self._theoretical_arrival = (
                max(self._theoretical_arrival, now - timer_lag) + self._interval
            )

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
