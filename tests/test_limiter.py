"""The shared request-start limiter, on the real event loop and clock."""

from __future__ import annotations

import asyncio
import time
from itertools import pairwise

import pytest

from ai_module.limiter import TokenLimiter, _RPSLimiter


def max_in_window(starts: list[float], window: float = 1.0) -> int:
    """Largest number of starts in any half-open window [t, t + window)."""
    starts = sorted(starts)
    best = 0
    low = 0
    for high, start in enumerate(starts):
        while start - starts[low] >= window:
            low += 1
        best = max(best, high - low + 1)
    return best


async def record_starts(limiter: _RPSLimiter, workers: int, items: int) -> list[float]:
    """Let `workers` tasks share `items` acquires; return the start times."""
    starts: list[float] = []
    remaining = iter(range(items))

    async def worker() -> None:
        for _ in remaining:
            await limiter.acquire()
            starts.append(time.monotonic())
            await asyncio.sleep(0)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return starts


@pytest.mark.parametrize(
    ("rps", "burst", "workers", "items"),
    [(5, 1, 50, 14), (40, 1, 50, 100), (20, 5, 10, 60)],
)
def test_no_window_exceeds_rps_plus_burst(rps, burst, workers, items):
    limiter = _RPSLimiter(rps, burst)
    starts = asyncio.run(record_starts(limiter, workers, items))
    assert len(starts) == items
    assert max_in_window(starts) <= rps + burst


def test_starts_are_evenly_spaced():
    limiter = _RPSLimiter(20, 1)
    starts = sorted(asyncio.run(record_starts(limiter, 30, 30)))
    gaps = [b - a for a, b in pairwise(starts)]
    # asyncio.sleep never wakes early, so each gap is at least the interval,
    # less scheduling noise between two wake-ups.
    assert min(gaps) >= 0.05 - 0.01
    assert starts[-1] - starts[0] == pytest.approx(29 * 0.05, abs=0.15)


def test_stalled_event_loop_does_not_bunch_starts():
    # A loop blocked for 150 ms (a slow callback, a GC pause, a busy machine)
    # must not release the overdue callers together next to on-time ones.
    limiter = _RPSLimiter(40, 1)

    async def scenario() -> list[float]:
        async def stall() -> None:
            for _ in range(3):
                await asyncio.sleep(0.3)
                time.sleep(0.15)

        staller = asyncio.create_task(stall())
        starts = await record_starts(limiter, 50, 80)
        await staller
        return starts

    starts = asyncio.run(scenario())
    assert max_in_window(starts) <= 40 + 1


def test_waiters_start_in_arrival_order():
    limiter = _RPSLimiter(200, 1)
    order: list[int] = []

    async def worker(number: int) -> None:
        await limiter.acquire()
        order.append(number)

    async def scenario() -> None:
        await asyncio.gather(*(worker(n) for n in range(30)))

    asyncio.run(scenario())
    assert order == list(range(30))


def test_pause_holds_every_worker():
    limiter = _RPSLimiter(None)

    async def scenario() -> list[float]:
        limiter.pause(0.4)
        began = time.monotonic()
        starts = await record_starts(limiter, 8, 8)
        return [start - began for start in starts]

    offsets = asyncio.run(scenario())
    assert min(offsets) >= 0.39
    assert limiter.pauses == 1


def test_pause_only_extends():
    limiter = _RPSLimiter(None)
    limiter.pause(2.0)
    limiter.pause(0.1)
    assert limiter.paused_for > 1.5


def test_pause_during_sleep_moves_reserved_slot():
    limiter = _RPSLimiter(2, 1)

    async def scenario() -> float:
        await limiter.acquire()
        waiter = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(0.05)
        limiter.pause(0.8)
        began = time.monotonic()
        await waiter
        return time.monotonic() - began

    assert asyncio.run(scenario()) >= 0.75


@pytest.mark.parametrize(("rps", "burst"), [(0, 1), (-1, 1), (5, 0)])
def test_invalid_settings_rejected(rps, burst):
    with pytest.raises(ValueError):
        _RPSLimiter(rps, burst)


def test_token_limiter_waits_when_budget_spent():
    limiter = TokenLimiter(tokens_per_minute=6000)

    async def scenario() -> float:
        await limiter.acquire(6000)
        began = time.monotonic()
        await limiter.acquire(50)
        return time.monotonic() - began

    # 50 tokens at 100 tokens per second take 0.5 s once the minute is spent.
    assert asyncio.run(scenario()) == pytest.approx(0.5, abs=0.1)
