"""Bad input through the real `aimod` command, each rejected with where and what to do.

A bad record is an error in its own result line, and the records around it
still succeed (exit code 1). A bad file, task or setting stops the run before
any request (exit code 2) with one message on stderr.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field

import pytest
from cli_process import environment, latest_run, read_results, run, write_jsonl

TEN_MB = "x" * (10 * 1024 * 1024)

# A template that starts with "{" outside a block scalar is a YAML mapping (line 3).
BAD_YAML_TASK = """\
name: bad
input_fields: [text]
user: {{ text }}
output_schema: {type: object}
"""
# The template on line 4 does not close its "{{".
BAD_TEMPLATE_TASK = """\
name: badt
input_fields: [text]
user: |
  {{ text }
output_schema: {type: object}
"""
# "objekt" on line 5 is no JSON Schema type.
BAD_SCHEMA_TASK = """\
name: bads
input_fields: [text]
user: |
  {{ text }}
output_schema: {type: objekt}
"""


def gzip_truncated(count: int) -> bytes:
    lines = "".join(
        json.dumps({"text": f"record {n} " + "z" * n}) + "\n" for n in range(count)
    )
    packed = gzip.compress(lines.encode())
    return packed[: len(packed) // 2]


@dataclass
class BadRecord:
    """An input file with one bad record, at `index` of the results."""

    name: str
    file: str
    data: bytes
    index: int
    total: int
    expected: list[str]
    args: list[str] = field(default_factory=list)


BAD_RECORDS = [
    BadRecord(
        "jsonl_not_object",
        "in.jsonl",
        b'{"text": "a"}\n[1, 2]\n{"text": "c"}\n',
        1,
        3,
        ["in.jsonl:2", "must be a JSON object"],
    ),
    BadRecord(
        "jsonl_cut_last_line",
        "in.jsonl",
        b'{"text": "a"}\n{"text": "b"}\n{"text": "c',
        2,
        3,
        ["in.jsonl:3", "malformed JSON", "fix or remove the line"],
    ),
    BadRecord(
        "csv_ragged_row",
        "in.csv",
        b"text,title\na,t1\nb,t2,extra\nc,t3\n",
        1,
        3,
        ["in.csv:3", "row has 3 fields but the header has 2", "fix the quoting"],
    ),
    BadRecord(
        "jsonl_invalid_utf8",
        "in.jsonl",
        b'{"text": "a"}\n{"text": "caf\xe9"}\n{"text": "c"}\n',
        1,
        3,
        ["in.jsonl:2", "invalid UTF-8", "fix or remove the line"],
    ),
    BadRecord(
        "csv_invalid_utf8",
        "in.csv",
        b"text\na\ncaf\xe9\nc\n",
        1,
        3,
        ["in.csv:3", "invalid UTF-8", "iconv"],
    ),
    BadRecord(
        "jsonl_lone_surrogate",
        "in.jsonl",
        b'{"text": "a"}\n{"text": "\\ud800"}\n{"text": "c"}\n',
        1,
        3,
        ["in.jsonl:2", "malformed JSON", "fix or remove the line"],
    ),
    BadRecord(
        "jsonl_10mb_record",
        "in.jsonl",
        b'{"text": "a"}\n'
        + json.dumps({"text": TEN_MB}).encode()
        + b'\n{"text": "c"}\n',
        1,
        3,
        ["in.jsonl:2", "10.5 MB", "input.max_record_bytes"],
    ),
    BadRecord(
        "csv_10mb_record",
        "in.csv",
        b"text\na\n" + TEN_MB.encode() + b"\nc\n",
        1,
        3,
        ["in.csv:3", "input.max_record_bytes"],
    ),
    BadRecord(
        "json_10mb_element",
        "in.json",
        json.dumps([{"text": "a"}, {"text": TEN_MB}, {"text": "c"}]).encode(),
        1,
        3,
        ["in.json: element 2", "input.max_record_bytes"],
    ),
    BadRecord(
        "missing_template_variable",
        "in.jsonl",
        b'{"text": "a"}\n{"body": "no text"}\n{"text": "c"}\n',
        1,
        3,
        ["'text'", "input.fields.NAME=COLUMN"],
    ),
    BadRecord(
        "gzip_truncated",
        "in.jsonl.gz",
        gzip_truncated(400),
        -1,
        0,
        ["in.jsonl.gz", "reading failed after", "recreate it"],
    ),
]


@pytest.mark.parametrize("case", BAD_RECORDS, ids=[case.name for case in BAD_RECORDS])
def test_bad_record_fails_alone(tmp_path, case):
    (tmp_path / case.file).write_bytes(case.data)
    done = run(
        "task=summarize",
        "provider=mock",
        f"input={case.file}",
        *case.args,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    results = read_results(latest_run(tmp_path))
    if case.total:
        assert len(results) == case.total
    bad = results[case.index]
    message = bad["error"]["message"]
    for expected in case.expected:
        assert expected in message
    others = [result for result in results if result is not bad]
    assert others
    assert all(result["error"] is None for result in others)


@dataclass
class BadRun:
    """An input, task or setting that stops the run before any request."""

    name: str
    args: list[str]
    expected: list[str]
    files: dict[str, bytes] = field(default_factory=dict)


ONE_RECORD = {"in.jsonl": b'{"text": "a"}\n'}

BAD_RUNS = [
    BadRun(
        "empty_file",
        ["input=in.jsonl"],
        ["in.jsonl", "contains no records", "input="],
        {"in.jsonl": b""},
    ),
    BadRun(
        "blank_lines_only",
        ["input=in.jsonl"],
        ["in.jsonl", "contains no records"],
        {"in.jsonl": b"\n\n  \n"},
    ),
    BadRun("missing_file", ["input=nope.jsonl"], ["nope.jsonl", "not found", "input="]),
    BadRun(
        "missing_file_unknown_suffix", ["input=nope.txt"], ["nope.txt", "not found"]
    ),
    BadRun("folder_as_input", ["input=tasks"], ["tasks", "is a folder", "input=FILE"]),
    BadRun(
        "not_gzip",
        ["input=in.jsonl.gz"],
        ["in.jsonl.gz", "not gzip", "recreate it"],
        {"in.jsonl.gz": b'{"text": "a"}\n'},
    ),
    BadRun(
        "unknown_format",
        ["input=in.txt"],
        ["in.txt", "input.format="],
        {"in.txt": b'{"text": "a"}\n'},
    ),
    BadRun(
        "unknown_provider",
        ["input=in.jsonl", "provider=opneai"],
        ["unknown provider 'opneai'", "Did you mean 'openai'", "mock"],
        ONE_RECORD,
    ),
    BadRun(
        "task_invalid_yaml",
        ["input=in.jsonl", "task=bad"],
        ["bad.yaml:3", "invalid YAML", "block scalar"],
        ONE_RECORD,
    ),
    BadRun(
        "task_bad_template",
        ["input=in.jsonl", "task=badt"],
        ["badt.yaml:4", "template syntax error", "aimod validate"],
        ONE_RECORD,
    ),
    BadRun(
        "task_invalid_schema",
        ["input=in.jsonl", "task=bads"],
        ["bads.yaml:5", "invalid JSON Schema", "output_schema"],
        ONE_RECORD,
    ),
    BadRun(
        "negative_parallelism",
        ["input=in.jsonl", "parallelism=-1"],
        ["parallelism=-1", "greater than or equal to 1", "aimod --help"],
        ONE_RECORD,
    ),
    BadRun(
        "negative_rps",
        ["input=in.jsonl", "rps=-2"],
        ["rps=-2", "greater than 0", "aimod --help"],
        ONE_RECORD,
    ),
    BadRun(
        "zero_parallelism",
        ["input=in.jsonl", "parallelism=0"],
        ["parallelism=0", "greater than or equal to 1"],
        ONE_RECORD,
    ),
    BadRun(
        "resume_word",
        ["input=in.jsonl", "resume=no"],
        ["resume='no'", "true or false"],
        ONE_RECORD,
    ),
    BadRun(
        "limit_boolean",
        ["input=in.jsonl", "limit=true"],
        ["limit=True", "whole number"],
        ONE_RECORD,
    ),
    BadRun(
        "misspelt_provider_option",
        ["input=in.jsonl", "options.respons_format=none"],
        ["options.respons_format", "Did you mean 'response_format'"],
        ONE_RECORD,
    ),
    BadRun(
        "zero_record_bytes",
        ["input=in.jsonl", "input.max_record_bytes=0"],
        ["input.max_record_bytes=0"],
        ONE_RECORD,
    ),
]


@pytest.mark.parametrize("case", BAD_RUNS, ids=[case.name for case in BAD_RUNS])
def test_bad_run_rejected_before_requests(tmp_path, fake_server_factory, case):
    server = fake_server_factory()
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "bad.yaml").write_text(BAD_YAML_TASK, encoding="utf-8")
    (tmp_path / "tasks" / "badt.yaml").write_text(BAD_TEMPLATE_TASK, encoding="utf-8")
    (tmp_path / "tasks" / "bads.yaml").write_text(BAD_SCHEMA_TASK, encoding="utf-8")
    for name, data in case.files.items():
        (tmp_path / name).write_bytes(data)
    args = ["task=summarize", *case.args]
    done = run(*args, cwd=tmp_path, env=environment(server))
    assert done.returncode == 2
    for expected in case.expected:
        assert expected in done.stderr
    assert "Traceback" not in done.stderr
    assert server.stats()["requests"] == 0


@pytest.mark.parametrize(
    "value",
    ["{{ 7 * 7 }}", "{% for x in range(3) %}x{% endfor %}", "{{ ''.__class__ }}"],
)
def test_template_syntax_in_values_sent_verbatim(tmp_path, fake_server, value):
    write_jsonl(tmp_path / "in.jsonl", [{"text": value}])
    done = run(
        "task=summarize", "input=in.jsonl", cwd=tmp_path, env=environment(fake_server)
    )
    assert done.returncode == 0, done.stderr
    (entry,) = fake_server.requests()
    assert entry["body"]["messages"][-1]["content"].endswith(value)
