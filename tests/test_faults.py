"""The real `aimod` process under signals, 429 storms, a dead provider and store faults.

Every run talks to the fake server on 127.0.0.1 (or to a closed local port) and
writes a real SQLite store in the test's temporary folder.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cli_process import (
    count_rows,
    environment,
    latest_run,
    read_results,
    read_summary,
    run,
    start,
    stop,
    wait_until,
    write_jsonl,
)
from test_limiter import max_in_window

from ai_module.runner import _STOP_GRACE
from ai_module.testing.server_process import FakeOpenAIServer


def records(count: int, prefix: str = "record") -> list[dict[str, str]]:
    return [{"text": f"{prefix} {n}"} for n in range(count)]


# -- signals -------------------------------------------------------------------


@dataclass
class Interrupted:
    """One run stopped by a signal while 4 calls were in flight."""

    returncode: int
    stdout: str
    stderr: str
    server_stats: dict[str, Any]
    cwd: Path


@pytest.fixture(
    scope="module",
    params=[signal.SIGINT, signal.SIGTERM],
    ids=["SIGINT", "SIGTERM"],
)
def interrupted(request, tmp_path_factory) -> Interrupted:
    cwd = tmp_path_factory.mktemp("interrupted")
    write_jsonl(cwd / "in.jsonl", records(40))
    # Each call takes 1 s, well inside the stop grace, so the 4 calls in flight
    # at the signal finish and are committed.
    with FakeOpenAIServer(latency=1.0) as server:
        process = start(
            "task=summarize",
            "input=in.jsonl",
            "parallelism=4",
            "progress=false",
            cwd=cwd,
            env=environment(server),
        )
        try:
            wait_until(lambda: server.stats()["requests"] >= 4)
            process.send_signal(request.param)
            stdout, stderr = process.communicate(timeout=60)
        finally:
            stop(process)
        stats = server.stats()
    return Interrupted(process.returncode, stdout, stderr, stats, cwd)


def test_signal_exits_130(interrupted):
    assert interrupted.returncode == 130, interrupted.stderr


def test_signal_sends_no_new_request(interrupted):
    assert interrupted.server_stats["requests"] == 4


def test_signal_commits_calls_in_flight(interrupted):
    assert count_rows(interrupted.cwd / "runs" / "aimod.db", "responses") == 4


def test_signal_writes_finished_results(interrupted):
    results = read_results(latest_run(interrupted.cwd))
    assert len(results) == 4
    assert all(result["error"] is None for result in results)


def test_signal_summary_says_how_to_resume(interrupted):
    assert "aimod: interrupted" in interrupted.stdout
    assert "to resume, run the same command again" in interrupted.stdout
    assert read_summary(latest_run(interrupted.cwd))["status"] == "interrupted"


def test_sigint_stops_whole_sweep(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"text": f"t{n}"} for n in range(200)])
    process = start(
        "-m",
        "task=summarize",
        "provider=mock",
        "input=in.jsonl",
        "options.latency=0.3",
        "model=a,b,c",
        "progress=false",
        cwd=tmp_path,
        env=environment(),
    )
    try:
        wait_until(lambda: any((tmp_path / "runs").rglob("aimod.log")))
        time.sleep(1.0)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        stop(process)
    assert process.returncode == 130, stderr
    assert "sweep stopped" in stderr
    logs = list((tmp_path / "runs").rglob("aimod.log"))
    assert len(logs) == 1


def test_second_sigint_exits_before_grace(tmp_path, fake_server_factory):
    server = fake_server_factory(p_hang=1.0)
    write_jsonl(tmp_path / "in.jsonl", records(20))
    process = start(
        "task=summarize",
        "input=in.jsonl",
        "parallelism=4",
        "progress=false",
        cwd=tmp_path,
        env=environment(server),
    )
    try:
        wait_until(lambda: server.stats()["requests"] >= 4)
        began = time.monotonic()
        process.send_signal(signal.SIGINT)
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
        elapsed = time.monotonic() - began
    finally:
        stop(process)
    assert process.returncode == 130
    # One signal alone waits _STOP_GRACE seconds for the hung calls.
    assert elapsed < _STOP_GRACE
    assert read_summary(latest_run(tmp_path))["status"] == "interrupted"
    with sqlite3.connect(tmp_path / "runs" / "aimod.db") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_hung_calls_abandoned_after_grace(tmp_path, fake_server_factory):
    server = fake_server_factory(p_hang=1.0)
    write_jsonl(tmp_path / "in.jsonl", records(20))
    process = start(
        "task=summarize",
        "input=in.jsonl",
        "parallelism=4",
        "progress=false",
        cwd=tmp_path,
        env=environment(server),
    )
    try:
        wait_until(lambda: server.stats()["requests"] >= 4)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        stop(process)
    assert process.returncode == 130
    assert "abandoned" in stderr
    assert "to resume" in stdout
    assert server.stats()["requests"] == 4


# -- 429 storms and rate-limit headers -----------------------------------------


@pytest.fixture(scope="module")
def storm_starts(tmp_path_factory) -> list[float]:
    """Run 8 records whose first 8 calls all get 429 with Retry-After: 1.

    Return the server's sorted arrival times of the 16 calls.
    """
    cwd = tmp_path_factory.mktemp("storm")
    # The 8 first calls are all in flight when their 429s arrive (delay 1 s).
    script = [{"status": 429, "headers": {"Retry-After": "1"}, "delay": 1.0}] * 8
    write_jsonl(cwd / "in.jsonl", records(8))
    with FakeOpenAIServer(record_starts=True, script=script) as server:
        done = run(
            "task=summarize",
            "input=in.jsonl",
            "parallelism=8",
            cwd=cwd,
            env=environment(server),
        )
        starts = sorted(server.stats()["starts"])
    assert done.returncode == 0, done.stderr
    assert len(starts) == 16
    return starts


def test_429_storm_pauses_every_worker(storm_starts):
    first, retries = storm_starts[:8], storm_starts[8:]
    assert min(retries) - max(first) >= 1.0


def test_429_storm_retries_are_jittered(storm_starts):
    retries = storm_starts[8:]
    # Workers in lockstep would retry within a few milliseconds of each other.
    assert max(retries) - min(retries) >= 0.1


def test_429_storm_resumes_at_rps(tmp_path, fake_server_factory):
    script = [{"status": 429, "headers": {"Retry-After": "1"}, "delay": 0.3}] * 4
    server = fake_server_factory(record_starts=True, script=script)
    write_jsonl(tmp_path / "in.jsonl", records(30))
    done = run(
        "task=summarize",
        "input=in.jsonl",
        "parallelism=8",
        "rps=10",
        cwd=tmp_path,
        env=environment(server),
    )
    assert done.returncode == 0, done.stderr
    starts = server.stats()["starts"]
    assert len(starts) == 34
    assert max_in_window(starts) <= 10 + 1


def test_exhausted_budget_header_pauses(tmp_path, fake_server_factory):
    headers = {
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1s",
    }
    server = fake_server_factory(record_starts=True, script=[{"headers": headers}])
    write_jsonl(tmp_path / "in.jsonl", records(2))
    done = run(
        "task=summarize",
        "input=in.jsonl",
        "parallelism=1",
        cwd=tmp_path,
        env=environment(server),
    )
    assert done.returncode == 0, done.stderr
    starts = server.stats()["starts"]
    assert server.stats()["status_counts"] == {"200": 2}
    assert starts[1] - starts[0] >= 1.0


def test_429_without_retry_after_uses_reset(tmp_path, fake_server_factory):
    headers = {
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1.5s",
    }
    server = fake_server_factory(
        record_starts=True, script=[{"status": 429, "headers": headers}]
    )
    write_jsonl(tmp_path / "in.jsonl", records(1))
    done = run(
        "task=summarize", "input=in.jsonl", cwd=tmp_path, env=environment(server)
    )
    assert done.returncode == 0, done.stderr
    starts = server.stats()["starts"]
    assert len(starts) == 2
    assert starts[1] - starts[0] >= 1.5


# -- a provider that is down or rejects the key --------------------------------


def test_refused_connection_stops_run(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", records(3000))
    done = run(
        "task=summarize",
        "input=in.jsonl",
        cwd=tmp_path,
        env=environment(OPENAI_API_KEY="sk-test-down"),
    )
    assert done.returncode == 3
    assert done.stderr.count("stopping the run") == 1
    assert "20 provider calls failed in a row" in done.stderr
    summary = read_summary(latest_run(tmp_path))
    assert summary["requests"] <= 20 + 8
    assert summary["not_attempted"] >= 3000 - 8


def test_rejected_key_stops_run(tmp_path, fake_server_factory):
    server = fake_server_factory(status_always=401)
    write_jsonl(tmp_path / "in.jsonl", records(3000))
    done = run(
        "task=summarize",
        "input=in.jsonl",
        "parallelism=8",
        cwd=tmp_path,
        env=environment(server),
    )
    assert done.returncode == 3
    assert done.stderr.count("stopping the run") == 1
    assert "Check the API key" in done.stderr
    assert server.stats()["requests"] <= 8


def test_records_not_attempted_run_next_time(tmp_path, fake_server_factory):
    write_jsonl(tmp_path / "in.jsonl", records(200))
    args = ["task=summarize", "input=in.jsonl"]
    down = run(*args, cwd=tmp_path, env=environment(OPENAI_API_KEY="sk-test-down"))
    assert down.returncode == 3
    errors = [result["error"]["type"] for result in read_results(latest_run(tmp_path))]
    assert errors.count("RunAbortedError") >= 190

    server = fake_server_factory()
    again = run(*args, cwd=tmp_path, env=environment(server))
    assert again.returncode == 0, again.stderr
    assert server.stats()["ok"] == 200
    assert read_summary(latest_run(tmp_path))["succeeded"] == 200


# -- ambiguous failures --------------------------------------------------------


def test_dropped_connection_retried_and_counted(tmp_path, fake_server_factory):
    server = fake_server_factory(script=[{"drop": True}])
    write_jsonl(tmp_path / "in.jsonl", records(1))
    done = run(
        "task=summarize", "input=in.jsonl", cwd=tmp_path, env=environment(server)
    )
    assert done.returncode == 0, done.stderr
    (result,) = read_results(latest_run(tmp_path))
    assert result["output"] is not None
    assert result["attempts"] == 2
    assert server.stats()["dropped"] == 1
    assert "retrying" in (latest_run(tmp_path) / "aimod.log").read_text()


def test_drop_on_every_attempt_fails_item(tmp_path, fake_server_factory):
    server = fake_server_factory(p_drop=1.0)
    write_jsonl(tmp_path / "in.jsonl", records(1))
    done = run(
        "task=summarize",
        "input=in.jsonl",
        "max_retries=2",
        "retry_max_wait=0.1",
        cwd=tmp_path,
        env=environment(server),
    )
    assert done.returncode == 1
    (result,) = read_results(latest_run(tmp_path))
    assert result["attempts"] == 3
    assert result["error"]["type"] == "TransientError"
    assert server.base_url in result["error"]["message"]


# -- the store -----------------------------------------------------------------


def test_two_processes_share_store(tmp_path, fake_server_factory):
    server = fake_server_factory()
    # The inputs overlap by 500 records, so both processes write some keys.
    write_jsonl(tmp_path / "a.jsonl", [{"text": f"shared {n}"} for n in range(1000)])
    write_jsonl(
        tmp_path / "b.jsonl", [{"text": f"shared {n}"} for n in range(500, 1500)]
    )
    processes = [
        start(
            "task=summarize",
            f"input={name}.jsonl",
            "parallelism=64",
            "progress=false",
            cwd=tmp_path,
            env=environment(server),
        )
        for name in ("a", "b")
    ]

    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=180))
    finally:
        for process in processes:
            stop(process)

    assert [process.returncode for process in processes] == [0, 0], outputs
    logs = [path.read_text() for path in (tmp_path / "runs").rglob("aimod.log")]
    for text in [*logs, *(part for output in outputs for part in output)]:
        assert "locked" not in text
    store = tmp_path / "runs" / "aimod.db"
    assert count_rows(store, "responses") == 1500
    assert count_rows(store, "items") == 2000


def _open_store_at(path: str, start_at: float) -> str:
    """Open a store at a shared moment (run in a forked process)."""
    from ai_module.store import Store

    while time.time() < start_at:
        pass
    try:
        Store(path)
    except Exception as exc:  # the report is what the test compares
        return repr(exc)
    return "ok"


def test_processes_creating_one_store_at_once(tmp_path):
    # Two `aimod` commands started together in a fresh folder both create
    # runs/aimod.db; switching a new file to WAL used to fail one of them.
    context = multiprocessing.get_context("fork")
    with context.Pool(6) as pool:
        for trial in range(30):
            path = str(tmp_path / f"trial{trial}" / "aimod.db")
            start_at = time.time() + 0.05
            reports = pool.starmap(_open_store_at, [(path, start_at)] * 6)
            assert reports == ["ok"] * 6, reports


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[str]:
    """Make `folder` and its files read-only for this process's user; yield how.

    chmod is enough for a normal user. Root ignores file modes, so as root the
    folder is bind-mounted onto itself read-only, or else made immutable with
    chattr. When neither is allowed, the test is skipped.
    """
    files = [path for path in folder.iterdir() if path.is_file()]
    if os.geteuid() != 0:
        for path in files:
            path.chmod(0o444)
        folder.chmod(0o555)
        try:
            yield "chmod"
        finally:
            folder.chmod(0o755)
            for path in files:
                path.chmod(0o644)
        return
    if _command("mount", "--bind", str(folder), str(folder)):
        if _command("mount", "-o", "remount,ro,bind", str(folder)):
            try:
                yield "read-only bind mount"
            finally:
                _unmount(folder)
            return
        _unmount(folder)
    if _command("chattr", "+i", *map(str, files), str(folder)):
        try:
            yield "chattr +i"
        finally:
            _command("chattr", "-i", *map(str, files), str(folder))
        return
    pytest.skip("cannot make a folder read-only as root here (no mount, no chattr)")


def _command(*argv: str) -> bool:
    try:
        done = subprocess.run(argv, capture_output=True, timeout=30)
    except OSError:
        return False
    return done.returncode == 0


def _unmount(folder: Path) -> None:
    if not _command("umount", str(folder)):
        _command("umount", "-l", str(folder))


@dataclass
class ReadOnlyStore:
    """A store with 5 answers, a run while its folder was read-only, a run after."""

    blocked: subprocess.CompletedProcess[str]
    requests_while_blocked: int
    again: subprocess.CompletedProcess[str]
    cwd: Path


@pytest.fixture(scope="module")
def read_only_store(tmp_path_factory) -> ReadOnlyStore:
    cwd = tmp_path_factory.mktemp("read_only")
    (cwd / "store").mkdir()
    write_jsonl(cwd / "in.jsonl", records(10))
    args = ["task=summarize", "input=in.jsonl", "store=store/aimod.db"]
    first = run(*args, "provider=mock", "limit=5", cwd=cwd)
    assert first.returncode == 0, first.stderr
    with FakeOpenAIServer() as server:
        with read_only(cwd / "store"):
            blocked = run(*args, cwd=cwd, env=environment(server))
        requests = server.stats()["requests"]
    again = run(*args, "provider=mock", cwd=cwd)
    return ReadOnlyStore(blocked, requests, again, cwd)


def test_read_only_store_exits_4(read_only_store):
    assert read_only_store.blocked.returncode == 4


def test_read_only_store_error_names_file(read_only_store):
    assert "store/aimod.db" in read_only_store.blocked.stderr
    assert "writable" in read_only_store.blocked.stderr


def test_read_only_store_sends_nothing(read_only_store):
    assert read_only_store.requests_while_blocked == 0


def test_read_only_store_keeps_committed(read_only_store):
    assert read_only_store.again.returncode == 0, read_only_store.again.stderr
    assert read_summary(latest_run(read_only_store.cwd))["from_store"] == 5


@dataclass
class FullDisk:
    """A run that filled the store's disk, and the same run after it grew."""

    full: subprocess.CompletedProcess[str]
    ok_calls: int
    committed: int
    integrity: str
    again: subprocess.CompletedProcess[str]
    from_store_again: int


@pytest.fixture(scope="module")
def full_disk(tmp_path_factory) -> FullDisk:
    """Fill a 256 KiB tmpfs, where SQLite gets ENOSPC (SQLITE_FULL) as on a full disk.

    Mounting needs root with CAP_SYS_ADMIN; elsewhere the tests are skipped.
    """
    cwd = tmp_path_factory.mktemp("full_disk")
    disk = cwd / "disk"
    disk.mkdir()
    if not _command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)):
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
    write_jsonl(cwd / "in.jsonl", records(3000, "a longer record to fill pages"))
    args = [
        "task=summarize",
        "input=in.jsonl",
        f"store={disk}/aimod.db",
        "parallelism=8",
        "progress=false",
    ]
    try:
        with FakeOpenAIServer() as server:
            full = run(*args, cwd=cwd, env=environment(server))
            ok_calls = server.stats()["ok"]
            committed = count_rows(disk / "aimod.db", "responses")
            with sqlite3.connect(disk / "aimod.db") as connection:
                (integrity,) = connection.execute("PRAGMA integrity_check").fetchone()
            connection.close()
            assert _command("mount", "-o", "remount,size=64m", str(disk))
            again = run(*args, cwd=cwd, env=environment(server), timeout=300)
    finally:
        _unmount(disk)
    from_store = read_summary(latest_run(cwd))["from_store"]
    return FullDisk(full, ok_calls, committed, integrity, again, from_store)


def test_full_disk_exits_4(full_disk):
    assert full_disk.full.returncode == 4


def test_full_disk_error_says_what_to_do(full_disk):
    assert "database or disk is full" in full_disk.full.stderr
    assert "free space" in full_disk.full.stderr


def test_full_disk_stops_paying(full_disk):
    # Paid but not stored: the batch whose commit failed and the calls in flight.
    assert full_disk.committed > 0
    assert full_disk.ok_calls - full_disk.committed <= 2 * 8


def test_full_disk_keeps_committed(full_disk):
    assert full_disk.integrity == "ok"
    assert full_disk.again.returncode == 0, full_disk.again.stderr
    assert full_disk.from_store_again == full_disk.committed


# A store as the first released schema wrote it: the tables of its only migration.
_VERSION_1_SCHEMA = """
CREATE TABLE [_migrations] ([name] TEXT PRIMARY KEY, [applied_at] FLOAT);
CREATE TABLE [runs] ([id] TEXT PRIMARY KEY, [task] TEXT, [provider] TEXT, [model] TEXT,
    [status] TEXT, [started_at] FLOAT, [finished_at] FLOAT, [total] INTEGER,
    [succeeded] INTEGER, [failed] INTEGER, [from_store] INTEGER, [run_dir] TEXT,
    [input] TEXT);
CREATE TABLE [responses] ([request_key] TEXT PRIMARY KEY, [output] TEXT,
    [prompt_tokens] INTEGER, [completion_tokens] INTEGER, [created_at] FLOAT);
INSERT INTO _migrations VALUES ('m001_runs_and_responses', 0);
"""


def test_old_store_is_migrated(tmp_path, fake_server_factory):
    server = fake_server_factory()
    write_jsonl(tmp_path / "in.jsonl", records(1))
    fresh = run(
        "task=summarize",
        "input=in.jsonl",
        "store=fresh.db",
        cwd=tmp_path,
        env=environment(server),
    )
    assert fresh.returncode == 0, fresh.stderr
    with sqlite3.connect(tmp_path / "fresh.db") as connection:
        answer = connection.execute(
            "SELECT request_key, output, prompt_tokens, completion_tokens"
            " FROM responses"
        ).fetchone()

    old = sqlite3.connect(tmp_path / "old.db")
    old.executescript(_VERSION_1_SCHEMA)
    old.execute("INSERT INTO responses VALUES (?, ?, ?, ?, 0)", answer)
    old.commit()
    old.close()

    server.reset()
    done = run(
        "task=summarize",
        "input=in.jsonl",
        "store=old.db",
        cwd=tmp_path,
        env=environment(server),
    )
    assert done.returncode == 0, done.stderr
    assert server.stats()["requests"] == 0
    assert read_summary(latest_run(tmp_path))["from_store"] == 1
    assert count_rows(tmp_path / "old.db", "items") == 1
    assert count_rows(tmp_path / "old.db", "_migrations") > 1


def test_store_that_is_not_sqlite(tmp_path):
    (tmp_path / "notes.db").write_text("not a database\n" * 100)
    done = run(
        "task=summarize",
        "provider=mock",
        "limit=1",
        "store=notes.db",
        cwd=tmp_path,
        env=environment(),
    )
    assert done.returncode == 4
    assert "notes.db is not an aimod store" in done.stderr
    assert (tmp_path / "notes.db").read_text().startswith("not a database")
