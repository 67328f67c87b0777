"""Turn the composed Hydra config into a `RunPlan`, checking every setting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import ValidationError

from ai_module.config import AIConfig
from ai_module.errors import ConfigError, InputError, TaskError
from ai_module.runner import RunPlan
from ai_module.secret_names import find_secrets
from ai_module.tasks import list_tasks, task_from_mapping

__all__ = ["build_plan", "find_secrets"]

_AI_FIELDS = set(AIConfig.model_fields) - {"provider", "options"}


def _container(cfg: DictConfig, key: str) -> Any:
    try:
        if key not in cfg:
            return None
        value = cfg[key]
        if OmegaConf.is_config(value):
            return OmegaConf.to_container(value, resolve=True)
        return value
    except OmegaConfBaseException as exc:
        raise ConfigError(
            f"cannot resolve setting '{key}': {exc}. Check the ${{...}} references "
            "in the command line and in ./conf/provider files."
        ) from None


def build_ai_config(cfg: DictConfig) -> AIConfig:
    provider = _container(cfg, "provider") or {}
    values = {name: _container(cfg, name) for name in _AI_FIELDS if name in cfg}
    values["provider"] = provider.get("name") or "openai"
    options = dict(provider.get("options") or {})
    options.update(_container(cfg, "options") or {})
    values["options"] = options
    try:
        return AIConfig(**values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            if not error["loc"]:
                # A check of the whole config: its input is every setting.
                problems.append(error["msg"])
                continue
            field = ".".join(str(part) for part in error["loc"])
            value = values.get(field, error.get("input"))
            problems.append(f"{field}={value!r}: {error['msg']}")
        raise ConfigError(
            "invalid setting " + "; ".join(problems) + ". See `aimod --help` for "
            "the settings and their ranges."
        ) from None


def _not_whole(value: Any) -> bool:
    # bool is a subclass of int, and limit=true is not a count.
    return isinstance(value, bool) or not isinstance(value, int)


def _switch(cfg: DictConfig, key: str) -> bool:
    """Read an on/off setting, accepting only true and false.

    Hydra reads other words, such as `no`, as text, which bool() takes as true.
    """
    value = cfg.get(key, True)
    if not isinstance(value, bool):
        raise ConfigError(f"invalid setting {key}={value!r}: give true or false")
    return value


def _parse_shard(value: Any) -> tuple[int, int]:
    """Parse `shard=I/N` (I from 0 to N-1) into (I, N); no setting is (0, 1)."""
    if value is None:
        return 0, 1
    index, _, count = str(value).partition("/")
    try:
        shard = int(index), int(count)
    except ValueError:
        shard = (-1, 0)
    if not 0 <= shard[0] < shard[1]:
        raise ConfigError(
            f"invalid setting shard={value!r}: write I/N with 0 <= I < N, e.g. "
            "shard=0/4 for the first of four shards"
        )
    return shard


def build_plan(
    cfg: DictConfig, run_dir: Path, sweep_dir: Path | None = None
) -> RunPlan:
    """Check the composed config and resolve the task, input and store paths."""
    if cfg.get("task") is None:
        names = ", ".join(info.name for info in list_tasks()) or "none"
        raise TaskError(f"no task given: add task=NAME. Available tasks: {names}")
    # Unresolved, so that a task file's text is sent exactly as written, as
    # from Python: `${...}` there is text, not a reference to aimod's settings
    # or to the environment.
    task_data = OmegaConf.to_container(cfg.task, resolve=False)
    assert isinstance(task_data, dict)
    task = task_from_mapping(task_data, file=task_data.get("file"))
    ai = build_ai_config(cfg)

    input_cfg = _container(cfg, "input") or {}
    fields = dict(input_cfg.get("fields") or {})
    if input_cfg.get("path"):
        input_path = Path(str(input_cfg["path"])).expanduser()
    elif task.example_input is not None:
        base = task.directory or Path.cwd()
        input_path = base / task.example_input.path
        fields = fields or dict(task.example_input.fields)
    else:
        raise InputError(
            f"no input: give input=FILE (task {task.name!r} names no example input)"
        )

    limit = cfg.get("limit")
    if limit is not None and (_not_whole(limit) or limit < 1):
        raise ConfigError(f"invalid setting limit={limit!r}: give a whole number >= 1")
    max_record_bytes = input_cfg.get("max_record_bytes")
    if max_record_bytes is None:
        max_record_bytes = 4 * 1024 * 1024
    if _not_whole(max_record_bytes) or max_record_bytes < 1:
        raise ConfigError(
            f"invalid setting input.max_record_bytes={max_record_bytes!r}: give bytes"
        )
    price = _container(cfg, "price") or {}
    prices = {}
    for kind in ("prompt", "completion"):
        value = price.get(kind)
        if value is not None and (not isinstance(value, (int, float)) or value < 0):
            raise ConfigError(
                f"invalid setting price.{kind}={value!r}: give USD per million "
                "tokens, a number >= 0"
            )
        prices[kind] = None if value is None else float(value)
    shard_index, shard_count = _parse_shard(cfg.get("shard"))
    store = cfg.get("store")
    store_path = (
        None if store in (None, "", "null", "none", False) else Path(str(store))
    )

    return RunPlan(
        task=task,
        ai=ai,
        input_path=input_path,
        input_format=input_cfg.get("format"),
        input_fields={str(k): str(v) for k, v in fields.items()},
        max_record_bytes=max_record_bytes,
        limit=limit,
        store_path=store_path,
        resume=_switch(cfg, "resume"),
        progress=_switch(cfg, "progress"),
        run_dir=run_dir,
        sweep_dir=sweep_dir,
        shard_index=shard_index,
        shard_count=shard_count,
        price_prompt=prices["prompt"],
        price_completion=prices["completion"],
    )
