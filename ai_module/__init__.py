"""aimod: batch LLM jobs declared as data.

The Python API::

    import asyncio
    from ai_module import AIConfig, run_batch
    inputs = [{"prompt": "count users"}]
    results = asyncio.run(run_batch("nl2cypher", inputs, AIConfig()))
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

# A library adds no handler of its own: without logging configured, Python's
# last-resort handler would print aimod's warnings on stderr.
logging.getLogger(__name__).addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from ai_module.config import AIConfig
    from ai_module.errors import AimodError
    from ai_module.orchestrator import (
        ItemResult,
        iter_batch,
        run_batch,
        run_batch_sync,
        stream_batch,
    )
    from ai_module.tasks import (
        Task,
        get_task,
        list_tasks,
        load_task_file,
        register_task,
    )

# The public names load their modules on first use (PEP 562), so that
# `aimod --help` and the subcommands do not import Jinja, jsonschema and the
# providers. That cut `aimod --help` from about 1.0 s to 0.5 s (bench/README.md).
_LAZY = {
    "AIConfig": "ai_module.config",
    "AimodError": "ai_module.errors",
    "ItemResult": "ai_module.orchestrator",
    "iter_batch": "ai_module.orchestrator",
    "run_batch": "ai_module.orchestrator",
    "run_batch_sync": "ai_module.orchestrator",
    "stream_batch": "ai_module.orchestrator",
    "Task": "ai_module.tasks",
    "get_task": "ai_module.tasks",
    "list_tasks": "ai_module.tasks",
    "load_task_file": "ai_module.tasks",
    "register_task": "ai_module.tasks",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ai_module' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


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
