from __future__ import annotations

import re
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from ai_module._schema_sample import SchemaSampleError, SchemaSampler, sample_instance

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 3, "maxLength": 40},
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "email": {"type": "string", "format": "email"},
        "nickname": {"type": ["string", "null"]},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}

TREE = {
    "$defs": {
        "Node": {
            "type": "object",
            "properties": {
                "label": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
            },
            "required": ["label"],
        }
    },
    "$ref": "#/$defs/Node",
}

SCHEMAS: dict[str, Any] = {
    "string": {"type": "string"},
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "null": {"type": "null"},
    "empty schema": {},
    "true schema": True,
    "type list": {"type": ["null", "integer"]},
    "object all properties": PERSON,
    "required not in properties": {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "required": ["a", "b"],
        "additionalProperties": {"type": "integer"},
    },
    "min properties": {
        "type": "object",
        "minProperties": 3,
        "additionalProperties": {"type": "boolean"},
    },
    "max properties": {
        "type": "object",
        "properties": {"a": {}, "b": {}, "c": {}},
        "required": ["c"],
        "maxProperties": 2,
    },
    "array items": {"type": "array", "items": {"type": "integer"}, "minItems": 3},
    "array max items zero": {
        "type": "array",
        "items": {"type": "string"},
        "maxItems": 0,
    },
    "prefix items closed": {
        "type": "array",
        "prefixItems": [{"type": "string"}, {"type": "number"}, {"const": "x"}],
        "items": False,
    },
    "unique enum items": {
        "type": "array",
        "items": {"enum": ["red", "green", "blue"]},
        "minItems": 3,
        "uniqueItems": True,
    },
    "contains": {
        "type": "array",
        "items": {"type": "integer"},
        "contains": {"const": 7},
        "minContains": 2,
    },
    "enum mixed types": {"enum": ["a", 1, None, {"k": "v"}]},
    "enum filtered by type": {"type": "integer", "enum": ["one", 2, 3]},
    "const object": {"const": {"fixed": [1, 2]}},
    "any of": {"anyOf": [{"type": "string", "maxLength": 5}, {"type": "integer"}]},
    "any of nullable": {"anyOf": [{"type": "null"}, {"type": "number"}]},
    "one of": {"oneOf": [{"type": "boolean"}, {"type": "string"}]},
    "any of type clash": {
        "type": "object",
        "anyOf": [{"type": "string"}, {"properties": {"z": {"type": "boolean"}}}],
    },
    "all of merge": {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "string"}}},
            {"properties": {"a": {"maxLength": 4}, "b": {"type": "integer"}}},
            {"required": ["a", "b"]},
        ]
    },
    "all of bounds": {"allOf": [{"minimum": 10}, {"maximum": 12}, {"type": "integer"}]},
    "ref defs": {
        "type": "object",
        "properties": {"person": {"$ref": "#/$defs/Person"}},
        "required": ["person"],
        "$defs": {"Person": PERSON},
    },
    "ref definitions": {
        "definitions": {"Color": {"enum": ["red", "green"]}},
        "type": "array",
        "items": {"$ref": "#/definitions/Color"},
    },
    "ref with siblings": {
        "$defs": {"Base": {"type": "string", "minLength": 2}},
        "$ref": "#/$defs/Base",
        "maxLength": 12,
    },
    "ref to root": {
        "type": "object",
        "properties": {"next": {"anyOf": [{"type": "null"}, {"$ref": "#"}]}},
        "required": ["next"],
    },
    "recursive tree": TREE,
    "min length": {"type": "string", "minLength": 100},
    "max length": {"type": "string", "maxLength": 3},
    "exact length": {"type": "string", "minLength": 10, "maxLength": 10},
    "integer bounds": {"type": "integer", "minimum": -5, "maximum": -3},
    "integer exclusive": {
        "type": "integer",
        "exclusiveMinimum": 4,
        "exclusiveMaximum": 6,
    },
    "integer multiple": {"type": "integer", "multipleOf": 7, "minimum": 50},
    "number exclusive": {
        "type": "number",
        "exclusiveMinimum": 0,
        "exclusiveMaximum": 0.001,
    },
    "number only maximum": {"type": "number", "maximum": -1000.5},
    "number multiple": {"type": "number", "multipleOf": 0.25, "minimum": 1.1},
    "number no type": {"minimum": 3, "maximum": 4},
    "pattern simple": {"type": "string", "pattern": "^[A-Z]{3}-\\d{4}$"},
    "pattern alternation": {"type": "string", "pattern": "^(cat|dog)s?$"},
    "pattern negated class": {"type": "string", "pattern": "^[^a-z]+$"},
    "pattern unanchored": {"type": "string", "pattern": "sample"},
    "format date": {"type": "string", "format": "date"},
    "format date-time": {"type": "string", "format": "date-time"},
    "format email": {"type": "string", "format": "email"},
    "format uri": {"type": "string", "format": "uri"},
    "format uuid": {"type": "string", "format": "uuid"},
    "format ipv4": {"type": "string", "format": "ipv4"},
    "structured output": {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": ["positive", "negative", "neutral"]},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "evidence": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "quote": {"type": "string"},
                        "start": {"type": "integer", "minimum": 0},
                    },
                    "required": ["quote", "start"],
                    "additionalProperties": False,
                },
            },
        },
        "required": ["label", "confidence", "evidence"],
        "additionalProperties": False,
    },
}


def assert_valid(schema: Any, instance: Any) -> None:
    validator = Draft202012Validator(schema, format_checker=FormatChecker())
    errors = [e.message for e in validator.iter_errors(instance)]
    assert errors == [], f"{instance!r} is invalid: {errors}"


@pytest.mark.parametrize("name", list(SCHEMAS))
@pytest.mark.parametrize("seed", ["alpha", "beta", "0" * 64])
def test_sample_validates(name: str, seed: str) -> None:
    schema = SCHEMAS[name]
    assert_valid(schema, sample_instance(schema, seed))


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_sample_is_deterministic(name: str) -> None:
    schema = SCHEMAS[name]
    first = sample_instance(schema, "same-seed")
    assert sample_instance(schema, "same-seed") == first
    assert SchemaSampler(schema).sample("same-seed") == first


def test_sampler_reuse_matches_fresh() -> None:
    sampler = SchemaSampler(SCHEMAS["structured output"])
    for seed in ("a", "b", "c"):
        assert sampler.sample(seed) == sample_instance(
            SCHEMAS["structured output"], seed
        )


def test_seed_changes_strings() -> None:
    samples = {sample_instance({"type": "string"}, str(i)) for i in range(50)}
    assert len(samples) == 50


def test_seed_changes_object() -> None:
    first = sample_instance(PERSON, "one")
    second = sample_instance(PERSON, "two")
    assert first["name"] != second["name"]
    assert first["email"] != second["email"]


def test_string_readable_form() -> None:
    value = sample_instance({"type": "string"}, "seed")
    assert re.fullmatch(r"sample-[0-9a-f]{8}", value)


def test_object_fills_optional_properties() -> None:
    value = sample_instance(PERSON, "seed")
    assert set(value) == {"name", "age", "email", "nickname"}


def test_nullable_prefers_non_null() -> None:
    assert sample_instance({"type": ["null", "string"]}, "s") is not None
    value = sample_instance({"anyOf": [{"type": "null"}, {"type": "integer"}]}, "s")
    assert isinstance(value, int)


def test_recursive_schema_terminates() -> None:
    value = sample_instance(TREE, "seed")
    assert value["children"][0]["children"] == []


def test_max_properties_keeps_required() -> None:
    value = sample_instance(SCHEMAS["max properties"], "seed")
    assert "c" in value
    assert len(value) == 2


def test_pattern_generates_match() -> None:
    for seed in ("a", "b", "c", "d"):
        value = sample_instance(
            {"type": "string", "pattern": r"^\d{3}-[a-f]{2}$"}, seed
        )
        assert re.fullmatch(r"\d{3}-[a-f]{2}", value)


def test_enum_choice_depends_on_seed() -> None:
    schema = {"enum": list(range(20))}
    values = {sample_instance(schema, str(i)) for i in range(40)}
    assert len(values) > 1


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        (False, "accepts no value"),
        ({"type": "integer", "minimum": 5, "maximum": 4}, "no integer fits"),
        ({"type": "string", "minLength": 5, "maxLength": 2}, "maxLength"),
        ({"$ref": "https://example.com/schema.json"}, "unsupported \\$ref"),
        ({"$ref": "#/$defs/Missing"}, "not found"),
        ({"$ref": "#"}, "cyclic"),
        (
            {
                "type": "array",
                "items": {"enum": [1, 2]},
                "minItems": 3,
                "uniqueItems": True,
            },
            "unique elements",
        ),
        (
            {"type": "object", "required": ["a"], "additionalProperties": False},
            "required",
        ),
        ({"allOf": [{"type": "string"}, {"type": "integer"}]}, "allows no type"),
    ],
)
def test_unsatisfiable_schema_raises(schema: Any, message: str) -> None:
    with pytest.raises(SchemaSampleError, match=message):
        sample_instance(schema, "seed")


def test_invalid_root_raises() -> None:
    with pytest.raises(SchemaSampleError, match="expected an object"):
        sample_instance(["not", "a", "schema"], "seed")  # type: ignore[arg-type]
