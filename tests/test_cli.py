"""The `aimod` command, run as a subprocess in a temporary working directory."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from ai_module.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
AIMOD = [sys.executable, "-m", "ai_module"]


def aimod(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    environment.update(env or {})
    return subprocess.run(
        [*AIMOD, *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_dirs(cwd: Path, task: str) -> list[Path]:
    return sorted((cwd / "runs" / task).iterdir(), key=lambda p: p.stat().st_mtime)


def read_results(run_dir: Path) -> list[dict]:
    with (run_dir / "results.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), "utf-8"
    )
    return path


@pytest.fixture
def server_env(fake_server):
    return {
        "OPENAI_API_KEY": fake_server.api_key,
        "OPENAI_BASE_URL": fake_server.base_url,
    }


def test_mock_run_on_bundled_sample(tmp_path):
    done = aimod("task=nl2cypher", "provider=mock", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (run_dir,) = run_dirs(tmp_path, "nl2cypher")
    results = read_results(run_dir)
    sample_lines = (
        (REPO / "tasks/examples/nl2cypher.jsonl").read_text("utf-8").splitlines()
    )
    assert len(results) == len(sample_lines) == 300
    schema = get_task("nl2cypher").output_schema
    for number, result in enumerate(results):
        assert result["index"] == number
        assert result["error"] is None
        jsonschema.validate(result["output"], schema)
    first = json.loads(sample_lines[0])
    assert results[0]["input"]["question"] == first["question"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["succeeded"] == 300
    assert "succeeded" in done.stdout


def test_rerun_is_served_from_store(tmp_path):
    first = aimod("task=nl2cypher", "provider=mock", "limit=10", cwd=tmp_path)
    second = aimod("task=nl2cypher", "provider=mock", "limit=10", cwd=tmp_path)
    assert first.returncode == second.returncode == 0
    later = run_dirs(tmp_path, "nl2cypher")[-1]
    summary = json.loads((later / "summary.json").read_text())
    assert summary["from_store"] == 10
    assert summary["requests"] == 0


def test_duplicate_records_in_one_run_pay_once(tmp_path, fake_server_factory):
    server = fake_server_factory(latency=0.2)
    env = {"OPENAI_API_KEY": server.api_key, "OPENAI_BASE_URL": server.base_url}
    write_jsonl(tmp_path / "dup.jsonl", [{"text": "duplicate me"}] * 50)
    done = aimod("task=summarize", "input=dup.jsonl", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(
        (run_dirs(tmp_path, "summarize")[-1] / "summary.json").read_text()
    )
    assert summary["succeeded"] == 50
    assert summary["requests"] == 1
    assert server.stats()["requests"] == 1


def test_two_runs_same_second_get_distinct_dirs(tmp_path):
    runs = [
        subprocess.Popen(
            [*AIMOD, "task=summarize", "provider=mock", "limit=2"],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    assert [run.wait(timeout=60) for run in runs] == [0, 0]
    assert len(run_dirs(tmp_path, "summarize")) == 2


def test_kill_9_then_resume_repays_nothing_committed(tmp_path, fake_server_factory):
    server = fake_server_factory(latency=0.15, record_bodies=True)
    env = {"OPENAI_API_KEY": server.api_key, "OPENAI_BASE_URL": server.base_url}
    texts = [f"document number {n}: ünïcode ✓" for n in range(80)]
    write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in texts])
    args = ["task=summarize", "provider=openai", "input=docs.jsonl", "parallelism=4"]

    process = subprocess.Popen(
        [*AIMOD, *args],
        cwd=tmp_path,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = tmp_path / "runs" / "aimod.db"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if store.exists() and _count(store, "responses") >= 20:
            break
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    committed = _count(store, "responses")
    assert 20 <= committed < 80

    committed_texts = _committed_texts(store, texts)
    server.reset()
    done = aimod(*args, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr

    asked = [_user_text(entry["body"]) for entry in server.requests()]
    assert not committed_texts & set(asked)
    assert len(asked) == 80 - committed
    results = read_results(run_dirs(tmp_path, "summarize")[-1])
    assert [r["index"] for r in results] == list(range(80))
    assert [r["input"]["text"] for r in results] == texts
    assert all(r["error"] is None for r in results)


def _count(store: Path, table: str) -> int:
    if not store.exists():
        return 0
    with sqlite3.connect(store, timeout=10) as connection:
        try:
            return connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def _committed_texts(store: Path, texts: list[str]) -> set[str]:
    with sqlite3.connect(store, timeout=10) as connection:
        rows = connection.execute(
            "SELECT idx FROM items WHERE status = 'ok'"
        ).fetchall()
    return {texts[index] for (index,) in rows}


def _user_text(body: dict) -> str:
    return body["messages"][-1]["content"].split("Text:\n", 1)[1]


def test_user_task_runs_without_code(tmp_path):
    shutil.copytree(REPO / "examples" / "tasks", tmp_path / "tasks")
    shutil.copytree(REPO / "examples" / "data", tmp_path / "data")
    done = aimod("task=sentiment", "provider=mock", "limit=25", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    results = read_results(run_dirs(tmp_path, "sentiment")[0])
    assert len(results) == 25
    labels = {"negative", "positive", "no_impact", "mixed"}
    assert all(r["output"]["label"] in labels for r in results)
    listing = aimod("tasks", cwd=tmp_path)
    assert "sentiment" in listing.stdout
    assert str(tmp_path / "tasks" / "sentiment.yaml") in listing.stdout


def test_user_task_overrides_builtin(tmp_path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "summarize.yaml").write_text(
        "name: summarize\n"
        "input_fields: [text]\n"
        "user: |\n  Give a headline for: {{ text }}\n"
        "output_schema:\n"
        "  type: object\n"
        "  properties: {headline: {type: string}}\n"
        "  required: [headline]\n",
        encoding="utf-8",
    )
    write_jsonl(tmp_path / "in.jsonl", [{"text": "a"}, {"text": "b"}])
    done = aimod("task=summarize", "provider=mock", "input=in.jsonl", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    results = read_results(run_dirs(tmp_path, "summarize")[0])
    assert all(set(r["output"]) == {"headline"} for r in results)


def test_task_override_from_command_line(tmp_path, server_env, fake_server):
    write_jsonl(tmp_path / "in.jsonl", [{"text": "a"}])
    done = aimod(
        "task=summarize",
        "input=in.jsonl",
        "task.generation.temperature=0.7",
        "max_tokens=99",
        cwd=tmp_path,
        env=server_env,
    )
    assert done.returncode == 0, done.stderr
    body = fake_server.requests()[0]["body"]
    assert body["temperature"] == 0.7
    assert body["max_tokens"] == 99


def test_sweep_2x2_then_repeat_calls_nothing(tmp_path, server_env, fake_server):
    write_jsonl(tmp_path / "in.jsonl", [{"text": f"t{n}"} for n in range(5)])
    args = [
        "-m",
        "task=summarize",
        "input=in.jsonl",
        "model=m-a,m-b",
        "temperature=0,0.5",
    ]
    first = aimod(*args, cwd=tmp_path, env=server_env)
    assert first.returncode == 0, first.stderr
    assert fake_server.stats()["ok"] == 20
    sweeps = sorted((tmp_path / "runs" / "multirun").iterdir())
    assert len(sweeps) == 1
    listing = [
        json.loads(line) for line in (sweeps[0] / "runs.jsonl").read_text().splitlines()
    ]
    assert len(listing) == 4
    assert len({entry["run_dir"] for entry in listing}) == 4
    for entry in listing:
        assert len(read_results(Path(entry["run_dir"]))) == 5

    second = aimod(*args, cwd=tmp_path, env=server_env)
    assert second.returncode == 0, second.stderr
    assert fake_server.stats()["requests"] == 20


def test_hydra_mode_override_sweeps(tmp_path):
    done = aimod(
        "hydra.mode=MULTIRUN",
        "task=summarize",
        "provider=mock",
        "limit=2",
        "parallelism=1,2",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    (sweep,) = (tmp_path / "runs" / "multirun").iterdir()
    assert len((sweep / "runs.jsonl").read_text().splitlines()) == 2


def test_joblib_sweep_shares_store(tmp_path, server_env, fake_server):
    write_jsonl(tmp_path / "in.jsonl", [{"text": f"t{n}"} for n in range(8)])
    args = [
        "-m",
        "hydra/launcher=joblib",
        "task=summarize",
        "input=in.jsonl",
        "model=m-a,m-b",
        "temperature=0,0.5",
    ]
    done = aimod(*args, cwd=tmp_path, env=server_env, timeout=180)
    assert done.returncode == 0, done.stderr
    assert fake_server.stats()["ok"] == 32
    (sweep,) = (tmp_path / "runs" / "multirun").iterdir()
    assert len((sweep / "runs.jsonl").read_text().splitlines()) == 4
    assert _count(tmp_path / "runs" / "aimod.db", "responses") == 32

    again = aimod(*args, cwd=tmp_path, env=server_env, timeout=180)
    assert again.returncode == 0, again.stderr
    assert fake_server.stats()["requests"] == 32


def test_unknown_task_lists_available(tmp_path):
    done = aimod("task=sumarize", "provider=mock", cwd=tmp_path)
    assert done.returncode == 2
    assert "Did you mean 'summarize'" in done.stderr
    assert "nl2cypher" in done.stderr
    assert "HYDRA_FULL_ERROR" not in done.stderr
    assert not (tmp_path / "runs").exists()
    swept = aimod("-m", "task=summarize,nosuch", "provider=mock", cwd=tmp_path)
    assert swept.returncode == 2
    assert "unknown task 'nosuch'" in swept.stderr


def test_no_task_given(tmp_path):
    done = aimod("provider=mock", cwd=tmp_path)
    assert done.returncode == 2
    assert "task=NAME" in done.stderr
    assert "summarize" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_version(tmp_path):
    done = aimod("--version", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.startswith("aimod 0.")


def test_missing_key_fails_before_any_request(tmp_path, fake_server):
    done = aimod(
        "task=summarize",
        "limit=3",
        cwd=tmp_path,
        env={"OPENAI_BASE_URL": fake_server.base_url},
    )
    assert done.returncode == 2
    assert "OPENAI_API_KEY" in done.stderr
    assert fake_server.stats()["requests"] == 0


def test_malformed_line_reported_with_line_number(tmp_path):
    (tmp_path / "in.jsonl").write_text(
        '{"text": "fine"}\n{"text": broken\n\n{"text": "also fine"}\n', encoding="utf-8"
    )
    done = aimod("task=summarize", "provider=mock", "input=in.jsonl", cwd=tmp_path)
    assert done.returncode == 1
    results = read_results(run_dirs(tmp_path, "summarize")[0])
    assert [r["line"] for r in results] == [1, 2, 4]
    assert results[0]["error"] is None
    assert results[2]["error"] is None
    assert "in.jsonl:2" in results[1]["error"]["message"]
    assert "malformed JSON" in results[1]["error"]["message"]


@pytest.mark.parametrize(
    "override",
    [
        "+api_key=sk-test-abcdefghijkl",
        "options.api_key=xyz",
        "+provider.api_key=xyz",
        "base_url=sk-abcdefghijklmnop",
        "options.headers.x-api-key=gsk_FAKEGROQKEY1234567890",
        "options.headers.Authorization=xyz-abc-123",
        "api_key_env=gsk_FAKEGROQKEY1234567890",
        "provider.api_key_env=plain-looking-key-123",
    ],
)
def test_secret_override_rejected_and_never_written(tmp_path, override):
    done = aimod("task=summarize", "provider=mock", override, cwd=tmp_path)
    assert done.returncode == 2
    assert "environment" in done.stderr
    value = override.split("=", 1)[1]
    assert value not in done.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert value not in path.read_text(errors="replace"), path


def test_help_lists_tasks_and_providers(tmp_path):
    done = aimod("--help", cwd=tmp_path)
    assert done.returncode == 0
    for name in (
        "nl2cypher",
        "summarize",
        "mock",
        "ollama",
        "openrouter",
        "parallelism",
    ):
        assert name in done.stdout


def test_runs_and_export(tmp_path):
    assert (
        aimod("task=summarize", "provider=mock", "limit=4", cwd=tmp_path).returncode
        == 0
    )
    runs = aimod("runs", cwd=tmp_path)
    assert runs.returncode == 0
    run_id = runs.stdout.splitlines()[1].split()[0]
    exported = aimod("export", run_id, "--format", "csv", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    rows = exported.stdout.splitlines()
    assert rows[0].startswith("index,line,status,summary")
    assert len(rows) == 5
    as_jsonl = aimod("export", run_id, cwd=tmp_path)
    assert len(as_jsonl.stdout.splitlines()) == 4


def test_export_csv_with_plain_outputs(tmp_path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "label.yaml").write_text(
        "input_fields: [text]\nuser: '{{ text }}'\nresult_field: label\n"
        "output_schema:\n  type: object\n  properties: {label: {type: string}}\n"
        "  required: [label]\n"
    )
    write_jsonl(tmp_path / "in.jsonl", [{"text": "a"}, {"text": "b"}])
    assert (
        aimod("task=label", "provider=mock", "input=in.jsonl", cwd=tmp_path).returncode
        == 0
    )
    run_dir = run_dirs(tmp_path, "label")[-1]
    exported = aimod("export", str(run_dir), "--format", "csv", cwd=tmp_path)
    rows = list(csv.reader(io.StringIO(exported.stdout)))
    assert rows[0] == ["index", "line", "status", "output", "error", "input"]
    for row in rows[1:]:
        assert len(row) == len(rows[0])
        assert row[2] == "ok"
        assert row[3]
        assert row[4] == ""


def test_validate_reports_bad_task(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nuser: |\n  {{ x \noutput_schema: {type: object}\n", "utf-8"
    )
    done = aimod("validate", str(bad), cwd=tmp_path)
    assert done.returncode == 2
    assert f"{bad}:3" in done.stderr
    good = aimod("validate", "nl2cypher", cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    assert "renders" in good.stdout


def test_misspelt_setting_suggests_the_right_one(tmp_path):
    done = aimod("task=summarize", "provider=mock", "paralelism=3", cwd=tmp_path)
    assert done.returncode == 2
    assert "unknown setting 'paralelism'" in done.stderr
    assert "Did you mean 'parallelism'?" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_cost_estimate_from_prices(tmp_path):
    done = aimod(
        "task=summarize",
        "provider=mock",
        "limit=5",
        "price.prompt=2",
        "price.completion=10",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(
        (run_dirs(tmp_path, "summarize")[0] / "summary.json").read_text()
    )
    expected = (summary["prompt_tokens"] * 2 + summary["completion_tokens"] * 10) / 1e6
    assert summary["estimated_cost_usd"] == pytest.approx(expected)
    assert "cost" in done.stdout


def test_runs_marks_killed_run(tmp_path):
    process = subprocess.Popen(
        [
            *AIMOD,
            "task=summarize",
            "provider=mock",
            "options.latency=0.2",
            "parallelism=1",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = tmp_path / "runs" / "aimod.db"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _count(store, "items") < 3:
        time.sleep(0.2)
    process.kill()
    process.wait(timeout=10)
    listing = aimod("runs", cwd=tmp_path)
    row = listing.stdout.splitlines()[1]
    assert " killed " in row
    assert " 0 failed" in row


def test_shards_split_input_exactly_once(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"text": f"t{n}"} for n in range(10)])
    done = aimod(
        "-m",
        "task=summarize",
        "provider=mock",
        "input=in.jsonl",
        "shard=0/3,1/3,2/3",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    (sweep,) = (tmp_path / "runs" / "multirun").iterdir()
    listing = [
        json.loads(line) for line in (sweep / "runs.jsonl").read_text().splitlines()
    ]
    assert sorted(entry["total"] for entry in listing) == [3, 3, 4]
    indexes = []
    for entry in listing:
        for result in read_results(Path(entry["run_dir"])):
            assert result["input"]["text"] == f"t{result['index']}"
            indexes.append(result["index"])
    assert sorted(indexes) == list(range(10))
    assert any("shard=1/3" in entry["overrides"] for entry in listing)


@pytest.mark.parametrize("value", ["3/3", "1", "a/b", "-1/2"])
def test_invalid_shard_rejected(tmp_path, value):
    done = aimod("task=summarize", "provider=mock", f"shard={value}", cwd=tmp_path)
    assert done.returncode == 2
    assert "invalid setting shard=" in done.stderr


def test_user_provider_files(tmp_path, fake_server):
    providers = tmp_path / "conf" / "provider"
    providers.mkdir(parents=True)
    (providers / "mylocal.yaml").write_text(
        f"name: mylocal\nbase_url: {fake_server.base_url}\napi_key_env: MY_LOCAL_KEY\n"
        "model: local-model\noptions: {}\n",
        encoding="utf-8",
    )
    (providers / "openai.yaml").write_text(
        "name: mock\nbase_url: null\napi_key_env: null\nmodel: replaced\noptions: {}\n",
        encoding="utf-8",
    )
    custom = aimod(
        "task=summarize",
        "provider=mylocal",
        "limit=2",
        cwd=tmp_path,
        env={"MY_LOCAL_KEY": fake_server.api_key},
    )
    assert custom.returncode == 0, custom.stderr
    assert fake_server.stats()["ok"] == 2
    assert {e["body"]["model"] for e in fake_server.requests()} == {"local-model"}
    replaced = aimod("task=summarize", "limit=2", cwd=tmp_path)
    assert replaced.returncode == 0, replaced.stderr
    assert "mock replaced" in replaced.stdout


def test_task_name_must_match_file(tmp_path):
    (tmp_path / "tasks").mkdir()
    body = 'input_fields: [text]\nuser: "{{ text }}"\noutput_schema: {type: object}\n'
    (tmp_path / "tasks" / "mism.yaml").write_text("name: other\n" + body)
    (tmp_path / "tasks" / "noname.yaml").write_text(body)
    write_jsonl(tmp_path / "in.jsonl", [{"text": "a"}])
    mismatch = aimod("task=mism", "provider=mock", "input=in.jsonl", cwd=tmp_path)
    unnamed = aimod("task=noname", "provider=mock", "input=in.jsonl", cwd=tmp_path)
    assert mismatch.returncode == 2
    assert "differs from the file name" in mismatch.stderr
    assert not (tmp_path / "runs" / "other").exists()
    assert unnamed.returncode == 0, unnamed.stderr
    assert len(run_dirs(tmp_path, "noname")) == 1


def test_sweep_lists_rejected_job(tmp_path):
    done = aimod(
        "-m",
        "task=summarize",
        "provider=mock",
        "limit=2",
        "parallelism=0,4",
        cwd=tmp_path,
    )
    assert done.returncode == 2
    (sweep,) = (tmp_path / "runs" / "multirun").iterdir()
    listing = [
        json.loads(line) for line in (sweep / "runs.jsonl").read_text().splitlines()
    ]
    by_status = {entry["status"]: entry for entry in listing}
    assert set(by_status) == {"failed", "completed"}
    assert "parallelism=0" in by_status["failed"]["message"]
    assert by_status["failed"]["exit_code"] == 2


def test_runs_without_store_is_usage_error(tmp_path):
    done = aimod("runs", cwd=tmp_path)
    assert done.returncode == 2
    assert "no store at" in done.stderr
