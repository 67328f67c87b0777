"""The API key never reaches a file or an output, and task files stay sandboxed.

The runs use a recognisable fake key that the fake server requires, so every
successful call proves that the key was sent. The tests then search every file
under the working folder (results, summary, logs, `.hydra/`, the SQLite store
and its WAL) and every stdout and stderr for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_process import environment, latest_run, read_results, run, write_jsonl
from pydantic import ValidationError

from ai_module.config import AIConfig
from ai_module.testing.server_process import FakeOpenAIServer

CANARY_KEY = "sk-aimod-canary-7f3e9c1d5b2a4e6f8091a2b3c4d5e6f7"

# Hydra overrides that turn every logger and handler of the run up to DEBUG.
DEBUG_LOGGING = [
    "hydra.job_logging.root.level=DEBUG",
    "hydra.job_logging.handlers.console.level=DEBUG",
    "hydra.job_logging.handlers.file.level=DEBUG",
    "hydra.job_logging.loggers.httpx.level=DEBUG",
    "hydra.job_logging.loggers.httpcore.level=DEBUG",
]

# A task whose user template divides by zero: rendering raises
# ZeroDivisionError, which the run logs with its traceback.
TRACEBACK_TASK = """\
name: traceback
input_fields: [text]
user: |
  {{ text }} {{ (text | length) / 0 }}
output_schema:
  type: object
  properties: {summary: {type: string}}
  required: [summary]
"""


@dataclass
class Outputs:
    cwd: Path
    texts: list[str]
    ok_calls: int


@pytest.fixture(scope="module")
def runs_with_key(tmp_path_factory) -> Outputs:
    """Run aimod three ways with the canary key; keep every stdout and stderr."""
    cwd = tmp_path_factory.mktemp("secrets")
    write_jsonl(cwd / "in.jsonl", [{"text": f"record {n}"} for n in range(30)])
    (cwd / "tasks").mkdir()
    (cwd / "tasks" / "traceback.yaml").write_text(TRACEBACK_TASK, encoding="utf-8")
    faults = {
        "p500": 0.2,
        "p429": 0.1,
        "p_drop": 0.1,
        "p_garbage": 0.1,
        "retry_after": 0.05,
    }
    texts = []
    with FakeOpenAIServer(api_key=CANARY_KEY, seed=11, **faults) as server:
        env = environment(server, HYDRA_FULL_ERROR="1")
        assert env["OPENAI_API_KEY"] == CANARY_KEY
        # Retries, repairs and drops, with every logger at DEBUG.
        noisy = run(
            "task=summarize",
            "input=in.jsonl",
            "retry_max_wait=0.1",
            *DEBUG_LOGGING,
            cwd=cwd,
            env=env,
        )
        # An unexpected error per item, logged with its traceback.
        traceback = run("task=traceback", "input=in.jsonl", "limit=2", cwd=cwd, env=env)
        ok_calls = server.stats()["ok"]
        # A 401 whose message quotes the key, as some providers and proxies do.
        echo = {
            "message": f"Incorrect API key provided: {CANARY_KEY}.",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        }
        server.configure(script=[{"status": 401, "body": {"error": echo}}])
        rejected = run(
            "task=summarize", "input=in.jsonl", "resume=false", cwd=cwd, env=env
        )
    for done in (noisy, traceback, rejected):
        texts += [done.stdout, done.stderr]
    assert noisy.returncode in (0, 1), noisy.stderr
    assert "Traceback" in traceback.stderr
    assert rejected.returncode == 3, rejected.stderr
    return Outputs(cwd, texts, ok_calls)


def test_runs_sent_the_key(runs_with_key):
    # The fake server accepts only requests that carry the canary key.
    assert runs_with_key.ok_calls > 0


def test_debug_log_was_written(runs_with_key):
    logs = [path.read_text() for path in runs_with_key.cwd.rglob("aimod.log")]
    assert any("[DEBUG]" in text for text in logs)


def test_key_absent_from_outputs(runs_with_key):
    for text in runs_with_key.texts:
        assert CANARY_KEY not in text


def test_key_absent_from_files(runs_with_key):
    files = [path for path in runs_with_key.cwd.rglob("*") if path.is_file()]
    names = {path.name for path in files}
    assert {
        "aimod.db",
        "results.jsonl",
        "summary.json",
        "aimod.log",
        "config.yaml",
    } <= names
    for path in files:
        assert CANARY_KEY.encode() not in path.read_bytes(), path


def test_key_absent_from_rejection_message(runs_with_key):
    assert any(
        "Incorrect API key provided: [redacted]" in t for t in runs_with_key.texts
    )


def test_task_text_is_sent_literally(tmp_path, fake_server):
    # `${...}` in a task file is text: neither the environment nor aimod's own
    # settings are read into the prompt.
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "leak.yaml").write_text(
        "name: leak\ninput_fields: [text]\nuser: |\n"
        "  {{ text }} ${oc.env:OPENAI_API_KEY} ${model} \\${price}\n"
        "output_schema: {type: object}\n",
        encoding="utf-8",
    )
    write_jsonl(tmp_path / "in.jsonl", [{"text": "a"}])
    done = run(
        "task=leak",
        "input=in.jsonl",
        cwd=tmp_path,
        env=environment(fake_server, OPENAI_API_KEY=CANARY_KEY),
    )
    assert done.returncode == 0, done.stderr
    (request,) = fake_server.requests()
    sent = request["body"]["messages"][-1]["content"]
    assert sent == "a ${oc.env:OPENAI_API_KEY} ${model} \\${price}"


@pytest.mark.parametrize(
    "template",
    [
        "{{ cycler.__init__.__globals__.os.system('touch pwned') }}",
        "{{ lipsum.__globals__['os'].popen('touch pwned').read() }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    ],
)
def test_sandbox_blocks_internals_in_run(tmp_path, fake_server, template):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "escape.yaml").write_text(
        f"name: escape\ninput_fields: [text]\nuser: |\n  {template}\n"
        "output_schema: {type: object}\n",
        encoding="utf-8",
    )
    write_jsonl(tmp_path / "in.jsonl", [{"text": "a"}])
    done = run(
        "task=escape", "input=in.jsonl", cwd=tmp_path, env=environment(fake_server)
    )
    assert done.returncode == 1, done.stderr
    (result,) = read_results(latest_run(tmp_path, "escape"))
    assert result["error"]["type"] == "RenderError"
    assert "sandbox" in result["error"]["message"]
    assert not (tmp_path / "pwned").exists()
    assert fake_server.stats()["requests"] == 0


# -- AIConfig built from Python ------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"api_key": CANARY_KEY},
        {"apiKey": CANARY_KEY},
        {"openai_api_key": CANARY_KEY},
        {"options": {"headers": {"Authorization": f"Bearer {CANARY_KEY}"}}},
    ],
)
def test_config_rejects_key_without_repeating(settings):
    with pytest.raises(ValidationError) as info:
        AIConfig(**settings)
    message = str(info.value)
    assert "OPENAI_API_KEY" in message
    assert CANARY_KEY not in message


def test_config_rejects_key_as_variable_name():
    with pytest.raises(ValidationError) as info:
        AIConfig(api_key_env=CANARY_KEY)
    assert "api_key_env" in str(info.value)
    assert CANARY_KEY not in str(info.value)


def test_config_assignment_hides_key():
    config = AIConfig()
    with pytest.raises(ValidationError) as info:
        config.api_key_env = CANARY_KEY
    assert CANARY_KEY not in str(info.value)
    assert config.api_key_env is None


def test_config_accepts_token_settings():
    config = AIConfig(max_tokens=50, tokens_per_minute=1000, api_key_env="MY_KEY")
    assert config.key_env() == "MY_KEY"
