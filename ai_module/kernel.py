"""`invoke_task()`: everything that happens to one item, with no batching concerns.

Steps: render the messages, compute the request key, use the stored answer if
there is one; otherwise wait for the limiter, call the provider (retrying
transient failures and 429s with backoff), extract the JSON, validate it, ask
again with the validation error when it is invalid, and apply `parse_output()`.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)
from tenacity.wait import wait_random_exponential

from ai_module.config import AIConfig
from ai_module.errors import (
    AuthenticationError,
    InputError,
    InvalidRequestError,
    OutputError,
    ParseOutputError,
    ProviderError,
    QuotaExceededError,
    RateLimitedError,
    RunAbortedError,
    TransientError,
    TruncatedOutputError,
    as_sentence,
)
from ai_module.json_extract import extract_json
from ai_module.limiter import TokenLimiter, _RPSLimiter
from ai_module.providers.base import ChatRequest, ChatResponse, Provider, Usage
from ai_module.tasks.model import Task

__all__ = ["BatchContext", "ItemOutcome", "ResponseCache", "invoke_task", "request_key"]

# The result a duplicate record's wait receives when the call it waited for failed.
_NO_RESPONSE = object()

logger = logging.getLogger(__name__)

_REPAIR_PROMPT = (
    "Your previous answer could not be used: {error}\n"
    "Reply again with only the corrected JSON value, matching the schema."
)
# Backoff before retry n is uniform in [0, min(retry_max_wait, 0.5 * 2**n)] seconds
# ("full jitter"), and never shorter than the wait the provider asked for.
_BACKOFF_MULTIPLIER = 0.5
# A wait the provider asked for (Retry-After) gets a random extra of up to half
# of it, at least this many seconds, so that workers given the same wait do not
# all retry at one instant.
_MIN_RETRY_AFTER_SPREAD = 0.1


class ResponseCache(Protocol):
    """Where validated answers are kept by request key (the SQLite store)."""

    def get(self, key: str) -> Any | None:
        """Return the stored validated answer for `key`, or None."""

    def put(self, key: str, output: Any, usage: Usage | None) -> None:
        """Keep the validated answer of a successful request."""


@dataclass
class ItemOutcome:
    """The result of one item with what it cost."""

    value: Any
    output: Any
    request_key: str
    usage: Usage | None = None
    attempts: int = 0
    repairs: int = 0
    from_store: bool = False


@dataclass
class BatchContext:
    """State shared by all items of one batch: provider, limiters, cache, breaker."""

    cfg: AIConfig
    provider: Provider
    limiter: _RPSLimiter
    token_limiter: TokenLimiter | None = None
    cache: ResponseCache | None = None
    consecutive_failures: int = 0
    any_success: bool = False
    abort_error: BaseException | None = None
    retries: int = 0
    rate_limited: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    # Request key -> future of the item whose call for it is in flight, so a
    # duplicate record waits for that response instead of paying again.
    in_flight: dict[str, asyncio.Future[Any]] = field(default_factory=dict)
    # Awaited after each new answer is put in the cache. The runner sets it to
    # wait for the store's commit, so that a worker moves on to its next item
    # only once the answer it paid for is durable.
    commit: Callable[[], Awaitable[None]] | None = None
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def create(
        cls, cfg: AIConfig, provider: Provider, cache: ResponseCache | None = None
    ) -> BatchContext:
        token_limiter = (
            TokenLimiter(cfg.tokens_per_minute) if cfg.tokens_per_minute else None
        )
        return cls(
            cfg=cfg,
            provider=provider,
            limiter=_RPSLimiter(cfg.rps, cfg.burst),
            token_limiter=token_limiter,
            cache=cache,
        )

    @property
    def stopping(self) -> bool:
        return self.abort_error is not None

    def abort(self, error: BaseException, *, log: bool = True) -> None:
        """Stop the batch: no new call starts and backoff waits end early."""
        if self.abort_error is None:
            self.abort_error = error
            self.stop_event.set()
            if log:
                logger.error("stopping the run: %s", error)

    def _record_failure(self, error: ProviderError) -> None:
        if isinstance(error, (AuthenticationError, QuotaExceededError)):
            self.abort(error)
            return
        if isinstance(error, InvalidRequestError) and error.status == 404:
            # A 404 means the model or the endpoint does not exist: every other
            # item would fail the same way.
            self.abort(
                InvalidRequestError(
                    f"{as_sentence(error)} Check model={self.cfg.model!r} and the "
                    "provider's base_url.",
                    status=404,
                )
            )
            return
        if isinstance(error, RateLimitedError):
            return
        if isinstance(error, InvalidRequestError) and self.any_success:
            # Once a request of this batch has succeeded, the settings are
            # known to work, so a rejected request is that record's problem
            # (too long, say), not a sign that the next one fails too.
            return
        self.consecutive_failures += 1
        if self.consecutive_failures >= self.cfg.max_consecutive_failures:
            if isinstance(error, InvalidRequestError):
                advice = (
                    "Check the model name, the generation settings it supports "
                    "and the task's output_schema"
                )
            elif "timed out" in str(error):
                advice = (
                    f"If the model is slow, raise read_timeout (now "
                    f"{self.cfg.read_timeout:g} s); otherwise check that the "
                    "provider is reachable"
                )
            else:
                advice = (
                    "Check that the provider is reachable and the model name is right"
                )
            self.abort(
                type(error)(
                    f"{self.consecutive_failures} provider calls failed in a row, the "
                    f"last with: {as_sentence(error)} {advice}, then run the same "
                    "command again."
                )
            )


def request_key(provider: str, request: ChatRequest) -> str:
    """Hash the canonical request: what decides the answer, not how fast it comes."""
    canonical = {
        "provider": provider,
        "model": request.model,
        "messages": request.messages,
        "generation": request.generation,
        "schema": request.output_schema,
    }
    return hashlib.sha256(
        orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)
    ).hexdigest()


def build_request(
    task: Task,
    record: Mapping[str, Any],
    cfg: AIConfig,
    generation: Mapping[str, Any] | None = None,
) -> ChatRequest:
    """Render the request that `record` makes under `task` and `cfg`.

    `generation` is `merged_generation(task, cfg)` when the caller has it.
    """
    if generation is None:
        generation = merged_generation(task, cfg)
    return ChatRequest(
        model=cfg.model,
        messages=task.render(record),
        generation=dict(generation),
        output_schema=task.output_schema,
        schema_name=task.name.replace(".", "_").replace("-", "_")[:64],
    )


def merged_generation(task: Task, cfg: AIConfig) -> dict[str, Any]:
    """Return the task's generation defaults overridden by the run's settings."""
    generation = task.generation.values()
    generation.update(cfg.generation())
    return generation


def _batch_generation(task: Task, ctx: BatchContext) -> dict[str, Any]:
    # Merged once per task and batch: it reads two pydantic models, which costs
    # more than the rest of building a request.
    cached = ctx.extra.get(("generation", id(task)))
    if cached is None or cached[0] is not task:
        cached = (task, merged_generation(task, ctx.cfg))
        ctx.extra[("generation", id(task))] = cached
    return cached[1]


async def invoke_task(
    task: Task, record: Mapping[str, Any], ctx: BatchContext
) -> ItemOutcome:
    """Run one item to a validated result, or raise an `AimodError` with `attempts`."""
    request = build_request(task, record, ctx.cfg, _batch_generation(task, ctx))
    try:
        key = request_key(ctx.provider.name, request)
    except orjson.JSONEncodeError as exc:
        raise InputError(
            f"the rendered request cannot be encoded as JSON ({exc}): a value of "
            "the record is probably text with a lone surrogate, such as '\\ud800'. "
            "Fix that record in the input."
        ) from None

    if ctx.cache is not None:
        stored = ctx.cache.get(key)
        if stored is not None:
            outcome = ItemOutcome(None, stored, key, from_store=True)
            await _parse(task, outcome)
            return outcome

    leader = ctx.in_flight.get(key)
    if leader is not None:
        output = await asyncio.shield(leader)
        if output is not _NO_RESPONSE:
            outcome = ItemOutcome(None, output, key, from_store=True)
            await _parse(task, outcome)
            return outcome
        # The item that made the call failed: this one makes its own.

    outcome = ItemOutcome(value=None, output=None, request_key=key)
    shared = ctx.in_flight[key] = asyncio.get_running_loop().create_future()
    try:
        await _answer(task, request, ctx, outcome)
        shared.set_result(outcome.output)
    except BaseException as exc:
        _set_cost(exc, outcome)
        raise
    finally:
        if not shared.done():
            shared.set_result(_NO_RESPONSE)
        if ctx.in_flight.get(key) is shared:
            del ctx.in_flight[key]
    if ctx.cache is not None:
        ctx.cache.put(key, outcome.output, outcome.usage)
        if ctx.commit is not None:
            await ctx.commit()
    await _parse(task, outcome)
    return outcome


async def _parse(task: Task, outcome: ItemOutcome) -> None:
    """Set `outcome.value` from the task's `parse_output`, which may be async."""
    try:
        value = task.parse_output(outcome.output)
        if inspect.isawaitable(value):
            value = await value
    except Exception as exc:
        logger.debug("parse_output of task %r raised", task.name, exc_info=True)
        error = ParseOutputError(
            f"parse_output of task {task.name!r} raised {type(exc).__name__}: {exc}. "
            "The response itself was valid: ItemResult.output holds it, and a run "
            "with a store does not pay for it again."
        )
        _set_cost(error, outcome)
        error.output = outcome.output
        raise error from exc
    outcome.value = value


async def _answer(
    task: Task, request: ChatRequest, ctx: BatchContext, outcome: ItemOutcome
) -> None:
    messages = list(request.messages)
    while True:
        attempt = ChatRequest(
            request.model,
            messages,
            request.generation,
            request.output_schema,
            request.schema_name,
        )
        response = await _call_with_retries(attempt, ctx, outcome)
        outcome.usage = _add_usage(outcome.usage, response.usage)
        if response.finish_reason == "length":
            raise TruncatedOutputError(
                "response was cut off by the token limit (finish_reason 'length'); "
                "raise max_tokens or shorten the input",
                text=response.text,
            )
        try:
            output = extract_json(response.text)
            task.validate_output(output)
        except OutputError as exc:
            if outcome.repairs >= ctx.cfg.max_repairs:
                raise
            outcome.repairs += 1
            logger.info(
                "asking again after an invalid response (repair %d): %s",
                outcome.repairs,
                exc,
            )
            messages = [
                *messages,
                {"role": "assistant", "content": response.text},
                {"role": "user", "content": _REPAIR_PROMPT.format(error=exc)},
            ]
            continue
        outcome.output = output
        return


async def _call_with_retries(
    request: ChatRequest, ctx: BatchContext, outcome: ItemOutcome
) -> ChatResponse:
    # Most calls succeed at once, so the first goes out without tenacity, whose
    # set-up costs about 17 µs per call. A retryable failure of it becomes
    # tenacity's attempt 1, so backoff, logging and the attempt limit are the
    # same as when tenacity makes every call.
    try:
        return await _call_once(request, ctx, outcome)
    except (TransientError, RateLimitedError) as error:
        if ctx.stopping or ctx.cfg.max_retries == 0:
            raise
        first_failure: BaseException | None = error

    cfg = ctx.cfg
    jitter = wait_random_exponential(
        multiplier=_BACKOFF_MULTIPLIER, max=cfg.retry_max_wait
    )

    def wait(state: RetryCallState) -> float:
        seconds = jitter(state)
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RateLimitedError) and error.retry_after is not None:
            spread = max(_MIN_RETRY_AFTER_SPREAD, 0.5 * error.retry_after)
            seconds = max(seconds, error.retry_after + random.uniform(0.0, spread))
        return seconds

    def should_retry(error: BaseException) -> bool:
        return (
            isinstance(error, (TransientError, RateLimitedError)) and not ctx.stopping
        )

    def before_sleep(state: RetryCallState) -> None:
        ctx.retries += 1
        error = state.outcome.exception() if state.outcome else None
        logger.info(
            "retrying in %.2f s (attempt %d failed: %s)",
            state.upcoming_sleep,
            state.attempt_number,
            error,
        )

    async def sleep(seconds: float) -> None:
        # An abort or Ctrl-C ends the backoff early; the next attempt then
        # raises RunAbortedError instead of calling the provider.
        try:
            await asyncio.wait_for(ctx.stop_event.wait(), timeout=seconds)
        except asyncio.TimeoutError:  # not the builtin TimeoutError before 3.11
            pass

    retrying = AsyncRetrying(
        stop=stop_after_attempt(cfg.max_retries + 1),
        wait=wait,
        sleep=sleep,
        retry=retry_if_exception(should_retry),
        before_sleep=before_sleep,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            if first_failure is not None:
                error, first_failure = first_failure, None
                raise error
            return await _call_once(request, ctx, outcome)
    raise AssertionError("unreachable: tenacity either returns or re-raises")


async def _call_once(
    request: ChatRequest, ctx: BatchContext, outcome: ItemOutcome
) -> ChatResponse:
    if ctx.stopping:
        raise RunAbortedError(f"not attempted: the run is stopping ({ctx.abort_error})")
    await ctx.limiter.acquire()
    if ctx.token_limiter is not None:
        await ctx.token_limiter.acquire(_estimate_tokens(request))
    if ctx.stopping:
        # The run began to stop while this call waited for the limiter.
        raise RunAbortedError(f"not attempted: the run is stopping ({ctx.abort_error})")
    outcome.attempts += 1
    try:
        response = await ctx.provider.chat(request)
    except ProviderError as error:
        if isinstance(error, RateLimitedError):
            ctx.rate_limited += 1
            if error.retry_after is not None:
                ctx.limiter.pause(error.retry_after)
        ctx._record_failure(error)
        raise
    ctx.consecutive_failures = 0
    ctx.any_success = True
    if response.pause_for:
        ctx.limiter.pause(response.pause_for)
    return response


def _estimate_tokens(request: ChatRequest) -> int:
    prompt = sum(len(message["content"]) for message in request.messages) // 4
    return prompt + int(request.generation.get("max_tokens") or 256)


def _add_usage(total: Usage | None, usage: Usage | None) -> Usage | None:
    if usage is None:
        return total
    if total is None:
        return usage
    return Usage(
        total.prompt_tokens + usage.prompt_tokens,
        total.completion_tokens + usage.completion_tokens,
    )


def _set_cost(error: BaseException, outcome: ItemOutcome) -> None:
    """Attach the attempts, tokens and request key of a failed item to its error."""
    for name, value in (
        ("attempts", outcome.attempts),
        ("usage", outcome.usage),
        ("request_key", outcome.request_key),
    ):
        try:
            setattr(error, name, value)
        except AttributeError:
            pass  # an exception type with __slots__
