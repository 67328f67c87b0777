"""One benchmark client run in its own process: send N requests, print one JSON line.

Usage: ``python bench/clients.py CLIENT --base-url URL --count N --parallelism P
[--rps R --burst B]``. CLIENT is one of `CLIENTS`. Every client sends the
requests of `workload.py`, keeps at most P in flight, parses each answer's JSON
content, and counts an item as failed when it ends in an error. The printed
line contains `ok`, `failed`, the wall time and the CPU time of this process,
both measured around the batch only (imports and set-up excluded).

The bare loops are what a careful user writes by hand: one shared connection
pool, P workers pulling from one iterator, retries of 429 and 5xx after
Retry-After (or 1 s), and with `--rps` an evenly spaced start schedule. The
library peers use their documented batch or concurrency features with default
settings unless the README of the benchmarks says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import workload  # noqa: E402

# Retries of one request in the bare loops, after 429 or 5xx.
BARE_MAX_RETRIES = 6


class StartSchedule:
    """Evenly spaced request starts at `rps` per second, allowing `burst` at once."""

    def __init__(self, rps: float | None, burst: int) -> None:
        self.interval = 1.0 / rps if rps else 0.0
        self.tolerance = (burst - 1) * self.interval
        self.next_start = 0.0

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        start = max(now, self.next_start - self.tolerance)
        self.next_start = max(self.next_start, start) + self.interval
        if start > now:
            await asyncio.sleep(start - now)


async def run_workers(
    count: int, parallelism: int, call: Callable[[dict[str, str]], Awaitable[Any]]
) -> tuple[int, int, dict[str, int]]:
    """Run `call` on every record with `parallelism` workers; count outcomes."""
    source: Iterator[dict[str, str]] = workload.records(count)
    ok = failed = 0
    errors: dict[str, int] = {}

    async def worker() -> None:
        nonlocal ok, failed
        for item in source:
            try:
                await call(item)
            except Exception as exc:  # a failed item, counted by type
                failed += 1
                name = type(exc).__name__
                errors[name] = errors.get(name, 0) + 1
            else:
                ok += 1

    await asyncio.gather(*(worker() for _ in range(parallelism)))
    return ok, failed, errors


class HTTPStatusError(Exception):
    """A bare loop's request that still failed after its retries."""


def _parse_answer(body: bytes) -> Any:
    import orjson

    data = orjson.loads(body)
    return orjson.loads(data["choices"][0]["message"]["content"])


async def bare_aiohttp(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    url = args.base_url + "/chat/completions"
    headers = {
        "authorization": f"Bearer {workload.API_KEY}",
        "content-type": "application/json",
    }
    schedule = StartSchedule(args.rps, args.burst)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=args.parallelism)
    )

    async def call(item: dict[str, str]) -> Any:
        body = workload.request_body(item)
        for _attempt in range(BARE_MAX_RETRIES + 1):
            await schedule.wait()
            async with session.post(url, data=body, headers=headers) as response:
                content = await response.read()
                status = response.status
                retry_after = response.headers.get("retry-after")
            if status == 200:
                return _parse_answer(content)
            if status != 429 and status < 500:
                break
            await asyncio.sleep(float(retry_after or 1.0))
        raise HTTPStatusError(f"HTTP {status}")

    try:
        return await _measure(args, call)
    finally:
        await session.close()


async def bare_httpx(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    schedule = StartSchedule(args.rps, args.burst)
    client = httpx.AsyncClient(
        base_url=args.base_url,
        headers={"authorization": f"Bearer {workload.API_KEY}"},
        limits=httpx.Limits(
            max_connections=args.parallelism,
            max_keepalive_connections=args.parallelism,
        ),
        timeout=120.0,
    )

    async def call(item: dict[str, str]) -> Any:
        body = workload.request_body(item)
        for _attempt in range(BARE_MAX_RETRIES + 1):
            await schedule.wait()
            response = await client.post(
                "/chat/completions",
                content=body,
                headers={"content-type": "application/json"},
            )
            if response.status_code == 200:
                return _parse_answer(response.content)
            if response.status_code != 429 and response.status_code < 500:
                break
            await asyncio.sleep(float(response.headers.get("retry-after") or 1.0))
        raise HTTPStatusError(f"HTTP {response.status_code}")

    try:
        return await _measure(args, call)
    finally:
        await client.aclose()


async def openai_sdk(args: argparse.Namespace) -> dict[str, Any]:
    import openai

    # Default retries (2) and default connection pool; the SDK has no rate
    # limiter, so --rps is not applied.
    client = openai.AsyncOpenAI(base_url=args.base_url, api_key=workload.API_KEY)

    async def call(item: dict[str, str]) -> Any:
        completion = await client.chat.completions.create(
            model=workload.MODEL,
            messages=workload.messages(item),
            temperature=workload.TEMPERATURE,
            response_format=workload.RESPONSE_FORMAT,
        )
        return json.loads(completion.choices[0].message.content)

    try:
        return await _measure(args, call)
    finally:
        await client.close()


async def langchain(args: argparse.Namespace) -> dict[str, Any]:
    from langchain_core.rate_limiters import InMemoryRateLimiter
    from langchain_openai import ChatOpenAI

    limiter = None
    if args.rps:
        # Defaults are check_every_n_seconds=0.1 and max_bucket_size=1, which
        # allow at most 10 starts per second; polling every 10 ms lifts that.
        limiter = InMemoryRateLimiter(
            requests_per_second=args.rps,
            check_every_n_seconds=0.01,
            max_bucket_size=args.burst,
        )
    model = ChatOpenAI(
        model=workload.MODEL,
        base_url=args.base_url,
        api_key=workload.API_KEY,
        temperature=workload.TEMPERATURE,
        rate_limiter=limiter,
    ).with_structured_output(
        # LangChain takes the schema's title as the response format's name.
        {**workload.SCHEMA, "title": workload.TASK_NAME},
        method="json_schema",
        strict=True,
    )
    inputs = [workload.messages(item) for item in workload.records(args.count)]

    started, cpu_started = _start_clock()
    outputs = await model.abatch(
        inputs, config={"max_concurrency": args.parallelism}, return_exceptions=True
    )
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    errors: dict[str, int] = {}
    for output in outputs:
        if isinstance(output, BaseException):
            name = type(output).__name__
            errors[name] = errors.get(name, 0) + 1
    failed = sum(errors.values())
    return _result(args, len(outputs) - failed, failed, errors, wall, cpu)


async def curator(args: argparse.Namespace) -> dict[str, Any]:
    from typing import Literal

    from bespokelabs import curator as curator_library
    from pydantic import BaseModel

    class Answer(BaseModel):
        label: Literal["positive", "negative", "neutral"]

    class Labeler(curator_library.LLM):
        response_format = Answer

        def prompt(self, row: dict[str, str]) -> list[dict[str, str]]:
            return workload.messages(row)

        def parse(self, row: dict[str, str], response: Answer) -> dict[str, str]:
            return {"label": response.label}

    backend_params: dict[str, Any] = {
        "base_url": args.base_url,
        "api_key": workload.API_KEY,
        "max_concurrent_requests": args.parallelism,
        # Without a limit curator applies its default for the model; a high
        # request budget lets --parallelism be the only limit.
        "max_requests_per_minute": int(args.rps * 60) if args.rps else 10_000_000,
        "max_tokens_per_minute": 10_000_000_000,
        "max_retries": BARE_MAX_RETRIES,
    }
    labeler = Labeler(
        model_name=workload.MODEL,
        backend="openai",
        backend_params=backend_params,
        generation_params={"temperature": workload.TEMPERATURE},
    )
    rows = list(workload.records(args.count))
    started, cpu_started = _start_clock()
    # curator starts an event loop of its own, which cannot run inside this
    # one, so it is called from a worker thread. process_time() counts every
    # thread of the process.
    output = await asyncio.to_thread(labeler, rows)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    dataset = getattr(output, "dataset", output)
    ok = len(dataset)
    failed = args.count - ok
    errors = {"missing": failed} if failed else {}
    return _result(args, ok, failed, errors, wall, cpu)


async def aimod(args: argparse.Namespace) -> dict[str, Any]:
    # run_batch imports its provider on first use; imported here, as the peers
    # import theirs, the clock measures the batch alone.
    import ai_module.providers.openai  # noqa: F401
    from ai_module.config import AIConfig
    from ai_module.orchestrator import run_batch

    os.environ["OPENAI_API_KEY"] = workload.API_KEY
    cfg = AIConfig(
        provider="openai",
        model=workload.MODEL,
        base_url=args.base_url,
        parallelism=args.parallelism,
        rps=args.rps,
        burst=args.burst,
    )
    task = workload.load_task()
    started, cpu_started = _start_clock()
    results = await run_batch(task, workload.records(args.count), cfg)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    errors: dict[str, int] = {}
    for result in results:
        if isinstance(result, BaseException):
            name = type(result).__name__
            errors[name] = errors.get(name, 0) + 1
    failed = sum(errors.values())
    return _result(args, len(results) - failed, failed, errors, wall, cpu)


async def _measure(
    args: argparse.Namespace, call: Callable[[dict[str, str]], Awaitable[Any]]
) -> dict[str, Any]:
    started, cpu_started = _start_clock()
    ok, failed, errors = await run_workers(args.count, args.parallelism, call)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    return _result(args, ok, failed, errors, wall, cpu)


def _start_clock() -> tuple[float, float]:
    """Tell the parent that the batch starts now; return wall and CPU clocks."""
    print("MEASURING", flush=True)
    return time.perf_counter(), time.process_time()


def _result(
    args: argparse.Namespace,
    ok: int,
    failed: int,
    errors: dict[str, int],
    wall: float,
    cpu: float,
) -> dict[str, Any]:
    return {
        "client": args.client,
        "count": args.count,
        "ok": ok,
        "failed": failed,
        "errors": errors,
        "wall_s": wall,
        "cpu_s": cpu,
    }


CLIENTS: dict[str, Callable[[argparse.Namespace], Awaitable[dict[str, Any]]]] = {
    "aimod": aimod,
    "aiohttp": bare_aiohttp,
    "httpx": bare_httpx,
    "openai": openai_sdk,
    "langchain": langchain,
    "curator": curator,
}
# The Python module each client imports, to tell whether it is installed.
CLIENT_MODULES = {
    "aimod": "ai_module",
    "aiohttp": "aiohttp",
    "httpx": "httpx",
    "openai": "openai",
    "langchain": "langchain_openai",
    "curator": "bespokelabs.curator",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("client", choices=sorted(CLIENTS))
    parser.add_argument(
        "--base-url", required=True, help="e.g. http://127.0.0.1:PORT/v1"
    )
    parser.add_argument("--count", type=int, required=True, help="requests to send")
    parser.add_argument("--parallelism", type=int, default=64, help="in flight at once")
    parser.add_argument("--rps", type=float, help="request starts per second")
    parser.add_argument("--burst", type=int, default=1, help="starts ahead of the pace")
    args = parser.parse_args()
    if not args.base_url.startswith(("http://127.0.0.1:", "http://localhost:")):
        parser.error("--base-url must point at a server on 127.0.0.1")
    # No SDK may fall back to a remote endpoint or send telemetry.
    os.environ["OPENAI_BASE_URL"] = args.base_url
    os.environ.pop("OPENAI_API_KEY", None)
    os.environ["LANGCHAIN_TRACING_V2"] = "false"
    os.environ["LANGSMITH_TRACING"] = "false"
    result = asyncio.run(CLIENTS[args.client](args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
