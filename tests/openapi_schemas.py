"""Check chat-completion bodies against OpenAI's published schemas.

The schemas are in ``specs/openai_chat.json``, which
``specs/extract_openai_chat.py`` generates from OpenAI's OpenAPI description
(see ``specs/README.md`` for the source version and license). Tests call
``validate_chat_request`` on what a provider sends and
``validate_chat_response`` on what a fake server returns.
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SCHEMA_PATH = Path(__file__).parent / "specs" / "openai_chat.json"

# Instances are printed inside jsonschema's messages, and a chat request can
# carry prompts of many kilobytes. Longer messages are cut to this many characters.
MAX_MESSAGE_CHARS = 300


def validate_chat_request(body: dict[str, Any]) -> None:
    """Raise AssertionError listing every violation of CreateChatCompletionRequest."""
    _assert_valid("CreateChatCompletionRequest", body)


def validate_chat_response(body: dict[str, Any]) -> None:
    """Raise AssertionError listing every violation of CreateChatCompletionResponse."""
    _assert_valid("CreateChatCompletionResponse", body)


@functools.cache
def _schema_resource() -> Resource[Any]:
    document = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return Resource.from_contents(document, default_specification=DRAFT202012)


@functools.cache
def _validator(definition: str) -> Draft202012Validator:
    resource = _schema_resource()
    registry: Registry[Any] = Registry().with_resource(resource.id(), resource)
    root = {"$ref": f"{resource.id()}#/$defs/{definition}"}
    return Draft202012Validator(root, registry=registry)


def _assert_valid(definition: str, body: dict[str, Any]) -> None:
    errors = sorted(_validator(definition).iter_errors(body), key=_error_sort_key)
    if not errors:
        return

    count = f"{len(errors)} error" if len(errors) == 1 else f"{len(errors)} errors"
    lines = [f"body violates OpenAI's {definition} schema ({count}):"]
    for error in errors:
        lines.extend(_describe(error, depth=1))
    raise AssertionError("\n".join(lines))


def _error_sort_key(error: ValidationError) -> tuple[str, str]:
    return (error.json_path, error.message)


def _describe(error: ValidationError, depth: int) -> list[str]:
    """Format `error` as `- JSON path: message` lines, indented by `depth`.

    jsonschema reports an `anyOf` or `oneOf` failure without a reason. The
    errors of the branch that the instance most likely meant follow it, one
    level deeper.
    """
    indent = "    " * depth
    lines = [f"{indent}- {error.json_path}: {_shorten(error.message)}"]
    if not error.context:
        return lines

    branches: dict[int, list[ValidationError]] = defaultdict(list)
    for branch_error in error.context:
        branches[branch_error.relative_schema_path[0]].append(branch_error)
    plausible = [
        branch_errors
        for branch_errors in branches.values()
        if not any(_rules_out_branch(branch_error) for branch_error in branch_errors)
    ]

    if not plausible:
        lines.append(f"{indent}    - {_describe_no_plausible_branch(error)}")
        return lines
    if len(plausible) == 1:
        reasons = plausible[0]
    else:
        reasons = [best_match(e for branch_errors in plausible for e in branch_errors)]
    for reason in reasons:
        lines.extend(_describe(reason, depth + 1))
    return lines


def _rules_out_branch(branch_error: ValidationError) -> bool:
    """Tell whether a branch error shows that the instance meant another branch.

    OpenAI's unions are tagged: each object branch requires its own value of
    a property such as `role` or `type`, and the other branches differ in
    JSON type. A wrong tag or a wrong type at the union itself is such an error.
    """
    if branch_error.validator == "type":
        return len(branch_error.relative_path) == 0
    return _is_tag_mismatch(branch_error)


def _is_tag_mismatch(branch_error: ValidationError) -> bool:
    if len(branch_error.relative_path) != 1:
        return False
    if branch_error.validator == "const":
        return True
    return branch_error.validator == "enum" and len(branch_error.validator_value) == 1


def _describe_no_plausible_branch(error: ValidationError) -> str:
    """List the tag values, or else the JSON types, that the union allows."""
    tag_errors = [e for e in error.context if _is_tag_mismatch(e)]
    if tag_errors:
        first = tag_errors[0]
        allowed = [
            e.validator_value if e.validator == "const" else e.validator_value[0]
            for e in tag_errors
            if e.relative_path == first.relative_path
        ]
        instance = _shorten(repr(first.instance))
        return f"{first.json_path}: {instance} is not one of {allowed!r}"

    allowed_types: list[str] = []
    for branch_error in error.context:
        if branch_error.validator != "type":
            continue
        value = branch_error.validator_value
        for name in [value] if isinstance(value, str) else value:
            if name not in allowed_types:
                allowed_types.append(name)
    joined = ", ".join(repr(name) for name in allowed_types)
    instance = _shorten(repr(error.instance))
    return f"{error.json_path}: {instance} is not of type {joined}"


def _shorten(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[:MAX_MESSAGE_CHARS] + "... (cut)"
