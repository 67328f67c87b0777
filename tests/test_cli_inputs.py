"""Input formats, field mapping, resume=false and the progress display."""

from __future__ import annotations

import csv
import gzip
import json
import os
import pty
import subprocess
import sys

import pytest
from test_cli import AIMOD, aimod, read_results, run_dirs

RECORDS = [{"question": f"how many users named Ann {n}?", "extra": n} for n in range(6)]


def write_input(folder, name):
    path = folder / name
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8", newline="") as handle:
        if ".jsonl" in name:
            handle.writelines(json.dumps(r) + "\n" for r in RECORDS)
        elif ".json" in name:
            json.dump(RECORDS, handle)
        else:
            writer = csv.DictWriter(handle, fieldnames=["question", "extra"])
            writer.writeheader()
            writer.writerows(RECORDS)
    return path


@pytest.mark.parametrize(
    "name", ["q.jsonl", "q.jsonl.gz", "q.json", "q.csv", "q.csv.gz"]
)
def test_formats_with_field_mapping(tmp_path, name):
    write_input(tmp_path, name)
    done = aimod(
        "task=nl2cypher",
        "provider=mock",
        f"input={name}",
        "input.fields.prompt=question",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    results = read_results(run_dirs(tmp_path, "nl2cypher")[0])
    assert [r["input"]["prompt"] for r in results] == [r["question"] for r in RECORDS]
    assert all(r["error"] is None for r in results)


def test_limit_takes_first_records(tmp_path):
    write_input(tmp_path, "q.jsonl")
    done = aimod(
        "task=nl2cypher",
        "provider=mock",
        "input=q.jsonl",
        "input.fields.prompt=question",
        "limit=2",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert len(read_results(run_dirs(tmp_path, "nl2cypher")[0])) == 2


def test_unmapped_column_is_reported_per_record(tmp_path):
    write_input(tmp_path, "q.jsonl")
    done = aimod(
        "task=nl2cypher",
        "provider=mock",
        "input=q.jsonl",
        "input.fields.prompt=questoin",
        cwd=tmp_path,
    )
    assert done.returncode == 1
    results = read_results(run_dirs(tmp_path, "nl2cypher")[0])
    assert all("questoin" in r["error"]["message"] for r in results)


def test_resume_false_asks_again(tmp_path, fake_server):
    env = {
        "OPENAI_API_KEY": fake_server.api_key,
        "OPENAI_BASE_URL": fake_server.base_url,
    }
    (tmp_path / "in.jsonl").write_text(
        '{"text": "a"}\n{"text": "b"}\n', encoding="utf-8"
    )
    assert (
        aimod("task=summarize", "input=in.jsonl", cwd=tmp_path, env=env).returncode == 0
    )
    assert (
        aimod("task=summarize", "input=in.jsonl", cwd=tmp_path, env=env).returncode == 0
    )
    assert fake_server.stats()["ok"] == 2
    fresh = aimod(
        "task=summarize", "input=in.jsonl", "resume=false", cwd=tmp_path, env=env
    )
    assert fresh.returncode == 0, fresh.stderr
    assert fake_server.stats()["ok"] == 4


def test_progress_bar_on_terminal(tmp_path):
    """Under a pseudo-terminal the bar is drawn; through a pipe it is not."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [*AIMOD, "task=nl2cypher", "provider=mock", "limit=50"],
        cwd=tmp_path,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env={k: v for k, v in os.environ.items() if k != "COLUMNS"},
    )
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    assert process.wait(timeout=60) == 0
    os.close(leader)
    text = output.decode("utf-8", "replace")
    assert "50/50" in text
    assert "item/s" in text

    piped = aimod("task=nl2cypher", "provider=mock", "limit=50", cwd=tmp_path)
    assert "item/s" not in piped.stderr
    assert "succeeded" in piped.stdout


def test_python_module_entry_point(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "ai_module", "tasks"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert "nl2cypher" in done.stdout
