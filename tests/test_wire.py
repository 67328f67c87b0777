"""Wire format of the openai provider: request bodies and response parsing.

Bodies are checked against OpenAI's published schemas (tests/specs), and
responses are parsed from raw bytes, so these tests need no server.
"""

from __future__ import annotations

import orjson
import pytest
from openapi_schemas import validate_chat_request, validate_chat_response

from ai_module.errors import (
    AuthenticationError,
    ErrorBodyError,
    InvalidRequestError,
    OutputError,
    RateLimitedError,
    TransientError,
)
from ai_module.providers.base import ChatRequest
from ai_module.providers.openai import build_body, parse_completion, strict_compatible
from ai_module.tasks import get_task

SCHEMA = {
    "type": "object",
    "properties": {"summary": {"type": "string"}},
    "required": ["summary"],
    "additionalProperties": False,
}


def request(**generation):
    return ChatRequest(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "Summarise."},
            {"role": "user", "content": "Text: ünïcödé 🎉"},
        ],
        generation=generation,
        output_schema=SCHEMA,
        schema_name="summarize",
    )


@pytest.mark.parametrize("mode", ["json_schema", "json_object", "none"])
@pytest.mark.parametrize(
    "generation",
    [
        {},
        {
            "temperature": 0.2,
            "max_tokens": 256,
            "top_p": 0.9,
            "seed": 7,
            "stop": ["\n\n"],
        },
    ],
)
def test_body_conforms_to_openapi(mode, generation):
    body = build_body(request(**generation), mode)
    validate_chat_request(body)
    if mode == "json_schema":
        assert body["response_format"]["json_schema"]["schema"] == SCHEMA
    if mode != "json_schema":
        assert "JSON Schema" in body["messages"][0]["content"]


@pytest.mark.parametrize("name", ["nl2cypher", "summarize"])
def test_builtin_task_bodies_conform(name):
    task = get_task(name)
    record = {"prompt": "count users", "text": "A short text.", "schema": "(:User)"}
    chat = ChatRequest(
        "gpt-4o-mini",
        task.render(record),
        task.generation.values(),
        task.output_schema,
        name,
    )
    validate_chat_request(build_body(chat))


def test_strict_only_for_closed_schemas():
    assert strict_compatible(SCHEMA)
    assert not strict_compatible(get_task("nl2cypher").output_schema)
    body = build_body(request())
    assert body["response_format"]["json_schema"]["strict"] is True


@pytest.mark.parametrize("mode", ["json_schema", "json_object"])
def test_non_object_root_asked_in_instructions(mode):
    labels = {"type": "array", "items": {"enum": ["a", "b"]}}
    chat = request()
    chat = ChatRequest(chat.model, chat.messages, {}, labels, "labels")
    body = build_body(chat, mode)
    validate_chat_request(body)
    assert "response_format" not in body
    assert '"array"' in body["messages"][0]["content"]


def completion(content, finish_reason="stop", usage=True):
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
    }
    if usage:
        body["usage"] = {
            "prompt_tokens": 11,
            "completion_tokens": 5,
            "total_tokens": 16,
        }
    return body


def test_parse_conforming_response():
    body = completion('{"summary": "ok"}')
    validate_chat_response(body)
    response = parse_completion(200, {}, orjson.dumps(body))
    assert response.text == '{"summary": "ok"}'
    assert response.finish_reason == "stop"
    assert response.usage.prompt_tokens == 11
    assert response.usage.completion_tokens == 5


def test_parse_without_usage():
    response = parse_completion(200, {}, orjson.dumps(completion("{}", usage=False)))
    assert response.usage is None


def test_refusal_is_output_error():
    body = completion(None)
    body["choices"][0]["message"]["refusal"] = "I can't help with that."
    with pytest.raises(OutputError, match="refused"):
        parse_completion(200, {}, orjson.dumps(body))


@pytest.mark.parametrize(
    ("status", "headers", "body", "error", "retry_after"),
    [
        (
            429,
            {"retry-after": "3"},
            b'{"error": {"message": "slow down"}}',
            RateLimitedError,
            3.0,
        ),
        (429, {"retry-after-ms": "250"}, b"{}", RateLimitedError, 0.25),
        (429, {"x-ratelimit-reset-requests": "1m2s"}, b"{}", RateLimitedError, 62.0),
        (429, {}, b"{}", RateLimitedError, None),
        (401, {}, b'{"error": {"message": "bad key"}}', AuthenticationError, None),
        (403, {}, b"{}", AuthenticationError, None),
        (400, {}, b'{"error": {"message": "bad param"}}', InvalidRequestError, None),
        (
            404,
            {},
            b'{"error": {"message": "no such model"}}',
            InvalidRequestError,
            None,
        ),
        (500, {}, b"oops", TransientError, None),
        (502, {}, b"<html>", TransientError, None),
        (503, {"retry-after": "2"}, b"{}", RateLimitedError, 2.0),
    ],
)
def test_status_maps_to_error(status, headers, body, error, retry_after):
    with pytest.raises(error) as info:
        parse_completion(status, headers, body)
    assert info.value.status == status
    if retry_after is not None or error is RateLimitedError:
        assert info.value.retry_after == pytest.approx(retry_after)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"error": {"message": "upstream failed", "code": 502}}', ErrorBodyError),
        (
            b'{"error": {"message": "bad key", "type": "invalid_api_key"}}',
            AuthenticationError,
        ),
        (b"not json at all", TransientError),
        (b'{"choices": []}', TransientError),
        (b"[1, 2]", TransientError),
    ],
)
def test_200_with_error_or_garbage(body, error):
    with pytest.raises(error):
        parse_completion(200, {}, body)


def test_secret_never_in_error_messages():
    with pytest.raises(AuthenticationError) as info:
        parse_completion(
            401, {}, b'{"error": {"message": "Incorrect API key provided"}}'
        )
    assert "sk-" not in str(info.value)
