"""Run many items at once: `run_batch()` and its streaming form `stream_batch()`.

`parallelism` workers pull items from one shared iterator, so at most that many
requests are in flight and memory holds at most about 2 × parallelism items,
however long the input is. One bad item becomes an exception in its place and
never stops the others; an authentication error or a run of consecutive
provider failures stops the batch, and the items not attempted are reported as
`RunAbortedError`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Iterable,
    Mapping,
)
from dataclasses import dataclass
from typing import Any

from ai_module.config import AIConfig
from ai_module.errors import AimodError, RunAbortedError
from ai_module.kernel import BatchContext, ResponseCache, invoke_task
from ai_module.providers import create_provider
from ai_module.providers.base import Provider, Usage
from ai_module.tasks import Task, get_task

__all__ = ["ItemResult", "run_batch", "run_batch_sync", "iter_batch", "stream_batch"]

logger = logging.getLogger(__name__)

_DONE = object()
# Seconds run_batch_sync waits for a cancelled batch to close its connections.
_CANCEL_GRACE = 10.0


@dataclass(slots=True)
class ItemResult:
    """One finished item: its result or error, and what it cost."""

    index: int
    record: Any
    value: Any = None
    output: Any = None
    error: BaseException | None = None
    usage: Usage | None = None
    attempts: int = 0
    from_store: bool = False
    request_key: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def result(self) -> Any:
        """The parsed result, or the exception that replaced it."""
        return self.value if self.error is None else self.error


def _resolve_task(task: str | Task) -> Task:
    return task if isinstance(task, Task) else get_task(task)


async def _enumerate_async(
    inputs: Iterable[Any] | AsyncIterable[Any],
) -> AsyncGenerator[tuple[int, Any], None]:
    index = 0
    if isinstance(inputs, AsyncIterable):
        async for record in inputs:
            yield index, record
            index += 1
    else:
        for record in inputs:
            yield index, record
            index += 1


async def stream_batch(
    task: str | Task,
    inputs: Iterable[Any] | AsyncIterable[Any],
    cfg: AIConfig | None = None,
    *,
    cache: ResponseCache | None = None,
    provider: Provider | None = None,
    context: BatchContext | None = None,
) -> AsyncIterator[ItemResult]:
    """Yield an `ItemResult` per input as items finish (not in input order).

    `inputs` may be any iterable or async iterable of records (mappings). An
    input that is an exception instance (a reader's malformed record) is passed
    through as that item's error. The provider is created here unless given,
    so a missing API key raises ConfigError before the first request.

    Nothing is stored unless `cache` is given: `cache=Store("runs/aimod.db")`
    (from `ai_module.store`) skips requests the store already answered and
    keeps new responses, as the `aimod` command does.
    """
    # The context's settings decide the worker count when no cfg is given, so
    # that parallelism=N from the command line starts N workers.
    if isinstance(inputs, Mapping):
        raise TypeError(
            "inputs must be an iterable of records, not one record: wrap it in a "
            "list, as in run_batch(task, [record])"
        )
    cfg = cfg or (context.cfg if context is not None else AIConfig())
    task = _resolve_task(task)
    owns_provider = provider is None and context is None
    if context is None:
        provider = provider or create_provider(cfg)
        context = BatchContext.create(cfg, provider, cache)
    ctx = context

    source = _enumerate_async(inputs)
    source_lock = asyncio.Lock()
    results: asyncio.Queue[Any] = asyncio.Queue(maxsize=cfg.parallelism)
    # A plain iterable is read with next(), which no other worker can
    # interleave with on one event loop, so it needs neither the lock nor the
    # async generator (about 5 µs per item).
    plain = None if isinstance(inputs, AsyncIterable) else enumerate(inputs)

    async def next_item() -> tuple[int, Any] | None:
        if plain is not None:
            return next(plain, None)
        async with source_lock:
            try:
                return await source.__anext__()
            except StopAsyncIteration:
                return None

    async def worker() -> None:
        while True:
            item = await next_item()
            if item is None:
                return
            index, record = item
            await results.put(await _process(task, index, record, ctx))

    async def run_workers() -> None:
        workers = [asyncio.create_task(worker()) for _ in range(cfg.parallelism)]
        try:
            await asyncio.gather(*workers)
        except asyncio.CancelledError:
            await _cancel_and_wait(workers)
            raise
        except BaseException:
            # The input raised: stop the other workers before the error
            # reaches the caller, so that no request is sent after it.
            await _cancel_and_wait(workers)
            await results.put(_DONE)
            raise
        await results.put(_DONE)

    runner = asyncio.create_task(run_workers())
    try:
        while True:
            result = await results.get()
            if result is _DONE:
                break
            yield result
        await runner
    finally:
        if not runner.done():
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        await source.aclose()
        if owns_provider and provider is not None:
            await provider.aclose()
        # A Store passed as the cache buffers its writes: commit them here.
        flush = getattr(cache, "flush", None)
        if owns_provider and callable(flush):
            flush()


async def _cancel_and_wait(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _process(
    task: Task, index: int, record: Any, ctx: BatchContext
) -> ItemResult:
    if isinstance(record, BaseException):
        return ItemResult(index, None, error=record)
    if ctx.stopping:
        error = RunAbortedError(f"not attempted: the run stopped ({ctx.abort_error})")
        return ItemResult(index, record, error=error)
    try:
        outcome = await invoke_task(task, record, ctx)
    except Exception as exc:
        if not isinstance(exc, AimodError):
            logger.exception("item %d failed with an unexpected error", index)
        return ItemResult(
            index,
            record,
            output=getattr(exc, "output", None),
            error=exc,
            usage=getattr(exc, "usage", None),
            attempts=getattr(exc, "attempts", 0),
            request_key=getattr(exc, "request_key", None),
        )
    return ItemResult(
        index,
        record,
        value=outcome.value,
        output=outcome.output,
        usage=outcome.usage,
        attempts=outcome.attempts,
        from_store=outcome.from_store,
        request_key=outcome.request_key,
    )


async def iter_batch(
    task: str | Task,
    inputs: Iterable[Any] | AsyncIterable[Any],
    cfg: AIConfig | None = None,
    **kwargs: Any,
) -> AsyncIterator[tuple[int, Any]]:
    """Yield `(index, result)` as items finish, an exception for a failed item.

    To leave the loop early, wrap the call in `contextlib.aclosing(...)`: the
    workers stop as soon as the generator closes, instead of when it is
    garbage-collected.
    """
    stream = stream_batch(task, inputs, cfg, **kwargs)
    try:
        async for item in stream:
            yield item.index, item.result
    finally:
        await stream.aclose()


async def run_batch(
    task_name: str | Task,
    inputs: Iterable[Any] | AsyncIterable[Any],
    cfg: AIConfig | None = None,
    **kwargs: Any,
) -> list[Any]:
    """Run every input through the task; return results in input order.

    Each failed item has its exception in its place; nothing raises for a bad
    item. A missing API key or an unknown task raises before any request.
    """
    found: dict[int, Any] = {}
    async for index, result in iter_batch(task_name, inputs, cfg, **kwargs):
        found[index] = result
    return [found[index] for index in range(len(found))]


def run_batch_sync(
    task_name: str | Task,
    inputs: Iterable[Any],
    cfg: AIConfig | None = None,
    **kwargs: Any,
) -> list[Any]:
    """Call `run_batch` from synchronous code, even inside a running event loop.

    In a notebook, where a loop already runs in this thread, the batch runs on a
    new loop in a helper thread, so `nest_asyncio` is not needed.
    """
    coroutine = run_batch(task_name, inputs, cfg, **kwargs)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)

    outcome: dict[str, Any] = {}
    loop = asyncio.new_event_loop()

    def target() -> None:
        asyncio.set_event_loop(loop)
        try:
            outcome["value"] = loop.run_until_complete(coroutine)
        except BaseException as exc:  # re-raised in the caller's thread below
            outcome["error"] = exc
        finally:
            _close_loop(loop)

    thread = threading.Thread(target=target, name="aimod-run-batch", daemon=True)
    thread.start()
    try:
        thread.join()
    except KeyboardInterrupt:
        # Ctrl-C reaches this thread only: cancel the batch on its own loop so
        # that it stops sending, then let it close its connections.
        try:
            loop.call_soon_threadsafe(_cancel_tasks, loop)
        except RuntimeError:
            pass  # the loop has already closed
        thread.join(timeout=_CANCEL_GRACE)
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _cancel_tasks(loop: asyncio.AbstractEventLoop) -> None:
    for task in asyncio.all_tasks(loop):
        task.cancel()


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Finish what `asyncio.run` would: cancel leftovers, close generators."""
    try:
        leftovers = asyncio.all_tasks(loop)
        for task in leftovers:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
