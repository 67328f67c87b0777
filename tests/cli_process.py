"""Run the real `aimod` command in a subprocess for the fault, input and secret tests.

Every environment built here points OPENAI_BASE_URL at 127.0.0.1, at the fake
server when one is given and otherwise at a closed local port, so that no test
can reach a real provider.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

AIMOD = [sys.executable, "-m", "ai_module"]


def closed_local_url() -> str:
    """Return a base URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def environment(server: Any = None, **extra: str) -> dict[str, str]:
    """Build the subprocess environment: no inherited OPENAI_* variable, local URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.pop("HYDRA_FULL_ERROR", None)
    if server is not None:
        env["OPENAI_API_KEY"] = server.api_key
        env["OPENAI_BASE_URL"] = server.base_url
    else:
        env["OPENAI_BASE_URL"] = closed_local_url()
    env.update(extra)
    assert env["OPENAI_BASE_URL"].startswith("http://127.0.0.1:")
    return env


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `aimod ARGS` to the end and capture its output."""
    return subprocess.run(
        [*AIMOD, *args],
        cwd=cwd,
        env=env or environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """Start `aimod ARGS` without waiting; the caller stops it by its PID."""
    return subprocess.Popen(
        [*AIMOD, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> None:
    """Kill the process if it still runs and reap it."""
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=30)


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll `condition` every 20 ms; raise AssertionError when it stays false."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    lines = [json.dumps(record, ensure_ascii=False) + "\n" for record in records]
    path.write_text("".join(lines), encoding="utf-8")
    return path


def run_dirs(cwd: Path, task: str = "summarize") -> list[Path]:
    """Return the run folders of `task`, oldest first."""
    return sorted((cwd / "runs" / task).iterdir(), key=lambda p: p.stat().st_mtime)


def latest_run(cwd: Path, task: str = "summarize") -> Path:
    return run_dirs(cwd, task)[-1]


def read_results(run_dir: Path) -> list[dict[str, Any]]:
    with (run_dir / "results.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def read_summary(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))


def count_rows(store: Path, table: str) -> int:
    """Count committed rows of a store table; 0 when the file or table is missing."""
    if not store.exists():
        return 0
    connection = sqlite3.connect(store, timeout=30)
    try:
        return connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        connection.close()
