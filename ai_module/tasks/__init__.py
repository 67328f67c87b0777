"""Tasks: the declared job, its file format, templates and registry."""

from __future__ import annotations

from ai_module.tasks.loading import load_task_file, task_from_mapping
from ai_module.tasks.model import Example, Generation, Task
from ai_module.tasks.registry import (
    TaskInfo,
    get_task,
    list_tasks,
    register_task,
    task_file,
    task_file_names,
    unregister_task,
)

__all__ = [
    "Example",
    "Generation",
    "Task",
    "TaskInfo",
    "get_task",
    "list_tasks",
    "load_task_file",
    "register_task",
    "task_file",
    "task_file_names",
    "task_from_mapping",
    "unregister_task",
]
