"""Tests of the fake OpenAI server over real HTTP connections."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from openapi_schemas import validate_chat_response

from ai_module.testing.fake_openai import ANSWER_SCHEMA
from ai_module.testing.server_process import FakeOpenAIServer, FakeServerError

Factory = Callable[..., FakeOpenAIServer]

TASK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "keywords": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "summary": {"type": "string", "maxLength": 60},
    },
    "required": ["label", "confidence", "keywords", "summary"],
    "additionalProperties": False,
}


def chat_body(text: str = "Classify: great product", schema: Any = None) -> dict:
    body: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Answer in JSON."},
            {"role": "user", "content": text},
        ],
    }
    if schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "result", "strict": True, "schema": schema},
        }
    return body


def client_for(server: FakeOpenAIServer, **kwargs: Any) -> httpx.Client:
    headers = {"Authorization": f"Bearer {server.api_key}"}
    return httpx.Client(base_url=server.base_url, headers=headers, **kwargs)


def post_chat(server: FakeOpenAIServer, body: dict | None = None) -> httpx.Response:
    with client_for(server) as client:
        return client.post("/chat/completions", json=body or chat_body())


def content_of(response: httpx.Response) -> str:
    return response.json()["choices"][0]["message"]["content"]


def messages_seed(messages: list[dict[str, Any]]) -> str:
    canonical = json.dumps(messages, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def raw_request(server: FakeOpenAIServer, text: str) -> bytes:
    payload = json.dumps(chat_body(text)).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n"
        f"Authorization: Bearer {server.api_key}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


def wait_for_stats(
    server: FakeOpenAIServer, condition: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Poll ``/_stats`` for up to 2 s until ``condition`` holds, and return the last."""
    deadline = time.monotonic() + 2.0
    stats = server.stats()
    while not condition(stats) and time.monotonic() < deadline:
        time.sleep(0.02)
        stats = server.stats()
    return stats


def test_completion_matches_openai_and_task_schema(
    fake_server: FakeOpenAIServer,
) -> None:
    response = post_chat(fake_server, chat_body(schema=TASK_SCHEMA))
    assert response.status_code == 200
    body = response.json()
    validate_chat_response(body)
    assert body["model"] == "gpt-4o-mini"
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    content = json.loads(content_of(response))
    assert list(Draft202012Validator(TASK_SCHEMA).iter_errors(content)) == []


def test_content_depends_on_messages(fake_server: FakeOpenAIServer) -> None:
    first = content_of(post_chat(fake_server, chat_body("a", TASK_SCHEMA)))
    again = content_of(post_chat(fake_server, chat_body("a", TASK_SCHEMA)))
    other = content_of(post_chat(fake_server, chat_body("b", TASK_SCHEMA)))
    assert first == again
    assert first != other


def test_default_content_without_schema(fake_server: FakeOpenAIServer) -> None:
    body = chat_body("no schema here")
    response = post_chat(fake_server, body)
    content = json.loads(content_of(response))
    assert content == {"answer": messages_seed(body["messages"])}
    assert list(Draft202012Validator(ANSWER_SCHEMA).iter_errors(content)) == []


def test_wrong_api_key_gets_401(fake_server_factory: Factory) -> None:
    server = fake_server_factory(api_key="sk-right")
    with httpx.Client(base_url=server.base_url) as client:
        wrong = client.post(
            "/chat/completions",
            json=chat_body(),
            headers={"Authorization": "Bearer sk-wrong"},
        )
        missing = client.post("/chat/completions", json=chat_body())
        right = client.post(
            "/chat/completions",
            json=chat_body(),
            headers={"Authorization": "Bearer sk-right"},
        )
    assert wrong.status_code == 401
    error = wrong.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_api_key"
    assert error["message"]
    assert missing.status_code == 401
    assert right.status_code == 200


def test_rate_limit_sends_retry_after(fake_server_factory: Factory) -> None:
    server = fake_server_factory(rate_limit=2, burst=2)
    with client_for(server) as client:
        responses = [
            client.post("/chat/completions", json=chat_body()) for _ in range(3)
        ]
    assert [r.status_code for r in responses] == [200, 200, 429]
    limited = responses[2]
    retry_after = float(limited.headers["Retry-After"])
    assert 0 < retry_after <= 0.5
    assert int(limited.headers["retry-after-ms"]) == pytest.approx(
        retry_after * 1000, abs=1
    )
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    for response in responses:
        assert "x-ratelimit-remaining-requests" in response.headers
        assert response.headers["x-ratelimit-reset-requests"].endswith(("ms", "s"))
    assert responses[0].headers["x-ratelimit-remaining-requests"] == "1"

    time.sleep(retry_after + 0.05)
    assert post_chat(server).status_code == 200
    with httpx.Client(base_url=server.base_url) as client:
        unauthorized = client.post("/chat/completions", json=chat_body())
    assert unauthorized.status_code == 401
    assert "x-ratelimit-reset-requests" in unauthorized.headers


def test_fail_first_then_success(fake_server_factory: Factory) -> None:
    server = fake_server_factory(fail_first=2)
    with client_for(server) as client:
        statuses = [
            client.post("/chat/completions", json=chat_body()).status_code
            for _ in range(4)
        ]
    assert statuses == [500, 500, 200, 200]
    assert server.stats()["status_counts"] == {"500": 2, "200": 2}


def test_script_items_in_order(fake_server_factory: Factory) -> None:
    script = [
        {"status": 429, "headers": {"Retry-After": "1"}},
        {"content": "raw text", "finish_reason": "length"},
        {"body": {"custom": True}},
        {"status": 503, "body": "upstream down"},
    ]
    server = fake_server_factory(script=script)
    with client_for(server) as client:
        responses = [
            client.post("/chat/completions", json=chat_body()) for _ in range(5)
        ]

    assert responses[0].status_code == 429
    assert responses[0].headers["Retry-After"] == "1"
    assert responses[0].json()["error"]["type"] == "requests"
    assert responses[1].status_code == 200
    assert content_of(responses[1]) == "raw text"
    assert responses[1].json()["choices"][0]["finish_reason"] == "length"
    assert responses[2].json() == {"custom": True}
    assert responses[3].status_code == 503
    assert responses[3].text == "upstream down"
    assert responses[4].status_code == 200
    assert json.loads(content_of(responses[4]))["answer"]


def test_drop_closes_without_response(fake_server_factory: Factory) -> None:
    server = fake_server_factory(script=[{"drop": True}])
    with client_for(server) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/chat/completions", json=chat_body())
        assert client.post("/chat/completions", json=chat_body()).status_code == 200
    stats = server.stats()
    assert stats["dropped"] == 1
    assert stats["requests"] == 2
    assert stats["status_counts"] == {"200": 1}


def test_hang_holds_until_client_closes(fake_server: FakeOpenAIServer) -> None:
    fake_server.configure(p_hang=1.0)
    with client_for(fake_server, timeout=0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post("/chat/completions", json=chat_body())

    with socket.create_connection(("127.0.0.1", fake_server.port), timeout=5) as sock:
        sock.sendall(raw_request(fake_server, "hang"))
        stats = wait_for_stats(fake_server, lambda s: s["hung"] == 2)
        assert stats["in_flight"] == 1
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            sock.recv(1)
    stats = wait_for_stats(fake_server, lambda s: s["in_flight"] == 0)
    assert stats["in_flight"] == 0
    assert stats["client_closed"] == 2
    assert stats["status_counts"] == {}


def test_stats_count_and_reset(fake_server: FakeOpenAIServer) -> None:
    before = time.time()
    post_chat(fake_server)
    fake_server.configure(status_always=500)
    post_chat(fake_server)
    post_chat(fake_server)
    fake_server.configure(status_always=None)
    post_chat(fake_server)
    stats = fake_server.stats()
    assert stats["requests"] == 4
    assert stats["ok"] == 2
    assert stats["status_counts"] == {"200": 2, "500": 2}
    assert stats["in_flight"] == 0
    assert stats["max_in_flight"] == 1
    assert len(stats["starts"]) == 4
    assert before <= stats["starts"][0] <= stats["starts"][-1] <= time.time()

    cleared = fake_server.reset()
    assert cleared["requests"] == 0
    assert cleared["status_counts"] == {}
    assert cleared["starts"] == []
    assert fake_server.requests() == []


def test_requests_record_bodies_without_auth(fake_server: FakeOpenAIServer) -> None:
    body = chat_body("recorded")
    post_chat(fake_server, body)
    with httpx.Client(base_url=fake_server.base_url) as client:
        client.post("/chat/completions", json=body)
    records = fake_server.requests()
    assert [r["body"] for r in records] == [body, body]
    assert [r["has_auth"] for r in records] == [True, False]
    for record in records:
        assert "authorization" not in record["headers"]
        assert record["headers"]["content-type"] == "application/json"


def test_requests_needs_recording(fake_server_factory: Factory) -> None:
    server = fake_server_factory()
    with pytest.raises(FakeServerError, match="record-bodies"):
        server.requests()


def test_content_faults(fake_server: FakeOpenAIServer) -> None:
    body = chat_body(schema=TASK_SCHEMA)
    validator = Draft202012Validator(TASK_SCHEMA)
    clean = content_of(post_chat(fake_server, body))

    fake_server.configure(p_garbage=1.0)
    garbage = content_of(post_chat(fake_server, body))
    with pytest.raises(json.JSONDecodeError):
        json.loads(garbage)

    fake_server.configure(p_garbage=0.0, p_fenced=1.0)
    fenced = content_of(post_chat(fake_server, body))
    assert f"```json\n{clean}\n```" in fenced
    assert not fenced.startswith("```")

    fake_server.configure(p_fenced=0.0, p_prose=1.0)
    prose = content_of(post_chat(fake_server, body))
    assert prose.startswith(clean)
    assert prose != clean

    fake_server.configure(p_prose=0.0, p_truncated=1.0)
    truncated = post_chat(fake_server, body)
    assert clean.startswith(content_of(truncated))
    assert len(content_of(truncated)) < len(clean)
    assert truncated.json()["choices"][0]["finish_reason"] == "length"

    fake_server.configure(p_truncated=0.0, p_invalid_schema=1.0)
    invalid = json.loads(content_of(post_chat(fake_server, body)))
    assert isinstance(invalid, dict)
    assert list(validator.iter_errors(invalid)) != []


def test_status_faults(fake_server: FakeOpenAIServer) -> None:
    fake_server.configure(p500=1.0)
    server_error = post_chat(fake_server)
    assert server_error.status_code == 500
    assert server_error.json()["error"]["type"] == "server_error"

    fake_server.configure(p500=0.0, p429=1.0, retry_after=0.25)
    limited = post_chat(fake_server)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "0.25"
    assert limited.headers["retry-after-ms"] == "250"

    fake_server.configure(p429=0.0, p_error_body=1.0)
    error_body = post_chat(fake_server)
    assert error_body.status_code == 200
    assert "error" in error_body.json()
    assert "choices" not in error_body.json()
    assert fake_server.stats()["ok"] == 0


def test_seeded_faults_repeat(fake_server_factory: Factory) -> None:
    sequences = []
    for _ in range(2):
        server = fake_server_factory(seed=7, p500=0.5)
        with client_for(server) as client:
            sequences.append(
                [
                    client.post("/chat/completions", json=chat_body()).status_code
                    for _ in range(20)
                ]
            )
    assert sequences[0] == sequences[1]
    assert set(sequences[0]) == {200, 500}


def test_latency_overlaps_requests(fake_server: FakeOpenAIServer) -> None:
    fake_server.configure(latency=0.3)

    async def burst() -> list[int]:
        headers = {"Authorization": f"Bearer {fake_server.api_key}"}
        async with httpx.AsyncClient(
            base_url=fake_server.base_url, headers=headers
        ) as client:
            responses = await asyncio.gather(
                *(client.post("/chat/completions", json=chat_body()) for _ in range(5))
            )
        return [r.status_code for r in responses]

    started = time.monotonic()
    statuses = asyncio.run(burst())
    elapsed = time.monotonic() - started
    assert statuses == [200] * 5
    assert 0.3 <= elapsed < 1.2
    assert fake_server.stats()["max_in_flight"] == 5


def test_invalid_requests_get_400(fake_server: FakeOpenAIServer) -> None:
    headers = {"Authorization": f"Bearer {fake_server.api_key}"}
    with httpx.Client(base_url=fake_server.base_url, headers=headers) as client:
        not_json = client.post("/chat/completions", content=b"{not json")
        no_messages = client.post("/chat/completions", json={"model": "m"})
        streaming = client.post(
            "/chat/completions", json={**chat_body(), "stream": True}
        )
        bad_schema = client.post(
            "/chat/completions",
            json=chat_body(schema={"$ref": "#/$defs/Missing"}),
        )
        unknown_path = client.get("/v1/nothing")
    for response in (not_json, no_messages, streaming, bad_schema):
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"
    assert "not found" in bad_schema.json()["error"]["message"]
    assert unknown_path.status_code == 404


def test_config_rejects_invalid_settings(fake_server: FakeOpenAIServer) -> None:
    with httpx.Client(base_url=fake_server.url) as client:
        unknown = client.post("/_config", json={"p_explode": 1})
        out_of_range = client.post("/_config", json={"p500": 2})
        bad_script = client.post("/_config", json={"script": [{"stauts": 500}]})
        settings = client.get("/_config").json()
    assert unknown.status_code == 400
    assert "p_explode" in unknown.json()["error"]["message"]
    assert out_of_range.status_code == 400
    assert bad_script.status_code == 400
    assert "stauts" in bad_script.json()["error"]["message"]
    assert settings["p500"] == 0.0


def test_pipelined_responses_in_order(fake_server: FakeOpenAIServer) -> None:
    fake_server.configure(latency=0.05)
    with socket.create_connection(("127.0.0.1", fake_server.port), timeout=5) as sock:
        sock.sendall(
            raw_request(fake_server, "first") + raw_request(fake_server, "second")
        )
        received = b""
        while received.count(b"chat.completion") < 2:
            chunk = sock.recv(65536)
            assert chunk, "server closed the connection early"
            received += chunk
    records = fake_server.requests()
    answers = [
        json.dumps({"answer": messages_seed(r["body"]["messages"])})
        .replace(" ", "")
        .replace('"', '\\"')
        for r in records
    ]
    assert received.index(answers[0].encode()) < received.index(answers[1].encode())
    assert received.count(b"HTTP/1.1 200 OK") == 2


def test_server_start_failure_reports_stderr() -> None:
    server = FakeOpenAIServer(p500=5)
    with pytest.raises(FakeServerError, match="p500"):
        server.start()
    assert server.port is None


def test_chunked_request_body(fake_server: FakeOpenAIServer) -> None:
    payload = json.dumps(chat_body("chunked")).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(payload), 7):
            yield payload[start : start + 7]

    with client_for(fake_server) as client:
        response = client.post(
            "/chat/completions",
            content=chunks(),
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 200
    record = fake_server.requests()[0]
    assert record["headers"]["transfer-encoding"] == "chunked"
    assert record["body"] == chat_body("chunked")


def test_expect_continue(fake_server: FakeOpenAIServer) -> None:
    request = raw_request(fake_server, "expect")
    head, _, payload = request.partition(b"\r\n\r\n")
    head += b"\r\nExpect: 100-continue\r\n\r\n"
    with socket.create_connection(("127.0.0.1", fake_server.port), timeout=5) as sock:
        sock.sendall(head)
        assert sock.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(payload)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
