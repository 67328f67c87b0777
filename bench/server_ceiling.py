"""Measure how many chat completions per second the fake OpenAI server can send.

Usage: ``python bench/server_ceiling.py [--connections 64] [--duration 10]``.

The server runs with latency 0 and no faults in its own process. A load process
keeps ``--connections`` keep-alive connections busy with a minimal asyncio HTTP
client: one request in flight per connection, each with a different user message
and a json_schema response format. The script prints requests/s and the server's
CPU use over the measured window. A server CPU use near 100 % means the server
was the limit. Lower means the load process or other load on the machine was, and
the server ceiling is higher than the printed rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

# Lets the script run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ai_module.testing.server_process import FakeOpenAIServer  # noqa: E402

SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "keywords": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "summary": {"type": "string", "maxLength": 60},
    },
    "required": ["label", "confidence", "keywords", "summary"],
    "additionalProperties": False,
}
API_KEY = "sk-bench"
# Replaced in the body template by the request number, so every request has a
# different message and the server samples a different response.
MARKER = "@@N@@"


def build_body_template(with_schema: bool) -> tuple[bytes, bytes]:
    """Return the JSON request body split around the request-number marker."""
    body: dict = {
        "model": "gpt-4o-mini",
        "messages": [
            {
                "role": "system",
                "content": "Classify the sentiment of the review and answer in JSON.",
            },
            {
                "role": "user",
                "content": f"Review {MARKER}: the battery lasts two days and the "
                "screen is bright, but the case scratches easily.",
            },
        ],
        "temperature": 0,
    }
    if with_schema:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "review", "strict": True, "schema": SCHEMA},
        }
    before, after = json.dumps(body).encode().split(MARKER.encode())
    return before, after


class _LoadConnection(asyncio.Protocol):
    """One keep-alive connection that sends the next request after each response."""

    def __init__(self, load: _Load) -> None:
        self._load = load
        self._buffer = bytearray()
        self._expected: int | None = None
        self._transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            if self._expected is None:
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self._buffer[:end]).lower()
                start = head.index(b"content-length:") + len(b"content-length:")
                stop = head.find(b"\r\n", start)
                length = int(head[start : stop if stop >= 0 else None])
                self._status = int(head[9:12])
                self._expected = end + 4 + length
            if len(self._buffer) < self._expected:
                return
            del self._buffer[: self._expected]
            self._expected = None
            self._load.record(self._status)
            if self._load.running:
                self._send()
            else:
                assert self._transport is not None
                self._transport.close()
                return

    def _send(self) -> None:
        assert self._transport is not None
        self._transport.write(self._load.next_request())


class _Load:
    def __init__(self, port: int, with_schema: bool) -> None:
        self.running = True
        self.counting = False
        self.statuses: Counter[int] = Counter()
        self._number = 0
        self._before, self._after = build_body_template(with_schema)
        self._head = (
            "POST /v1/chat/completions HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {API_KEY}\r\n"
            "Content-Type: application/json\r\n"
            "Content-Length: "
        ).encode()

    def next_request(self) -> bytes:
        self._number += 1
        body = self._before + str(self._number).encode() + self._after
        return self._head + str(len(body)).encode() + b"\r\n\r\n" + body

    def record(self, status: int) -> None:
        if self.counting:
            self.statuses[status] += 1


async def _run_load(
    port: int, connections: int, warmup: float, duration: float, with_schema: bool
) -> dict:
    loop = asyncio.get_running_loop()
    load = _Load(port, with_schema)
    protocols = []
    for _ in range(connections):
        _, protocol = await loop.create_connection(
            lambda: _LoadConnection(load), "127.0.0.1", port
        )
        protocols.append(protocol)
    await asyncio.sleep(warmup)
    load.counting = True
    started = time.perf_counter()
    cpu_started = time.process_time()
    print("MEASURING", flush=True)
    await asyncio.sleep(duration)
    load.counting = False
    elapsed = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    load.running = False
    await asyncio.wait([p.closed for p in protocols], timeout=5)
    total = sum(load.statuses.values())
    return {
        "requests": total,
        "seconds": elapsed,
        "requests_per_second": total / elapsed,
        "statuses": {str(k): v for k, v in load.statuses.items()},
        "load_cpu_percent": 100.0 * cpu_seconds / elapsed,
    }


def _cpu_seconds(pid: int) -> float:
    """Return user + system CPU seconds of a process, from /proc (Linux only)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat_file:
        fields = stat_file.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of /proc/PID/stat (utime, stime), counted from the state
    # field, which is the first one after the command name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_benchmark(args: argparse.Namespace) -> dict:
    """Start the server and a load process, and return the merged measurements."""
    with FakeOpenAIServer(api_key=API_KEY, log_level="WARNING") as server:
        command = [
            sys.executable,
            __file__,
            "--load-only",
            "--port",
            str(server.port),
            "--connections",
            str(args.connections),
            "--warmup",
            str(args.warmup),
            "--duration",
            str(args.duration),
        ]
        if args.no_schema:
            command.append("--no-schema")
        with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as load:
            assert load.stdout is not None
            first_line = load.stdout.readline()
            if first_line.strip() != "MEASURING":
                raise RuntimeError(f"load process failed to start: {first_line!r}")
            cpu_before = _cpu_seconds(server.pid)
            wall_before = time.perf_counter()
            result_line = load.stdout.readline()
            cpu_after = _cpu_seconds(server.pid)
            wall_after = time.perf_counter()
            load.wait(timeout=30)
        if load.returncode != 0 or not result_line:
            raise RuntimeError(f"load process exited with status {load.returncode}")
        result = json.loads(result_line)
        result["server_cpu_percent"] = (
            100.0 * (cpu_after - cpu_before) / (wall_after - wall_before)
        )
        result["server_stats"] = {
            k: v for k, v in server.stats().items() if k != "starts"
        }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--connections",
        type=int,
        default=64,
        help="number of keep-alive connections (default 64)",
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds measured (default 10)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="seconds of load before measuring (default 1)",
    )
    parser.add_argument(
        "--no-schema", action="store_true", help="send no json_schema response format"
    )
    parser.add_argument("--load-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.load_only:
        result = asyncio.run(
            _run_load(
                args.port,
                args.connections,
                args.warmup,
                args.duration,
                not args.no_schema,
            )
        )
        print(json.dumps(result), flush=True)
        return 0

    result = run_benchmark(args)
    rate = result["requests_per_second"]
    cpu_percent = result["server_cpu_percent"]
    print(
        f"{rate:,.0f} requests/s over {result['seconds']:.1f} s with "
        f"{args.connections} connections (server CPU {cpu_percent:.0f} %, load "
        f"process CPU {result['load_cpu_percent']:.0f} % of one core, statuses "
        f"{result['statuses']})"
    )
    # Scaling to 100 % CPU assumes the server's cost per request stays constant,
    # so this is an estimate of what one saturated core would serve.
    if cpu_percent > 0:
        print(
            f"estimated ceiling at 100 % of one core: {rate * 100 / cpu_percent:,.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
