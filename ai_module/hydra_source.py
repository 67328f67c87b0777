"""Serve the `task` config group (and user providers) to Hydra from task folders.

`task=NAME` must find `./tasks/NAME.yaml` of the working directory before the
built-in task of the same name, and `aimod --help` must list both. Hydra's
search path cannot express that (a search-path root makes every task a
top-level config), so this config source serves the group itself. It also
serves `provider/` from `./conf/provider`, ahead of the built-in providers.

The source is registered from `ai_module.cli` only, never through the
`hydra_plugins` namespace, so other Hydra apps in the environment do not see it.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.core.plugins import Plugins
from hydra.errors import ConfigCompositionException
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

from ai_module.errors import AimodError
from ai_module.paths import builtin_tasks_dir, user_tasks_dir

__all__ = ["register"]

_SCHEME = "aimod"


def _group_dirs(group: str) -> list[Path]:
    if group == "task":
        return [user_tasks_dir(), builtin_tasks_dir()]
    if group == "provider":
        return [Path.cwd() / "conf" / "provider"]
    return []


def _split(config_path: str) -> tuple[str, str]:
    group, _, name = config_path.strip("/").partition("/")
    return group, name


class AimodTaskSource(ConfigSource):
    """Config source for `task/NAME` and the user's `provider/NAME`."""

    def __init__(self, provider: str, path: str) -> None:
        super().__init__(provider=provider, path=path)

    @staticmethod
    def scheme() -> str:
        return _SCHEME

    def _find(self, config_path: str) -> Path | None:
        group, name = _split(config_path)
        if not name or "/" in name:
            return None
        stem = name[:-5] if name.endswith(".yaml") else name
        for directory in _group_dirs(group):
            for suffix in (".yaml", ".yml"):
                candidate = directory / f"{stem}{suffix}"
                if candidate.is_file():
                    return candidate
        return None

    def load_config(self, config_path: str) -> ConfigResult:
        path = self._find(config_path)
        if path is None:
            raise ConfigLoadError(f"Config not found: {config_path}")
        text = path.read_text(encoding="utf-8")
        try:
            config = OmegaConf.create(OmegaConf.load(path))
        except yaml.YAMLError as exc:
            message = _yaml_error_message(path, exc, _split(config_path)[0])
            raise ConfigCompositionException(message) from None
        if _split(config_path)[0] == "task":
            from ai_module.tasks.loading import name_after_file

            config.file = str(path.resolve())
            name = {"name": config.name} if "name" in config else {}
            try:
                name_after_file(name, path)
            except AimodError as exc:
                raise ConfigCompositionException(f"aimod: error: {exc}") from None
            config.name = name["name"]
        return ConfigResult(
            config=config,
            path=f"{_SCHEME}://{path.parent}",
            provider=self.provider,
            header=ConfigSource._get_header_dict(text[:512]),
        )

    def available(self) -> bool:
        return True

    def is_group(self, config_path: str) -> bool:
        group, name = _split(config_path)
        if name:
            return False
        if group == "":
            return True
        return any(directory.is_dir() for directory in _group_dirs(group))

    def is_config(self, config_path: str) -> bool:
        return self._find(config_path) is not None

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        group, name = _split(config_path)
        if name:
            return []
        if group == "":
            if results_filter == ObjectType.CONFIG:
                return []
            return [g for g in ("provider", "task") if self.is_group(g)]
        if results_filter == ObjectType.GROUP:
            return []
        names = set()
        for directory in _group_dirs(group):
            if directory.is_dir():
                for path in directory.iterdir():
                    if path.suffix in (".yaml", ".yml") and path.is_file():
                        names.add(path.stem)
        return sorted(names)


def _yaml_error_message(path: Path, error: yaml.YAMLError, group: str) -> str:
    # Hydra prints a ConfigCompositionException as its message alone, without
    # a traceback. For a task, load_task_file words the error with the usual fix.
    if group == "task":
        from ai_module.tasks.loading import load_task_file

        try:
            load_task_file(path)
        except AimodError as exc:
            return f"aimod: error: {exc}"
    mark = getattr(error, "problem_mark", None)
    where = f"{path}:{mark.line + 1}" if mark else str(path)
    problem = getattr(error, "problem", None) or str(error)
    return f"aimod: error: {where}: invalid YAML: {problem}. Fix the file."


class AimodSearchPath(SearchPathPlugin):
    """Put the task source first, so the user's files win over built-ins."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.prepend(provider="aimod", path=f"{_SCHEME}://tasks")


def register() -> None:
    """Make Hydra use the task source in this process."""
    plugins = Plugins.instance()
    plugins.register(AimodTaskSource)
    plugins.register(AimodSearchPath)
