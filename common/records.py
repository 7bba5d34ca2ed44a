"""Load a site's training records from .jsonl, .json, .csv or .parquet with strict, text-free validation."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import DataError

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
# Key names may be shown, but a pathological file could have thousands of them.
_MAX_KEYS_SHOWN = 12


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
    rows: list[tuple[int, dict[str, Any]]]
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
            records.append(
                _flat_record(
                    row, columns.prompt, columns.completion, columns.system, where_text
                )
            )
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
            raise DataError(
                f"{data.name} contains no records with field {where[0]!r} equal to the requested value"
            )
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
    return _read(path).rows


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
    name = str(path)
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(
            f"{name}: unsupported file type {file.suffix or '(none)'!r}; accepted: {', '.join(SUFFIXES)}"
        )
    if not file.exists():
        raise DataError(f"{name} does not exist")
    if file.is_dir():
        raise DataError(f"{name} is a directory, not a data file")
    if suffix == ".parquet":
        return _read_parquet(file, name)
    try:
        raw = file.read_bytes()
    except OSError as error:
        raise DataError(f"{name} cannot be read ({type(error).__name__})") from None
    text = _decode(raw, name)
    if suffix == ".jsonl":
        return _parse_jsonl(text, name)
    if suffix == ".json":
        return _parse_json(text, name)
    return _parse_csv(text, name)


def _decode(raw: bytes, name: str) -> str:
    # Spreadsheet exports often start with a BOM; it is not part of the first key or column name.
    skipped = len(_UTF8_BOM) if raw.startswith(_UTF8_BOM) else 0
    try:
        return raw[skipped:].decode("utf-8")
    except UnicodeDecodeError as error:
        offset = skipped + error.start
        line = raw.count(b"\n", 0, offset) + 1
        raise DataError(
            f"{name} line {line}: not valid UTF-8 (byte offset {offset} in the file)"
        ) from None


def _parse_jsonl(text: str, name: str) -> _Rows:
    rows: list[tuple[int, dict[str, Any]]] = []
    # Split on "\n" only: str.splitlines would also break on U+2028 and friends, which JSON allows in strings.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            # Only json's fixed wording and the column: neither can carry record text.
            raise DataError(
                f"{name} line {number}: invalid JSON ({error.msg}, column {error.colno})"
            ) from None
        except RecursionError:
            raise DataError(
                f"{name} line {number}: invalid JSON (nested too deeply)"
            ) from None
        rows.append((number, _require_object(value, f"{name} line {number}")))
    return _Rows(name=name, unit="line", rows=rows, columns=None)


def _parse_json(text: str, name: str) -> _Rows:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(
            f"{name} line {error.lineno}: invalid JSON ({error.msg}, column {error.colno})"
        ) from None
    except RecursionError:
        raise DataError(f"{name}: invalid JSON (nested too deeply)") from None
    if not isinstance(value, list):
        raise DataError(
            f"{name}: expected a top-level JSON list of objects, found {_kind(value)}"
        )
    rows = [
        (number, _require_object(item, f"{name} row {number}"))
        for number, item in enumerate(value, start=1)
    ]
    return _Rows(name=name, unit="row", rows=rows, columns=None)


def _parse_csv(text: str, name: str) -> _Rows:
    # newline="" lets the csv module see the raw line ends, so quoted cells may span lines.
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    header_line = 0
    rows: list[tuple[int, dict[str, Any]]] = []
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            # csv.Error messages are fixed wording plus dialect characters, never cell text.
            raise DataError(f"{name} line {start}: malformed CSV ({error})") from None
        if not cells:
            continue
        if header is None:
            header, header_line = cells, start
            duplicates = sorted(
                column for column, count in Counter(cells).items() if count > 1
            )
            if duplicates:
                raise DataError(
                    f"{name} line {start}: duplicate column {duplicates[0]!r} in the header"
                )
            continue
        if len(cells) != len(header):
            raise DataError(
                f"{name} line {start}: has {len(cells)} fields but the header has {len(header)}"
            )
        rows.append((start, dict(zip(header, cells, strict=True))))
    if header is None:
        raise DataError(f"{name} contains no records")
    return _Rows(
        name=name,
        unit="line",
        rows=rows,
        columns=tuple(header),
        header_line=header_line,
    )


def _read_parquet(file: Path, name: str) -> _Rows:
    # Imported here so that JSON-only callers do not pay for loading pyarrow.
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(file)
        items = table.to_pylist()
    except Exception as error:  # noqa: BLE001 - pyarrow raises many types; only the class name is safe to show
        raise DataError(
            f"{name}: not a readable Parquet file ({type(error).__name__})"
        ) from None
    rows = [
        (number, {key: value for key, value in item.items() if value is not None})
        for number, item in enumerate(items, start=1)
    ]
    return _Rows(name=name, unit="row", rows=rows, columns=tuple(table.column_names))


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
            raise DataError(
                f"{location}: column {column!r} is missing (columns: {_names(header)})"
            )


def _matches(row: dict[str, Any], where: tuple[str, str]) -> bool:
    value = row.get(where[0])
    return value is not None and _as_text(value) == where[1]


def _detected_record(row: dict[str, Any], where: str) -> ChatRecord:
    complete = [shape for shape in _FLAT_SHAPES if shape[0] in row and shape[1] in row]
    chat = _CHAT_KEY in row
    if len(complete) + chat > 1:
        raise DataError(
            f"{where}: ambiguous record shape (keys: {_names(row)}); use a column mapping"
        )
    if chat:
        return _chat_record(row[_CHAT_KEY], where)
    if complete:
        return _flat_record(row, *complete[0], "system", where)
    partial = [shape for shape in _FLAT_SHAPES if shape[0] in row or shape[1] in row]
    if len(partial) == 1:
        # The row clearly means this shape, so report the missing field rather than "unrecognised".
        return _flat_record(row, *partial[0], "system", where)
    raise DataError(
        f"{where}: no recognisable record shape (keys: {_names(row)}); accepted: {_SHAPES_TEXT}"
    )


def _flat_record(
    row: dict[str, Any], prompt: str, completion: str, system: str | None, where: str
) -> ChatRecord:
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
        raise DataError(
            f"{where}: field 'messages' is not a list (found {_kind(messages)})"
        )
    if len(messages) < 2:
        raise DataError(
            f"{where}: field 'messages' needs at least a user turn and an assistant answer"
        )
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
        raise DataError(
            f"{where}: the last message must have role 'assistant' (found {turns[-1][0]!r})"
        )
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
        raise DataError(
            f"{where}: field {field!r} is not a string (found {_kind(value)})"
        )
    if not value.strip():
        raise DataError(f"{where}: field {field!r} is empty")
    return value


def _optional_text(row: dict[str, Any], field: str, where: str) -> str | None:
    value = row.get(field)
    # CSV and Parquet cannot leave a cell out of one row, so blank or null means "no system message".
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise DataError(
            f"{where}: field {field!r} is not a string (found {_kind(value)})"
        )
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


def _names(keys: Any) -> str:
    names = sorted(str(key) for key in keys)
    shown = ", ".join(repr(name) for name in names[:_MAX_KEYS_SHOWN])
    if len(names) > _MAX_KEYS_SHOWN:
        shown += f", ... ({len(names) - _MAX_KEYS_SHOWN} more)"
    return shown or "none"
