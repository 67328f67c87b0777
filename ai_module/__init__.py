"""aimod: batch LLM jobs declared as data.

The Python API::

    from ai_module import AIConfig, run_batch
    results = asyncio.run(run_batch("nl2cypher", [{"prompt": "count users"}], AIConfig()))
"""

from __future__ import annotations

from ai_module.config import AIConfig
from ai_module.errors import AimodError
from ai_module.orchestrator import (
    ItemResult,
    iter_batch,
    run_batch,
    run_batch_sync,
    stream_batch,
)
from ai_module.tasks import Task, get_task, list_tasks, load_task_file, register_task

__all__ = [
    "AIConfig",
    "AimodError",
    "ItemResult",
    "Task",
    "get_task",
    "iter_batch",
    "list_tasks",
    "load_task_file",
    "register_task",
    "run_batch",
    "run_batch_sync",
    "stream_batch",
]

__version__ = "0.1.0"
