"""Extract the chat-completion schemas from OpenAI's OpenAPI description.

Usage::

    python tests/specs/extract_openai_chat.py PATH/TO/openapi.yaml

The script writes ``openai_chat.json`` beside itself (or to ``--output``): a
JSON Schema 2020-12 document whose ``$defs`` contain
``CreateChatCompletionRequest``, ``CreateChatCompletionResponse`` and every
component schema that they reference, directly or transitively.

OpenAPI 3.1 schemas are JSON Schema 2020-12 plus a few OpenAPI keywords, so
the conversion is small:

- ``#/components/schemas/X`` references become ``#/$defs/X``.
- ``nullable: true`` is rewritten as JSON Schema. The keyword belongs to
  OpenAPI 3.0 and is not part of 3.1, but OpenAI's 3.1 description still uses
  it in some places. Validators ignore unknown keywords, so without the rewrite
  a ``null`` that the API accepts would be reported as invalid.
- OpenAPI-only keywords (``discriminator``, ``example``, ``xml``,
  ``externalDocs``) and vendor extensions (``x-*``) are dropped. jsonschema
  4.x accepts the schema with them, but ignores them when validating. The
  ``oneOf`` branches that a ``discriminator`` selects between already differ
  in a constant ``type`` or ``role`` property, so validation stays exact.

Everything else, including descriptions and defaults, is copied unchanged.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

ROOT_SCHEMAS = ("CreateChatCompletionRequest", "CreateChatCompletionResponse")
COMPONENT_REF_PREFIX = "#/components/schemas/"
DEFS_REF_PREFIX = "#/$defs/"
DOCUMENT_ID = "urn:aimod:tests:openai-chat"
DEFAULT_OUTPUT = Path(__file__).with_name("openai_chat.json")

# JSON Schema 2020-12 keywords whose value is a schema, a list of schemas, or
# an object that maps names to schemas. Values of all other keywords (enum,
# default, required, ...) are data and are copied without being walked.
SUBSCHEMA_KEYWORDS = frozenset(
    {
        "additionalProperties",
        "contains",
        "else",
        "if",
        "items",
        "not",
        "propertyNames",
        "then",
        "unevaluatedItems",
        "unevaluatedProperties",
    }
)
SUBSCHEMA_LIST_KEYWORDS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
SUBSCHEMA_MAP_KEYWORDS = frozenset(
    {"$defs", "dependentSchemas", "patternProperties", "properties"}
)
OPENAPI_ONLY_KEYWORDS = frozenset({"discriminator", "example", "externalDocs", "xml"})

# Annotations that stay on the outer schema when a nullable schema is wrapped
# in `anyOf`, so that a reader still finds them beside the property name.
ANNOTATION_KEYWORDS = ("title", "description", "default", "deprecated")


def load_openapi(path: Path) -> dict[str, Any]:
    """Parse the OpenAPI YAML file, with the C loader when PyYAML has one."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open(encoding="utf-8") as stream:
        return yaml.load(stream, Loader=loader)


def convert_schema(schema: Any, referenced: set[str]) -> Any:
    """Return `schema` as plain JSON Schema 2020-12.

    Adds the name of every component that the schema references to
    `referenced`. Boolean schemas are returned unchanged.
    """
    if not isinstance(schema, dict):
        return schema

    converted: dict[str, Any] = {}
    for keyword, value in schema.items():
        if keyword.startswith("x-") or keyword in OPENAPI_ONLY_KEYWORDS:
            continue
        if keyword == "$ref":
            converted[keyword] = rewrite_ref(value, referenced)
        elif keyword in SUBSCHEMA_KEYWORDS:
            converted[keyword] = convert_schema(value, referenced)
        elif keyword in SUBSCHEMA_LIST_KEYWORDS:
            converted[keyword] = [convert_schema(item, referenced) for item in value]
        elif keyword in SUBSCHEMA_MAP_KEYWORDS:
            converted[keyword] = {
                name: convert_schema(item, referenced) for name, item in value.items()
            }
        else:
            converted[keyword] = value

    return convert_nullable(converted)


def rewrite_ref(ref: str, referenced: set[str]) -> str:
    """Point a component reference into `$defs` and record the component name."""
    if not ref.startswith(COMPONENT_REF_PREFIX):
        raise ValueError(
            f"cannot move $ref {ref!r} into $defs: only references of the form "
            f"{COMPONENT_REF_PREFIX}<name> are supported"
        )
    name = ref.removeprefix(COMPONENT_REF_PREFIX)
    referenced.add(name)
    return DEFS_REF_PREFIX + name


def convert_nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """Replace the OpenAPI 3.0 `nullable` keyword with its JSON Schema form.

    A schema with a single `type` and no `enum` or `const` gets
    `type: [T, "null"]`. Any other schema, for example a bare `oneOf`, is
    wrapped as `anyOf: [schema, {type: null}]`, which is correct whatever
    the inner schema contains.
    """
    nullable = schema.pop("nullable", False)
    if not nullable:
        return schema

    schema_type = schema.get("type")
    if isinstance(schema_type, str) and "enum" not in schema and "const" not in schema:
        schema["type"] = [schema_type, "null"]
        return schema

    wrapper = {
        keyword: schema.pop(keyword)
        for keyword in ANNOTATION_KEYWORDS
        if keyword in schema
    }
    wrapper["anyOf"] = [schema, {"type": "null"}]
    return wrapper


def extract_defs(components: dict[str, Any], roots: Iterable[str]) -> dict[str, Any]:
    """Convert the root schemas and every component they reference transitively."""
    defs: dict[str, Any] = {}
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name in defs:
            continue
        if name not in components:
            raise ValueError(
                f"component schema {name!r} not found in components.schemas "
                "of the OpenAPI file"
            )

        referenced: set[str] = set()
        defs[name] = convert_schema(components[name], referenced)
        pending.extend(sorted(referenced - defs.keys()))

    return {name: defs[name] for name in sorted(defs)}


def build_document(spec: dict[str, Any]) -> dict[str, Any]:
    """Build the JSON Schema document for the chat-completion request and response."""
    version = spec["info"]["version"]
    defs = extract_defs(spec["components"]["schemas"], ROOT_SCHEMAS)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": DOCUMENT_ID,
        "$comment": (
            "Generated by extract_openai_chat.py from the OpenAI API's OpenAPI "
            f"description, version {version} (repository openai/openai-openapi, "
            "MIT license, see LICENSE-openai-openapi). Do not edit by hand: "
            "regenerate it as README.md describes."
        ),
        "title": f"OpenAI chat completions, OpenAPI version {version}",
        "$defs": defs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("openapi", type=Path, help="path to OpenAI's openapi.yaml")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"JSON file to write (default: {DEFAULT_OUTPUT.name} beside this script)",
    )
    args = parser.parse_args(argv)

    document = build_document(load_openapi(args.openapi))
    Draft202012Validator.check_schema(document)

    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    args.output.write_text(text, encoding="utf-8")
    names = ", ".join(document["$defs"])
    print(f"wrote {len(document['$defs'])} schemas to {args.output}: {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
