"""Locations of the built-in Hydra configs and tasks, in a checkout or a wheel.

A wheel carries them inside the package (`ai_module/_bundled/`); an editable
install or a checkout reads the repository's top-level `conf/` and `tasks/`.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["builtin_conf_dir", "builtin_tasks_dir", "user_tasks_dir"]

_PACKAGE = Path(__file__).resolve().parent


def _bundled_or_repo(name: str) -> Path:
    bundled = _PACKAGE / "_bundled" / name
    if bundled.is_dir():
        return bundled
    return _PACKAGE.parent / name


def builtin_conf_dir() -> Path:
    return _bundled_or_repo("conf")


def builtin_tasks_dir() -> Path:
    return _bundled_or_repo("tasks")


def user_tasks_dir() -> Path:
    """Return the `tasks/` folder of the current working directory."""
    return Path.cwd() / "tasks"
