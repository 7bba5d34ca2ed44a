"""Property-based fuzzing (hypothesis) of the boundaries: record readers, config builder, safe YAML, messages.

Each property is the error contract: any input either gives a valid result or raises fedcare's own
error whose message is one printable line that never quotes the planted secret.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.config import RunConfig, run_config_from_dict
from common.errors import ConfigError, DataError, FedcareError, printable
from common.records import MAX_FIELD_CHARS, load_records
from common.safe_yaml import load_yaml_mapping

SECRET = "Jane Roe MRN 4711-0815"
# Few examples per property keep the default tier fast; the slow soak (test_corpus.py) covers breadth.
FAST = settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

_text = st.one_of(st.text(max_size=20), st.just(SECRET), st.sampled_from(["\ud800", "\x00", "\n", "\x1b[2J"]))
_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), _text)
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(
                _text,
                st.sampled_from(["question", "answer", "input", "output", "messages", "role", "content", "system"]),
            ),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=12,
)


def _assert_clean(err: Exception, *, record_text: bool = True) -> None:
    message = str(err)
    assert isinstance(err, FedcareError), f"{type(err).__name__} escaped: {message[:200]}"
    if record_text:  # values a user typed into a config may be echoed; record text never
        assert SECRET not in message
    assert printable(message).count("\n") == 0


def _load(suffix: str, content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"site{suffix}"
        path.write_bytes(content)
        try:
            records = load_records(path)
        except Exception as err:  # noqa: BLE001 - the property is about which exceptions escape
            _assert_clean(err)
            return
    for record in records:  # what passes the check must be trainable text
        for text in [record.completion, *(content for _, content in record.prompt)]:
            assert text.strip() and len(text) <= MAX_FIELD_CHARS
            text.encode("utf-8")  # no lone surrogate reaches the tokenizer


@FAST
@given(st.lists(_json, min_size=1, max_size=4))
def test_jsonl_reader_accepts_valid_records_or_raises_a_clean_data_error(rows: list) -> None:
    _load(".jsonl", "".join(json.dumps(row) + "\n" for row in rows).encode("utf-8", "surrogatepass"))


@FAST
@given(_json)
def test_json_reader_accepts_valid_records_or_raises_a_clean_data_error(value: object) -> None:
    _load(".json", json.dumps(value).encode("utf-8", "surrogatepass"))


@FAST
@given(st.binary(max_size=300), st.sampled_from([".jsonl", ".json", ".csv", ".parquet"]))
def test_readers_survive_arbitrary_bytes(content: bytes, suffix: str) -> None:
    _load(suffix, content)


@FAST
@given(
    st.lists(st.lists(st.one_of(st.text(max_size=12), st.just(SECRET)), min_size=1, max_size=4), min_size=1, max_size=5)
)
def test_csv_reader_never_shows_cells_or_header_names(rows: list[list[str]]) -> None:
    import csv
    import io

    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    _load(".csv", buffer.getvalue().encode("utf-8", "surrogatepass"))


_numbers = st.one_of(st.integers(min_value=-(10**30), max_value=10**30), st.floats(allow_nan=True, allow_infinity=True))
_config_keys = st.sampled_from(
    [
        ("privacy", "target_epsilon"),
        ("privacy", "target_delta"),
        ("privacy", "max_grad_norm"),
        ("train", "batch_size"),
        ("train", "learning_rate"),
        ("train", "weight_decay"),
        ("train", "local_steps"),
        ("lora", "rank"),
        ("lora", "alpha"),
        ("lora", "dropout"),
        ("data", "eval_fraction"),
        ("data", "records_per_site"),
        ("strategy", "fraction_train"),
        ("coordinator", "node_wait_s"),
        (None, "num_sites"),
        (None, "seed"),
    ]
)


@FAST
@given(st.lists(st.tuples(_config_keys, st.one_of(_numbers, _text, st.booleans(), st.none())), max_size=4))
def test_config_builder_gives_finite_in_range_values_or_a_config_error(settings_: list) -> None:
    raw: dict = {}
    for (section, key), value in settings_:
        (raw.setdefault(section, {}) if section else raw)[key] = value
    try:
        cfg = run_config_from_dict(raw)
    except ConfigError as err:
        _assert_clean(err, record_text=False)
        return
    assert isinstance(cfg, RunConfig)
    for section in (cfg.privacy, cfg.train, cfg.lora, cfg.data, cfg.strategy, cfg.coordinator):
        for value in vars(section).values():
            if isinstance(value, float):
                assert math.isfinite(value)
    assert cfg.privacy.target_epsilon > 0 and 0 <= cfg.privacy.target_delta < 1


_yaml_text = st.one_of(
    st.text(max_size=80),
    st.lists(
        st.sampled_from(
            [
                "a: 1\n",
                "b: &x [1]\n",
                "c: *x\n",
                "- 1\n",
                "d: {e: [\n",
                "f: !!python/name:os\n",
                "a: 2\n",
                "? [1]\n: 2\n",
                "  g: 3\n",
                f"h: {SECRET}\n",
                "\x00",
            ]
        ),
        max_size=6,
    ).map("".join),
)


@FAST
@given(_yaml_text)
def test_safe_yaml_gives_a_mapping_or_a_clean_config_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "site.yaml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        try:
            raw = load_yaml_mapping(path, "site configuration")
        except ConfigError as err:
            _assert_clean(err)
            return
    assert isinstance(raw, dict)


@FAST
@given(st.text())
def test_printable_leaves_no_control_character(text: str) -> None:
    shown = printable(text)
    assert shown.isprintable()
    assert printable(shown) == shown


def test_data_error_is_what_the_readers_raise(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"question": "a\\ud800", "answer": "b"}\n', encoding="utf-8")
    try:
        load_records(path)
    except DataError as err:
        assert "a.jsonl line 1" in str(err) and "lone surrogate" in str(err)
    else:
        raise AssertionError("a lone surrogate passed the check")
