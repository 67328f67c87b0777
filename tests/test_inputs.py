"""Reading input files: formats as real tools write them."""

from __future__ import annotations

import gzip

import pytest

from ai_module.inputs import count_records, read_records

BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("rows.csv", b"sentence,id\r\nhello \xc3\xa9,1\r\nbye,2\r\n"),
        (
            "rows.jsonl",
            b'{"sentence": "hello \xc3\xa9", "id": 1}\n{"sentence": "bye"}\n',
        ),
        ("rows.json", b'[{"sentence": "hello \xc3\xa9"}, {"sentence": "bye"}]'),
    ],
)
@pytest.mark.parametrize("compress", [False, True])
def test_byte_order_mark_is_skipped(tmp_path, name, content, compress):
    path = tmp_path / (name + ".gz" if compress else name)
    data = BOM + content
    path.write_bytes(gzip.compress(data) if compress else data)
    records = [record for _, record in read_records(path, fields={"text": "sentence"})]
    assert [record["text"] for record in records] == ["hello é", "bye"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"a": 1}\n{"a": 2}', 2),
        (b'\n\n{"a": 1}\r\n\r\n{"a": 2}\r\n  \n', 2),
        (b'  \n{"a": 1}\n\t\n', 1),
    ],
)
def test_count_matches_records_read(tmp_path, content, expected):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(content)
    assert count_records(path) == expected
    assert len(list(read_records(path))) == expected


def test_oversized_record_names_sizes(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"text": "' + b"x" * 200 + b'"}\n{"text": "ok"}\n')
    (_, first), (_, second) = read_records(path, max_record_bytes=100)
    assert "record is 213 bytes, over the limit of 100 bytes" in str(first)
    assert second == {"text": "ok"}
