"""The summary printed at the end of a run."""

from __future__ import annotations

import shlex
import sys

from ai_module.runner import ExitCode, RunSummary

__all__ = ["format_summary"]


def format_summary(summary: RunSummary, command: str | None = None) -> str:
    """Describe a finished run in a few lines, with what to do next.

    `command` is the command line as the user typed it, offered for resuming.
    """
    tokens = summary.prompt_tokens + summary.completion_tokens
    lines = [
        f"aimod: {summary.status}: task {summary.task}, {summary.provider} "
        f"{summary.model}",
        f"  items      {summary.total} ({summary.succeeded} succeeded, "
        f"{summary.failed} failed, {summary.from_store} from store"
        + (f", {summary.not_attempted} not attempted" if summary.not_attempted else "")
        + ")",
        f"  requests   {summary.requests} ({summary.retries} retries, "
        f"{summary.rate_limited} rate-limited)",
        f"  tokens     {tokens} ({summary.prompt_tokens} prompt, "
        f"{summary.completion_tokens} completion)",
        *(
            [f"  cost       about ${summary.estimated_cost_usd:.4f} (from price.*)"]
            if summary.estimated_cost_usd is not None
            else []
        ),
        f"  time       {summary.duration_s:.1f} s, {summary.items_per_s:.1f} items/s",
        f"  results    {summary.run_dir}/results.jsonl",
    ]
    if summary.errors_by_type:
        counts = ", ".join(
            f"{name} {count}" for name, count in summary.errors_by_type.items()
        )
        lines.append(f"  errors     {counts}")
    if summary.message:
        lines.append(f"  stopped    {summary.message}")
    stopped_early = (ExitCode.INTERRUPTED, ExitCode.ABORTED, ExitCode.STORE)
    if summary.exit_code in stopped_early or summary.failed:
        if command is None:
            command = "aimod " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])
        lines.append(
            "  to resume, run the same command again; stored answers are reused: "
            + command
        )
    return "\n".join(lines) + "\n"
