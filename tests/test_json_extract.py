"""Finding the JSON value in a model's answer."""

from __future__ import annotations

import pytest

from ai_module.errors import InvalidJSONError
from ai_module.json_extract import extract_json


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('  \n{"a": 1}\n', {"a": 1}),
        ('```json\n{"a": 1}\n```', {"a": 1}),
        ('```\n{"a": 1}\n```', {"a": 1}),
        ('Here is the answer:\n```json\n{"a": 1}\n```\nHope it helps!', {"a": 1}),
        ('Sure! {"a": {"b": [1, 2]}} Let me know.', {"a": {"b": [1, 2]}}),
        ('{"a": "brace } inside"} trailing', {"a": "brace } inside"}),
        ("[1, 2, 3]", [1, 2, 3]),
        ('{"text": "ünïcödé 🎉"}', {"text": "ünïcödé 🎉"}),
        ('The set {x} is empty. {"a": 2}', {"a": 2}),
    ],
)
def test_extracts(text, expected):
    assert extract_json(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "no json here",
        '{"a": 1',
        "```json\n{broken\n```",
        '{"summary": "cut off mid',
    ],
)
def test_rejects(text):
    with pytest.raises(InvalidJSONError) as info:
        extract_json(text)
    assert info.value.text == text
