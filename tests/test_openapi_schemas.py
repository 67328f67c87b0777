"""Tests that the OpenAI schema helpers accept valid bodies and reject invalid ones."""

from __future__ import annotations

from typing import Any

import pytest
from openapi_schemas import validate_chat_request, validate_chat_response


def make_request(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Say hello."}],
    }
    body.update(fields)
    return body


def make_response(**fields: Any) -> dict[str, Any]:
    """Build a non-streaming response modelled on the example in OpenAI's spec."""
    body: dict[str, Any] = {
        "id": "chatcmpl-123",
        "object": "chat.completion",
        "created": 1741570283,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": '{"label": "card_arrival"}',
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 120,
            "completion_tokens": 9,
            "total_tokens": 129,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_0123456789",
    }
    body.update(fields)
    return body


def violations(validate: Any, body: dict[str, Any]) -> str:
    with pytest.raises(AssertionError) as excinfo:
        validate(body)
    return str(excinfo.value)


def test_request_minimal_passes() -> None:
    validate_chat_request(make_request())


def test_request_missing_messages_fails() -> None:
    body = make_request()
    del body["messages"]

    message = violations(validate_chat_request, body)

    assert "'messages' is a required property" in message


def test_request_string_temperature_fails() -> None:
    message = violations(validate_chat_request, make_request(temperature="hot"))

    assert "$.temperature" in message
    assert "'hot' is not of type 'number', 'null'" in message


def test_request_json_schema_response_format_passes() -> None:
    response_format = {
        "type": "json_schema",
        "json_schema": {
            "name": "intent",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"label": {"type": "string"}},
                "required": ["label"],
                "additionalProperties": False,
            },
        },
    }
    body = make_request(
        messages=[
            {"role": "system", "content": "Classify the query."},
            {"role": "user", "content": "Where is my card?"},
        ],
        temperature=0,
        max_completion_tokens=64,
        seed=7,
        response_format=response_format,
    )

    validate_chat_request(body)


def test_request_json_schema_without_name_fails() -> None:
    response_format = {"type": "json_schema", "json_schema": {"strict": True}}

    message = violations(
        validate_chat_request, make_request(response_format=response_format)
    )

    assert "$.response_format.json_schema: 'name' is a required property" in message


# The spec marks these with the OpenAPI 3.0 keyword `nullable`, which the
# extraction script rewrites. A failure here means that rewrite was lost.
@pytest.mark.parametrize(
    "field",
    [
        "max_completion_tokens",
        "max_tokens",
        "n",
        "seed",
        "stop",
        "stream",
        "prediction",
    ],
)
def test_request_nullable_field_accepts_null(field: str) -> None:
    validate_chat_request(make_request(**{field: None}))


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("stop", 5, "$.stop: 5 is not of type 'string', 'null', 'array'"),
        (
            "stop",
            ["a", "b", "c", "d", "e"],
            "$.stop: ['a', 'b', 'c', 'd', 'e'] is too long",
        ),
        ("n", 0, "$.n: 0 is less than the minimum of 1"),
        ("max_completion_tokens", "64", "$.max_completion_tokens: '64' is not of type"),
    ],
)
def test_request_invalid_field_fails(field: str, value: Any, expected: str) -> None:
    message = violations(validate_chat_request, make_request(**{field: value}))

    assert expected in message


def test_request_unknown_role_names_allowed_roles() -> None:
    body = make_request(messages=[{"role": "robot", "content": "Hi."}])

    message = violations(validate_chat_request, body)

    assert "$.messages[0].role: 'robot' is not one of" in message
    assert "'user'" in message


def test_request_lists_every_violation() -> None:
    body = make_request(temperature="hot")
    del body["messages"]

    message = violations(validate_chat_request, body)

    assert "(2 errors)" in message
    assert "'messages' is a required property" in message
    assert "$.temperature" in message


def test_response_typical_passes() -> None:
    validate_chat_response(make_response())


def test_response_missing_choices_fails() -> None:
    body = make_response()
    del body["choices"]

    message = violations(validate_chat_response, body)

    assert "'choices' is a required property" in message


def test_response_unknown_finish_reason_fails() -> None:
    body = make_response()
    body["choices"][0]["finish_reason"] = "done"

    message = violations(validate_chat_response, body)

    assert "$.choices[0].finish_reason: 'done' is not one of" in message


def test_response_message_without_refusal_fails() -> None:
    # OpenAI's schema requires `refusal` (null when the model did not refuse).
    body = make_response()
    del body["choices"][0]["message"]["refusal"]

    message = violations(validate_chat_response, body)

    assert "$.choices[0].message: 'refusal' is a required property" in message
