"""Load a site's training records from .jsonl, .json, .csv or .parquet with strict, text-free validation."""

from __future__ import annotations

import csv
import dataclasses
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from common.errors import DataError, printable
from common.files import MIB, open_regular

ROLES: tuple[str, ...] = ("system", "user", "assistant")
SUFFIXES: tuple[str, ...] = (".jsonl", ".json", ".csv", ".parquet")

# Flat shapes as (prompt key, completion key); each may also carry an optional "system" key.
_FLAT_SHAPES: tuple[tuple[str, str], ...] = (
    ("input", "output"),
    ("prompt", "completion"),
    ("question", "answer"),
)
_CHAT_KEY = "messages"
_SHAPES_TEXT = "{input, output}, {prompt, completion}, {question, answer} (each with optional system) or {messages}"
_UTF8_BOM = b"\xef\xbb\xbf"

# Caps that bound the time and memory one file can cost before its first record is checked. A site
# with more data than this splits it (or subsamples: a LoRA fine-tune rarely gains past ~1e5 records).
MAX_FILE_BYTES = 256 * MIB  # file size of JSONL/JSON/CSV; decoded size of Parquet (dictionaries expanded)
MAX_ROWS = 1_000_000  # records per file
MAX_LINE_BYTES = 16 * MIB  # one JSONL/CSV line
MAX_FIELD_CHARS = 1_000_000  # one text value (~250k tokens; far beyond any train.max_seq_len)
MAX_FIELDS = 256  # keys of one object, items of one list, columns of a table
MAX_DEPTH = 8  # nesting of objects and lists in one record ({messages: [{role, content}]} is 3)
csv.field_size_limit(MAX_FIELD_CHARS + 1)  # ours is the limit: csv's default (131,072) would cut long notes


@dataclass(frozen=True)
class ChatRecord:
    """One training example: the conversation so far and the assistant answer to learn.

    Attributes:
        prompt: (role, content) turns before the answer; roles are "system", "user" or "assistant".
        completion: The final assistant answer; training loss is computed on it only.
    """

    prompt: tuple[tuple[str, str], ...]
    completion: str
    patient_id: str | None = None  # the privacy unit when DP is patient-level (privacy.unit=patient)


@dataclass(frozen=True)
class ColumnMapping:
    """Which columns of a flat file hold the prompt, the answer and an optional system message.

    Attributes:
        prompt: Column holding the prompt / question / input text.
        completion: Column holding the answer text.
        system: Optional column holding a system message.
    """

    prompt: str
    completion: str
    system: str | None = None


@dataclass(frozen=True)
class _Rows:
    """Rows read from one file plus what is needed to word errors about them."""

    name: str
    unit: str  # "line" for line-oriented formats, "row" for indexed ones
    rows: Iterator[tuple[int, dict[str, Any]]]  # streamed: each row is checked as it is read
    columns: tuple[str, ...] | None  # known up front for tabular formats only
    header_line: int | None = None


def load_records(
    path: str | Path,
    columns: ColumnMapping | None = None,
    *,
    where: tuple[str, str] | None = None,
    patient_field: str | None = None,
) -> list[ChatRecord]:
    """Load and validate every record of a site's data file.

    Validation stops at the first bad row; nothing is returned unless every kept row is valid.

    Args:
        path: A .jsonl, .json, .csv or .parquet file.
        columns: Columns to read from every row; when None the shape is detected per row
            ({input, output}, {prompt, completion}, {question, answer}, each with an optional
            "system", or chat {messages: [{role, content}, ...]}).
        where: Optional (field, value): keep only rows whose field, compared as a string, equals value.
            Rows filtered out are not validated beyond being objects.
        patient_field: Optional field holding each record's patient identifier (required, non-empty);
            it becomes ``ChatRecord.patient_id``, the unit of patient-level DP.

    Returns:
        The records in file order.

    Raises:
        DataError: The file is missing, unreadable or malformed, a row is invalid, or no row is kept.
            Messages name the file, the row and the reason, never record text.
    """
    data = _read(path)
    if data.columns is not None:
        _check_columns(data, data.columns, columns, where)
    records: list[ChatRecord] = []
    for number, row in data.rows:
        if where is not None and not _matches(row, where):
            continue
        where_text = f"{data.name} {data.unit} {number}"
        if columns is not None:
            records.append(_flat_record(row, columns.prompt, columns.completion, columns.system, where_text))
        else:
            records.append(_detected_record(row, where_text))
        if patient_field:
            value = row.get(patient_field)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise DataError(f"{where_text}: field {patient_field!r} (the patient identifier) is missing or empty")
            if not isinstance(value, (str, int)) or isinstance(value, bool):
                raise DataError(f"{where_text}: field {patient_field!r} must be a string or an integer")
            records[-1] = dataclasses.replace(records[-1], patient_id=str(value))
    if not records:
        if where is not None:
            raise DataError(f"{data.name} contains no records with field {where[0]!r} equal to the requested value")
        raise DataError(f"{data.name} contains no records")
    return records


def read_rows(path: str | Path) -> list[tuple[int, dict]]:
    """Read a data file's raw rows without checking their shape.

    Args:
        path: A .jsonl, .json, .csv or .parquet file.

    Returns:
        (row number, row) pairs. The number is what a user finds in the file: the 1-based line for
        .jsonl, the CSV line where the record starts for .csv (the header is line 1), and the 1-based
        position for .json and .parquet. CSV cells are strings; Parquet nulls are left out of the row
        because Parquet fills columns a row does not have with null.

    Raises:
        DataError: The file is missing, unreadable or malformed, or a row is not an object.
    """
    return list(_read(path).rows)


def field_values(path: str | Path, field: str) -> list[str]:
    """List the distinct values of one field, e.g. to split one file into several sites.

    Rows without the field, or with a null or blank value, are skipped; other values are compared as strings.

    Args:
        path: A .jsonl, .json, .csv or .parquet file.
        field: The field to tally.

    Returns:
        Distinct values, most frequent first, ties in name order.

    Raises:
        DataError: The file cannot be read, or no row has a non-blank value for the field.
    """
    data = _read(path)
    counts: Counter[str] = Counter()
    for _, row in data.rows:
        value = row.get(field)
        if value is None:
            continue
        text = _as_text(value)
        if text.strip():
            counts[text] += 1
    if not counts:
        raise DataError(f"{data.name}: no row has a value for field {field!r}")
    return sorted(counts, key=lambda value: (-counts[value], value))


def _read(path: str | Path) -> _Rows:
    name = printable(path)
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        shown = printable(Path(path).suffix) or "(none)"
        raise DataError(f"{name}: unsupported file type {shown!r}; accepted: {', '.join(SUFFIXES)}")
    handle = open_regular(path, "data file", MAX_FILE_BYTES, DataError)
    if suffix == ".parquet":
        return _read_parquet(handle, name)
    if suffix == ".jsonl":
        return _Rows(name=name, unit="line", rows=_capped(_parse_jsonl(handle, name), name, "line"), columns=None)
    if suffix == ".json":
        return _Rows(name=name, unit="row", rows=_capped(_parse_json(handle, name), name, "row"), columns=None)
    return _read_csv(handle, name)


def _capped(rows: Iterator[tuple[int, dict[str, Any]]], name: str, unit: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Check every row's shape and sizes as it streams by, and stop at MAX_ROWS."""
    for count, (number, row) in enumerate(rows, start=1):
        if count > MAX_ROWS:
            raise DataError(f"{name}: more than {MAX_ROWS:,} records; split the file or cap it")
        _check_value(row, f"{name} {unit} {number}")
        yield number, row


def _check_value(row: dict[str, Any], where: str) -> None:
    """Caps on fields, nesting and text length; lone surrogates and NUL characters are refused."""
    stack: list[tuple[Any, int]] = [(row, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if len(value) > MAX_FIELD_CHARS:
                raise DataError(
                    f"{where}: a text value has {len(value):,} characters, over the limit of {MAX_FIELD_CHARS:,}"
                )
            _check_text(value, where)
            continue
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise DataError(f"{where}: values nested more than {MAX_DEPTH} levels deep")
            if len(value) > MAX_FIELDS:
                kind = "fields" if isinstance(value, dict) else "items"
                raise DataError(f"{where}: {len(value):,} {kind} in one value, over the limit of {MAX_FIELDS}")
            items = value.values() if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)
            if isinstance(value, dict):
                for key in value:
                    _check_text(key, where, "a field name")


def _check_text(text: str, where: str, what: str = "a text value") -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        # A lone surrogate (JSON "\\ud800") is valid JSON but no tokenizer can encode it.
        raise DataError(
            f"{where}: {what} holds a lone surrogate (character {err.start + 1}), which is not valid Unicode text"
        ) from None
    if "\x00" in text:
        raise DataError(
            f"{where}: {what} holds a NUL character (character {text.index(chr(0)) + 1}); is this a binary file?"
        )


def _lines(handle: BinaryIO, name: str) -> Iterator[tuple[int, str]]:
    """Decoded lines with their 1-based numbers; bad UTF-8 is reported by line and byte offset."""
    offset = 0
    with handle:
        for number, raw in enumerate(iter(lambda: handle.readline(MAX_LINE_BYTES + 1), b""), start=1):
            if len(raw) > MAX_LINE_BYTES:
                raise DataError(f"{name} line {number}: longer than {MAX_LINE_BYTES // MIB} MiB")
            # Spreadsheet exports often start with a BOM; it is not part of the first key or column name.
            skipped = len(_UTF8_BOM) if number == 1 and raw.startswith(_UTF8_BOM) else 0
            try:
                yield number, raw[skipped:].decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataError(
                    f"{name} line {number}: not valid UTF-8 (byte offset {offset + skipped + error.start} in the file)"
                ) from None
            offset += len(raw)


def _json_value(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        # Only json's fixed wording and the column: neither can carry record text.
        raise DataError(f"{where}: invalid JSON ({error.msg}, column {error.colno})") from None
    except RecursionError:
        raise DataError(f"{where}: invalid JSON (nested too deeply)") from None
    except ValueError:  # an integer of more than 4300 digits (sys.get_int_max_str_digits)
        raise DataError(f"{where}: invalid JSON (a number is too long)") from None


def _parse_jsonl(handle: BinaryIO, name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    # Lines end at "\\n" only: str.splitlines would also break on U+2028 and friends, which JSON allows in strings.
    for number, line in _lines(handle, name):
        if line.strip():
            yield number, _require_object(_json_value(line, f"{name} line {number}"), f"{name} line {number}")


def _parse_json(handle: BinaryIO, name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    text = "".join(line for _, line in _lines(handle, name))
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{name} line {error.lineno}: invalid JSON ({error.msg}, column {error.colno})") from None
    except RecursionError:
        raise DataError(f"{name}: invalid JSON (nested too deeply)") from None
    except ValueError:
        raise DataError(f"{name}: invalid JSON (a number is too long)") from None
    if not isinstance(value, list):
        raise DataError(f"{name}: expected a top-level JSON list of objects, found {_kind(value)}")
    del text
    for number, item in enumerate(value, start=1):
        yield number, _require_object(item, f"{name} row {number}")


def _read_csv(handle: BinaryIO, name: str) -> _Rows:
    lines = (line for _, line in _lines(handle, name))
    # The csv module sees the raw line ends (they are kept by readline), so quoted cells may span lines.
    reader = csv.reader(lines)
    header: list[str] | None = None
    header_line = 0
    first: list[str] = []
    while header is None:
        start = reader.line_num + 1
        cells = _next_cells(reader, name, start)
        if cells is None:
            raise DataError(f"{name} contains no records")
        if not cells:
            continue
        if len(cells) > MAX_FIELDS:
            raise DataError(f"{name} line {start}: {len(cells):,} columns, over the limit of {MAX_FIELDS}")
        for cell in cells:
            _check_text(cell, f"{name} line {start}", "a column name")
        header, header_line, first = cells, start, cells
        seen: dict[str, int] = {}
        for position, column in enumerate(first, start=1):
            if column in seen:  # header cells may be record text (a file without a header row): positions only
                raise DataError(
                    f"{name} line {start}: columns {seen[column]} and {position} of the header have the same name"
                )
            seen[column] = position

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        while True:
            start = reader.line_num + 1
            cells = _next_cells(reader, name, start)
            if cells is None:
                return
            if not cells:
                continue
            if len(cells) != len(first):
                raise DataError(f"{name} line {start}: has {len(cells)} fields but the header has {len(first)}")
            yield start, dict(zip(first, cells, strict=True))

    return _Rows(
        name=name, unit="line", rows=_capped(rows(), name, "line"), columns=tuple(header), header_line=header_line
    )


def _next_cells(reader: Any, name: str, start: int) -> list[str] | None:
    try:
        return next(reader)
    except StopIteration:
        return None
    except csv.Error as error:
        # csv.Error messages are fixed wording plus dialect characters, never cell text.
        raise DataError(f"{name} line {start}: malformed CSV ({error})") from None


def _read_parquet(handle: BinaryIO, name: str) -> _Rows:
    # Imported here so that JSON-only callers do not pay for loading pyarrow.
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(handle)
        num_rows, schema = parquet.metadata.num_rows, parquet.schema_arrow
    except Exception as error:  # noqa: BLE001 - pyarrow raises many types; only the class name is safe to show
        handle.close()
        raise DataError(f"{name}: not a readable Parquet file ({type(error).__name__})") from None
    # Dictionary encoding lets a few KB stand for millions of rows: check the counts before decoding any.
    if num_rows > MAX_ROWS:
        handle.close()
        raise DataError(f"{name}: {num_rows:,} records, more than {MAX_ROWS:,}; split the file or cap it")
    if len(schema.names) > MAX_FIELDS:
        handle.close()
        raise DataError(f"{name}: {len(schema.names):,} columns, over the limit of {MAX_FIELDS}")

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        number, budget = 0, MAX_FILE_BYTES
        with handle:
            try:
                for batch in parquet.iter_batches(batch_size=256):
                    budget -= _decoded_bytes(batch)  # dictionaries expanded: what the rows will cost in memory
                    if budget < 0:
                        raise DataError(
                            f"{name}: more than {MAX_FILE_BYTES // MIB} MiB of decoded data "
                            f"(at row {number + 1}); split the file"
                        )
                    for item in batch.to_pylist():
                        number += 1
                        # Parquet fills columns a row does not have with null: leave them out of the row.
                        yield number, {key: value for key, value in item.items() if value is not None}
            except DataError:
                raise
            except Exception as error:  # noqa: BLE001 - as above
                raise DataError(
                    f"{name} row {number + 1}: not a readable Parquet file ({type(error).__name__})"
                ) from None

    return _Rows(name=name, unit="row", rows=_capped(rows(), name, "row"), columns=tuple(schema.names))


def _decoded_bytes(batch: Any) -> int:
    import pyarrow as pa
    import pyarrow.compute as pc

    total = 0
    for column in batch.columns:
        if pa.types.is_dictionary(column.type):
            values = column.dictionary
            lengths = (
                pc.binary_length(values)
                if pa.types.is_string(values.type) or pa.types.is_binary(values.type)
                else pa.array([values.nbytes // max(len(values), 1)] * len(values), pa.int64())
            )
            total += pc.sum(pc.take(lengths, column.indices)).as_py() or 0
        else:
            total += column.nbytes
    return total


def _check_columns(
    data: _Rows,
    header: tuple[str, ...],
    columns: ColumnMapping | None,
    where: tuple[str, str] | None,
) -> None:
    # Tabular files know their columns up front, so a misnamed column is reported once, not per row.
    wanted: list[str] = []
    if columns is not None:
        wanted += [columns.prompt, columns.completion]
        if columns.system is not None:
            wanted.append(columns.system)
    if where is not None:
        wanted.append(where[0])
    location = f"{data.name} line {data.header_line}" if data.header_line else data.name
    for column in wanted:
        if column not in header:
            # The header's own names may be record text (a CSV without a header row): count them, never show them.
            raise DataError(
                f"{location}: column {column!r} is missing (the file has {len(header)} columns"
                + ("; is the first line a header row?)" if data.header_line else ")")
            )


def _matches(row: dict[str, Any], where: tuple[str, str]) -> bool:
    value = row.get(where[0])
    return value is not None and _as_text(value) == where[1]


def _detected_record(row: dict[str, Any], where: str) -> ChatRecord:
    complete = [shape for shape in _FLAT_SHAPES if shape[0] in row and shape[1] in row]
    chat = _CHAT_KEY in row
    if len(complete) + chat > 1:
        found = [f"{a}/{b}" for a, b in complete] + ([_CHAT_KEY] if chat else [])
        raise DataError(
            f"{where}: ambiguous record shape (it has the fields of {' and '.join(found)}); use a column mapping"
        )
    if chat:
        return _chat_record(row[_CHAT_KEY], where)
    if complete:
        return _flat_record(row, *complete[0], "system", where)
    partial = [shape for shape in _FLAT_SHAPES if shape[0] in row or shape[1] in row]
    if len(partial) == 1:
        # The row clearly means this shape, so report the missing field rather than "unrecognised".
        return _flat_record(row, *partial[0], "system", where)
    # Field names read from the file are data (some exports key records by patient): count them only.
    raise DataError(
        f"{where}: no recognisable record shape ({len(row)} fields, none of them an accepted name); "
        f"accepted: {_SHAPES_TEXT}"
    )


def _flat_record(row: dict[str, Any], prompt: str, completion: str, system: str | None, where: str) -> ChatRecord:
    prompt_text = _required_text(row, prompt, where)
    completion_text = _required_text(row, completion, where)
    turns: list[tuple[str, str]] = []
    if system is not None:
        system_text = _optional_text(row, system, where)
        if system_text is not None:
            turns.append(("system", system_text))
    turns.append(("user", prompt_text))
    return ChatRecord(prompt=tuple(turns), completion=completion_text)


def _chat_record(messages: Any, where: str) -> ChatRecord:
    if not isinstance(messages, list):
        raise DataError(f"{where}: field 'messages' is not a list (found {_kind(messages)})")
    if len(messages) < 2:
        raise DataError(f"{where}: field 'messages' needs at least a user turn and an assistant answer")
    turns: list[tuple[str, str]] = []
    for index, message in enumerate(messages, start=1):
        location = f"{where} message {index}"
        if not isinstance(message, dict):
            raise DataError(f"{location}: not an object (found {_kind(message)})")
        role = _required_text(message, "role", location)
        if role not in ROLES:
            # The role value itself is record text, so only the accepted roles are named.
            raise DataError(f"{location}: unknown role; accepted: {', '.join(ROLES)}")
        turns.append((role, _required_text(message, "content", location)))
    if turns[-1][0] != "assistant":
        raise DataError(f"{where}: the last message must have role 'assistant' (found {turns[-1][0]!r})")
    if not any(role == "user" for role, _ in turns[:-1]):
        raise DataError(f"{where}: no user message before the assistant answer")
    return ChatRecord(prompt=tuple(turns[:-1]), completion=turns[-1][1])


def _required_text(row: dict[str, Any], field: str, where: str) -> str:
    if field not in row:
        raise DataError(f"{where}: field {field!r} is missing")
    value = row[field]
    if value is None:
        raise DataError(f"{where}: field {field!r} is null")
    if not isinstance(value, str):
        raise DataError(f"{where}: field {field!r} is not a string (found {_kind(value)})")
    if not value.strip():
        raise DataError(f"{where}: field {field!r} is empty")
    return value


def _optional_text(row: dict[str, Any], field: str, where: str) -> str | None:
    value = row.get(field)
    # CSV and Parquet cannot leave a cell out of one row, so blank or null means "no system message".
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise DataError(f"{where}: field {field!r} is not a string (found {_kind(value)})")
    return value


def _require_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DataError(f"{where}: not an object (found {_kind(value)})")
    return value


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
