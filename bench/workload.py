"""The request every benchmark client sends, so that aimod and its peers do equal work.

Each record is a short product review. aimod renders it through the task below
(Jinja templates, JSON Schema). The peers build the same two messages with
`messages()` and send the same `response_format`. The fake server therefore
samples the same schema for everyone, and its cost per request does not depend
on the client.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

TASK_NAME = "bench_sentiment"
MODEL = "gpt-4o-mini"
API_KEY = "sk-bench-local"
SYSTEM = "Label the sentiment of the product review. Answer with a JSON object."
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["positive", "negative", "neutral"]},
    },
    "required": ["label"],
    "additionalProperties": False,
}
RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {"name": TASK_NAME, "schema": SCHEMA, "strict": True},
}
TEMPERATURE = 0

# The task file that the `aimod` command finds in ./tasks of its working folder.
TASK_YAML = f"""\
name: {TASK_NAME}
description: Label the sentiment of a short product review (benchmark task).
input_fields: [text]
system: "{SYSTEM}"
user: "{{{{ text }}}}"
output_schema:
  type: object
  properties:
    label: {{type: string, enum: [positive, negative, neutral]}}
  required: [label]
  additionalProperties: false
generation: {{temperature: {TEMPERATURE}}}
"""


def record(number: int) -> dict[str, str]:
    """Return the input record with this number; every number gives another text."""
    return {
        "text": f"Review {number}: the battery lasts two days, but the case "
        "scratches easily."
    }


def records(count: int) -> Iterator[dict[str, str]]:
    return (record(number) for number in range(count))


def messages(item: dict[str, str]) -> list[dict[str, str]]:
    """Return the chat messages that aimod renders for `item` with the task above."""
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": item["text"]},
    ]


def request_body(item: dict[str, str]) -> bytes:
    """Return the JSON body of the chat completions request for `item`."""
    return orjson.dumps(
        {
            "model": MODEL,
            "messages": messages(item),
            "temperature": TEMPERATURE,
            "response_format": RESPONSE_FORMAT,
        }
    )


def load_task() -> Any:
    """Build the aimod Task object from TASK_YAML."""
    import yaml

    from ai_module.tasks import task_from_mapping

    return task_from_mapping(yaml.safe_load(TASK_YAML))


def write_task_folder(folder: Path) -> None:
    """Write tasks/bench_sentiment.yaml under `folder`, for `aimod` run there."""
    tasks = folder / "tasks"
    tasks.mkdir(parents=True, exist_ok=True)
    (tasks / f"{TASK_NAME}.yaml").write_text(TASK_YAML, encoding="utf-8")


def write_jsonl(path: Path, count: int) -> None:
    """Write `count` records to a JSONL file, in blocks to keep memory flat."""
    block = 10_000
    with path.open("wb") as handle:
        for start in range(0, count, block):
            stop = min(start + block, count)
            handle.write(
                b"".join(
                    orjson.dumps(record(number), option=orjson.OPT_APPEND_NEWLINE)
                    for number in range(start, stop)
                )
            )
