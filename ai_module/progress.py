"""Progress display: a tqdm bar on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Counts finished items and shows done, failed, rate and ETA.

    On a terminal a bar is redrawn at most 10 times a second; when stderr is a
    pipe or a file, one line is written every `interval` seconds instead, so
    logs of long runs stay readable.
    """

    def __init__(
        self,
        total: int | None,
        *,
        stream: TextIO | None = None,
        enabled: bool = True,
        interval: float = 10.0,
    ) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.from_store = 0
        self.stream = stream or sys.stderr
        self.interval = interval
        self._started = time.monotonic()
        self._last_line = self._started
        self._bar = None
        self.enabled = enabled
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            # tqdm draws nothing on a terminal that reports a size of 0 x 0 (a
            # bare pseudo-terminal), so such a terminal gets a default size.
            size = shutil.get_terminal_size(fallback=(100, 24))
            self._bar = tqdm(
                total=total,
                file=self.stream,
                unit="item",
                mininterval=0.1,
                ncols=size.columns or 100,
                nrows=size.lines or 24,
                smoothing=0.05,
            )

    def update(self, *, failed: bool, from_store: bool) -> None:
        self.done += 1
        self.failed += failed
        self.from_store += from_store
        if self._bar is not None:
            self._bar.update(1)
            if failed or self.done % 64 == 0:
                self._bar.set_postfix(
                    failed=self.failed, stored=self.from_store, refresh=False
                )
            return
        self.tick()

    def tick(self, paused_for: float = 0.0) -> None:
        """Write the periodic line when it is due, also while no item finishes.

        `paused_for` is the time left in a provider-requested pause, shown so
        that a quiet log explains itself.
        """
        if self._bar is not None or not self.enabled:
            return
        now = time.monotonic()
        if now - self._last_line < self.interval:
            return
        self._last_line = now
        line = self.line(now)
        if paused_for > 0:
            line += f", paused {_duration(paused_for)} by the provider's rate limit"
        self.stream.write(line + "\n")
        self.stream.flush()

    def line(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        elapsed = max(now - self._started, 1e-9)
        rate = self.done / elapsed
        parts = [f"done {self.done}" + (f"/{self.total}" if self.total else "")]
        parts.append(f"failed {self.failed}")
        parts.append(f"from store {self.from_store}")
        parts.append(f"{rate:.1f} items/s")
        if self.total and rate > 0:
            remaining = max(self.total - self.done, 0) / rate
            parts.append(f"ETA {_duration(remaining)}")
        return "progress: " + ", ".join(parts)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix(
                failed=self.failed, stored=self.from_store, refresh=True
            )
            self._bar.close()
            self._bar = None


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"
