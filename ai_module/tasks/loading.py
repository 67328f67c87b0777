"""Read task files, reporting every problem with its file and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ai_module.errors import TaskError
from ai_module.tasks.model import Task

__all__ = ["load_task_file", "task_from_mapping", "locate"]


def load_task_file(path: str | Path) -> Task:
    """Load and check one task YAML file."""
    path = Path(path).resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskError(f"{path}: cannot read task file: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        lines = text.splitlines()
        line = lines[mark.line] if mark and mark.line < len(lines) else ""
        if "{" in line:
            advice = (
                "A template that starts with '{' must be a block scalar "
                "('user: |' and the template on the next lines)."
            )
        else:
            advice = "Check the indentation and quoting on that line."
        raise TaskError(f"{where}: invalid YAML: {problem}. {advice}") from None
    if not isinstance(data, dict):
        raise TaskError(
            f"{path}: a task file must be a YAML mapping, got {type(data).__name__}"
        )
    name_after_file(data, path)
    return task_from_mapping(data, file=path)


def name_after_file(data: dict[str, Any], path: Path) -> None:
    """Name the task after its file, or raise TaskError when the names differ.

    The registry and `task=NAME` find a task by its file name, so a different
    `name` inside would run under a name that no command line used.
    """
    name = data.setdefault("name", path.stem)
    if name != path.stem:
        raise TaskError(
            f"{locate(path, 'name') or path}: task name {name!r} differs from "
            f"the file name {path.name!r}; rename one so they match"
        )


def task_from_mapping(data: dict[str, Any], *, file: str | Path | None = None) -> Task:
    """Build a Task from a mapping (a parsed file or a Hydra config node)."""
    data = dict(data)
    if file is not None:
        data["file"] = str(file)
    try:
        return Task.model_validate(data)
    except ValidationError as exc:
        raise _task_error(exc, data) from None


def _task_error(exc: ValidationError, data: dict[str, Any]) -> TaskError:
    lines = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "(file)"
        where = locate(data.get("file"), field) if data.get("file") else None
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = (
                "unknown field (check its spelling against the README's task format)"
            )
        lines.append(
            f"{where or data.get('file') or 'task'}: field '{field}': {message}"
        )
    name = data.get("name", "?")
    return TaskError(f"invalid task {name!r}:\n  " + "\n  ".join(lines))


def locate(
    file: str | Path | None, field: str, template_line: int | None = None
) -> str | None:
    """Return "path:line" for a field of a task file, or None if unknown.

    `template_line` is a line number inside a template; the result then points
    at that line of the YAML file (or of the template file the field names).
    """
    if file is None:
        return None
    path = Path(file)
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return str(path)
    key = field.split(".")[0].split("[")[0]
    if not isinstance(root, yaml.MappingNode):
        return str(path)
    for key_node, value_node in root.value:
        if key_node.value == f"{key}_file" and template_line is not None:
            return f"{path.parent / value_node.value}:{template_line}"
        if key_node.value != key:
            continue
        if template_line is None:
            return f"{path}:{key_node.start_mark.line + 1}"
        first = value_node.start_mark.line + 1
        if getattr(value_node, "style", None) in ("|", ">"):
            first += 1
        return f"{path}:{first + template_line - 1}"
    return str(path)
