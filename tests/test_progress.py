"""The plain progress lines written when stderr is not a terminal."""

from __future__ import annotations

import io
import time

from ai_module.progress import Progress


def test_line_written_while_no_item_finishes():
    stream = io.StringIO()
    progress = Progress(10, stream=stream, interval=0.05)
    progress.update(failed=False, from_store=False)
    time.sleep(0.06)
    progress.tick(paused_for=35.0)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("progress: done 1/10")
    assert "paused 35s by the provider's rate limit" in lines[0]


def test_no_line_before_interval():
    stream = io.StringIO()
    progress = Progress(10, stream=stream, interval=5.0)
    progress.update(failed=True, from_store=False)
    progress.tick()
    assert stream.getvalue() == ""
