"""Run every aimod benchmark scenario next to its peers and print one table.

Usage::

    python bench/run.py            # full run, 3 repeats, about 15 minutes on 2 cores
    python bench/run.py --quick    # smoke run with small counts, well under a minute

Each scenario starts the fake OpenAI server (``ai_module.testing.fake_openai``)
in its own process on 127.0.0.1 and runs every client in its own process, one
after another, repeating the round ``--repeats`` times so that drift of the
machine hits every client alike, and the table shows medians. The run re-executes
itself in a new network namespace (``unshare -rn``) where only loopback
exists, so no client or SDK can reach any host but the fake server.

Scenarios (see bench/README.md for the targets and the latest results):

* S0: the fake server's own ceiling, with a minimal raw HTTP load process.
* S1: latency 0, 64 in flight: requests/s and client CPU per 1,000 requests.
* S2: 50 ms latency, 64 in flight: requests/s against the ideal 64 / 0.05 s.
* S3: server limit 50 rps with burst 5: achieved rate, 429s, busiest second.
* S4: the `aimod` command on 1,000,000 JSONL records (mock provider, store).
* S5: rerun of a completed 100,000-record run: records/s from the store.
* S6: the `aimod` command against bare `run_batch` on the same records.
* S7: start-up time of `aimod --help` and of a 1-record run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(REPO_DIR))

import netns  # noqa: E402
import workload  # noqa: E402
from server_ceiling import run_benchmark as measure_server_ceiling  # noqa: E402

from ai_module.testing.server_process import FakeOpenAIServer  # noqa: E402

# Column order of the table; the names are `bench/clients.py` client names.
CLIENT_COLUMNS = {
    "aimod": "aimod",
    "aiohttp": "bare aiohttp",
    "httpx": "bare httpx",
    "openai": "openai SDK",
    "langchain": "langchain",
    "curator": "curator",
}
LIBRARY_PEERS = ("httpx", "openai", "langchain", "curator")
PARALLELISM = 64
CLIENT_TIMEOUT_S = 600.0


@dataclass
class Sizes:
    """Record counts and repeats of one benchmark run."""

    repeats: int
    s1_count: int
    s1_peer_count: int
    s2_count: int
    s2_peer_count: int
    s2_floor_count: int
    s3_count: int
    s4_large: int
    s4_small: int
    s5_count: int
    s6_count: int
    ceiling_seconds: float


FULL = Sizes(
    repeats=3,
    s1_count=20_000,
    s1_peer_count=4_000,
    s2_count=10_000,
    s2_peer_count=2_000,
    s2_floor_count=100,
    s3_count=500,
    s4_large=1_000_000,
    s4_small=100_000,
    s5_count=100_000,
    s6_count=20_000,
    ceiling_seconds=3.0,
)
QUICK = Sizes(
    repeats=1,
    s1_count=1_000,
    s1_peer_count=300,
    s2_count=640,
    s2_peer_count=200,
    s2_floor_count=20,
    s3_count=50,
    s4_large=10_000,
    s4_small=1_000,
    s5_count=2_000,
    s6_count=1_000,
    ceiling_seconds=1.0,
)


@dataclass
class Row:
    """One line of the results table."""

    scenario: str
    measure: str
    values: dict[str, str] = field(default_factory=dict)
    target: str = ""
    met: bool | None = None


@dataclass
class Context:
    args: argparse.Namespace
    sizes: Sizes
    clients: list[str]
    skipped: dict[str, str]
    work_dir: Path
    raw: dict[str, Any] = field(default_factory=dict)


# -- running one client ---------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """Return user + system CPU seconds of a live process, from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat_file:
        fields = stat_file.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_client(
    ctx: Context,
    client: str,
    server: FakeOpenAIServer,
    count: int,
    rps: float | None = None,
    burst: int = 1,
    parallelism: int = PARALLELISM,
) -> dict[str, Any]:
    """Run one client process against `server`; return its result with server CPU."""
    python = sys.executable
    env = dict(os.environ)
    if client == "curator":
        python = ctx.args.curator_python
        env.update(netns.CURATOR_OFFLINE_ENV)
        env["TIKTOKEN_CACHE_DIR"] = netns.curator_tiktoken_cache(python)
        env["HOME"] = str(ctx.work_dir / "curator-home")
    command = [
        python,
        str(BENCH_DIR / "clients.py"),
        client,
        "--base-url",
        server.base_url,
        "--count",
        str(count),
        "--parallelism",
        str(parallelism),
        "--burst",
        str(burst),
    ]
    if rps:
        command += ["--rps", str(rps)]
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
        )
        assert process.stdout is not None
        try:
            line = process.stdout.readline()
            server_cpu_before = _cpu_seconds(server.pid)
            wall_before = time.perf_counter()
            result_line = line if line.startswith("{") else process.stdout.readline()
            server_cpu = _cpu_seconds(server.pid) - server_cpu_before
            server_wall = time.perf_counter() - wall_before
            process.wait(timeout=CLIENT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return {"client": client, "error": "timed out"}
        finally:
            process.stdout.close()
        if process.returncode != 0 or not result_line.startswith("{"):
            stderr.seek(0)
            tail = stderr.read().decode("utf-8", "replace").strip().splitlines()[-3:]
            return {
                "client": client,
                "error": f"exit status {process.returncode}: {' | '.join(tail)}",
            }
    result = json.loads(result_line)
    result["server_cpu_percent"] = 100.0 * server_cpu / max(server_wall, 1e-9)
    return result


def interleaved(
    ctx: Context,
    clients: Iterable[str],
    measure: Callable[[str, int], dict[str, Any]],
) -> dict[str, list[dict[str, Any]]]:
    """Run `measure(client, repeat)` for every client, round by round."""
    clients = list(clients)
    results: dict[str, list[dict[str, Any]]] = {client: [] for client in clients}
    for repeat in range(ctx.sizes.repeats):
        for client in clients:
            result = measure(client, repeat)
            results[client].append(result)
            _log(f"  {client} #{repeat + 1}: {_brief(result)}")
    return results


def _brief(result: dict[str, Any]) -> str:
    if "error" in result:
        return "error: " + result["error"]
    shown = {k: v for k, v in result.items() if k not in ("client", "errors")}
    return ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()
    )


def median_of(
    results: list[dict[str, Any]], key: Callable[[dict[str, Any]], float]
) -> float | None:
    values = [key(result) for result in results if "error" not in result]
    return statistics.median(values) if values else None


def first_error(results: list[dict[str, Any]]) -> str | None:
    for result in results:
        if "error" in result:
            return result["error"]
    return None


def _log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _number(value: float | None, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "failed"
    return f"{value:,.{digits}f}{suffix}"


# -- S0 to S3: aimod and its peers against the fake server --------------------------


def scenario_ceiling(ctx: Context) -> list[Row]:
    _log("S0: fake server ceiling")
    runs = []
    for _ in range(ctx.sizes.repeats):
        options = argparse.Namespace(
            connections=PARALLELISM,
            duration=ctx.sizes.ceiling_seconds,
            warmup=0.5,
            no_schema=False,
        )
        runs.append(measure_server_ceiling(options))
    ctx.raw["S0"] = runs
    rate = statistics.median(run["requests_per_second"] for run in runs)
    cpu = statistics.median(run["server_cpu_percent"] for run in runs)
    # The server's cost per request is taken as constant, so this is an
    # estimate of what one saturated core would serve.
    ceiling = statistics.median(
        100.0 * run["requests_per_second"] / max(run["server_cpu_percent"], 1.0)
        for run in runs
    )
    return [
        Row(
            "S0",
            f"fake server alone, raw load on {PARALLELISM} connections: "
            f"{rate:,.0f} requests/s at {cpu:.0f} % of a core, "
            f"about {ceiling:,.0f} at 100 %",
            {},
            "above every client's rate",
        )
    ]


def scenario_throughput(ctx: Context, scenario: str, latency: float) -> list[Row]:
    sizes = ctx.sizes
    count, peer_count = (
        (sizes.s1_count, sizes.s1_peer_count)
        if scenario == "S1"
        else (sizes.s2_count, sizes.s2_peer_count)
    )
    _log(f"{scenario}: latency {latency} s, {PARALLELISM} in flight")
    with FakeOpenAIServer(log_level="WARNING", latency=latency) as server:

        def measure(client: str, repeat: int) -> dict[str, Any]:
            fast = client in ("aimod", "aiohttp")
            return run_client(ctx, client, server, count if fast else peer_count)

        results = interleaved(ctx, ctx.clients, measure)
        floor = None
        if latency and "aiohttp" in ctx.clients:
            # One request in flight shows what the server's timer and loopback
            # add to the latency, which no client can win back.
            single = run_client(
                ctx, "aiohttp", server, sizes.s2_floor_count, parallelism=1
            )
            if "error" not in single:
                floor = single["ok"] / single["wall_s"] * latency
    ctx.raw[scenario] = results

    rates: dict[str, float | None] = {}
    rate_cells: dict[str, str] = {}
    cpu_cells: dict[str, str] = {}
    server_cells: dict[str, str] = {}
    for client, runs in results.items():
        rates[client] = median_of(runs, lambda r: r["ok"] / r["wall_s"])
        cpu = median_of(runs, lambda r: 1000 * r["cpu_s"] / r["count"])
        server_cpu = median_of(runs, lambda r: r["server_cpu_percent"])
        failed = median_of(runs, lambda r: r["failed"])
        error = first_error(runs)
        rate_cells[client] = _number(rates[client]) + (
            f" ({failed:.0f} failed)" if failed else ""
        )
        if error and rates[client] is None:
            rate_cells[client] = "error"
        cpu_cells[client] = _number(cpu, 3)
        server_cells[client] = _number(server_cpu, 0, " %")
    for client, reason in ctx.skipped.items():
        rate_cells[client] = cpu_cells[client] = server_cells[client] = reason

    rows = []
    aimod_rate = rates.get("aimod")
    if scenario == "S1":
        peers = [rates[c] for c in LIBRARY_PEERS if rates.get(c) is not None]
        best_peer = max(peers) if peers else None
        bare = rates.get("aiohttp")
        met = None
        if aimod_rate is not None and best_peer and bare:
            met = aimod_rate >= 3 * best_peer and aimod_rate >= 0.5 * bare
        ratio_text = ""
        if aimod_rate and best_peer and bare:
            ratio_text = (
                f"{aimod_rate / best_peer:.1f}x best peer, "
                f"{aimod_rate / bare:.2f}x bare aiohttp"
            )
        rows.append(
            Row(
                "S1",
                f"requests/s (aimod: {ratio_text})" if ratio_text else "requests/s",
                rate_cells,
                ">= 3x best peer, >= 0.5x bare aiohttp",
                met,
            )
        )
        rows.append(Row("S1", "client CPU s per 1,000 requests", cpu_cells))
        rows.append(Row("S1", "server CPU % during the run", server_cells))
    else:
        ideal = PARALLELISM / latency
        ratio_cells = {
            client: (
                f"{rates[client] / ideal:.3f}" if rates.get(client) is not None else "-"
            )
            for client in results
        }
        ratio_cells.update(ctx.skipped)
        met = None if aimod_rate is None else aimod_rate / ideal >= 0.95
        rows.append(Row("S2", f"requests/s (ideal {ideal:,.0f})", rate_cells))
        rows.append(Row("S2", "requests/s / ideal", ratio_cells, ">= 0.95", met))
        if floor is not None:
            rows.append(
                Row(
                    "S2",
                    "the same ratio with 1 request in flight "
                    "(server and loopback floor)",
                    {"aiohttp": f"{floor:.3f}"},
                )
            )
        rows.append(Row("S2", "client CPU s per 1,000 requests", cpu_cells))
    return rows


def _busiest_second(starts: list[float]) -> int:
    """Return the largest count of starts in any 1-second window."""
    starts = sorted(starts)
    best = 0
    first = 0
    for last, moment in enumerate(starts):
        while moment - starts[first] >= 1.0:
            first += 1
        best = max(best, last - first + 1)
    return best


def scenario_rate_limit(ctx: Context) -> list[Row]:
    rps = 50.0
    burst = 5
    count = ctx.sizes.s3_count
    _log(f"S3: server limit {rps:g} rps, burst {burst}")
    with FakeOpenAIServer(
        log_level="WARNING", rate_limit=rps, burst=burst, record_starts=True
    ) as server:

        def measure(client: str, repeat: int) -> dict[str, Any]:
            server.reset()
            # Let the server's bucket fill up again after the previous client.
            time.sleep(burst / rps)
            result = run_client(ctx, client, server, count, rps=rps)
            stats = server.stats()
            result["status_429"] = stats["status_counts"].get("429", 0)
            result["busiest_second"] = _busiest_second(stats["starts"])
            return result

        results = interleaved(ctx, ctx.clients, measure)
    ctx.raw["S3"] = results

    rate_cells, lost_cells, status_cells, window_cells = {}, {}, {}, {}
    aimod_figures = {}
    for client, runs in results.items():
        rate = median_of(runs, lambda r: r["ok"] / r["wall_s"])
        lost = median_of(runs, lambda r: 100.0 * r["failed"] / r["count"])
        status_429 = median_of(runs, lambda r: r["status_429"])
        window = median_of(runs, lambda r: r["busiest_second"])
        rate_cells[client] = _number(rate, 1)
        lost_cells[client] = _number(lost, 0, " %")
        status_cells[client] = _number(status_429)
        window_cells[client] = _number(window)
        if client == "aimod":
            aimod_figures = {"rate": rate, "429": status_429, "window": window}
    for cells in (rate_cells, lost_cells, status_cells, window_cells):
        cells.update(ctx.skipped)

    def holds(check: Callable[[float], bool], key: str) -> bool | None:
        value = aimod_figures.get(key)
        return None if value is None else check(value)

    return [
        Row(
            "S3",
            "achieved requests/s",
            rate_cells,
            ">= 49 (0.98 x 50)",
            holds(lambda v: v >= 0.98 * rps, "rate"),
        ),
        Row("S3", "429 responses", status_cells, "0", holds(lambda v: v == 0, "429")),
        Row(
            "S3",
            "most starts in any 1 s window",
            window_cells,
            f"<= {rps + burst:.0f}",
            holds(lambda v: v <= rps + burst, "window"),
        ),
        Row("S3", "share of items lost", lost_cells),
    ]


# -- S4 to S7: the aimod command ----------------------------------------------


def aimod_command() -> list[str]:
    """Return the argv prefix that runs the `aimod` console script of this Python."""
    script = Path(sys.executable).with_name("aimod")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "ai_module"]


@dataclass
class CommandResult:
    exit_code: int
    wall_s: float
    cpu_s: float
    max_rss_mb: float
    summary: dict[str, Any] | None
    stderr_tail: str


def run_aimod(
    folder: Path, arguments: list[str], env: dict[str, str] | None = None
) -> CommandResult:
    """Run the `aimod` command in `folder`; measure wall time, CPU and peak RSS."""
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(
            [*aimod_command(), *arguments],
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, **(env or {})},
        )
        # ru_maxrss of a child is no use here: Linux carries the parent's peak
        # across fork and exec into it. VmHWM is the peak of the child's own
        # address space, read every 20 ms until it exits.
        peak_kib = [0]
        exited = threading.Event()

        def watch_peak() -> None:
            while not exited.is_set():
                peak_kib[0] = max(peak_kib[0], _peak_rss_kib(process.pid))
                exited.wait(0.02)

        watcher = threading.Thread(target=watch_peak, daemon=True)
        watcher.start()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        exited.set()
        watcher.join()
        process.returncode = os.waitstatus_to_exitcode(status)
        stderr.seek(0)
        tail = stderr.read()[-2000:].decode("utf-8", "replace")
    summaries = sorted(
        folder.glob("runs/*/*/summary.json"), key=lambda p: p.stat().st_mtime
    )
    summary = json.loads(summaries[-1].read_text()) if summaries else None
    return CommandResult(
        exit_code=process.returncode,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        max_rss_mb=peak_kib[0] / 1024,
        summary=summary,
        stderr_tail=tail,
    )


def _peak_rss_kib(pid: int) -> int:
    """Return VmHWM of a live process in KiB, or 0 once it has exited."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _fresh_folder(ctx: Context, name: str) -> Path:
    folder = ctx.work_dir / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    workload.write_task_folder(folder)
    return folder


def _mock_arguments(input_path: Path, limit: int | None = None) -> list[str]:
    arguments = [
        f"task={workload.TASK_NAME}",
        "provider=mock",
        f"input={input_path}",
        "store=store.db",
        "parallelism=64",
    ]
    if limit is not None:
        arguments.append(f"limit={limit}")
    return arguments


def _check_command(result: CommandResult, what: str) -> str | None:
    if result.exit_code != 0:
        return f"{what} exited {result.exit_code}: {result.stderr_tail.strip()[-300:]}"
    if result.summary is None:
        return f"{what} wrote no summary.json"
    return None


def scenario_memory(ctx: Context) -> list[Row]:
    sizes = ctx.sizes
    _log(f"S4: {sizes.s4_large:,} JSONL records, mock provider, store")
    input_path = ctx.work_dir / f"records-{sizes.s4_large}.jsonl"
    if not input_path.exists():
        workload.write_jsonl(input_path, sizes.s4_large)

    runs: dict[str, list[dict[str, Any]]] = {"small": [], "large": []}
    errors = []
    for repeat in range(sizes.repeats):
        for label, limit in (("small", sizes.s4_small), ("large", None)):
            folder = _fresh_folder(ctx, f"s4-{label}")
            result = run_aimod(folder, _mock_arguments(input_path, limit))
            error = _check_command(result, f"S4 {label} run")
            if error:
                errors.append(error)
                continue
            figures = {
                "max_rss_mb": result.max_rss_mb,
                "wall_s": result.wall_s,
                "items_per_s": result.summary["total"] / result.wall_s,
                "total": result.summary["total"],
            }
            runs[label].append(figures)
            _log(f"  {label} #{repeat + 1}: {figures}")
            shutil.rmtree(folder, ignore_errors=True)
    ctx.raw["S4"] = {**runs, "errors": errors}

    large_rss = median_of(runs["large"], lambda r: r["max_rss_mb"])
    small_rss = median_of(runs["small"], lambda r: r["max_rss_mb"])
    large_rate = median_of(runs["large"], lambda r: r["items_per_s"])
    ratio = large_rss / small_rss if large_rss and small_rss else None
    met_rss = None if large_rss is None else large_rss <= 200
    met_ratio = None if ratio is None else ratio <= 1.2
    rows = [
        Row(
            "S4",
            f"peak RSS MB at {sizes.s4_large:,} records",
            {"aimod": _number(large_rss, 1)},
            "<= 200",
            met_rss,
        ),
        Row(
            "S4",
            f"peak RSS at {sizes.s4_large:,} / at {sizes.s4_small:,}",
            {"aimod": "failed" if ratio is None else f"{ratio:.2f}"},
            "<= 1.2",
            met_ratio,
        ),
        Row(
            "S4",
            "records/s of the whole command (mock provider)",
            {"aimod": _number(large_rate)},
        ),
    ]
    if errors:
        rows.append(Row("S4", "errors", {"aimod": errors[0][:120]}))
    return rows


def scenario_resume(ctx: Context) -> list[Row]:
    count = ctx.sizes.s5_count
    _log(f"S5: rerun of a completed {count:,}-record run")
    input_path = ctx.work_dir / f"records-{count}.jsonl"
    if not input_path.exists():
        workload.write_jsonl(input_path, count)

    folder = _fresh_folder(ctx, "s5")
    first = run_aimod(folder, _mock_arguments(input_path))
    error = _check_command(first, "S5 first run")
    runs = []
    while error is None and len(runs) < ctx.sizes.repeats:
        result = run_aimod(folder, _mock_arguments(input_path))
        error = _check_command(result, "S5 rerun")
        if error:
            break
        summary = result.summary
        figures = {
            "run_rate": summary["total"] / summary["duration_s"],
            "command_rate": summary["total"] / result.wall_s,
            "requests": summary["requests"],
            "from_store": summary["from_store"],
            "total": summary["total"],
        }
        runs.append(figures)
        _log(f"  rerun #{len(runs)}: {figures}")
    shutil.rmtree(folder, ignore_errors=True)
    ctx.raw["S5"] = {"runs": runs, "error": error}

    run_rate = median_of(runs, lambda r: r["run_rate"])
    command_rate = median_of(runs, lambda r: r["command_rate"])
    calls = max((r["requests"] for r in runs), default=None)
    all_stored = all(r["from_store"] == r["total"] == count for r in runs) and bool(
        runs
    )
    met = None
    if command_rate is not None:
        met = command_rate >= 20_000 and calls == 0 and all_stored
    return [
        Row(
            "S5",
            "records/s, whole command (process start to exit)",
            {"aimod": _number(command_rate)},
            ">= 20,000, 0 provider calls",
            met,
        ),
        Row(
            "S5",
            "records/s inside the run (summary duration)",
            {"aimod": _number(run_rate)},
        ),
        Row(
            "S5",
            "provider calls in the rerun / items from the store",
            {
                "aimod": "failed"
                if calls is None
                else f"{calls} / {'all' if all_stored else 'not all'}"
            },
        ),
    ] + ([Row("S5", "error", {"aimod": error[:120]})] if error else [])


def scenario_command_overhead(ctx: Context) -> list[Row]:
    count = ctx.sizes.s6_count
    _log(f"S6: the aimod command against run_batch, {count:,} records")
    input_path = ctx.work_dir / f"records-{count}.jsonl"
    if not input_path.exists():
        workload.write_jsonl(input_path, count)
    with FakeOpenAIServer(log_level="WARNING") as server:

        def measure(client: str, repeat: int) -> dict[str, Any]:
            if client == "run_batch":
                return run_client(ctx, "aimod", server, count)
            folder = _fresh_folder(ctx, "s6")
            result = run_aimod(
                folder,
                [
                    f"task={workload.TASK_NAME}",
                    "provider=openai",
                    f"base_url={server.base_url}",
                    f"model={workload.MODEL}",
                    f"input={input_path}",
                    "store=store.db",
                    f"parallelism={PARALLELISM}",
                ],
                env={"OPENAI_API_KEY": workload.API_KEY},
            )
            error = _check_command(result, "S6 command")
            shutil.rmtree(folder, ignore_errors=True)
            if error:
                return {"client": client, "error": error}
            summary = result.summary
            return {
                "client": client,
                "ok": summary["succeeded"],
                "count": count,
                "wall_s": result.wall_s,
                "run_s": summary["duration_s"],
                "cpu_s": result.cpu_s,
            }

        results = interleaved(ctx, ["run_batch", "command"], measure)
    ctx.raw["S6"] = results
    batch_rate = median_of(results["run_batch"], lambda r: r["ok"] / r["wall_s"])
    command_rate = median_of(results["command"], lambda r: r["ok"] / r["wall_s"])
    run_rate = median_of(results["command"], lambda r: r["ok"] / r["run_s"])
    ratio = command_rate / batch_rate if command_rate and batch_rate else None
    run_ratio = run_rate / batch_rate if run_rate and batch_rate else None
    return [
        Row("S6", "requests/s: bare run_batch", {"aimod": _number(batch_rate)}),
        Row(
            "S6",
            "requests/s: aimod command, process start to exit",
            {"aimod": _number(command_rate)},
        ),
        Row(
            "S6",
            "command / run_batch, process start to exit",
            {"aimod": "failed" if ratio is None else f"{ratio:.2f}"},
            ">= 0.9",
            None if ratio is None else ratio >= 0.9,
        ),
        Row(
            "S6",
            "command / run_batch, inside the run (summary duration)",
            {"aimod": "failed" if run_ratio is None else f"{run_ratio:.2f}"},
        ),
    ]


def scenario_startup(ctx: Context) -> list[Row]:
    _log("S7: start-up time")
    folder = _fresh_folder(ctx, "s7")
    one_record = folder / "one.jsonl"
    workload.write_jsonl(one_record, 1)
    commands = {
        "python -c 'import hydra'": [sys.executable, "-c", "import hydra"],
        "aimod --help": [*aimod_command(), "--help"],
        "aimod, 1 record (mock)": [*aimod_command(), *_mock_arguments(one_record)],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(ctx.sizes.repeats):
        for name, command in commands.items():
            started = time.perf_counter()
            completed = subprocess.run(
                command, cwd=folder, stdin=subprocess.DEVNULL, capture_output=True
            )
            elapsed = time.perf_counter() - started
            if completed.returncode != 0:
                _log(
                    f"  {name} exited {completed.returncode}: "
                    f"{completed.stderr[-300:]!r}"
                )
                continue
            times[name].append(elapsed)
    shutil.rmtree(folder, ignore_errors=True)
    ctx.raw["S7"] = times
    return [
        Row(
            "S7",
            f"wall s: {name}",
            {"aimod": _number(statistics.median(values) if values else None, 2)},
            "report",
        )
        for name, values in times.items()
    ]


# -- table and entry point ------------------------------------------------------------


def format_table(rows: list[Row], columns: list[str]) -> str:
    header = [
        "scenario",
        "measure",
        *(CLIENT_COLUMNS[c] for c in columns),
        "target",
        "met",
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(" --- " for _ in header) + "|",
    ]
    for row in rows:
        met = {True: "yes", False: "NO", None: ""}[row.met]
        cells = [row.scenario, row.measure]
        cells += [row.values.get(column, "") for column in columns]
        cells += [row.target, met]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


SCENARIOS: dict[str, Callable[[Context], list[Row]]] = {
    "S0": scenario_ceiling,
    "S1": lambda ctx: scenario_throughput(ctx, "S1", 0.0),
    "S2": lambda ctx: scenario_throughput(ctx, "S2", 0.05),
    "S3": scenario_rate_limit,
    "S4": scenario_memory,
    "S5": scenario_resume,
    "S6": scenario_command_overhead,
    "S7": scenario_startup,
}


def _available_clients(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    import importlib.util

    from clients import CLIENT_MODULES

    wanted = args.clients.split(",") if args.clients else list(CLIENT_COLUMNS)
    if args.quick and not args.clients:
        wanted = ["aimod", "aiohttp", "httpx"]
    clients, skipped = [], {}
    for client in wanted:
        if client not in CLIENT_COLUMNS:
            raise SystemExit(
                f"unknown client {client!r}: use {', '.join(CLIENT_COLUMNS)}"
            )
        if client == "curator":
            reason = netns.curator_unavailable(args.curator_python)
            if reason:
                skipped[client] = reason
                continue
        elif importlib.util.find_spec(CLIENT_MODULES[client]) is None:
            skipped[client] = "not installed"
            continue
        clients.append(client)
    return clients, skipped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts, 1 repeat")
    parser.add_argument("--repeats", type=int, help="rounds per scenario (default 3)")
    parser.add_argument(
        "--only", help="comma-separated scenarios to run, e.g. S1,S3 (default all)"
    )
    parser.add_argument(
        "--clients",
        help="comma-separated clients (default all installed): "
        + ", ".join(CLIENT_COLUMNS),
    )
    parser.add_argument(
        "--curator-python",
        default=str(REPO_DIR / ".venv-curator" / "bin" / "python"),
        help="Python of the virtual environment that has bespokelabs-curator",
    )
    parser.add_argument(
        "--json", type=Path, help="also write every raw measurement to this file"
    )
    parser.add_argument(
        "--no-isolate",
        action="store_true",
        help="do not enter a network namespace with loopback only",
    )
    args = parser.parse_args()

    if not args.no_isolate:
        netns.enter_loopback_namespace()
    sizes = QUICK if args.quick else FULL
    if args.repeats:
        sizes = Sizes(**{**sizes.__dict__, "repeats": args.repeats})
    if not netns.isolated():
        args.curator_python = ""
    clients, skipped = _available_clients(args)
    selected = args.only.split(",") if args.only else list(SCENARIOS)
    unknown = [name for name in selected if name not in SCENARIOS]
    if unknown:
        parser.error(
            f"unknown scenario(s) {', '.join(unknown)}: use {', '.join(SCENARIOS)}"
        )

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aimod-bench-") as work:
        ctx = Context(args, sizes, clients, skipped, Path(work))
        rows: list[Row] = []
        for name in selected:
            rows.extend(SCENARIOS[name](ctx))
    elapsed = time.perf_counter() - started

    columns = [c for c in CLIENT_COLUMNS if c in clients or c in skipped]
    print(_header(args, sizes, elapsed))
    print()
    print(format_table(rows, columns))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {"rows": [row.__dict__ for row in rows], "raw": ctx.raw}, indent=1
            )
        )
    return 0


def _header(args: argparse.Namespace, sizes: Sizes, elapsed: float) -> str:
    import platform

    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    mode = "quick" if args.quick else "full"
    return (
        f"aimod benchmarks ({mode}, medians of {sizes.repeats}), "
        f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, "
        f"{memory_gib:.0f} GiB, Python {platform.python_version()}, "
        f"network {'loopback only' if netns.isolated() else 'not isolated'}, "
        f"took {elapsed:.0f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
