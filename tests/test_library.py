"""run_batch against the fake OpenAI-compatible server on 127.0.0.1 and the mock.

The first tests run the README's Python snippets verbatim in a fresh
interpreter; the rest drive faults through the real HTTP stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import textwrap
import time

import pytest
from pydantic import ValidationError
from test_limiter import max_in_window

from ai_module import AIConfig, run_batch, run_batch_sync
from ai_module.errors import (
    AuthenticationError,
    ConfigError,
    InputError,
    InvalidRequestError,
    ParseOutputError,
    QuotaExceededError,
    RunAbortedError,
    SchemaValidationError,
    TransientError,
    TruncatedOutputError,
)
from ai_module.orchestrator import iter_batch, stream_batch
from ai_module.tasks import get_task

NL2CYPHER_SNIPPET = textwrap.dedent(
    """\
    import asyncio
    from ai_module.config import AIConfig
    from ai_module.orchestrator import run_batch

    cfg = AIConfig(provider="openai", model="gpt-4o-mini", parallelism=8, rps=4.0)
    inputs = [
        {"prompt": "list all projects"},
        {"prompt": "count users"},
        {"prompt": "create node Person name:Alice"},
    ]
    results = asyncio.run(run_batch("nl2cypher", inputs, cfg))
    for i, r in enumerate(results):
        if isinstance(r, Exception):
            print(f"[{i}] ERROR:", r)
        else:
            print(f"[{i}] CYPHER:", r.get("cypher"), r.get("params"))
    """
)

SUMMARIZE_SNIPPET = textwrap.dedent(
    """\
    import asyncio
    from ai_module.config import AIConfig
    from ai_module.orchestrator import run_batch

    corpus = [
        "Graphs store relations.", "Queues order work.", "Caches trade memory for time."
    ]
    results = asyncio.run(run_batch("summarize", [{"text": t} for t in corpus],
    AIConfig(parallelism=6, rps=3.0)))
    for r in results:
        print("SUMMARY:" if not isinstance(r, Exception) else "ERROR:", r)
    """
)


def run_snippet(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def openai_env(fake_server, monkeypatch):
    """Point the openai provider at the fake server, as the SDK's variables do."""
    monkeypatch.setenv("OPENAI_API_KEY", fake_server.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_server.base_url)
    return {
        "OPENAI_API_KEY": fake_server.api_key,
        "OPENAI_BASE_URL": fake_server.base_url,
    }


def test_nl2cypher_snippet_verbatim(fake_server, openai_env):
    done = run_snippet(NL2CYPHER_SNIPPET, openai_env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line[:12] for line in lines] == [
        "[0] CYPHER: ",
        "[1] CYPHER: ",
        "[2] CYPHER: ",
    ]
    assert fake_server.stats()["ok"] == 3
    bodies = fake_server.requests()
    assert {body["body"]["model"] for body in bodies} == {"gpt-4o-mini"}


def test_summarize_snippet_verbatim(fake_server, openai_env):
    done = run_snippet(SUMMARIZE_SNIPPET, openai_env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("SUMMARY:") == 3
    assert fake_server.stats()["ok"] == 3


def test_snippet_with_mock_provider():
    code = NL2CYPHER_SNIPPET.replace('provider="openai"', 'provider="mock"')
    done = run_snippet(code, {"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("CYPHER:") == 3


def test_missing_key_raises_before_any_request(fake_server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_server.base_url)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        asyncio.run(run_batch("summarize", [{"text": "x"}], AIConfig()))
    assert fake_server.stats()["requests"] == 0


def test_results_in_input_order_with_errors_in_place(fake_server, openai_env):
    inputs = [{"text": f"text {n}"} for n in range(20)]
    inputs[7] = {"wrong": "field"}
    results = asyncio.run(run_batch("summarize", inputs, AIConfig(parallelism=5)))
    assert len(results) == 20
    assert isinstance(results[7], Exception)
    assert all(isinstance(r, dict) for i, r in enumerate(results) if i != 7)
    assert fake_server.stats()["ok"] == 19


def test_parallelism_bounds_requests_in_flight(fake_server_factory, monkeypatch):
    server = fake_server_factory(latency=0.1)
    monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
    cfg = AIConfig(parallelism=4, base_url=server.base_url)
    asyncio.run(run_batch("summarize", [{"text": str(n)} for n in range(24)], cfg))
    assert server.stats()["max_in_flight"] == 4


def test_limiter_at_server_rps5_parallelism50(fake_server_factory, monkeypatch):
    server = fake_server_factory(record_starts=True)
    monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
    cfg = AIConfig(parallelism=50, rps=5, base_url=server.base_url)
    asyncio.run(run_batch("summarize", [{"text": str(n)} for n in range(14)], cfg))
    starts = server.stats()["starts"]
    assert len(starts) == 14
    assert max_in_window(starts) <= 5 + 1


def test_streaming_memory_bounded_by_parallelism():
    """The stream pulls items lazily: never more than ~2 x parallelism ahead."""
    pulled = 0
    finished = 0
    max_ahead = 0

    def records():
        nonlocal pulled
        for n in range(2000):
            pulled += 1
            yield {"text": str(n)}

    async def consume() -> None:
        nonlocal finished, max_ahead
        cfg = AIConfig(provider="mock", parallelism=8, options={"latency": 0.001})
        async for _index, _result in iter_batch("summarize", records(), cfg):
            finished += 1
            max_ahead = max(max_ahead, pulled - finished)

    asyncio.run(consume())
    assert finished == 2000
    assert max_ahead <= 2 * 8 + 1


def test_async_iterable_input():
    async def records():
        for n in range(10):
            await asyncio.sleep(0)
            yield {"text": f"async {n}"}

    async def consume() -> list:
        cfg = AIConfig(provider="mock")
        return [item async for item in iter_batch("summarize", records(), cfg)]

    pairs = asyncio.run(consume())
    assert sorted(index for index, _ in pairs) == list(range(10))


def test_sync_helper_inside_running_loop():
    async def notebook_cell() -> list:
        return run_batch_sync(
            "summarize", [{"text": "a"}, {"text": "b"}], AIConfig(provider="mock")
        )

    results = asyncio.run(notebook_cell())
    assert len(results) == 2
    assert all("summary" in r for r in results)


def test_failing_input_stops_other_workers(fake_server_factory, monkeypatch):
    server = fake_server_factory(latency=0.3)
    monkeypatch.setenv("OPENAI_API_KEY", server.api_key)

    def records():
        for n in range(10):
            yield {"text": f"record {n}"}
        raise ValueError("reader broke at record 10")

    cfg = AIConfig(parallelism=4, base_url=server.base_url)

    async def caller() -> tuple[int, int]:
        # The caller's loop goes on after the error, as an application's does.
        with pytest.raises(ValueError, match="record 10"):
            await run_batch("summarize", records(), cfg)
        sent = server.stats()["requests"]
        await asyncio.sleep(1.0)
        return sent, server.stats()["requests"]

    sent, later = asyncio.run(caller())
    assert later == sent


def test_closing_stream_early_stops_workers(fake_server_factory, monkeypatch):
    server = fake_server_factory(latency=0.2)
    monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
    cfg = AIConfig(parallelism=4, base_url=server.base_url)
    inputs = ({"text": f"record {n}"} for n in range(100))

    async def take_five() -> int:
        received = 0
        async with contextlib.aclosing(iter_batch("summarize", inputs, cfg)) as items:
            async for _item in items:
                received += 1
                if received == 5:
                    break
        return server.stats()["requests"]

    sent = asyncio.run(take_five())
    time.sleep(1.0)
    assert server.stats()["requests"] == sent
    assert sent < 100


CTRL_C_IN_NOTEBOOK = textwrap.dedent(
    """\
    import asyncio, os, signal, threading, time, httpx
    from ai_module.config import AIConfig
    from ai_module.orchestrator import run_batch_sync

    stats = os.environ["STATS_URL"]
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()

    async def cell():
        records = [{"text": f"z{n}"} for n in range(40)]
        run_batch_sync("summarize", records, AIConfig(parallelism=4))

    # A loop run the way a notebook kernel runs it: Python's own SIGINT handler.
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(cell())
    except KeyboardInterrupt:
        sent = httpx.get(stats).json()["requests"]
        time.sleep(1.5)
        print("SENT", sent, httpx.get(stats).json()["requests"])
    """
)


def test_sync_helper_ctrl_c_stops_batch(fake_server_factory):
    server = fake_server_factory(latency=0.5)
    env = {
        "OPENAI_API_KEY": server.api_key,
        "OPENAI_BASE_URL": server.base_url,
        "STATS_URL": server.url + "/_stats",
    }
    done = run_snippet(CTRL_C_IN_NOTEBOOK, env)
    assert done.returncode == 0, done.stderr
    _, at_interrupt, later = done.stdout.split()
    assert int(at_interrupt) < 40
    assert int(later) == int(at_interrupt)


# -- faults at the fake server -------------------------------------------------


def run_one(server, monkeypatch, **cfg_fields):
    monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
    fields = {"base_url": server.base_url, "parallelism": 1, "retry_max_wait": 0.2}
    fields.update(cfg_fields)
    return asyncio.run(run_batch("summarize", [{"text": "one"}], AIConfig(**fields)))[0]


def test_429_retry_never_earlier_than_retry_after(fake_server_factory, monkeypatch):
    server = fake_server_factory(
        record_starts=True,
        script=[{"status": 429, "headers": {"Retry-After": "1"}}],
    )
    result = run_one(server, monkeypatch)
    assert isinstance(result, dict)
    starts = server.stats()["starts"]
    assert len(starts) == 2
    assert starts[1] - starts[0] >= 1.0


def test_500_is_retried(fake_server_factory, monkeypatch):
    server = fake_server_factory(fail_first=2)
    result = run_one(server, monkeypatch)
    assert isinstance(result, dict)
    assert server.stats()["requests"] == 3


def test_read_timeout_is_transient(fake_server_factory, monkeypatch):
    server = fake_server_factory(latency=3)
    began = time.monotonic()
    result = run_one(server, monkeypatch, read_timeout=0.3, max_retries=1)
    assert isinstance(result, TransientError)
    assert "timed out" in str(result)
    assert result.attempts == 2
    assert time.monotonic() - began < 2.5


def test_connection_that_never_answers(fake_server_factory, monkeypatch):
    server = fake_server_factory(p_hang=1.0)
    result = run_one(server, monkeypatch, read_timeout=0.3, max_retries=0)
    assert isinstance(result, TransientError)
    assert result.attempts == 1


def test_401_is_not_retried_and_stops_the_batch(fake_server_factory, monkeypatch):
    server = fake_server_factory(status_always=401)
    monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
    cfg = AIConfig(base_url=server.base_url, parallelism=1)
    results = asyncio.run(
        run_batch("summarize", [{"text": str(n)} for n in range(5)], cfg)
    )
    assert isinstance(results[0], AuthenticationError)
    assert all(isinstance(r, RunAbortedError) for r in results[1:])
    assert server.stats()["requests"] == 1


def test_200_with_error_body_is_retried(fake_server_factory, monkeypatch):
    server = fake_server_factory(
        script=[{"status": 200, "body": {"error": {"message": "upstream overloaded"}}}]
    )
    result = run_one(server, monkeypatch)
    assert isinstance(result, dict)
    assert server.stats()["requests"] == 2


@pytest.mark.parametrize(
    "content",
    [
        'Here you go:\n```json\n{"summary": "fenced"}\n```',
        '{"summary": "with prose"}\nI hope this helps.',
    ],
)
def test_fenced_and_prose_answers_are_accepted(
    fake_server_factory, monkeypatch, content
):
    server = fake_server_factory(script=[{"content": content}])
    result = run_one(server, monkeypatch)
    assert isinstance(result, dict)
    assert result["summary"] in ("fenced", "with prose")
    assert server.stats()["requests"] == 1


def test_truncated_output_is_reported_as_truncated(fake_server_factory, monkeypatch):
    server = fake_server_factory(
        script=[{"content": '{"summary": "cut of', "finish_reason": "length"}]
    )
    result = run_one(server, monkeypatch)
    assert isinstance(result, TruncatedOutputError)
    assert "max_tokens" in str(result)
    assert server.stats()["requests"] == 1


def test_schema_violation_repaired_on_second_ask(fake_server_factory, monkeypatch):
    server = fake_server_factory(
        record_bodies=True, script=[{"content": '{"sumary": 1}'}]
    )
    result = run_one(server, monkeypatch)
    assert isinstance(result, dict)
    bodies = [entry["body"] for entry in server.requests()]
    assert len(bodies) == 2
    repair = bodies[1]["messages"]
    assert repair[-2] == {"role": "assistant", "content": '{"sumary": 1}'}
    assert "could not be used" in repair[-1]["content"]


def test_repairs_are_bounded(fake_server_factory, monkeypatch):
    server = fake_server_factory(script=[{"content": "{}"}] * 5)
    result = run_one(server, monkeypatch, max_repairs=2)
    assert isinstance(result, SchemaValidationError)
    assert server.stats()["requests"] == 3


def test_consecutive_failures_stop_the_batch(fake_server_factory, monkeypatch):
    server = fake_server_factory(status_always=500)
    monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
    cfg = AIConfig(
        base_url=server.base_url,
        parallelism=2,
        max_retries=1,
        retry_max_wait=0.05,
        max_consecutive_failures=4,
    )
    results = asyncio.run(
        run_batch("summarize", [{"text": str(n)} for n in range(200)], cfg)
    )
    assert sum(isinstance(r, RunAbortedError) for r in results) >= 190
    assert server.stats()["requests"] <= 8


def test_exhausted_quota_stops_the_batch(fake_server_factory, monkeypatch):
    quota = {
        "message": "You exceeded your current quota.",
        "type": "insufficient_quota",
        "code": "insufficient_quota",
    }
    server = fake_server_factory(
        script=[{"status": 429, "body": {"error": quota}}] * 50
    )
    monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
    cfg = AIConfig(base_url=server.base_url, parallelism=1, retry_max_wait=0.05)
    results = asyncio.run(
        run_batch("summarize", [{"text": str(n)} for n in range(10)], cfg)
    )
    assert isinstance(results[0], QuotaExceededError)
    assert "Add credit" in str(results[0])
    assert all(isinstance(r, RunAbortedError) for r in results[1:])
    assert server.stats()["requests"] == 1


def test_rejected_records_after_success_do_not_stop(fake_server_factory, monkeypatch):
    too_long = {"message": "context_length_exceeded", "type": "invalid_request_error"}
    script = [{"status": 200}] + [{"status": 400, "body": {"error": too_long}}] * 25
    server = fake_server_factory(script=script)
    monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
    cfg = AIConfig(base_url=server.base_url, parallelism=1, max_consecutive_failures=5)
    results = asyncio.run(
        run_batch("summarize", [{"text": str(n)} for n in range(30)], cfg)
    )
    assert sum(isinstance(r, InvalidRequestError) for r in results) == 25
    assert sum(isinstance(r, dict) for r in results) == 5
    assert not any(isinstance(r, RunAbortedError) for r in results)


def test_rejected_requests_from_start_stop(fake_server_factory, monkeypatch):
    server = fake_server_factory(status_always=400)
    monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
    cfg = AIConfig(base_url=server.base_url, parallelism=1, max_consecutive_failures=3)
    results = asyncio.run(
        run_batch("summarize", [{"text": str(n)} for n in range(10)], cfg)
    )
    assert server.stats()["requests"] == 3
    stop = results[3]
    assert isinstance(stop, RunAbortedError)
    assert "output_schema" in str(stop)
    assert ".." not in str(stop)


def test_failing_parse_output_keeps_response(fake_server, openai_env):
    task = get_task("summarize").with_parser(lambda output: int(output["summary"]))
    (item,) = asyncio.run(collect(stream_batch(task, [{"text": "one"}], AIConfig())))
    assert isinstance(item.error, ParseOutputError)
    assert isinstance(item.error.__cause__, ValueError)
    assert "summary" in item.output
    assert item.attempts == 1
    assert item.usage is not None


def test_async_parse_output_is_awaited(fake_server, openai_env):
    async def parse(output):
        await asyncio.sleep(0)
        return output["summary"].upper()

    task = get_task("summarize").with_parser(parse)
    (value,) = asyncio.run(run_batch(task, [{"text": "one"}], AIConfig()))
    assert isinstance(value, str)
    assert value == value.upper()


async def collect(stream):
    return [item async for item in stream]


def test_unknown_model_stops_the_batch(fake_server_factory, monkeypatch):
    server = fake_server_factory(status_always=404)
    monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
    cfg = AIConfig(base_url=server.base_url, parallelism=1, model="gpt-nope")
    results = asyncio.run(
        run_batch("summarize", [{"text": str(n)} for n in range(5)], cfg)
    )
    assert isinstance(results[0], InvalidRequestError)
    assert "gpt-nope" in str(results[1])
    assert all(isinstance(r, RunAbortedError) for r in results[1:])
    assert server.stats()["requests"] == 1


@pytest.mark.parametrize(
    ("record", "expected"),
    [("a plain string", "record is a str"), ({"text": "bad \ud800"}, "surrogate")],
)
def test_unusable_record_is_input_error(record, expected):
    cfg = AIConfig(provider="mock")
    good, bad = asyncio.run(run_batch("summarize", [{"text": "fine"}, record], cfg))
    assert "summary" in good
    assert isinstance(bad, InputError)
    assert expected in str(bad)


def test_one_record_instead_of_list_rejected():
    with pytest.raises(TypeError, match=r"\[record\]"):
        asyncio.run(run_batch("summarize", {"text": "x"}, AIConfig(provider="mock")))


def test_duplicate_records_pay_once(fake_server_factory, monkeypatch):
    server = fake_server_factory(latency=0.2)
    monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
    # Without a store, only calls in flight at the same time are shared.
    cfg = AIConfig(parallelism=8, base_url=server.base_url)
    records = [{"text": "duplicate me"}] * 6 + [{"text": "another"}] * 2
    results = asyncio.run(run_batch("summarize", records, cfg))
    assert all(isinstance(result, dict) for result in results)
    assert results[0] == results[5]
    assert server.stats()["requests"] == 2


def test_duplicate_of_failed_call_tries_again(fake_server_factory, monkeypatch):
    server = fake_server_factory(latency=0.2, script=[{"status": 400}])
    monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
    cfg = AIConfig(parallelism=4, base_url=server.base_url)
    first, second = asyncio.run(
        run_batch("summarize", [{"text": "same"}, {"text": "same"}], cfg)
    )
    assert isinstance(first, InvalidRequestError)
    assert isinstance(second, dict)
    assert server.stats()["requests"] == 2


def test_store_as_cache_resumes_from_python(tmp_path, fake_server, openai_env):
    from ai_module.store import Store

    records = [{"text": f"stored {n}"} for n in range(5)]
    first = asyncio.run(run_batch("summarize", records, cache=Store(tmp_path / "s.db")))
    second = asyncio.run(
        run_batch("summarize", records, cache=Store(tmp_path / "s.db"))
    )
    assert second == first
    assert fake_server.stats()["requests"] == 5


def test_misspelt_mock_option_rejected():
    cfg = AIConfig(provider="mock", options={"fail_rate": 0.5})
    with pytest.raises(ConfigError, match="Did you mean 'failure_rate'"):
        asyncio.run(run_batch("summarize", [{"text": "a"}], cfg))


def test_timeouts_in_a_row_suggest_read_timeout(fake_server_factory, monkeypatch):
    server = fake_server_factory(latency=3)
    monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
    cfg = AIConfig(
        base_url=server.base_url,
        parallelism=1,
        read_timeout=0.2,
        max_retries=0,
        max_consecutive_failures=2,
    )
    results = asyncio.run(
        run_batch("summarize", [{"text": str(n)} for n in range(4)], cfg)
    )
    stop = results[2]
    assert isinstance(stop, RunAbortedError)
    assert "raise read_timeout (now 0.2 s)" in str(stop)


@pytest.mark.parametrize("field", ["connect_timeout", "read_timeout", "retry_max_wait"])
def test_infinite_timeout_rejected(field):
    with pytest.raises(ValidationError) as info:
        AIConfig(**{field: float("inf")})
    assert field in str(info.value)
    assert "finite" in str(info.value)
