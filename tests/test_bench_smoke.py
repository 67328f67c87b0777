"""Smoke test of the benchmark suite: `bench/run.py --quick` still runs end to end.

It checks that every scenario prints its rows and that the peers send the
request aimod renders. It never checks a timing, because timings on a shared CI
machine vary too much to mean anything.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"

SCENARIO_MEASURES = {
    "S0": "fake server alone",
    "S1": "requests/s",
    "S2": "requests/s / ideal",
    "S3": "429 responses",
    "S4": "peak RSS",
    "S5": "provider calls in the rerun",
    "S6": "command / run_batch",
    "S7": "aimod --help",
}


@pytest.fixture(scope="module")
def quick_run() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_quick_run_exits_zero(quick_run):
    assert quick_run.returncode == 0, quick_run.stderr[-3000:]


@pytest.mark.parametrize("scenario", sorted(SCENARIO_MEASURES))
def test_quick_run_prints_scenario_rows(quick_run, scenario):
    rows = [
        line
        for line in quick_run.stdout.splitlines()
        if line.startswith(f"| {scenario} |")
    ]
    assert rows, f"no {scenario} row in:\n{quick_run.stdout}"
    assert any(SCENARIO_MEASURES[scenario] in row for row in rows), rows


def test_quick_run_rows_have_no_failed_cells(quick_run):
    table = [line for line in quick_run.stdout.splitlines() if line.startswith("| S")]
    assert table
    for row in table:
        cells = [cell.strip() for cell in row.split("|")]
        assert "failed" not in cells, row
        assert "error" not in cells, row


def test_peers_send_the_request_aimod_renders():
    sys.path.insert(0, str(BENCH))
    try:
        import workload
    finally:
        sys.path.remove(str(BENCH))
    import orjson

    from ai_module.config import AIConfig
    from ai_module.kernel import build_request
    from ai_module.providers.openai import build_body

    task = workload.load_task()
    record = workload.record(7)
    request = build_request(task, record, AIConfig(model=workload.MODEL))
    assert request.messages == workload.messages(record)
    aimod_body = build_body(request, "json_schema", True)
    assert aimod_body == orjson.loads(workload.request_body(record))
