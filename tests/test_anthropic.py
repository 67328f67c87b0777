"""The anthropic provider: Messages API wire format and runs against the fake server."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from test_cli import aimod, read_results, run_dirs

from ai_module import AIConfig, run_batch
from ai_module.errors import (
    AuthenticationError,
    ErrorBodyError,
    RateLimitedError,
    TransientError,
    TruncatedOutputError,
)
from ai_module.providers.anthropic import build_messages_body, parse_message
from ai_module.providers.base import ChatRequest
from ai_module.tasks import get_task


def chat_request(task_name: str, **generation) -> ChatRequest:
    task = get_task(task_name)
    record = {"prompt": "count users", "text": "A short text."}
    return ChatRequest(
        "claude-test", task.render(record), generation, task.output_schema
    )


def test_body_moves_system_and_requires_max_tokens():
    body = build_messages_body(chat_request("summarize"))
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert body["system"].startswith("You write summaries.")
    assert body["max_tokens"] == 4096
    assert (
        body["output_config"]["format"]["schema"] == get_task("summarize").output_schema
    )


def test_open_schema_goes_into_system_prompt():
    body = build_messages_body(chat_request("nl2cypher"))
    assert "output_config" not in body
    assert '"cypher"' in body["system"]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]


def test_generation_settings_translated():
    body = build_messages_body(
        chat_request("summarize", temperature=0.3, max_tokens=99, stop="END", seed=4)
    )
    assert body["temperature"] == 0.3
    assert body["max_tokens"] == 99
    assert body["stop_sequences"] == ["END"]
    assert "seed" not in body
    assert "stop" not in body


def message(text: str, stop_reason: str = "end_turn") -> bytes:
    return orjson.dumps(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-test",
            "content": [{"type": "text", "text": text}],
            "stop_reason": stop_reason,
            "usage": {"input_tokens": 12, "output_tokens": 3},
        }
    )


def test_parse_message():
    response = parse_message(200, {}, message('{"summary": "x"}'))
    assert response.text == '{"summary": "x"}'
    assert response.finish_reason == "stop"
    assert response.usage.prompt_tokens == 12
    assert response.usage.completion_tokens == 3


def test_max_tokens_stop_is_length():
    assert parse_message(200, {}, message("{", "max_tokens")).finish_reason == "length"


@pytest.mark.parametrize(
    ("status", "kind", "headers", "error"),
    [
        (429, "rate_limit_error", {"retry-after": "2"}, RateLimitedError),
        (401, "authentication_error", {}, AuthenticationError),
        (529, "overloaded_error", {}, TransientError),
        (500, "api_error", {}, TransientError),
        (200, "api_error", {}, ErrorBodyError),
    ],
)
def test_errors(status, kind, headers, error):
    body = orjson.dumps({"type": "error", "error": {"type": kind, "message": "m"}})
    with pytest.raises(error):
        parse_message(status, headers, body)


@pytest.fixture
def anthropic_env(fake_server, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", fake_server.api_key)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_server.url)
    return {
        "ANTHROPIC_API_KEY": fake_server.api_key,
        "ANTHROPIC_BASE_URL": fake_server.url,
    }


def test_run_batch_against_fake_server(fake_server, anthropic_env):
    cfg = AIConfig(provider="anthropic", model="claude-test", parallelism=4)
    results = asyncio.run(
        run_batch("summarize", [{"text": f"t{n}"} for n in range(6)], cfg)
    )
    assert all(isinstance(r, dict) and r["summary"] for r in results)
    entry = fake_server.requests()[0]
    assert entry["headers"]["anthropic-version"] == "2023-06-01"
    assert entry["has_auth"]
    assert "authorization" not in entry["headers"]
    assert entry["body"]["max_tokens"] == 4096


def test_retry_after_and_truncation(fake_server_factory, monkeypatch):
    server = fake_server_factory(
        script=[
            {"status": 429, "headers": {"Retry-After": "0.2"}},
            {"content": '{"summary": "cut', "finish_reason": "length"},
        ]
    )
    monkeypatch.setenv("ANTHROPIC_API_KEY", server.api_key)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    cfg = AIConfig(provider="anthropic", parallelism=1, retry_max_wait=0.1)
    (result,) = asyncio.run(run_batch("summarize", [{"text": "t"}], cfg))
    assert isinstance(result, TruncatedOutputError)
    assert result.attempts == 2


def test_command_with_anthropic_provider(tmp_path, fake_server, anthropic_env):
    done = aimod(
        "task=summarize",
        "provider=anthropic",
        "limit=3",
        cwd=tmp_path,
        env=anthropic_env,
    )
    assert done.returncode == 0, done.stderr
    results = read_results(run_dirs(tmp_path, "summarize")[0])
    assert len(results) == 3
    assert all(r["error"] is None for r in results)
