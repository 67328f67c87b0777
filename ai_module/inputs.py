"""Stream input records from JSONL, a JSON array or CSV files, gzipped or not.

Readers yield `(line, record)` pairs, where `record` is a dict or, for a
malformed record, an `InputError` naming the file and line: one bad record is
an error for that record only.
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import orjson

from ai_module.errors import InputError

__all__ = ["count_records", "detect_format", "read_records"]

FORMATS = ("jsonl", "json", "csv")
# The UTF-8 byte order mark that Excel and some Windows tools write first.
_BOM = b"\xef\xbb\xbf"
# A record over this size is rejected rather than sent: it is almost always a
# broken file (a missing newline), and would cost a fortune as a prompt.
DEFAULT_MAX_RECORD_BYTES = 4 * 1024 * 1024
# Exceptions that a damaged file raises while it is read: BadGzipFile is an
# OSError, a truncated gzip stream raises EOFError and corrupt data zlib.error.
_READ_ERRORS = (OSError, EOFError, zlib.error)


def detect_format(path: Path) -> str:
    """Guess the format from the file name (`.jsonl`, `.json`, `.csv`, `.gz`)."""
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    suffix = suffixes[-1] if suffixes else ""
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".json":
        return "json"
    if suffix in (".csv", ".tsv"):
        return "csv"
    raise InputError(
        f"cannot tell the format of {path} from its name: use .jsonl, .json or .csv "
        "(optionally .gz), or set input.format=jsonl|json|csv"
    )


def _require_file(path: Path) -> None:
    if not path.exists():
        raise InputError(
            f"input file not found: {path}. Check the path given as input="
        )
    if path.is_dir():
        raise InputError(f"input {path} is a folder; give a file with input=FILE")


def _open_binary(path: Path) -> IO[bytes]:
    _require_file(path)
    try:
        handle = path.open("rb")
        if path.suffix.lower() == ".gz":
            return gzip.open(handle, "rb")  # type: ignore[return-value]
        return handle
    except OSError as exc:
        raise InputError(f"cannot open input file {path}: {exc.strerror}") from None


def read_records(
    path: str | Path,
    *,
    fmt: str | None = None,
    fields: Mapping[str, str] | None = None,
    limit: int | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> Iterator[tuple[int, dict[str, Any] | InputError]]:
    """Yield `(line, record)` for each record of the file, streaming.

    `fields` maps template variables to the file's column names; the original
    columns stay in the record too. `limit` stops after that many records.
    """
    path = Path(path)
    _require_file(path)
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise InputError(
            f"invalid input.format {fmt!r}: use one of {', '.join(FORMATS)}"
        )
    reader = {"jsonl": _read_jsonl, "json": _read_json_array, "csv": _read_csv}[fmt]
    mapping = dict(fields or {})
    count = 0
    records = reader(path, max_record_bytes)
    while True:
        try:
            line, record = next(records)
        except StopIteration:
            break
        except _READ_ERRORS as exc:
            raise InputError(
                f"{path}: reading failed after {count} records: {exc}. The file is "
                "damaged or truncated, or is not what its name says (a .gz file "
                "that is not gzip); recreate it or fix its name."
            ) from None
        if limit is not None and count >= limit:
            return
        count += 1
        if isinstance(record, InputError) or not mapping:
            yield line, record
        else:
            yield line, _map_fields(path, line, record, mapping)
    if count == 0:
        raise InputError(
            f"input file {path} contains no records; check that input= names the "
            "file you meant and that it is not empty"
        )


def _map_fields(
    path: Path, line: int, record: dict[str, Any], mapping: dict[str, str]
) -> dict[str, Any] | InputError:
    mapped = dict(record)
    for variable, column in mapping.items():
        if column not in record:
            columns = ", ".join(map(str, record)) or "none"
            return InputError(
                f"{path}:{line}: column {column!r} (mapped to {variable!r} by "
                f"input.fields.{variable}) not found; the record has: {columns}"
            )
        mapped[variable] = record[column]
    return mapped


def _read_jsonl(path: Path, max_bytes: int) -> Iterator[tuple[int, Any]]:
    with _open_binary(path) as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1:
                raw = raw.removeprefix(_BOM)
            if not raw.strip():
                continue
            if len(raw) > max_bytes:
                yield number, _too_large(f"{path}:{number}", len(raw), max_bytes)
                continue
            yield number, _parse_json_record(path, number, raw)


def _too_large(where: str, size: int, max_bytes: int) -> InputError:
    return InputError(
        f"{where}: record is {_size(size)}, over the limit of {_size(max_bytes)}; "
        "split it or raise input.max_record_bytes"
    )


def _size(count: int) -> str:
    if count >= 1_000_000:
        return f"{count / 1e6:.1f} MB"
    if count >= 10_000:
        return f"{count / 1e3:.0f} kB"
    return f"{count} bytes"


def _parse_json_record(
    path: Path, line: int, raw: bytes
) -> dict[str, Any] | InputError:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        problem = "invalid UTF-8" if _invalid_utf8(raw) else str(exc)
        return InputError(
            f"{path}:{line}: malformed JSON record ({problem}); fix or remove the line"
        )
    if not isinstance(value, dict):
        return InputError(
            f"{path}:{line}: a record must be a JSON object, got {type(value).__name__}"
        )
    return value


def _invalid_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _read_json_array(path: Path, max_bytes: int) -> Iterator[tuple[int, Any]]:
    # NOTE: a JSON array is parsed whole, so its memory grows with the file;
    # JSONL streams and is the format to use for large inputs.
    with _open_binary(path) as handle:
        raw = handle.read().removeprefix(_BOM)
    try:
        values = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{path}: invalid JSON ({exc}); fix the file") from None
    if isinstance(values, dict):
        values = [values]
    if not isinstance(values, list):
        raise InputError(f"{path}: expected a JSON array of objects")
    for number, value in enumerate(values, start=1):
        if not isinstance(value, dict):
            yield (
                number,
                InputError(
                    f"{path}: element {number} must be a JSON object, got "
                    f"{type(value).__name__}"
                ),
            )
            continue
        size = len(orjson.dumps(value))
        if size > max_bytes:
            yield number, _too_large(f"{path}: element {number}", size, max_bytes)
        else:
            yield number, value


def _read_csv(path: Path, max_bytes: int) -> Iterator[tuple[int, Any]]:
    delimiter = "\t" if ".tsv" in [s.lower() for s in path.suffixes] else ","
    # The csv module's own field limit (128 KiB by default, process-wide) would
    # reject large fields with a bare "field larger than field limit".
    csv.field_size_limit(max(csv.field_size_limit(), max_bytes))
    with _open_binary(path) as binary:
        # Invalid bytes become lone surrogates, so that the row holding them is
        # an error for that row only.
        text = io.TextIOWrapper(
            binary, encoding="utf-8-sig", errors="surrogateescape", newline=""
        )
        reader = csv.reader(text, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            return
        if _invalid_text(header):
            raise InputError(
                f"{path}:1: the header is not valid UTF-8; convert the file to UTF-8 "
                "(for example iconv -f LATIN1 -t UTF-8)"
            )
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                line = reader.line_num
                problem = str(exc)
                if "field larger than field limit" in problem:
                    problem = (
                        f"a field is over the limit of {max_bytes / 1e6:.1f} MB; "
                        "split the record or raise input.max_record_bytes"
                    )
                yield line, InputError(f"{path}:{line}: {problem}")
                continue
            if not row:
                continue
            if _invalid_text(row):
                yield (
                    reader.line_num,
                    InputError(
                        f"{path}:{reader.line_num}: invalid UTF-8 in this row; convert "
                        "the file to UTF-8 (for example iconv -f LATIN1 -t UTF-8) or "
                        "fix the row"
                    ),
                )
                continue
            size = sum(map(len, row))
            if size * 4 > max_bytes:  # a UTF-8 character takes at most 4 bytes
                size = sum(len(field.encode("utf-8")) for field in row)
                if size > max_bytes:
                    yield (
                        reader.line_num,
                        _too_large(f"{path}:{reader.line_num}", size, max_bytes),
                    )
                    continue
            if len(row) != len(header):
                yield (
                    reader.line_num,
                    InputError(
                        f"{path}:{reader.line_num}: row has {len(row)} fields but the "
                        f"header has {len(header)}; fix the quoting or the row"
                    ),
                )
                continue
            yield reader.line_num, dict(zip(header, row, strict=True))


def _invalid_text(fields: list[str]) -> bool:
    """Tell whether a decoded row contains the surrogates of invalid UTF-8 bytes."""
    for field in fields:
        if not field.isascii():
            try:
                field.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False


def count_records(
    path: str | Path, fmt: str | None = None, limit: int | None = None
) -> int | None:
    """Count records cheaply for progress and ETA, or return None if unknown."""
    path = Path(path)
    try:
        fmt = fmt or detect_format(path)
        if fmt != "jsonl":
            return None
        total = 0
        partial = b""
        with _open_binary(path) as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                lines = (partial + chunk).split(b"\n")
                partial = lines.pop()  # the start of a line the next chunk ends
                # Blank lines are skipped by the reader, so they are no records.
                total += sum(1 for line in lines if line.strip())
                if limit is not None and total >= limit:
                    return limit
        if partial.strip():
            total += 1  # a last line without a newline
        return total if limit is None else min(total, limit)
    except (InputError, *_READ_ERRORS):
        return None
