"""Subcommands beside the Hydra form: tasks, validate, runs, export."""

from __future__ import annotations

import argparse
import csv
import os
import socket
import sys
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from ai_module.errors import AimodError, InputError, StoreError

__all__ = ["run_subcommand"]

_DEFAULT_STORE = "runs/aimod.db"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aimod",
        description="Inspect tasks and runs. Run a batch with `aimod task=NAME ...`.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("tasks", help="list the tasks: name, description, file")

    validate = commands.add_parser(
        "validate",
        help="check a task file: YAML, templates, schema, and render its examples",
    )
    validate.add_argument("path", help="a task YAML file, or a task name")
    validate.add_argument(
        "--records", type=int, default=3, help="example input records to render (3)"
    )

    runs = commands.add_parser("runs", help="list recent runs from the store")
    runs.add_argument("--store", default=_DEFAULT_STORE, help=f"({_DEFAULT_STORE})")
    runs.add_argument("--limit", type=int, default=20, help="runs to show (20)")

    export = commands.add_parser("export", help="write a run's results as JSONL or CSV")
    export.add_argument("run", help="run id (see `aimod runs`) or run folder")
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    export.add_argument("--output", "-o", help="file to write (default: stdout)")
    export.add_argument("--store", default=_DEFAULT_STORE, help=f"({_DEFAULT_STORE})")
    return parser


def run_subcommand(argv: list[str]) -> int:
    """Run one subcommand; return its exit code (0 ok, 2 invalid input)."""
    args = _parser().parse_args(argv)
    handler = {"tasks": _tasks, "validate": _validate, "runs": _runs, "export": _export}
    try:
        return handler[args.command](args)
    except AimodError as exc:
        sys.stderr.write(f"aimod {args.command}: error: {exc}\n")
        return 4 if isinstance(exc, StoreError) else 2
    except BrokenPipeError:
        return 0


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [
        max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))
    ]
    lines = []
    for row in [header, *rows]:
        cells = [
            str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _tasks(args: argparse.Namespace) -> int:
    from ai_module.tasks import list_tasks

    rows = [[info.name, info.description, info.source] for info in list_tasks()]
    sys.stdout.write(_table(rows, ["NAME", "DESCRIPTION", "FILE"]))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from ai_module.inputs import read_records
    from ai_module.tasks import get_task, load_task_file

    path = Path(args.path)
    task = (
        load_task_file(path)
        if path.suffix in (".yaml", ".yml")
        else get_task(args.path)
    )
    out = sys.stdout
    out.write(f"{task.file or task.name}: task {task.name!r} is valid\n")
    out.write(f"  input fields: {', '.join(task.input_fields) or 'none'}\n")
    for number, example in enumerate(task.examples):
        task.render(example.input)
        out.write(f"  few-shot example {number}: renders, output matches the schema\n")
    if task.example_input is not None and args.records > 0:
        base = task.directory or Path.cwd()
        source = base / task.example_input.path
        records = read_records(source, fields=task.example_input.fields)
        for line, record in islice(records, args.records):
            if isinstance(record, InputError):
                raise record
            messages = task.render(record)
            size = sum(len(message["content"]) for message in messages)
            out.write(
                f"  {source.name}:{line}: renders {len(messages)} messages, "
                f"{size} characters\n"
            )
    return 0


def _open_store(path: str):  # noqa: ANN202 - returns Store, imported lazily
    from ai_module.store import Store

    if not Path(path).exists():
        raise InputError(f"no store at {path}: run a task first, or give --store PATH")
    return Store(path)


def _runs(args: argparse.Namespace) -> int:
    store = _open_store(args.store)
    try:
        rows = []
        for run in store.runs(limit=args.limit):
            status = run.get("status") or ""
            succeeded, failed = run.get("succeeded") or 0, run.get("failed") or 0
            total = run.get("total") or 0
            if status == "running":
                # Counts are written at the end; until then the items table has them.
                counts = store.item_counts(run["id"])
                succeeded, failed = counts.get("ok", 0), counts.get("error", 0)
                total = succeeded + failed
                if not _process_alive(run):
                    status = "killed"
            rows.append(
                [
                    run["id"],
                    run.get("task") or "",
                    run.get("provider") or "",
                    run.get("model") or "",
                    status,
                    f"{succeeded}/{total} ok, {failed} failed",
                    run.get("run_dir") or "",
                ]
            )
    finally:
        store.close()
    header = ["RUN", "TASK", "PROVIDER", "MODEL", "STATUS", "ITEMS", "FOLDER"]
    sys.stdout.write(_table(rows, header))
    return 0


def _process_alive(run: dict[str, Any]) -> bool:
    """Tell whether the process of a "running" run still exists.

    A run killed with SIGKILL never records its end, so its row stays
    "running". Runs started on another host are assumed alive.
    """
    pid = run.get("pid")
    if not pid or run.get("host") != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _results_file(run: str, store_path: str) -> Path:
    folder = Path(run)
    if not (folder / "results.jsonl").is_file():
        store = _open_store(store_path)
        try:
            found = store.run(run)
        finally:
            store.close()
        if found is None or not found.get("run_dir"):
            raise InputError(f"unknown run {run!r}: see `aimod runs` for run ids")
        folder = Path(found["run_dir"])
    path = folder / "results.jsonl"
    if not path.is_file():
        raise InputError(f"run {run!r} has no results file at {path}")
    return path


def _export(args: argparse.Namespace) -> int:
    path = _results_file(args.run, args.store)
    output = (
        open(args.output, "w", newline="", encoding="utf-8")
        if args.output
        else sys.stdout
    )
    try:
        if args.format == "jsonl":
            with path.open(encoding="utf-8") as results:
                for line in results:
                    output.write(line)
        else:
            _write_csv(path, output)
    finally:
        if args.output:
            output.close()
    return 0


def _write_csv(path: Path, output: Any) -> None:
    """Write one row per item: index, line, status, each output field, error.

    An output that is not an object (a task with result_field, say) goes in
    one `output` column. The file is read twice (columns first, then rows), so
    memory stays flat.
    """
    output_fields: dict[str, None] = {}
    has_plain_outputs = False
    for row in _read_rows(path):
        result = row.get("output")
        if isinstance(result, dict):
            output_fields.update(dict.fromkeys(result))
        elif result is not None:
            has_plain_outputs = True
    plain_column = ["output"] if has_plain_outputs else []
    writer = csv.writer(output)
    writer.writerow(
        ["index", "line", "status", *output_fields, *plain_column, "error", "input"]
    )
    for row in _read_rows(path):
        result = row.get("output")
        if isinstance(result, dict):
            values = [_cell(result.get(name)) for name in output_fields]
            values += [""] * len(plain_column)
        else:
            values = [""] * len(output_fields) + [_cell(result)] * len(plain_column)
        error = row.get("error") or {}
        writer.writerow(
            [
                row.get("index"),
                row.get("line"),
                "ok" if row.get("error") is None else "error",
                *values,
                f"{error.get('type')}: {error.get('message')}" if error else "",
                _cell(row.get("input")),
            ]
        )


def _read_rows(path: Path) -> Any:
    with path.open("rb") as results:
        for raw in results:
            yield orjson.loads(raw)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()
