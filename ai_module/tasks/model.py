"""`Task`: one declared job, its templates, output schema and result shape."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import referencing
from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from ai_module.errors import (
    InputError,
    RenderError,
    SchemaValidationError,
    TaskError,
    as_sentence,
)

__all__ = ["Example", "ExampleInput", "Generation", "Task"]

_ENVIRONMENT = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined,
    autoescape=False,
    keep_trailing_newline=False,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _to_json(value: Any, indent: int | None = None) -> str:
    # Jinja's own `tojson` escapes <, > and & for HTML, which a prompt does not want.
    return json.dumps(value, ensure_ascii=False, indent=indent)


_ENVIRONMENT.filters["tojson"] = _to_json
# Keywords whose values are regular expressions, which the regex engines of
# Rust and Python read differently in places.
_REGEX_KEYWORDS = frozenset({"pattern", "patternProperties"})


def _compile_fast_validator(schema: dict[str, Any]) -> Any | None:
    """Compile `schema` with jsonschema-rs, or return None to use jsonschema alone.

    jsonschema-rs accepts a valid answer in about 0.1 µs where jsonschema takes
    about 15 µs (bench/README.md). Only acceptance is taken from it: an answer
    it rejects goes to jsonschema, which decides and words the errors. Schemas
    with regular expressions stay with jsonschema, because the regex dialects
    of Rust and Python differ. Remote `$ref`s are never fetched.
    """
    if _uses_keywords(schema, _REGEX_KEYWORDS):
        return None
    try:
        import jsonschema_rs
    except ImportError:
        return None

    def no_retrieval(uri: str) -> Any:
        raise ValueError(f"remote $ref {uri} is not fetched")

    options = {"validate_formats": False, "retriever": no_retrieval}
    try:
        if "$schema" in schema:
            return jsonschema_rs.validator_for(schema, **options)
        # jsonschema's default draft, as in Task._check_schema.
        return jsonschema_rs.Draft202012Validator(schema, **options)
    except Exception:  # any schema jsonschema-rs cannot compile
        return None


_REFERENCE_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")


def _outside_reference(node: Any, path: str = "") -> tuple[str, str] | None:
    """Find a reference to another document: return (where, target) or None.

    Only references within the schema (starting with '#') are allowed, so that
    checking a response never reads a file or fetches a URL.
    """
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}/{key}"
            if key in _REFERENCE_KEYWORDS and isinstance(value, str):
                if not value.startswith("#"):
                    return where, value
            found = _outside_reference(value, where)
            if found:
                return found
    elif isinstance(node, list):
        for number, value in enumerate(node):
            found = _outside_reference(value, f"{path}/{number}")
            if found:
                return found
    return None


def _uses_keywords(node: Any, keywords: frozenset[str]) -> bool:
    if isinstance(node, dict):
        return any(
            key in keywords or _uses_keywords(value, keywords)
            for key, value in node.items()
        )
    if isinstance(node, list):
        return any(_uses_keywords(item, keywords) for item in node)
    return False


_UNDEFINED_NAME = re.compile(r"'([^']+)' is undefined")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Example(BaseModel):
    """A few-shot pair: an input record and the answer the model should give."""

    model_config = ConfigDict(extra="forbid")

    input: dict[str, Any]
    output: Any


class Generation(BaseModel):
    """Task defaults for generation; run settings override each field."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, ge=0, le=1)
    seed: int | None = None
    stop: list[str] | str | None = None

    def values(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class ExampleInput(BaseModel):
    """The input file a task runs on when no `input=` is given.

    `path` is relative to the task file; `fields` maps template variables to
    the file's column names, as `input.fields` does on the command line.
    """

    model_config = ConfigDict(extra="forbid")

    path: str
    fields: dict[str, str] = Field(default_factory=dict)


class Task(BaseModel):
    """A batch job declared as data (see the README's "Adding a task").

    `result_field` picks one field of the validated answer as the result;
    without it the whole answer is the result. A task registered from Python can
    replace that with any `parse_output` callable.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    input_fields: list[str] = Field(default_factory=list)
    optional_fields: list[str] = Field(default_factory=list)
    system: str | None = None
    system_file: str | None = None
    user: str | None = None
    user_file: str | None = None
    output_schema: dict[str, Any]
    examples: list[Example] = Field(default_factory=list)
    generation: Generation = Field(default_factory=Generation)
    result_field: str | None = None
    example_input: ExampleInput | None = None
    file: str | None = Field(None, description="the YAML file this task came from")

    _system_template: Any = PrivateAttr(None)
    _user_template: Any = PrivateAttr(None)
    _validator: Any = PrivateAttr(None)
    _fast_validator: Any = PrivateAttr(None)
    _parse_output: Callable[[Any], Any] | None = PrivateAttr(None)
    # The messages that do not depend on the record, rendered on first use:
    # the system message when its template reads no variable, then the
    # examples. None until rendered.
    _fixed_messages: tuple[list[dict[str, str]], bool] | None = PrivateAttr(None)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"invalid task name {value!r}: use letters, digits, '_', '-' or '.'"
            )
        return value

    @field_validator("example_input", mode="before")
    @classmethod
    def _example_input_shorthand(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    def model_post_init(self, __context: Any) -> None:
        self._load_template_files()
        if self.user is None:
            raise self._error(
                "user", "missing user template: set 'user' or 'user_file'"
            )
        self._system_template = self._compile("system", self.system)
        self._user_template = self._compile("user", self.user)
        self._check_variables()
        self._check_schema()
        for number, example in enumerate(self.examples):
            try:
                self._validator.validate(example.output)
            except jsonschema.ValidationError as exc:
                raise self._error(
                    f"examples[{number}].output",
                    f"example output does not match output_schema: {exc.message}",
                ) from None
            missing = [name for name in self.input_fields if name not in example.input]
            if missing:
                raise self._error(
                    f"examples[{number}].input",
                    f"example input lacks input field(s) {', '.join(missing)}",
                )

    # -- loading ---------------------------------------------------------------

    @property
    def directory(self) -> Path | None:
        return Path(self.file).parent if self.file else None

    def _load_template_files(self) -> None:
        for field in ("system", "user"):
            relative = getattr(self, f"{field}_file")
            if relative is None:
                continue
            if getattr(self, field) is not None:
                raise self._error(
                    field, f"set either '{field}' or '{field}_file', not both"
                )
            base = self.directory or Path.cwd()
            path = base / relative
            try:
                object.__setattr__(self, field, path.read_text(encoding="utf-8"))
            except OSError as exc:
                raise self._error(
                    f"{field}_file", f"cannot read template file {path}: {exc.strerror}"
                ) from None

    def _compile(self, field: str, source: str | None) -> Any:
        if source is None:
            return None
        try:
            return _ENVIRONMENT.from_string(source)
        except TemplateSyntaxError as exc:
            raise self._error(
                field, f"template syntax error: {exc.message}", template_line=exc.lineno
            ) from None

    def _check_variables(self) -> None:
        """Reject templates that read variables the task does not declare.

        Such a template fails on every record that lacks the variable, so
        `aimod validate` reports it before a run pays for anything.
        """
        if not self.input_fields:
            return  # nothing declared, so nothing to check against
        declared = {*self.input_fields, *self.optional_fields, *_ENVIRONMENT.globals}
        for field in ("system", "user"):
            source = getattr(self, field)
            if source is None:
                continue
            used = meta.find_undeclared_variables(_ENVIRONMENT.parse(source))
            unknown = sorted(used - declared)
            if unknown:
                raise self._error(
                    field,
                    f"template reads {', '.join(map(repr, unknown))}, which is in "
                    "neither input_fields nor optional_fields; add it to one of them",
                )

    def _check_schema(self) -> None:
        validator_class = jsonschema.validators.validator_for(
            self.output_schema, default=jsonschema.Draft202012Validator
        )
        try:
            validator_class.check_schema(self.output_schema)
        except jsonschema.SchemaError as exc:
            where = "/".join(str(p) for p in exc.absolute_path)
            raise self._error(
                "output_schema",
                f"invalid JSON Schema at '{where or '(root)'}': {exc.message}",
            ) from None
        outside = _outside_reference(self.output_schema)
        if outside:
            where, target = outside
            raise self._error(
                "output_schema",
                f"'{where.lstrip('/')}' refers to {target!r}, outside the schema. "
                "References to other files or URLs are not followed: copy that "
                "schema under '$defs' and refer to it as '#/$defs/NAME'",
            )
        # An empty registry: nothing is fetched, even for a reference that
        # slipped past the check above.
        self._validator = validator_class(
            self.output_schema, registry=referencing.Registry()
        )
        self._fast_validator = _compile_fast_validator(self.output_schema)
        self._check_result_field()

    def _check_result_field(self) -> None:
        if self.result_field is None:
            return
        properties = self.output_schema.get("properties")
        if isinstance(properties, dict) and self.result_field not in properties:
            known = ", ".join(map(repr, properties)) or "none"
            raise self._error(
                "result_field",
                f"{self.result_field!r} is not a property of output_schema "
                f"(its properties: {known})",
            )

    def _error(
        self, field: str, message: str, template_line: int | None = None
    ) -> TaskError:
        from ai_module.tasks.loading import locate

        where = locate(self.file, field, template_line) if self.file else None
        prefix = f"{where}: " if where else ""
        return TaskError(
            f"{prefix}task {self.name!r}, field '{field}': {as_sentence(message)} "
            "Fix the task "
            "file and check it with `aimod validate PATH`."
        )

    # -- use ---------------------------------------------------------------------

    def render(self, record: Mapping[str, Any]) -> list[dict[str, str]]:
        """Render the chat messages for one input record.

        Values of the record are data: a value containing `{{ }}` is sent as
        those characters, never evaluated as a template.
        """
        if not isinstance(record, Mapping):
            raise InputError(
                f"record is a {type(record).__name__}, but task {self.name!r} needs "
                "a mapping of field names to values, such as "
                f"{{{', '.join(repr(name) + ': ...' for name in self.input_fields)}}}"
            )
        missing = [name for name in self.input_fields if name not in record]
        if missing:
            present = ", ".join(map(str, record)) or "none"
            raise InputError(
                f"record is missing field(s) {', '.join(map(repr, missing))} required "
                f"by task {self.name!r} (it has: {present}). "
                "Map an input column with input.fields.NAME=COLUMN."
            )
        # Private attributes are read from `__pydantic_private__` in the
        # per-record methods: pydantic's attribute path for them costs about
        # 1.7 µs per read, more than a short Jinja render's own work.
        private = self.__pydantic_private__
        fixed = private["_fixed_messages"]
        if fixed is None:
            fixed = private["_fixed_messages"] = self._render_fixed_messages()
        prefix, system_is_fixed = fixed
        messages = []
        if self.system is not None and not system_is_fixed:
            messages.append(
                {"role": "system", "content": self._render("system", record)}
            )
        # Copies, so that a caller who edits a message cannot change the cache.
        messages.extend(dict(message) for message in prefix)
        messages.append({"role": "user", "content": self._render("user", record)})
        return messages

    def _render_fixed_messages(self) -> tuple[list[dict[str, str]], bool]:
        """Render the system message if it reads no variable, and the examples.

        A template that reads no variable renders the same text for every
        record: the sandbox has no clock, and the one random global, `lipsum`,
        counts as a variable here. Rendering these once saves a Jinja render
        per message and record.
        """
        prefix = []
        system_is_fixed = False
        if self.system is not None and not meta.find_undeclared_variables(
            _ENVIRONMENT.parse(self.system)
        ):
            prefix.append({"role": "system", "content": self._render("system", {})})
            system_is_fixed = True
        for example in self.examples:
            prefix.append(
                {"role": "user", "content": self._render("user", example.input)}
            )
            prefix.append({"role": "assistant", "content": _to_json(example.output)})
        return prefix, system_is_fixed

    def _render(self, field: str, record: Mapping[str, Any]) -> str:
        private = self.__pydantic_private__
        template = private[
            "_system_template" if field == "system" else "_user_template"
        ]
        context = {name: None for name in self.optional_fields}
        context.update(record)
        try:
            return template.render(context).strip()
        except UndefinedError as exc:
            match = _UNDEFINED_NAME.search(str(exc))
            name = match.group(1) if match else str(exc)
            raise RenderError(
                f"task {self.name!r}, {field} template: variable {name!r} is undefined "
                "for this record. Add it to the input, map a column to it with "
                f"input.fields.{name}=COLUMN, or list it in the task's optional_fields."
            ) from None
        except SecurityError as exc:
            raise RenderError(
                f"task {self.name!r}, {field} template: unsafe operation rejected by "
                f"the sandbox: {exc}"
            ) from None

    def validate_output(self, value: Any) -> None:
        """Raise SchemaValidationError listing how `value` breaks the schema."""
        private = self.__pydantic_private__
        fast = private["_fast_validator"]
        if fast is not None:
            try:
                if fast.is_valid(value):
                    return
            except (TypeError, ValueError, OverflowError):
                pass  # a value jsonschema-rs cannot take: jsonschema decides
        errors = sorted(
            private["_validator"].iter_errors(value), key=lambda e: list(e.path)
        )
        if errors:
            details = "; ".join(
                f"at '{'/'.join(map(str, e.absolute_path)) or '(root)'}': {e.message}"
                for e in errors[:5]
            )
            raise SchemaValidationError(
                f"response does not match the output schema: {details}"
            )

    def parse_output(self, value: Any) -> Any:
        """Turn the validated answer into the item's result."""
        parse = self.__pydantic_private__["_parse_output"]
        if parse is not None:
            return parse(value)
        if self.result_field is not None:
            return value[self.result_field]
        return value

    def with_parser(self, parse_output: Callable[[Any], Any]) -> Task:
        """Return a copy whose `parse_output` is the given callable."""
        task = self.model_copy()
        task._parse_output = parse_output
        return task
