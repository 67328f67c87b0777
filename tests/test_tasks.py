"""Task files: loading, errors with file and line, sandboxed rendering, registry."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ai_module.errors import InputError, RenderError, SchemaValidationError, TaskError
from ai_module.tasks import get_task, list_tasks, load_task_file, register_task
from ai_module.tasks.registry import unregister_task

GOOD = """\
name: {name}
description: Label a sentence.
input_fields: [text]
system: |
  You label sentences.
user: |
  Sentence: {{{{ text }}}}
output_schema:
  type: object
  properties:
    label: {{type: string, enum: [positive, negative]}}
  required: [label]
"""


def write_task(folder: Path, name: str, text: str | None = None) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        text if text is not None else GOOD.format(name=name), encoding="utf-8"
    )
    return path


def test_load_renders_messages(tmp_path):
    task = load_task_file(write_task(tmp_path, "label"))
    messages = task.render({"text": "The sky is blue."})
    assert messages[0] == {"role": "system", "content": "You label sentences."}
    assert messages[1] == {"role": "user", "content": "Sentence: The sky is blue."}


@pytest.mark.parametrize(
    "value",
    [
        "{{ 7 * 7 }}",
        "{% for x in range(3) %}x{% endfor %}",
        "{{ ''.__class__ }}",
        "ünï 🎉",
    ],
)
def test_values_render_as_data(tmp_path, value):
    task = load_task_file(write_task(tmp_path, "label"))
    assert task.render({"text": value})[1]["content"] == f"Sentence: {value}"


def test_undefined_variable_names_variable_and_task(tmp_path):
    # A task that declares no input fields is checked per record only.
    text = GOOD.format(name="label").replace("{{ text }}", "{{ text }} {{ context }}")
    text = text.replace("input_fields: [text]\n", "")
    task = load_task_file(write_task(tmp_path, "label", text))
    with pytest.raises(RenderError) as info:
        task.render({"text": "hello"})
    assert "'context'" in str(info.value)
    assert "'label'" in str(info.value)


def test_missing_input_field_is_input_error(tmp_path):
    task = load_task_file(write_task(tmp_path, "label"))
    with pytest.raises(InputError, match="missing field.*'text'"):
        task.render({"body": "x"})


def test_template_syntax_error_gives_line(tmp_path):
    text = textwrap.dedent(
        """\
        name: broken
        input_fields: [text]
        user: |
          line one
          {{ text }
        output_schema: {type: object}
        """
    )
    path = write_task(tmp_path, "broken", text)
    with pytest.raises(TaskError) as info:
        load_task_file(path)
    message = str(info.value)
    assert f"{path}:5" in message
    assert "'user'" in message
    assert "syntax error" in message


def test_invalid_schema_is_rejected(tmp_path):
    text = GOOD.format(name="label").replace("type: object", "type: objekt")
    path = write_task(tmp_path, "label", text)
    with pytest.raises(TaskError) as info:
        load_task_file(path)
    assert "output_schema" in str(info.value)
    assert "invalid JSON Schema" in str(info.value)


@pytest.mark.parametrize(
    "target", ["http://127.0.0.1:9/label.json", "file:///etc/hostname", "other.json"]
)
def test_schema_reference_outside_rejected(tmp_path, target):
    text = GOOD.format(name="label").replace(
        "label: {type: string, enum: [positive, negative]}",
        f"label: {{$ref: '{target}'}}",
    )
    path = write_task(tmp_path, "label", text)
    with pytest.raises(TaskError) as info:
        load_task_file(path)
    message = str(info.value)
    assert "properties/label/$ref" in message
    assert target in message
    assert "#/$defs/NAME" in message


def test_schema_reference_inside_accepted(tmp_path):
    text = GOOD.format(name="label").replace(
        "label: {type: string, enum: [positive, negative]}",
        "label: {$ref: '#/$defs/mood'}\n"
        "  $defs:\n"
        "    mood: {enum: [positive, negative]}",
    )
    task = load_task_file(write_task(tmp_path, "label", text))
    task.validate_output({"label": "positive"})
    with pytest.raises(SchemaValidationError):
        task.validate_output({"label": "neutral"})


def test_result_field_must_be_property(tmp_path):
    text = GOOD.format(name="label") + "result_field: lable\n"
    with pytest.raises(TaskError) as info:
        load_task_file(write_task(tmp_path, "label", text))
    assert "result_field" in str(info.value)
    assert "'label'" in str(info.value)


def test_invalid_yaml_gives_line(tmp_path):
    path = write_task(tmp_path, "label", "name: label\nuser: {{ text }}\n")
    with pytest.raises(TaskError) as info:
        load_task_file(path)
    assert f"{path}:2" in str(info.value)
    assert "block scalar" in str(info.value)


def test_unknown_field_named_with_line(tmp_path):
    text = GOOD.format(name="label") + "temprature: 0.2\n"
    path = write_task(tmp_path, "label", text)
    with pytest.raises(TaskError) as info:
        load_task_file(path)
    assert "temprature" in str(info.value)
    assert f"{path}:13" in str(info.value)


def test_example_output_must_match_schema(tmp_path):
    text = (
        GOOD.format(name="label")
        + "examples:\n  - input: {text: hi}\n    output: {label: maybe}\n"
    )
    with pytest.raises(TaskError, match=r"examples\[0\]\.output"):
        load_task_file(write_task(tmp_path, "label", text))


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ text.__class__.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
    ],
)
def test_sandbox_blocks_python_internals(tmp_path, template):
    text = GOOD.format(name="label").replace("Sentence: {{ text }}", template)
    task = load_task_file(write_task(tmp_path, "label", text))
    with pytest.raises((RenderError, TaskError)):
        task.render({"text": "x"})


def test_template_file_beside_yaml(tmp_path):
    (tmp_path / "prompt.j2").write_text("Q: {{ text }}", encoding="utf-8")
    text = GOOD.format(name="label").replace(
        "user: |\n  Sentence: {{ text }}\n", "user_file: prompt.j2\n"
    )
    task = load_task_file(write_task(tmp_path, "label", text))
    assert task.render({"text": "a"})[-1]["content"] == "Q: a"


def test_validate_output_lists_problems(tmp_path):
    task = load_task_file(write_task(tmp_path, "label"))
    task.validate_output({"label": "positive"})
    with pytest.raises(SchemaValidationError, match="label"):
        task.validate_output({"label": 3})


def test_user_task_overrides_builtin(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tasks").mkdir()
    write_task(tmp_path / "tasks", "summarize")
    assert get_task("summarize").description == "Label a sentence."
    names = [info.name for info in list_tasks()]
    assert names.count("summarize") == 1
    assert "nl2cypher" in names


def test_unknown_task_lists_available():
    with pytest.raises(TaskError) as info:
        get_task("no-such-task")
    assert "nl2cypher" in str(info.value)
    assert "summarize" in str(info.value)


def test_registered_task_with_parser(tmp_path):
    task = load_task_file(write_task(tmp_path, "label"))
    register_task(task, parse_output=lambda value: value["label"] == "positive")
    try:
        assert get_task("label").parse_output({"label": "positive"}) is True
    finally:
        unregister_task("label")


@pytest.mark.parametrize("name", ["nl2cypher", "summarize"])
def test_builtin_tasks_render_examples(name):
    task = get_task(name)
    assert task.example_input is not None
    assert task.examples or name == "summarize"
    for example in task.examples:
        task.validate_output(example.output)


def test_example_input_must_have_fields(tmp_path):
    text = GOOD.format(name="label") + (
        "examples:\n  - input: {txt: great}\n    output: {label: positive}\n"
    )
    with pytest.raises(TaskError) as info:
        load_task_file(write_task(tmp_path, "label", text))
    assert "examples[0].input" in str(info.value)
    assert "text" in str(info.value)


def test_undeclared_template_variable_rejected(tmp_path):
    text = GOOD.format(name="label").replace(
        "Sentence: {{ text }}", "Sentence: {{ text }} in {{ lang }}"
    )
    with pytest.raises(TaskError) as info:
        load_task_file(write_task(tmp_path, "label", text))
    assert "'lang'" in str(info.value)
    assert "optional_fields" in str(info.value)
