"""The `aimod` command: a Hydra app plus the subcommands tasks, validate, runs, export.

`aimod key=value ...` composes `conf/config.yaml` with the chosen provider and
task and runs one batch; `aimod -m ...` sweeps. Before Hydra sees the command
line, overrides that carry a secret are rejected (Hydra would write them into
the run's `.hydra/` snapshot), `input=FILE` is rewritten to `input.path=FILE`
so that `input.fields.*` can live beside it, and keys of free-form nodes such as
`input.fields.prompt=question` are added without Hydra's `++` prefix.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from ai_module.errors import AimodError
from ai_module.paths import builtin_conf_dir
from ai_module.secret_names import ENV_NAME, is_secret_name

__all__ = ["main"]

SUBCOMMANDS = ("tasks", "validate", "runs", "export")
# Values that start like the keys of common providers (OpenAI, Anthropic,
# Groq, xAI) or like an Authorization header.
_SECRET_VALUE = re.compile(
    r"=\s*['\"]?((?:sk-|gsk_|xai-)[A-Za-z0-9_-]{8,}|Bearer\s)", re.IGNORECASE
)
_EXIT_FILE_ENV = "AIMOD_EXIT_CODES_FILE"
# The command line as typed, for the summary's resume hint: Hydra receives
# the rewritten overrides, and joblib's job processes inherit the environment.
_COMMAND_ENV = "AIMOD_COMMAND"


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `aimod` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv in (["--version"], ["-V"]):
        from importlib.metadata import version

        sys.stdout.write(f"aimod {version('aimod')}\n")
        sys.exit(0)
    if argv and argv[0] in SUBCOMMANDS:
        from ai_module.commands import run_subcommand

        sys.exit(run_subcommand(argv))

    for argument in argv:
        problem = _secret_problem(argument)
        if problem:
            sys.stderr.write(f"aimod: error: {problem}\n")
            sys.exit(2)
    flags = [argument for argument in argv if argument.startswith("-")]
    has_task = any(argument.lstrip("+").startswith("task=") for argument in argv)
    if not has_task and set(flags) <= {"-m", "--multirun"}:
        # Checked before Hydra, which would create a run folder first.
        from ai_module.tasks import list_tasks

        names = ", ".join(info.name for info in list_tasks()) or "none"
        sys.stderr.write(
            f"aimod: error: no task given: add task=NAME. Available tasks: {names}. "
            "`aimod --help` shows the settings.\n"
        )
        sys.exit(2)
    unknown = _unknown_setting(argv) or _unknown_choice(argv)
    if unknown:
        sys.stderr.write(f"aimod: error: {unknown}\n")
        sys.exit(2)
    os.environ[_COMMAND_ENV] = "aimod " + shlex.join(argv)
    argv = [_rewrite_override(argument) for argument in argv]
    # Outside the batch loop, which installs its own handlers, SIGTERM raises
    # KeyboardInterrupt as Ctrl-C does, so both exit with code 130.
    # NOTE: a signal while `import ai_module` still runs, before this line, gets
    # Python's default handling; nothing has been sent by then.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        code = _run_hydra(argv)
    except _SweepInterrupted:
        sys.stderr.write(
            "aimod: the sweep stopped; jobs after the interrupted one were not "
            "started. Run the same command again to resume: jobs already done "
            "are served from the store.\n"
        )
        code = 130
    except KeyboardInterrupt:
        sys.stderr.write(
            "aimod: interrupted before the run started or while it was finishing; "
            "answers committed so far stay in the store. Run the same command "
            "again to resume.\n"
        )
        code = 130
    sys.exit(code)


def _secret_problem(argument: str) -> str | None:
    """Describe why an override may carry a secret, without repeating its value.

    Runs before Hydra, which writes every override into the run's `.hydra/`.
    """
    key, equals, value = argument.partition("=")
    if not equals:
        return None
    key = key.lstrip("+~")
    if key in ("api_key_env", "provider.api_key_env") and not ENV_NAME.fullmatch(value):
        return (
            f"{key} takes the name of an environment variable (capital letters, "
            "digits and underscores, such as GROQ_API_KEY), not the key itself. "
            "Export the key in that variable and pass its name."
        )
    names = re.split(r"[./]", key)
    if any(is_secret_name(name) for name in names) or _SECRET_VALUE.search(argument):
        return (
            f"{key}=... looks like a secret. API keys are read from the environment "
            "only, so they never reach logs or run snapshots: export "
            "OPENAI_API_KEY=... (or the variable your provider uses, chosen with "
            "api_key_env=NAME) and run again without it."
        )
    return None


def _unknown_setting(argv: list[str]) -> str | None:
    """Describe the first override whose top-level key aimod does not know.

    Hydra's own message for a misspelt key suggests adding it with '+', which
    would silently do nothing; a close match is more useful.
    """
    import difflib

    import yaml

    known = None
    for argument in argv:
        if argument.startswith(("-", "+", "~")) or "=" not in argument:
            continue
        key = argument.split("=", 1)[0]
        top = key.split(".", 1)[0].split("/", 1)[0]
        if known is None:
            config = yaml.safe_load((builtin_conf_dir() / "config.yaml").read_text())
            known = set(config) | {"task", "provider", "hydra"}
        if top in known:
            continue
        close = difflib.get_close_matches(top, sorted(known), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return (
            f"unknown setting '{key}'.{hint} `aimod --help` lists the settings; "
            "a task's fields are set as task.FIELD=VALUE."
        )
    return None


def _unknown_choice(argv: list[str]) -> str | None:
    """Describe a task or provider name that no file defines, with the closest.

    Hydra's own message for it is a trace of its search path.
    """
    import difflib

    for argument in argv:
        key, equals, value = argument.lstrip("+").partition("=")
        if not equals or key not in ("task", "provider"):
            continue
        if any(mark in value for mark in "()[]{}'\""):
            continue  # a sweep function or quoting: Hydra reads that
        known = _choices(key)
        for name in value.split(","):  # a sweep lists several
            name = name.strip()
            if not name or name in known:
                continue
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            where = (
                "./tasks or the built-in tasks"
                if key == "task"
                else ("./conf/provider or the built-in providers")
            )
            return (
                f"unknown {key} '{name}': no such file in {where}.{hint} "
                f"Available: {', '.join(sorted(known))}."
            )
    return None


def _choices(group: str) -> set[str]:
    if group == "task":
        from ai_module.tasks import task_file_names

        return task_file_names()
    folders = [builtin_conf_dir() / "provider", Path.cwd() / "conf" / "provider"]
    return {
        path.stem
        for folder in folders
        if folder.is_dir()
        for path in folder.glob("*.yaml")
    }


# Keys under these nodes are free-form, so setting one must add it when absent;
# Hydra wants "++key=value" for that, which users should not need to know.
_OPEN_PREFIXES = ("input.fields.", "options.", "provider.options.", "task.")


def _rewrite_override(argument: str) -> str:
    for prefix in ("input=", "+input=", "++input="):
        if argument.startswith(prefix):
            return "input.path=" + argument[len(prefix) :]
    if argument.startswith(_OPEN_PREFIXES) and "=" in argument:
        return "++" + argument
    return argument


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("aimod_uid"):
        # Cached per config, and Hydra copies the cache into each sweep job, so
        # every job of one sweep shares the sweep folder.
        OmegaConf.register_new_resolver(
            "aimod_uid", lambda: uuid.uuid4().hex[:6], use_cache=True
        )


def _run_hydra(argv: list[str]) -> int:
    import hydra

    from ai_module import hydra_source

    hydra_source.register()
    _register_resolvers()

    handle, exit_file = tempfile.mkstemp(prefix="aimod-exit-", suffix=".txt")
    os.close(handle)
    os.environ[_EXIT_FILE_ENV] = exit_file
    hydra_main = hydra.main(
        config_path=str(builtin_conf_dir()), config_name="config", version_base="1.3"
    )(_task_function)
    saved_argv = sys.argv
    sys.argv = [saved_argv[0] if saved_argv else "aimod", *argv]
    hydra_code = 0
    try:
        with _mode_probe_skipped(argv):
            hydra_main()
    except SystemExit as exc:
        hydra_code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = saved_argv
        codes = _read_exit_codes(exit_file)
        os.environ.pop(_EXIT_FILE_ENV, None)
    if codes:
        return max(codes)
    # Hydra exits 1 on composition errors (unknown task, bad override); those
    # are usage errors, like our own.
    return 2 if hydra_code == 1 else hydra_code


@contextlib.contextmanager
def _mode_probe_skipped(argv: list[str]) -> Iterator[None]:
    """Skip the extra composition Hydra 1.3 makes to read `hydra.mode`.

    Before every run, Hydra composes the whole config once only to read
    `hydra.mode`, then composes it again for the run (measured: a 1-record run
    took 0.77 s instead of 0.90 s without the probe). aimod's config leaves
    `hydra.mode` unset, so unless the command line sets it, the probe returns
    None and Hydra picks the mode from `-m`. Hydra ignores a failed probe, so
    skipping it hides no error.
    """
    from hydra._internal.hydra import Hydra

    if any("hydra.mode" in argument for argument in argv):
        yield
        return
    probe = Hydra.get_mode
    Hydra.get_mode = lambda self, config_name, overrides: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        Hydra.get_mode = probe  # type: ignore[method-assign]


def _read_exit_codes(path: str) -> list[int]:
    try:
        text = Path(path).read_text()
        Path(path).unlink()
    except OSError:
        return []
    return [int(line) for line in text.split() if line.strip().lstrip("-").isdigit()]


def _record_exit_code(code: int) -> None:
    path = os.environ.get(_EXIT_FILE_ENV)
    if path:
        with open(path, "a") as handle:
            handle.write(f"{code}\n")


def _task_function(cfg) -> int:  # noqa: ANN001 - Hydra passes a DictConfig
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from ai_module.plan import build_plan, find_secrets
    from ai_module.runner import ExitCode, execute_run, record_failed_job

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    sweep_dir = (
        Path(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None
    )

    plain = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(plain, dict)
    secrets = find_secrets({k: v for k, v in plain.items() if k != "task"})
    if secrets:
        _remove_snapshot(run_dir)
        _fail(
            f"the configuration contains {', '.join(secrets)}: API keys are read from "
            "the environment only. Remove it and set the provider's key variable "
            "(api_key_env) instead."
        )
        _record_exit_code(ExitCode.USAGE)
        return ExitCode.USAGE

    overrides = list(hydra_cfg.overrides.task)
    try:
        plan = build_plan(cfg, run_dir, sweep_dir)
        plan.overrides = overrides
    except AimodError as exc:
        if sweep_dir is not None:
            record_failed_job(sweep_dir, run_dir, overrides, exc)
        return _failed(exc)
    try:
        summary = execute_run(plan)
    except AimodError as exc:
        return _failed(exc)

    from ai_module.summary_text import format_summary

    sys.stdout.write(format_summary(summary, os.environ.get(_COMMAND_ENV)))
    sys.stdout.flush()
    _record_exit_code(summary.exit_code)
    if summary.exit_code == ExitCode.INTERRUPTED and sweep_dir is not None:
        # Hydra's launchers catch Exception only: this ends the whole sweep
        # instead of starting the next job.
        raise _SweepInterrupted
    return summary.exit_code


class _SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped one job of a sweep: start no further job."""


def _failed(error: AimodError) -> int:
    from ai_module.runner import error_exit_code

    _fail(str(error))
    code = error_exit_code(error)
    _record_exit_code(code)
    return code


def _fail(message: str) -> None:
    sys.stderr.write(f"aimod: error: {message}\n")
    sys.stderr.flush()


def _remove_snapshot(run_dir: Path) -> None:
    for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):
        try:
            (run_dir / ".hydra" / name).unlink()
        except OSError:
            pass


if __name__ == "__main__":
    main()
