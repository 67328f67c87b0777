"""One run of the `aimod` command: input in, results and summary out.

The runner streams the input, lets the store answer every request it already
has, drives the orchestrator, commits each new answer before its worker takes
the next record (item rows every fraction of a second), writes `results.jsonl`
in input order and `summary.json`, and turns Ctrl-C or SIGTERM into a clean stop
that keeps everything finished.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ai_module.config import AIConfig
from ai_module.errors import (
    AimodError,
    ConfigError,
    InputError,
    RunAbortedError,
    StoreError,
)
from ai_module.inputs import count_records, read_records
from ai_module.kernel import BatchContext
from ai_module.orchestrator import ItemResult, stream_batch
from ai_module.progress import Progress
from ai_module.providers import create_provider
from ai_module.store import Store
from ai_module.tasks import Task

__all__ = ["ExitCode", "RunPlan", "RunSummary", "execute_run", "record_failed_job"]

logger = logging.getLogger(__name__)

# Seconds in-flight calls get to finish after Ctrl-C or SIGTERM.
_STOP_GRACE = 5.0
_FLUSH_INTERVAL = 0.25


class ExitCode:
    """Exit codes of `aimod`, also listed in the README."""

    OK = 0
    ITEMS_FAILED = 1
    USAGE = 2
    ABORTED = 3
    STORE = 4
    INTERRUPTED = 130


@dataclass
class RunPlan:
    """Everything one run needs, resolved from the Hydra config."""

    task: Task
    ai: AIConfig
    input_path: Path
    input_format: str | None = None
    input_fields: dict[str, str] = field(default_factory=dict)
    max_record_bytes: int = 4 * 1024 * 1024
    limit: int | None = None
    store_path: Path | None = None
    resume: bool = True
    progress: bool = True
    run_dir: Path = Path(".")
    sweep_dir: Path | None = None
    # This run takes the records whose position in the input is shard_index
    # modulo shard_count, so that N jobs of a sweep can split one input.
    shard_index: int = 0
    shard_count: int = 1
    # The command-line overrides of this job, listed in a sweep's runs.jsonl.
    overrides: list[str] = field(default_factory=list)
    # USD per million prompt and completion tokens, for the cost estimate.
    price_prompt: float | None = None
    price_completion: float | None = None


@dataclass
class RunSummary:
    """The figures written to `summary.json` and printed at the end."""

    run_id: str
    task: str
    provider: str
    model: str
    status: str = "running"
    exit_code: int = ExitCode.OK
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    not_attempted: int = 0
    from_store: int = 0
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated_cost_usd: float | None = None
    duration_s: float = 0.0
    items_per_s: float = 0.0
    run_dir: str = ""
    store: str | None = None
    input: str = ""
    message: str | None = None
    errors_by_type: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)


def execute_run(plan: RunPlan) -> RunSummary:
    """Run the plan to the end (or to a stop) and write the run's outputs."""
    return asyncio.run(_Run(plan).run())


class _Run:
    def __init__(self, plan: RunPlan) -> None:
        self.plan = plan
        self.summary = RunSummary(
            run_id=f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}",
            task=plan.task.name,
            provider=plan.ai.provider,
            model=plan.ai.model,
            run_dir=str(plan.run_dir),
            store=str(plan.store_path.resolve()) if plan.store_path else None,
            input=str(plan.input_path),
        )
        self.store: Store | None = None
        self.store_error: StoreError | None = None
        self.stop_requested = 0
        self.stop_reading = False
        self._commit_waiters: list[asyncio.Future[None]] = []
        self._commit_wanted: asyncio.Event | None = None
        self._previous_handlers: dict[int, Any] = {}
        self.lines: dict[int, int] = {}
        # Item index -> record position in the input, when the run is a shard.
        self.positions: dict[int, int] = {}
        self.reorder: dict[int, ItemResult] = {}
        self.next_to_write = 0

    async def run(self) -> RunSummary:
        plan = self.plan
        started = time.monotonic()
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        provider = create_provider(plan.ai)
        logger.info(
            "run %s started: task %s, provider %s, model %s, input %s, "
            "parallelism %d, rps %s",
            self.summary.run_id,
            plan.task.name,
            plan.ai.provider,
            plan.ai.model,
            plan.input_path,
            plan.ai.parallelism,
            plan.ai.rps,
        )
        try:
            if plan.store_path is not None:
                self.store = Store(plan.store_path)
                self.store.start_run(
                    self.summary.run_id,
                    task=plan.task.name,
                    provider=plan.ai.provider,
                    model=plan.ai.model,
                    run_dir=str(plan.run_dir),
                    input=str(plan.input_path),
                    pid=os.getpid(),
                    host=socket.gethostname(),
                )
            cache = self.store if (self.store is not None and plan.resume) else None
            ctx = BatchContext.create(plan.ai, provider, cache)
            if self.store is not None and not plan.resume:
                ctx.cache = _WriteOnly(self.store)
            if self.store is not None:
                ctx.commit = self._wait_for_commit
            await self._drive(ctx)
        except AimodError as exc:
            self.summary.status = "failed"
            self.summary.message = str(exc)
            self.summary.exit_code = error_exit_code(exc)
            raise
        except (KeyboardInterrupt, asyncio.CancelledError):
            # Ctrl-C before _drive installed its own handlers.
            self.summary.status = "interrupted"
            self.summary.message = "interrupted before the run started"
            self.summary.exit_code = ExitCode.INTERRUPTED
            raise
        finally:
            await provider.aclose()
            self.summary.duration_s = round(time.monotonic() - started, 3)
            self._finish()
        return self.summary

    # -- the main loop ---------------------------------------------------------------

    def _records(self) -> Iterator[Any]:
        plan = self.plan
        index = 0
        position = -1
        records = read_records(
            plan.input_path,
            fmt=plan.input_format,
            fields=plan.input_fields,
            limit=plan.limit,
            max_record_bytes=plan.max_record_bytes,
        )
        while not self.stop_requested:
            try:
                line, record = next(records)
            except StopIteration:
                return
            except InputError as exc:
                if index == 0:
                    raise  # nothing was sent: the run fails as a usage error
                # The file cannot be read past this point (a truncated gzip
                # stream, say). The records before it still finish, and the
                # error becomes the last item, so the run ends with exit code 1.
                line, record = None, exc
                self.stop_reading = True
            position += 1
            if plan.shard_count > 1:
                if (
                    position % plan.shard_count != plan.shard_index
                    and not self.stop_reading
                ):
                    continue
                self.positions[index] = position
            self.lines[index] = line
            index += 1
            yield record
            if self.stop_reading:
                return

    async def _drive(self, ctx: BatchContext) -> None:
        plan = self.plan
        total = count_records(plan.input_path, plan.input_format, plan.limit)
        if total is not None and plan.shard_count > 1:
            total = len(range(plan.shard_index, total, plan.shard_count))
        progress = Progress(total, enabled=plan.progress)
        results_path = plan.run_dir / "results.jsonl"
        loop = asyncio.get_running_loop()
        consumer = asyncio.current_task()
        self._commit_wanted = asyncio.Event()
        flusher = asyncio.create_task(self._flush_continuously(ctx))
        ticker = asyncio.create_task(_tick_every_second(progress, ctx))
        self._install_signal_handlers(loop, consumer, ctx)
        try:
            with results_path.open("wb") as results:
                try:
                    async for item in stream_batch(
                        plan.task, self._records(), context=ctx
                    ):
                        self._account(item, ctx)
                        progress.update(failed=not item.ok, from_store=item.from_store)
                        self.reorder[item.index] = item
                        self._write_ready(results)
                except asyncio.CancelledError:
                    if not self.stop_requested:
                        raise
                    logger.warning("in-flight calls abandoned after the stop request")
                finally:
                    self._write_remaining(results)
        finally:
            progress.close()
            self._remove_signal_handlers(loop)
            flusher.cancel()
            ticker.cancel()
            await asyncio.gather(flusher, ticker, return_exceptions=True)
        if ctx.abort_error is not None:
            self.summary.status = "aborted"
            self.summary.message = str(ctx.abort_error)
        if self.store_error is not None:
            self.summary.status = "store error"
            self.summary.message = str(self.store_error)
        self.summary.retries = ctx.retries
        self.summary.rate_limited = ctx.rate_limited

    def _account(self, item: ItemResult, ctx: BatchContext) -> None:
        summary = self.summary
        summary.total += 1
        summary.requests += item.attempts
        if item.usage is not None:
            summary.prompt_tokens += item.usage.prompt_tokens
            summary.completion_tokens += item.usage.completion_tokens
        if item.ok:
            summary.succeeded += 1
            summary.from_store += item.from_store
        elif isinstance(item.error, RunAbortedError) and not item.attempts:
            summary.not_attempted += 1
        else:
            summary.failed += 1
            name = type(item.error).__name__
            summary.errors_by_type[name] = summary.errors_by_type.get(name, 0) + 1
            logger.info("item %d failed: %s", item.index, item.error)
        if self.store is not None and not isinstance(item.error, RunAbortedError):
            error = None if item.ok else f"{type(item.error).__name__}: {item.error}"
            self.store.record_item(
                summary.run_id, item.index, item.request_key, error, item.attempts
            )

    def _write_ready(self, results: Any) -> None:
        while self.next_to_write in self.reorder:
            item = self.reorder.pop(self.next_to_write)
            results.write(self._result_line(item))
            self.next_to_write += 1

    def _write_remaining(self, results: Any) -> None:
        self._write_ready(results)
        for index in sorted(self.reorder):
            results.write(self._result_line(self.reorder.pop(index)))

    def _result_line(self, item: ItemResult) -> bytes:
        line = {
            "index": self.positions.pop(item.index, item.index),
            "line": self.lines.pop(item.index, None),
            "input": item.record,
            "output": item.value if item.ok else None,
            "error": None if item.ok else _describe(item.error),
            "attempts": item.attempts,
            "from_store": item.from_store,
        }
        return orjson.dumps(line, default=str, option=orjson.OPT_APPEND_NEWLINE)

    async def _wait_for_commit(self) -> None:
        """Return once every answer put in the store so far is committed.

        Workers await this after each new answer, so a kill loses at most the
        answers of calls in flight: never more than `parallelism`. One flush
        commits the answers of every worker waiting at that moment.
        """
        if self.store_error is not None or self._commit_wanted is None:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._commit_waiters.append(waiter)
        self._commit_wanted.set()
        await waiter

    async def _flush_continuously(self, ctx: BatchContext) -> None:
        """Commit answers as soon as a worker waits for them, items every 0.25 s.

        The first failed write stops the run, because answers paid for from
        then on could not be kept.
        """
        if self.store is None or self._commit_wanted is None:
            return
        wanted = self._commit_wanted
        while True:
            try:
                await asyncio.wait_for(wanted.wait(), timeout=_FLUSH_INTERVAL)
            except asyncio.TimeoutError:
                pass
            wanted.clear()
            # Every waiter taken here put its answer before this flush starts.
            waiters, self._commit_waiters = self._commit_waiters, []
            try:
                await asyncio.to_thread(self.store.flush)
            except Exception as exc:
                if not isinstance(exc, StoreError):
                    logger.exception("unexpected error while writing the store")
                    exc = StoreError(f"cannot write the store {self.store.path}: {exc}")
                self.store_error = exc
                ctx.abort(exc)
                # Release the workers that began to wait during this flush too:
                # their answers stay in memory and in results.jsonl.
                waiters += self._commit_waiters
                self._commit_waiters = []
                return
            finally:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)

    # -- signals -----------------------------------------------------------------------

    def _install_signal_handlers(
        self,
        loop: asyncio.AbstractEventLoop,
        consumer: asyncio.Task | None,
        ctx: BatchContext,
    ) -> None:
        def on_signal(signum: int) -> None:
            self.stop_requested += 1
            name = signal.Signals(signum).name
            if self.stop_requested == 1:
                logger.warning(
                    "%s received: sending no new requests, waiting up to %.0f s for "
                    "calls in flight (again to stop at once)",
                    name,
                    _STOP_GRACE,
                )
                # Calls waiting for the limiter or a backoff are not sent.
                ctx.abort(RunAbortedError(f"interrupted by {name}"), log=False)
                loop.call_later(_STOP_GRACE, _cancel, consumer)
            else:
                _cancel(consumer)

        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(signum)
            try:
                loop.add_signal_handler(signum, on_signal, signum)
            except (NotImplementedError, RuntimeError):  # not the main thread
                continue
            self._previous_handlers[signum] = previous

    def _remove_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum, previous in self._previous_handlers.items():
            try:
                loop.remove_signal_handler(signum)
                # asyncio leaves SIG_DFL for SIGTERM, which would kill the process
                # while it writes the summary; the caller's handler comes back.
                signal.signal(signum, previous)
            except (NotImplementedError, RuntimeError, TypeError, ValueError):
                pass
        self._previous_handlers.clear()

    # -- the end -----------------------------------------------------------------

    def _finish(self) -> None:
        summary = self.summary
        if summary.duration_s > 0:
            summary.items_per_s = round(summary.total / summary.duration_s, 2)
        plan = self.plan
        if plan.price_prompt is not None or plan.price_completion is not None:
            cost = summary.prompt_tokens * (plan.price_prompt or 0.0)
            cost += summary.completion_tokens * (plan.price_completion or 0.0)
            summary.estimated_cost_usd = round(cost / 1e6, 6)
        if self.store_error is not None:
            summary.exit_code = ExitCode.STORE
        elif summary.status in ("failed", "interrupted"):
            pass  # run() set the exit code of what ended the run
        elif self.stop_requested:
            summary.status = "interrupted"
            summary.exit_code = ExitCode.INTERRUPTED
        elif summary.status == "aborted":
            summary.exit_code = ExitCode.ABORTED
        elif summary.failed or summary.not_attempted:
            summary.status = "completed with errors"
            summary.exit_code = ExitCode.ITEMS_FAILED
        else:
            summary.status = "completed"
        if self.store is not None:
            try:
                self.store.finish_run(
                    summary.run_id,
                    status=summary.status,
                    total=summary.total,
                    succeeded=summary.succeeded,
                    failed=summary.failed,
                    from_store=summary.from_store,
                    prompt_tokens=summary.prompt_tokens,
                    completion_tokens=summary.completion_tokens,
                    estimated_cost=summary.estimated_cost_usd,
                )
            except StoreError as exc:
                if self.store_error is None:
                    summary.message = f"{summary.message or ''} {exc}".strip()
                summary.exit_code = ExitCode.STORE
            finally:
                try:
                    self.store.close()
                except StoreError as exc:
                    # finish_run() already flushed, so close() has rows left to
                    # write only when that flush failed and was reported.
                    logger.error("closing the store failed: %s", exc)
                    summary.exit_code = ExitCode.STORE
        (self.plan.run_dir / "summary.json").write_bytes(summary.to_json())
        logger.info(
            "run %s %s: %d succeeded, %d failed, %d from store, %d requests in %.1f s",
            summary.run_id,
            summary.status,
            summary.succeeded,
            summary.failed,
            summary.from_store,
            summary.requests,
            summary.duration_s,
        )
        if self.plan.sweep_dir is not None:
            _append_sweep_listing(self.plan.sweep_dir, summary, self.plan.overrides)


class _WriteOnly:
    """A cache view of the store that stores answers but never serves them."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def get(self, key: str) -> None:
        return None

    def put(self, key: str, output: Any, usage: Any) -> None:
        self._store.put(key, output, usage)


def _cancel(task: asyncio.Task | None) -> None:
    if task is not None and not task.done():
        task.cancel()


def _describe(error: BaseException | None) -> dict[str, Any] | None:
    if error is None:
        return None
    return {"type": type(error).__name__, "message": str(error)}


async def _tick_every_second(progress: Progress, ctx: BatchContext) -> None:
    while True:
        await asyncio.sleep(1.0)
        progress.tick(ctx.limiter.paused_for)


def _append_sweep_listing(
    sweep_dir: Path, summary: RunSummary, overrides: list[str]
) -> None:
    line = {
        key: getattr(summary, key)
        for key in (
            "run_dir",
            "task",
            "provider",
            "model",
            "status",
            "total",
            "succeeded",
            "failed",
            "from_store",
            "exit_code",
        )
    }
    line["overrides"] = overrides
    _append_sweep_line(sweep_dir, line)


def record_failed_job(
    sweep_dir: Path, run_dir: Path, overrides: list[str], error: AimodError
) -> None:
    """List a sweep job whose settings were rejected before it could run."""
    line = {
        "run_dir": str(run_dir),
        "status": "failed",
        "exit_code": error_exit_code(error),
        "message": str(error),
        "overrides": overrides,
    }
    _append_sweep_line(sweep_dir, line)


def _append_sweep_line(sweep_dir: Path, line: dict[str, Any]) -> None:
    # One short write per job: O_APPEND keeps lines from parallel jobs whole.
    with (sweep_dir / "runs.jsonl").open("ab") as listing:
        listing.write(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))


def error_exit_code(error: AimodError) -> int:
    """Return the exit code for an error that stopped a run before it began."""
    if isinstance(error, StoreError):
        return ExitCode.STORE
    if isinstance(error, (ConfigError, InputError)):
        return ExitCode.USAGE
    return ExitCode.USAGE
