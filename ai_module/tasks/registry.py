"""Find tasks by name: Python registrations, then `./tasks`, then built-ins."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ai_module.errors import TaskNotFoundError
from ai_module.paths import builtin_tasks_dir, user_tasks_dir
from ai_module.tasks.loading import load_task_file
from ai_module.tasks.model import Task

__all__ = [
    "TaskInfo",
    "get_task",
    "list_tasks",
    "register_task",
    "task_file",
    "unregister_task",
]

_REGISTERED: dict[str, Task] = {}
_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class TaskInfo:
    """A task's name, description and where it is declared."""

    name: str
    description: str
    source: str


def register_task(
    task: Task | str | Path, parse_output: Callable[[Any], Any] | None = None
) -> Task:
    """Register a task object or task file under its name, ahead of every file.

    With `parse_output`, the validated answer goes through that callable to
    become the item's result.
    """
    if not isinstance(task, Task):
        task = load_task_file(task)
    if parse_output is not None:
        task = task.with_parser(parse_output)
    _REGISTERED[task.name] = task
    return task


def unregister_task(name: str) -> None:
    _REGISTERED.pop(name, None)


def _search_dirs() -> list[Path]:
    dirs = [user_tasks_dir(), builtin_tasks_dir()]
    return [d for d in dirs if d.is_dir()]


def task_file_names() -> set[str]:
    """Return the names of the task files that `task=NAME` can load, unread."""
    return {
        path.stem
        for directory in _search_dirs()
        for path in directory.iterdir()
        if path.suffix in _SUFFIXES and path.is_file()
    }


def task_file(name: str) -> Path | None:
    """Return the file that declares task `name`, the user's folder first."""
    for directory in _search_dirs():
        for suffix in _SUFFIXES:
            path = directory / f"{name}{suffix}"
            if path.is_file():
                return path
    return None


def get_task(name: str) -> Task:
    """Return the task called `name`, loading its file if needed."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    path = task_file(name)
    if path is None:
        available = ", ".join(info.name for info in list_tasks()) or "none"
        raise TaskNotFoundError(
            f"unknown task {name!r}. Available tasks: {available}. Add one as "
            f"tasks/{name}.yaml in the working directory."
        )
    return load_task_file(path)


def list_tasks() -> list[TaskInfo]:
    """List every task that `get_task` can find, sorted by name.

    A file that fails to load is listed with its error as the description.
    """
    found: dict[str, TaskInfo] = {}
    for directory in reversed(_search_dirs()):
        for path in sorted(directory.iterdir()):
            if path.suffix not in _SUFFIXES or not path.is_file():
                continue
            found[path.stem] = TaskInfo(path.stem, _description(path), str(path))
    for name, task in _REGISTERED.items():
        found[name] = TaskInfo(name, task.description, "registered from Python")
    return sorted(found.values(), key=lambda info: info.name)


def _description(path: Path) -> str:
    """Return the first line of a task file's description, without validating it."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return "(invalid task file: run `aimod validate` on it)"
    if not isinstance(data, dict) or not data.get("description"):
        return ""
    lines = str(data["description"]).strip().splitlines()
    return lines[0] if lines else ""
