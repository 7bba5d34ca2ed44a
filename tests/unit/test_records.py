"""Unit tests for common.records: formats, shapes, filters and text-free error messages."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.errors import DataError
from common.records import (
    ChatRecord,
    ColumnMapping,
    field_values,
    load_records,
    read_rows,
)

SECRET = "Jane Roe 555-0199"

FLAT_ROWS = [
    {"input": "What is a fever?", "output": "A raised body temperature."},
    {
        "prompt": "Define tachycardia.",
        "completion": "A fast heart rate.",
        "system": "Be brief.",
    },
    {"question": "What is HbA1c?", "answer": "A three-month blood sugar average."},
]
FLAT_EXPECTED = [
    ChatRecord(prompt=(("user", "What is a fever?"),), completion="A raised body temperature."),
    ChatRecord(
        prompt=(("system", "Be brief."), ("user", "Define tachycardia.")),
        completion="A fast heart rate.",
    ),
    ChatRecord(
        prompt=(("user", "What is HbA1c?"),),
        completion="A three-month blood sugar average.",
    ),
]
CHAT_ROW = {
    "messages": [
        {"role": "system", "content": "You are a nurse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Is 37.2 C a fever?"},
        {"role": "assistant", "content": "No, that is normal."},
    ]
}
CHAT_EXPECTED = ChatRecord(
    prompt=(
        ("system", "You are a nurse."),
        ("user", "Hi"),
        ("assistant", "Hello."),
        ("user", "Is 37.2 C a fever?"),
    ),
    completion="No, that is normal.",
)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_json(path: Path, rows: object) -> Path:
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    # from_pylist takes its columns from the first row only, so give every row every key.
    keys = dict.fromkeys(key for row in rows for key in row)
    pq.write_table(
        pa.Table.from_pylist([{key: row.get(key) for key in keys} for row in rows]),
        path,
    )
    return path


def assert_error(path: Path, where: str, reason: str) -> None:
    """Loading path fails naming the file, the row and the reason, and leaks no record text."""
    with pytest.raises(DataError, match=re.escape(f"{path} {where}: ") + reason) as info:
        load_records(path)
    assert SECRET not in str(info.value)
    assert "Jane" not in str(info.value)


# --- formats and shapes -------------------------------------------------------------------------


def test_load_records_reads_every_shape_from_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "site.jsonl", [*FLAT_ROWS, CHAT_ROW])
    assert load_records(path) == [*FLAT_EXPECTED, CHAT_EXPECTED]


def test_load_records_reads_every_shape_from_json(tmp_path: Path) -> None:
    path = write_json(tmp_path / "site.json", [*FLAT_ROWS, CHAT_ROW])
    assert load_records(str(path)) == [*FLAT_EXPECTED, CHAT_EXPECTED]


@pytest.mark.parametrize("shape", [("input", "output"), ("prompt", "completion"), ("question", "answer")])
def test_load_records_reads_flat_shapes_from_csv(tmp_path: Path, shape: tuple[str, str]) -> None:
    path = write_csv(
        tmp_path / "site.csv",
        [*shape, "system"],
        [
            ["Q one, with comma", "A one\nspans two lines", ""],
            ["Q two", "A two", "Be kind."],
        ],
    )
    assert load_records(path) == [
        ChatRecord(prompt=(("user", "Q one, with comma"),), completion="A one\nspans two lines"),
        ChatRecord(prompt=(("system", "Be kind."), ("user", "Q two")), completion="A two"),
    ]


def test_load_records_reads_flat_and_chat_shapes_from_parquet(tmp_path: Path) -> None:
    flat = write_parquet(tmp_path / "flat.parquet", FLAT_ROWS)
    chat = write_parquet(tmp_path / "chat.parquet", [CHAT_ROW])
    assert load_records(flat) == FLAT_EXPECTED
    assert load_records(chat) == [CHAT_EXPECTED]


def test_load_records_keeps_text_verbatim(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "site.jsonl", [{"input": "  padded  ", "output": "\tanswer\n"}])
    assert load_records(path) == [ChatRecord(prompt=(("user", "  padded  "),), completion="\tanswer\n")]


def test_load_records_keeps_csv_cells_as_strings(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "site.csv", ["question", "answer"], [["007", "NA"]])
    assert load_records(path) == [ChatRecord(prompt=(("user", "007"),), completion="NA")]


def test_load_records_accepts_utf8_bom_and_non_ascii(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    path.write_bytes(b"\xef\xbb\xbfquestion,answer\n" + "Fièvre ?,Température élevée\n".encode())
    assert load_records(path) == [ChatRecord(prompt=(("user", "Fièvre ?"),), completion="Température élevée")]


def test_load_records_skips_blank_jsonl_lines(tmp_path: Path) -> None:
    path = tmp_path / "site.jsonl"
    path.write_text(
        "\n" + json.dumps(FLAT_ROWS[0]) + "\n   \n" + json.dumps(FLAT_ROWS[2]) + "\n\n",
        encoding="utf-8",
    )
    assert load_records(path) == [FLAT_EXPECTED[0], FLAT_EXPECTED[2]]
    assert [number for number, _ in read_rows(path)] == [2, 4]


def test_load_records_uses_column_mapping(tmp_path: Path) -> None:
    rows = [
        {"q": "Q1", "a": "A1", "sys": "S1", "input": "ignored"},
        {"q": "Q2", "a": "A2", "sys": ""},
    ]
    mapping = ColumnMapping(prompt="q", completion="a", system="sys")
    expected = [
        ChatRecord(prompt=(("system", "S1"), ("user", "Q1")), completion="A1"),
        ChatRecord(prompt=(("user", "Q2"),), completion="A2"),
    ]
    assert load_records(write_jsonl(tmp_path / "m.jsonl", rows), mapping) == expected
    assert load_records(write_parquet(tmp_path / "m.parquet", rows), mapping) == expected
    csv_path = write_csv(tmp_path / "m.csv", ["q", "a", "sys"], [["Q1", "A1", "S1"], ["Q2", "A2", ""]])
    assert load_records(csv_path, mapping) == expected


def test_load_records_where_keeps_only_matching_rows_unvalidated(
    tmp_path: Path,
) -> None:
    rows = [
        {"source": "A", "question": "Q1", "answer": "A1"},
        {"source": "B", "question": "", "note": SECRET},  # invalid but filtered out
        {"source": "A", "question": "Q3", "answer": "A3"},
        {"question": "Q4", "answer": "A4"},
        {"source": 7, "question": "Q5", "answer": "A5"},
    ]
    path = write_jsonl(tmp_path / "all.jsonl", rows)
    records = load_records(path, where=("source", "A"))
    assert [record.completion for record in records] == ["A1", "A3"]
    assert [record.completion for record in load_records(path, where=("source", "7"))] == ["A5"]


def test_load_records_where_on_csv(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "all.csv",
        ["source", "question", "answer"],
        [["A", "Q1", "A1"], ["B", "Q2", "A2"]],
    )
    assert [record.completion for record in load_records(path, where=("source", "B"))] == ["A2"]


def test_load_records_where_matching_nothing_is_empty(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "all.jsonl", [{"source": SECRET, "question": "Q", "answer": "A"}])
    with pytest.raises(DataError, match=r"all\.jsonl contains no records with field 'source'") as info:
        load_records(path, where=("source", "other"))
    assert SECRET not in str(info.value)


def test_read_rows_numbers_rows_as_users_see_them(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "s.csv", ["question", "answer"], [["Q1", "two\nlines"], ["Q2", "A2"]])
    assert [number for number, _ in read_rows(csv_path)] == [2, 4]
    json_path = write_json(tmp_path / "s.json", FLAT_ROWS)
    assert [number for number, _ in read_rows(json_path)] == [1, 2, 3]
    parquet_path = write_parquet(tmp_path / "s.parquet", FLAT_ROWS)
    numbered = read_rows(parquet_path)
    assert [number for number, _ in numbered] == [1, 2, 3]
    assert numbered[0][1] == FLAT_ROWS[0]  # Parquet nulls for absent columns are dropped


def test_field_values_orders_by_count_then_name(tmp_path: Path) -> None:
    sources = ["b", "a", "c", "a", "b", "c", "a", "d", ""]
    rows = [{"source": source, "question": "Q", "answer": "A"} for source in sources]
    rows.append({"question": "Q", "answer": "A"})
    assert field_values(write_jsonl(tmp_path / "f.jsonl", rows), "source") == [
        "a",
        "b",
        "c",
        "d",
    ]
    csv_path = write_csv(tmp_path / "f.csv", ["source"], [[source] for source in sources])
    assert field_values(csv_path, "source") == ["a", "b", "c", "d"]


def test_field_values_rejects_absent_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "f.jsonl", [{"question": SECRET, "answer": "A"}])
    with pytest.raises(DataError, match=r"f\.jsonl: no row has a value for field 'source'") as info:
        field_values(path, "source")
    assert SECRET not in str(info.value)


# --- file-level errors --------------------------------------------------------------------------


def test_load_records_rejects_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match=re.escape(f"{path} does not exist")):
        load_records(path)


def test_load_records_rejects_directory(tmp_path: Path) -> None:
    path = tmp_path / "dir.jsonl"
    path.mkdir()
    with pytest.raises(DataError, match=re.escape(f"{path} is a directory")):
        load_records(path)


def test_load_records_rejects_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "site.txt"
    path.write_text(SECRET, encoding="utf-8")
    with pytest.raises(
        DataError,
        match=r"site\.txt: unsupported file type '\.txt'; accepted: \.jsonl, \.json",
    ) as info:
        load_records(path)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_load_records_rejects_non_utf8(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"site{suffix}"
    head = {
        ".jsonl": b'{"question": "x", "answer": "y"}\n\n',
        ".json": b"[\n\n",
        ".csv": b"question,answer\nQ,A\n",
    }[suffix]
    path.write_bytes(head + b'"' + SECRET.encode() + b"\xff\xfe\n")
    offset = len(head) + 1 + len(SECRET)
    with pytest.raises(
        DataError,
        match=re.escape(f"{path} line 3: not valid UTF-8 (byte offset {offset}"),
    ) as info:
        load_records(path)
    assert SECRET not in str(info.value)


def test_load_records_rejects_invalid_json_line(tmp_path: Path) -> None:
    path = tmp_path / "site.jsonl"
    path.write_text(
        json.dumps(FLAT_ROWS[0]) + "\n" + '{"input": "' + SECRET + '", "output": }\n',
        encoding="utf-8",
    )
    assert_error(path, "line 2", r"invalid JSON \(Expecting value, column \d+\)")


def test_load_records_rejects_invalid_json_file(tmp_path: Path) -> None:
    path = tmp_path / "site.json"
    path.write_text('[\n  {"input": "' + SECRET + '",\n   "output" "x"}\n]', encoding="utf-8")
    assert_error(path, "line 3", r"invalid JSON \(Expecting ':' delimiter, column \d+\)")


def test_load_records_rejects_json_that_is_not_a_list(tmp_path: Path) -> None:
    path = write_json(tmp_path / "site.json", {"data": [{"input": SECRET, "output": "x"}]})
    with pytest.raises(
        DataError,
        match=r"site\.json: expected a top-level JSON list of objects, found object",
    ) as info:
        load_records(path)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(("suffix", "where"), [(".jsonl", "line 2"), (".json", "row 2")])
def test_load_records_rejects_row_that_is_not_an_object(tmp_path: Path, suffix: str, where: str) -> None:
    rows = [FLAT_ROWS[0], [SECRET, "x"]]
    path = (write_jsonl if suffix == ".jsonl" else write_json)(tmp_path / f"site{suffix}", rows)
    assert_error(path, where, r"not an object \(found list\)")


def test_load_records_rejects_unreadable_parquet(tmp_path: Path) -> None:
    path = tmp_path / "site.parquet"
    path.write_bytes(b"PAR1" + SECRET.encode() + b"not really parquet")
    with pytest.raises(DataError, match=r"site\.parquet: not a readable Parquet file \(\w+\)") as info:
        load_records(path)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_load_records_rejects_empty_data_set(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"empty{suffix}"
    path.write_text("\n\n" if suffix == ".jsonl" else "[]", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{path} contains no records")):
        load_records(path)


def test_load_records_rejects_csv_with_header_only(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "empty.csv", ["question", "answer"], [])
    with pytest.raises(DataError, match=re.escape(f"{path} contains no records")):
        load_records(path)


# --- row-level errors ---------------------------------------------------------------------------


def test_load_records_rejects_unrecognised_shape(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "site.jsonl", [FLAT_ROWS[0], {"text": SECRET, "label": "x"}])
    assert_error(
        path,
        "line 2",
        r"no recognisable record shape \(2 fields, none of them an accepted name\); accepted: \{input, output\}",
    )


def test_load_records_rejects_ambiguous_shape(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "site.jsonl",
        [{"input": SECRET, "output": "x", "question": "q", "answer": "a"}],
    )
    assert_error(path, "line 1", "ambiguous record shape")


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"input": SECRET}, "field 'output' is missing"),
        ({"input": SECRET, "output": ""}, "field 'output' is empty"),
        ({"input": SECRET, "output": " \n\t"}, "field 'output' is empty"),
        (
            {"input": SECRET, "output": 42},
            r"field 'output' is not a string \(found number\)",
        ),
        ({"input": SECRET, "output": None}, "field 'output' is null"),
        (
            {"question": [SECRET], "answer": "a"},
            r"field 'question' is not a string \(found list\)",
        ),
        (
            {"prompt": "p", "completion": "c", "system": 3},
            r"field 'system' is not a string \(found number\)",
        ),
    ],
)
def test_load_records_rejects_bad_flat_field(tmp_path: Path, row: dict, reason: str) -> None:
    path = write_jsonl(tmp_path / "site_a.jsonl", [FLAT_ROWS[0]] * 16 + [row])
    assert_error(path, "line 17", reason)


def test_load_records_rejects_empty_field(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "site_a.jsonl",
        [FLAT_ROWS[0]] * 16 + [{"input": SECRET, "output": "  "}],
    )
    with pytest.raises(DataError, match=re.escape(f"{path} line 17: field 'output' is empty")) as info:
        load_records(path)
    assert SECRET not in str(info.value)


def _chat(*messages: object) -> dict:
    return {"messages": list(messages)}


@pytest.mark.parametrize(
    ("row", "where", "reason"),
    [
        (
            {"messages": SECRET},
            "line 3",
            r"field 'messages' is not a list \(found string\)",
        ),
        (
            _chat({"role": "assistant", "content": SECRET}),
            "line 3",
            "field 'messages' needs at least a user turn",
        ),
        (
            _chat({"role": "user", "content": SECRET}, "text"),
            "line 3 message 2",
            r"not an object \(found string\)",
        ),
        (
            _chat({"role": "user", "content": SECRET}, {"role": "assistant"}),
            "line 3 message 2",
            "field 'content' is missing",
        ),
        (
            _chat(
                {"role": "user", "content": SECRET},
                {"role": "assistant", "content": ""},
            ),
            "line 3 message 2",
            "field 'content' is empty",
        ),
        (
            _chat({"content": SECRET}, {"role": "assistant", "content": "a"}),
            "line 3 message 1",
            "field 'role' is missing",
        ),
        (
            _chat(
                {"role": "Dr " + SECRET, "content": "q"},
                {"role": "assistant", "content": "a"},
            ),
            "line 3 message 1",
            "unknown role; accepted: system, user, assistant",
        ),
        (
            _chat({"role": "user", "content": SECRET}, {"role": "user", "content": "more"}),
            "line 3",
            r"the last message must have role 'assistant' \(found 'user'\)",
        ),
        (
            _chat(
                {"role": "system", "content": SECRET},
                {"role": "assistant", "content": "a"},
            ),
            "line 3",
            "no user message before the assistant answer",
        ),
    ],
)
def test_load_records_rejects_bad_chat_row(tmp_path: Path, row: dict, where: str, reason: str) -> None:
    path = write_jsonl(tmp_path / "chat.jsonl", [CHAT_ROW, CHAT_ROW, row])
    assert_error(path, where, reason)


def test_load_records_rejects_bad_row_in_json_and_parquet(tmp_path: Path) -> None:
    rows = [FLAT_ROWS[0], {"input": SECRET, "output": ""}]
    assert_error(write_json(tmp_path / "site.json", rows), "row 2", "field 'output' is empty")
    assert_error(
        write_parquet(tmp_path / "site.parquet", rows),
        "row 2",
        "field 'output' is empty",
    )


def test_load_records_treats_parquet_null_as_missing(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "site.parquet", [FLAT_ROWS[2], {"question": SECRET, "answer": None}])
    assert_error(path, "row 2", "field 'answer' is missing")


def test_load_records_rejects_csv_missing_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "site.csv", ["question", "reply"], [[SECRET, "x"]])
    mapping = ColumnMapping(prompt="question", completion="answer")
    with pytest.raises(DataError, match=re.escape(f"{path} line 1: column 'answer' is missing")) as info:
        load_records(path, mapping)
    assert SECRET not in str(info.value)


def test_load_records_rejects_csv_row_without_shape(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "site.csv", ["question", "reply"], [[SECRET, "x"]])
    assert_error(path, "line 2", "field 'answer' is missing")


def test_load_records_rejects_csv_row_with_wrong_field_count(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    path.write_text(f"question,answer\nQ,A\n{SECRET},A,extra\n", encoding="utf-8")
    assert_error(path, "line 3", "has 3 fields but the header has 2")


def test_load_records_rejects_empty_csv_cell(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "site.csv", ["question", "answer"], [["Q", "A"], [SECRET, ""]])
    assert_error(path, "line 3", "field 'answer' is empty")


def test_load_records_rejects_csv_missing_filter_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "site.csv", ["question", "answer"], [[SECRET, "x"]])
    with pytest.raises(DataError, match=re.escape(f"{path} line 1: column 'source' is missing")) as info:
        load_records(path, where=("source", "A"))
    assert SECRET not in str(info.value)


def test_load_records_rejects_parquet_missing_column(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "site.parquet", [{"question": SECRET, "answer": "a"}])
    with pytest.raises(
        DataError,
        match=r"site\.parquet: column 'body' is missing \(the file has 2 columns\)",
    ):
        load_records(path, ColumnMapping(prompt="question", completion="body"))


def test_load_records_fails_before_returning_anything(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "site.jsonl", [FLAT_ROWS[0]] * 50 + [{"input": SECRET, "output": ""}])
    with pytest.raises(DataError):
        load_records(path)
