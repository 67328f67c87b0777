"""Deterministic sample values that validate against a JSON Schema.

The sampler covers the draft 2020-12 keywords that structured-output task schemas
use:

* ``type``, as one name or a list of names;
* ``properties``, ``required``, ``additionalProperties``, ``minProperties`` and
  ``maxProperties``;
* ``items``, ``prefixItems``, ``contains``, ``minContains``, ``minItems``,
  ``maxItems`` and ``uniqueItems``;
* ``enum`` and ``const``;
* ``anyOf`` and ``oneOf``, by taking the first branch whose type fits;
* ``allOf``, by merging the parts into one schema;
* local ``$ref``: ``#``, ``#/$defs/...``, ``#/definitions/...`` or any other JSON
  pointer into the root;
* ``minLength``, ``maxLength``, ``pattern`` and ``format`` (date, date-time, time,
  email, uri, uuid, hostname, ipv4, ipv6, duration);
* ``minimum``, ``maximum``, their exclusive forms and ``multipleOf``.

Other keywords (``not``, ``if``/``then``/``else``, ``patternProperties``,
``dependentSchemas``, ``unevaluatedProperties``, remote ``$ref``) are ignored, so a
schema that depends on them can get a sample that does not validate.

A branch of ``anyOf``/``oneOf`` that allows only ``null`` is skipped while another
fits, except inside a recursive schema, where it is preferred so that the nesting ends.

Every string, number and choice is derived from ``sha256(seed + "|" + path)``, where
``path`` is the JSON pointer of the value inside the sample. The same schema and seed
give the same sample, and different seeds give different strings.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

try:  # The regex parser is private. Without it, patterns are only checked.
    import re._constants as _sre_constants
    import re._parser as _sre_parser
except ImportError:  # pragma: no cover - Python before 3.11
    _sre_constants = None  # type: ignore[assignment]
    _sre_parser = None  # type: ignore[assignment]

__all__ = ["SchemaSampleError", "SchemaSampler", "sample_instance"]

JsonSchema = dict[str, Any] | bool

# Nesting depth at which sampling stops. Recursive schemas stop long before this,
# because a schema met again inside itself gets only its required parts.
_MAX_DEPTH = 64
# Maximum length of a chain of $ref/allOf/anyOf indirections before the schema is
# treated as cyclic.
_MAX_REF_CHAIN = 32
# Range used for a number bound that the schema leaves open.
_DEFAULT_NUMBER_SPAN = 100
# Attempts to find a value not yet in an array with uniqueItems.
_UNIQUE_ATTEMPTS = 20
# Minimum repeat count for a regex quantifier without an upper bound (``+``, ``*``).
_OPEN_REPEAT_COUNT = 3

_TYPE_NAMES = ("object", "array", "string", "integer", "number", "boolean", "null")
_OBJECT_KEYWORDS = frozenset(
    {
        "properties",
        "required",
        "additionalProperties",
        "minProperties",
        "maxProperties",
        "patternProperties",
    }
)
_ARRAY_KEYWORDS = frozenset(
    {"items", "prefixItems", "minItems", "maxItems", "contains", "uniqueItems"}
)
_NUMBER_KEYWORDS = frozenset(
    {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}
)
_LOWER_BOUNDS = frozenset(
    {"minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties"}
)
_UPPER_BOUNDS = frozenset(
    {"maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties"}
)
_COMBINATORS = ("$ref", "allOf", "anyOf", "oneOf")


class SchemaSampleError(ValueError):
    """Error for a schema that accepts no value or uses an unsupported ``$ref``."""


def sample_instance(schema: JsonSchema, seed: str) -> Any:
    """Build a value that validates against ``schema``, chosen by ``seed``.

    Objects get every declared property, not only the required ones. Raises
    SchemaSampleError when the schema accepts no value or a ``$ref`` cannot be
    resolved inside it. To sample one schema many times, keep a SchemaSampler,
    which caches the flattened subschemas.
    """
    return SchemaSampler(schema).sample(seed)


class SchemaSampler:
    """Sampler bound to one root schema.

    Flattened subschemas are cached by object identity, so the root schema must not
    be mutated while the sampler is in use.
    """

    def __init__(self, schema: JsonSchema) -> None:
        if not isinstance(schema, dict | bool):
            raise SchemaSampleError(
                f"invalid schema: expected an object or a boolean, got "
                f"{type(schema).__name__}"
            )
        self._root = schema
        # id(raw subschema) -> (raw subschema, flattened form, kind of value to
        # build). The raw object is kept so that its id cannot be reused.
        self._flattened: dict[int, tuple[JsonSchema, JsonSchema, str]] = {}
        # The same for subschemas met again inside themselves.
        self._flattened_minimal: dict[int, tuple[JsonSchema, JsonSchema, str]] = {}
        # (id(items), id(contains)) -> (items, contains, allOf of both), so that
        # repeated samples reuse one combined schema and the caches stay bounded.
        self._contains_schemas: dict[
            tuple[int, int], tuple[JsonSchema, JsonSchema, JsonSchema]
        ] = {}

    def sample(self, seed: str) -> Any:
        """Build a value for the root schema, chosen by ``seed``."""
        return self._sample(self._root, seed, "", 0, ())

    # -- Flattening of $ref, allOf, anyOf and oneOf --------------------------------

    def _flatten_cached(
        self, schema: JsonSchema, minimal: bool, path: str
    ) -> tuple[JsonSchema, str]:
        """Return the flattened schema and the kind of value it describes.

        The kind is a JSON type name, or "any", "false", "const" or "enum".
        """
        cache = self._flattened_minimal if minimal else self._flattened
        entry = cache.get(id(schema))
        if entry is not None and entry[0] is schema:
            return entry[1], entry[2]
        flat = self._flatten(schema, 0, minimal)
        kind = _value_kind(flat, path)
        cache[id(schema)] = (schema, flat, kind)
        return flat, kind

    def _flatten(self, schema: JsonSchema, chain: int, minimal: bool) -> JsonSchema:
        """Merge ``$ref``, ``allOf`` and one ``anyOf``/``oneOf`` branch into a schema.

        Subschemas below ``properties`` or ``items`` stay as they are and are
        flattened when they are sampled.
        """
        if isinstance(schema, bool):
            return schema
        if not isinstance(schema, dict):
            raise SchemaSampleError(f"invalid subschema: {schema!r}")
        if chain > _MAX_REF_CHAIN:
            raise SchemaSampleError(
                f"$ref/allOf chain deeper than {_MAX_REF_CHAIN} levels. The schema "
                "is probably cyclic without any property in between"
            )

        merged: JsonSchema = {k: v for k, v in schema.items() if k not in _COMBINATORS}
        if "$ref" in schema:
            target = self._resolve_ref(schema["$ref"])
            merged = _merge(merged, self._flatten(target, chain + 1, minimal))
        for part in schema.get("allOf", ()):
            merged = _merge(merged, self._flatten(part, chain + 1, minimal))
        for keyword in ("anyOf", "oneOf"):
            branches = schema.get(keyword)
            if branches:
                merged = self._merge_branch(merged, branches, chain, minimal)
        return merged

    def _merge_branch(
        self,
        merged: JsonSchema,
        branches: list[JsonSchema],
        chain: int,
        minimal: bool,
    ) -> JsonSchema:
        """Merge the first branch whose type agrees with the schema around it.

        A branch that allows only ``null`` is taken last, or first when ``minimal``
        is set, because ``null`` ends a recursive ``Optional`` chain.
        """
        fitting: list[JsonSchema] = []
        for branch in branches:
            candidate = _merge(merged, self._flatten(branch, chain + 1, minimal))
            if candidate is not False and _declared_types(candidate) != []:
                fitting.append(candidate)
        if not fitting:
            # Sampling this reports that no type is left.
            return _merge(merged, self._flatten(branches[0], chain + 1, minimal))
        null_only = [c for c in fitting if _declared_types(c) == ["null"]]
        others = [c for c in fitting if _declared_types(c) != ["null"]]
        # NOTE: for oneOf, the chosen branch is not checked against the other
        # branches, so a value that matches several of them is still returned.
        if null_only and (minimal or not others):
            return null_only[0]
        return others[0]

    def _resolve_ref(self, ref: Any) -> JsonSchema:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise SchemaSampleError(
                f"unsupported $ref {ref!r}: only references inside the same schema, "
                "such as '#/$defs/Name', are supported"
            )
        node: Any = self._root
        pointer = ref[1:]
        if pointer == "":
            return node
        if not pointer.startswith("/"):
            raise SchemaSampleError(
                f"unsupported $ref {ref!r}: anchors are not supported, use a JSON "
                "pointer such as '#/$defs/Name'"
            )
        for raw_token in pointer[1:].split("/"):
            token = _unescape_pointer_token(raw_token)
            if isinstance(node, dict) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                raise SchemaSampleError(f"$ref {ref!r} not found in the schema")
        if not isinstance(node, dict | bool):
            raise SchemaSampleError(f"$ref {ref!r} does not point to a schema")
        return node

    # -- Sampling ------------------------------------------------------------------

    def _sample(
        self,
        schema: JsonSchema,
        seed: str,
        path: str,
        depth: int,
        stack: tuple[int, ...],
    ) -> Any:
        """Sample ``schema`` at JSON pointer ``path``.

        ``stack`` contains the ids of the raw subschemas being sampled above this one.
        A subschema that is already on it is recursive, and gets only required
        properties and ``minItems`` elements so that sampling ends.
        """
        if depth > _MAX_DEPTH:
            raise SchemaSampleError(
                f"sample deeper than {_MAX_DEPTH} levels at {path!r}. The schema "
                "probably requires an infinitely nested value"
            )
        minimal = id(schema) in stack
        stack = (*stack, id(schema))
        node, kind = self._flatten_cached(schema, minimal, path)
        if kind == "any":
            return f"sample-{_digest(seed, path).hex()[:8]}"
        if kind == "false":
            raise SchemaSampleError(f"schema at {path or '/'!r} accepts no value")
        assert isinstance(node, dict)
        if kind == "const":
            return node["const"]
        if kind == "enum":
            return _sample_enum(node, seed, path)
        if kind == "object":
            return self._sample_object(node, seed, path, depth, stack, minimal)
        if kind == "array":
            return self._sample_array(node, seed, path, depth, stack, minimal)
        if kind == "string":
            return _sample_string(node, _digest(seed, path))
        if kind == "integer":
            return _sample_integer(node, _digest(seed, path), path)
        if kind == "number":
            return _sample_number(node, _digest(seed, path), path)
        if kind == "boolean":
            return bool(_digest(seed, path)[0] & 1)
        return None

    def _sample_object(
        self,
        node: dict[str, Any],
        seed: str,
        path: str,
        depth: int,
        stack: tuple[int, ...],
        minimal: bool,
    ) -> dict[str, Any]:
        properties: dict[str, JsonSchema] = node.get("properties") or {}
        required: list[str] = list(node.get("required") or ())
        additional: JsonSchema = node.get("additionalProperties", True)

        names = [n for n in properties if not minimal or n in required]
        names += [n for n in required if n not in properties]
        max_properties = node.get("maxProperties")
        if max_properties is not None and len(names) > max_properties:
            optional = [n for n in names if n not in required]
            keep = set(required) | set(
                optional[: max(0, max_properties - len(required))]
            )
            names = [n for n in names if n in keep]

        result: dict[str, Any] = {}
        for name in names:
            if name in properties:
                sub_schema = properties[name]
            elif additional is False:
                raise SchemaSampleError(
                    f"property {name!r} at {path or '/'!r} is required but "
                    "additionalProperties is false and it is not in properties"
                )
            else:
                sub_schema = additional
            sub_path = f"{path}/{_escape_pointer_token(name)}"
            result[name] = self._sample(sub_schema, seed, sub_path, depth + 1, stack)

        min_properties = node.get("minProperties", 0)
        extra_index = 0
        while len(result) < min_properties:
            if additional is False:
                raise SchemaSampleError(
                    f"object at {path or '/'!r} needs {min_properties} properties but "
                    "additionalProperties is false"
                )
            extra_index += 1
            name = f"extra_{extra_index}"
            if name in result:
                continue
            result[name] = self._sample(
                additional, seed, f"{path}/{name}", depth + 1, stack
            )
        return result

    def _sample_array(
        self,
        node: dict[str, Any],
        seed: str,
        path: str,
        depth: int,
        stack: tuple[int, ...],
        minimal: bool,
    ) -> list[Any]:
        prefix: list[JsonSchema] = list(node.get("prefixItems") or ())
        items: JsonSchema | None = node.get("items")
        if isinstance(items, list):  # Draft 7 tuple form of items.
            prefix = items
            items = node.get("additionalItems")
        rest_schema: JsonSchema = True if items is None else items

        contains = node.get("contains")
        contains_count = node.get("minContains", 1) if contains is not None else 0
        min_items = node.get("minItems", 0)
        max_items = node.get("maxItems")

        count = max(min_items, len(prefix) + contains_count)
        if not minimal:
            count = max(count, 1)
        if rest_schema is False:
            if min_items > len(prefix) or contains_count:
                raise SchemaSampleError(
                    f"array at {path or '/'!r} needs more elements than prefixItems "
                    "allows, and items is false"
                )
            count = min(count, len(prefix))
        if max_items is not None:
            if max_items < min_items:
                raise SchemaSampleError(
                    f"array at {path or '/'!r} has maxItems {max_items} < minItems "
                    f"{min_items}"
                )
            count = min(count, max_items)

        unique = bool(node.get("uniqueItems"))
        result: list[Any] = []
        for index in range(count):
            if index < len(prefix):
                element_schema = prefix[index]
            elif index < len(prefix) + contains_count:
                element_schema = self._contains_schema(rest_schema, contains)
            else:
                element_schema = rest_schema
            element_path = f"{path}/{index}"
            value = self._sample(element_schema, seed, element_path, depth + 1, stack)
            attempt = 0
            while unique and _contains_equal(result, value):
                attempt += 1
                if attempt > _UNIQUE_ATTEMPTS:
                    raise SchemaSampleError(
                        f"array at {path or '/'!r} needs {count} unique elements, "
                        f"found only {index} distinct values"
                    )
                value = self._sample(
                    element_schema, seed, f"{element_path}~{attempt}", depth + 1, stack
                )
            result.append(value)
        return result

    def _contains_schema(self, items: JsonSchema, contains: JsonSchema) -> JsonSchema:
        key = (id(items), id(contains))
        entry = self._contains_schemas.get(key)
        if entry is None or entry[0] is not items or entry[1] is not contains:
            entry = (items, contains, {"allOf": [items, contains]})
            self._contains_schemas[key] = entry
        return entry[2]


# -- Schema merging ------------------------------------------------------------------


def _merge(left: JsonSchema, right: JsonSchema) -> JsonSchema:
    """Merge two flattened schemas into one that requires both.

    Properties present on both sides become an ``allOf`` of the two, bounds take the
    stricter value, and ``type``/``enum`` are intersected. For any other keyword
    the left value wins.
    """
    if left is False or right is False:
        return False
    if left is True:
        return right
    if right is True:
        return left

    merged = dict(left)
    for key, value in right.items():
        if key not in merged:
            merged[key] = value
        elif key == "properties":
            properties = dict(merged[key])
            for name, sub_schema in value.items():
                if name in properties:
                    properties[name] = {"allOf": [properties[name], sub_schema]}
                else:
                    properties[name] = sub_schema
            merged[key] = properties
        elif key == "required":
            merged[key] = list(dict.fromkeys([*merged[key], *value]))
        elif key == "type":
            merged[key] = _intersect_types(_as_list(merged[key]), _as_list(value))
        elif key == "enum":
            merged[key] = [v for v in merged[key] if _contains_equal(value, v)]
        elif key in _LOWER_BOUNDS and _is_number(value) and _is_number(merged[key]):
            merged[key] = max(merged[key], value)
        elif key in _UPPER_BOUNDS and _is_number(value) and _is_number(merged[key]):
            merged[key] = min(merged[key], value)
        elif key in ("items", "additionalProperties", "contains"):
            merged[key] = _merge_subschemas(merged[key], value)
    return merged


def _merge_subschemas(left: Any, right: Any) -> Any:
    if left is False or right is False:
        return False
    if left is True:
        return right
    if right is True:
        return left
    if isinstance(left, dict) and isinstance(right, dict):
        return {"allOf": [left, right]}
    return left


def _intersect_types(left: list[str], right: list[str]) -> list[str]:
    result = []
    for name in left:
        if name in right:
            result.append(name)
        elif name == "number" and "integer" in right:
            result.append("integer")
    for name in right:
        if name == "number" and "integer" in left and "integer" not in result:
            result.append("integer")
    return result


def _declared_types(node: JsonSchema) -> list[str] | None:
    if not isinstance(node, dict) or "type" not in node:
        return None
    return _as_list(node["type"])


def _value_kind(node: JsonSchema, path: str) -> str:
    if node is True or node == {}:
        return "any"
    if node is False:
        return "false"
    assert isinstance(node, dict)
    if "const" in node:
        return "const"
    if "enum" in node:
        return "enum"
    return _pick_type(node, path)


def _pick_type(node: dict[str, Any], path: str) -> str:
    """Choose the JSON type to build, preferring anything over ``null``."""
    declared = _declared_types(node)
    if declared is not None:
        if not declared:
            raise SchemaSampleError(
                f"schema at {path or '/'!r} allows no type after merging allOf/anyOf"
            )
        for name in declared:
            if name != "null":
                if name not in _TYPE_NAMES:
                    raise SchemaSampleError(
                        f"unknown type {name!r} at {path or '/'!r}. Expected one of "
                        f"{', '.join(_TYPE_NAMES)}"
                    )
                return name
        return "null"
    keys = node.keys()
    if not _OBJECT_KEYWORDS.isdisjoint(keys):
        return "object"
    if not _ARRAY_KEYWORDS.isdisjoint(keys):
        return "array"
    if not _NUMBER_KEYWORDS.isdisjoint(keys):
        return "number"
    # A schema with no type keyword accepts any value, and a string is one.
    return "string"


# -- Leaf values ---------------------------------------------------------------------


def _sample_enum(node: dict[str, Any], seed: str, path: str) -> Any:
    values = list(node["enum"])
    declared = _declared_types(node)
    if declared is not None:
        values = [v for v in values if _json_type_matches(v, declared)]
    if not values:
        raise SchemaSampleError(f"enum at {path or '/'!r} has no value of the type")
    index = int.from_bytes(_digest(seed, path)[:8], "big") % len(values)
    return values[index]


def _sample_string(node: dict[str, Any], digest: bytes) -> str:
    token = digest.hex()[:8]
    text = _format_string(node.get("format"), digest, token)

    pattern = node.get("pattern")
    if isinstance(pattern, str) and not _pattern_matches(pattern, text):
        generated = _string_from_pattern(pattern, digest)
        if generated is not None:
            text = generated
        # NOTE: when the pattern uses syntax that the generator or Python's re
        # does not cover (lookarounds, ECMA-only forms such as \p{L}), the string
        # is returned as it is and may not match the pattern.

    min_length = node.get("minLength", 0)
    max_length = node.get("maxLength")
    if len(text) < min_length:
        filler = digest.hex() * (min_length // 64 + 1)
        text += filler[: min_length - len(text)]
    if max_length is not None and len(text) > max_length:
        if max_length < min_length:
            raise SchemaSampleError(
                f"maxLength {max_length} is less than minLength {min_length}"
            )
        # NOTE: cutting a formatted or pattern-generated string can break its format.
        text = text[:max_length]
    return text


def _format_string(fmt: Any, digest: bytes, token: str) -> str:
    if fmt is None:
        return f"sample-{token}"
    number = int.from_bytes(digest[8:16], "big")
    year = 2000 + number % 30
    month = 1 + (number >> 8) % 12
    day = 1 + (number >> 16) % 28
    hour = (number >> 24) % 24
    minute = (number >> 32) % 60
    second = (number >> 40) % 60

    if fmt == "date":
        return f"{year:04d}-{month:02d}-{day:02d}"
    if fmt == "date-time":
        return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}Z"
    if fmt == "time":
        return f"{hour:02d}:{minute:02d}:{second:02d}Z"

    if fmt in ("email", "idn-email"):
        return f"sample-{token}@example.com"
    if fmt in ("uri", "url", "iri", "uri-reference", "iri-reference"):
        return f"https://example.com/sample-{token}"
    if fmt in ("hostname", "idn-hostname"):
        return f"sample-{token}.example.com"

    if fmt == "uuid":
        hex_digest = digest.hex()
        return (
            f"{hex_digest[:8]}-{hex_digest[8:12]}-4{hex_digest[13:16]}"
            f"-8{hex_digest[17:20]}-{hex_digest[20:32]}"
        )
    if fmt == "ipv4":
        # 192.0.2.0/24 is reserved for documentation (RFC 5737).
        return f"192.0.2.{digest[0]}"
    if fmt == "ipv6":
        # 2001:db8::/32 is reserved for documentation (RFC 3849).
        return f"2001:db8::{digest[0]:x}{digest[1]:02x}"
    if fmt == "duration":
        return f"P{1 + number % 30}D"
    return f"sample-{token}"


def _sample_integer(node: dict[str, Any], digest: bytes, path: str) -> int:
    low, high = _integer_bounds(node, path)
    pick = int.from_bytes(digest[:8], "big")
    multiple = node.get("multipleOf")
    if _is_number(multiple) and multiple > 0:
        first = math.ceil(low / multiple)
        last = math.floor(high / multiple)
        for k in _rotated_range(first, last, pick):
            value = k * multiple
            if value == int(value) and low <= value <= high:
                return int(value)
        raise SchemaSampleError(
            f"no integer multiple of {multiple} in [{low}, {high}] at {path or '/'!r}"
        )
    return low + pick % (high - low + 1)


def _integer_bounds(node: dict[str, Any], path: str) -> tuple[int, int]:
    low: int | None = None
    high: int | None = None
    minimum, exclusive_minimum = node.get("minimum"), node.get("exclusiveMinimum")
    maximum, exclusive_maximum = node.get("maximum"), node.get("exclusiveMaximum")
    # Draft 4 spelled exclusiveMinimum/exclusiveMaximum as booleans on minimum/maximum.
    if exclusive_minimum is True and _is_number(minimum):
        minimum, exclusive_minimum = None, minimum
    if exclusive_maximum is True and _is_number(maximum):
        maximum, exclusive_maximum = None, maximum
    if _is_number(minimum):
        low = math.ceil(minimum)
    if _is_number(exclusive_minimum):
        candidate = math.floor(exclusive_minimum) + 1
        low = candidate if low is None else max(low, candidate)
    if _is_number(maximum):
        high = math.floor(maximum)
    if _is_number(exclusive_maximum):
        candidate = math.ceil(exclusive_maximum) - 1
        high = candidate if high is None else min(high, candidate)

    if low is None and high is None:
        low, high = 0, _DEFAULT_NUMBER_SPAN
    elif low is None:
        assert high is not None
        low = high - _DEFAULT_NUMBER_SPAN
    elif high is None:
        high = low + _DEFAULT_NUMBER_SPAN
    if low > high:
        raise SchemaSampleError(f"no integer fits the bounds at {path or '/'!r}")
    return low, high


def _sample_number(node: dict[str, Any], digest: bytes, path: str) -> float | int:
    minimum, exclusive_minimum = node.get("minimum"), node.get("exclusiveMinimum")
    maximum, exclusive_maximum = node.get("maximum"), node.get("exclusiveMaximum")
    if exclusive_minimum is True and _is_number(minimum):
        minimum, exclusive_minimum = None, minimum
    if exclusive_maximum is True and _is_number(maximum):
        maximum, exclusive_maximum = None, maximum

    def fits(value: float) -> bool:
        return (
            (not _is_number(minimum) or value >= minimum)
            and (not _is_number(maximum) or value <= maximum)
            and (not _is_number(exclusive_minimum) or value > exclusive_minimum)
            and (not _is_number(exclusive_maximum) or value < exclusive_maximum)
        )

    lows = [b for b in (minimum, exclusive_minimum) if _is_number(b)]
    highs = [b for b in (maximum, exclusive_maximum) if _is_number(b)]
    low = max(lows) if lows else None
    high = min(highs) if highs else None
    if low is None and high is None:
        low, high = 0.0, float(_DEFAULT_NUMBER_SPAN)
    elif low is None:
        low = high - _DEFAULT_NUMBER_SPAN
    elif high is None:
        high = low + _DEFAULT_NUMBER_SPAN
    pick = int.from_bytes(digest[:8], "big")

    multiple = node.get("multipleOf")
    if _is_number(multiple) and multiple > 0:
        for k in _rotated_range(
            math.ceil(low / multiple), math.floor(high / multiple), pick
        ):
            value = k * multiple
            quotient = value / multiple
            # jsonschema 4.x tests a float multipleOf by dividing, so the float
            # quotient must come out whole.
            if fits(value) and quotient == int(quotient):
                return value
        raise SchemaSampleError(
            f"no multiple of {multiple} fits the bounds at {path or '/'!r}"
        )

    fraction = (pick % 10_000) / 10_000
    candidates = (round(low + (high - low) * fraction, 2), (low + high) / 2, low, high)
    for value in candidates:
        if fits(value):
            return value
    raise SchemaSampleError(f"no number fits the bounds at {path or '/'!r}")


def _rotated_range(first: int, last: int, pick: int) -> Iterable[int]:
    """Yield up to 1000 integers of ``[first, last]``, starting at a seeded one."""
    size = last - first + 1
    if size <= 0:
        return
    start = pick % size
    for offset in range(min(size, 1000)):
        yield first + (start + offset) % size


# -- Pattern-based strings -----------------------------------------------------------


def _pattern_matches(pattern: str, text: str) -> bool:
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return False


def _string_from_pattern(pattern: str, digest: bytes) -> str | None:
    """Build a string that ``pattern`` matches, or None if that cannot be done.

    The pattern is parsed with CPython's own regex parser. The result is checked
    with ``re.search``, so a string is returned only when it matches.
    """
    if _sre_parser is None:
        return None
    try:
        parsed = _parse_pattern(pattern)
    except (re.error, RecursionError):
        return None
    generator = _PatternGenerator(random.Random(int.from_bytes(digest, "big")))
    try:
        text = generator.generate(parsed)
    except _UnsupportedPattern:
        return None
    return text if _pattern_matches(pattern, text) else None


class _UnsupportedPattern(Exception):
    pass


# Characters tried for ``.`` and negated character classes, in this order.
_FALLBACK_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-_ "


class _PatternGenerator:
    """Walker over the parse tree of ``re._parser`` that emits one match."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._groups: dict[int, str] = {}

    def generate(self, items: Iterable[tuple[Any, Any]]) -> str:
        c = _sre_constants
        parts: list[str] = []
        for op, arg in items:
            if op is c.LITERAL:
                parts.append(chr(arg))
            elif op is c.NOT_LITERAL:
                parts.append(next(ch for ch in _FALLBACK_ALPHABET if ord(ch) != arg))
            elif op is c.ANY:
                parts.append(self._rng.choice(_FALLBACK_ALPHABET[:36]))
            elif op is c.IN:
                parts.append(self._generate_class(arg))
            elif op is c.BRANCH:
                parts.append(self.generate(self._rng.choice(arg[1])))
            elif op is c.SUBPATTERN:
                group, _add_flags, _del_flags, sub = arg
                text = self.generate(sub)
                if group is not None:
                    self._groups[group] = text
                parts.append(text)
            elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
                low, high, sub = arg
                if high == c.MAXREPEAT:
                    count = max(low, _OPEN_REPEAT_COUNT)
                else:
                    count = min(max(low, 1), high)
                parts.extend(self.generate(sub) for _ in range(count))
            elif op is c.ATOMIC_GROUP:
                parts.append(self.generate(arg))
            elif op is c.GROUPREF:
                parts.append(self._groups.get(arg, ""))
            elif op is c.AT:
                continue  # Anchors and word boundaries emit nothing.
            else:
                raise _UnsupportedPattern(op)
        return "".join(parts)

    def _generate_class(self, items: list[tuple[Any, Any]]) -> str:
        c = _sre_constants
        if items and items[0][0] is c.NEGATE:
            rest = items[1:]
            for ch in _FALLBACK_ALPHABET:
                if not any(self._class_item_matches(item, ch) for item in rest):
                    return ch
            raise _UnsupportedPattern("negated class")
        op, arg = self._rng.choice(items)
        if op is c.LITERAL:
            return chr(arg)
        if op is c.RANGE:
            return chr(self._rng.randint(arg[0], arg[1]))
        if op is c.CATEGORY:
            candidates = _category_alphabet(arg)
            if candidates:
                return self._rng.choice(candidates)
        raise _UnsupportedPattern(op)

    def _class_item_matches(self, item: tuple[Any, Any], ch: str) -> bool:
        c = _sre_constants
        op, arg = item
        if op is c.LITERAL:
            return ord(ch) == arg
        if op is c.RANGE:
            return arg[0] <= ord(ch) <= arg[1]
        if op is c.CATEGORY:
            return _category_matches(arg, ch)
        raise _UnsupportedPattern(op)


@functools.cache
def _category_alphabet(category: Any) -> str:
    return "".join(ch for ch in _FALLBACK_ALPHABET if _category_matches(category, ch))


@functools.lru_cache(maxsize=256)
def _parse_pattern(pattern: str) -> Any:
    return _sre_parser.parse(pattern)


def _category_matches(category: Any, ch: str) -> bool:
    c = _sre_constants
    if category is c.CATEGORY_DIGIT:
        return ch.isdigit()
    if category is c.CATEGORY_NOT_DIGIT:
        return not ch.isdigit()
    if category is c.CATEGORY_WORD:
        return ch.isalnum() or ch == "_"
    if category is c.CATEGORY_NOT_WORD:
        return not (ch.isalnum() or ch == "_")
    if category is c.CATEGORY_SPACE:
        return ch.isspace()
    if category is c.CATEGORY_NOT_SPACE:
        return not ch.isspace()
    raise _UnsupportedPattern(category)


# -- Small helpers -------------------------------------------------------------------


def _digest(seed: str, path: str) -> bytes:
    return hashlib.sha256(f"{seed}|{path}".encode()).digest()


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_type_matches(value: Any, types: list[str]) -> bool:
    for name in types:
        if name == "null" and value is None:
            return True
        if name == "boolean" and isinstance(value, bool):
            return True
        if name == "integer" and _is_number(value) and float(value).is_integer():
            return True
        if name == "number" and _is_number(value):
            return True
        if name == "string" and isinstance(value, str):
            return True
        if name == "array" and isinstance(value, list):
            return True
        if name == "object" and isinstance(value, dict):
            return True
    return False


def _contains_equal(values: list[Any], candidate: Any) -> bool:
    """Test membership with JSON equality, where ``1 == True`` does not hold."""
    for value in values:
        if value == candidate and type(value) is type(candidate):
            return True
        if _is_number(value) and _is_number(candidate) and value == candidate:
            return True
    return False


def _escape_pointer_token(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _unescape_pointer_token(token: str) -> str:
    return unquote(token).replace("~1", "/").replace("~0", "~")
