"""Each boundary's refusal, by message: special files, caps, safe YAML, finite config, Hydra and adapter errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from common.config import run_config_from_dict
from common.errors import AdapterLayoutError, ConfigError, DataError, FedcareError, printable
from common.files import make_private_dir, open_regular, read_regular
from common.records import MAX_FIELDS, load_records
from common.safe_yaml import load_yaml_mapping

GOOD = json.dumps({"question": "q", "answer": "a"}) + "\n"


def test_open_regular_refuses_fifo_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jsonl")
    with pytest.raises(DataError, match=r"pipe\.jsonl is a FIFO \(named pipe\), not a regular file"):
        open_regular(tmp_path / "pipe.jsonl", "data file", 100, DataError)


def test_open_regular_refuses_devices_directories_and_large_files(tmp_path: Path) -> None:
    with pytest.raises(FedcareError, match="is a character device"):
        read_regular("/dev/zero", "public key")
    with pytest.raises(FedcareError, match="is a directory"):
        read_regular(tmp_path, "public key")
    (tmp_path / "big").write_bytes(b"x" * 101)
    with pytest.raises(FedcareError, match="over the limit of 100 bytes"):
        read_regular(tmp_path / "big", "public key", 100)
    with pytest.raises(FedcareError, match="cannot open the public key \\(File name too long\\)"):
        read_regular(tmp_path / ("x" * 300), "public key")


def test_printable_escapes_newlines_and_terminal_escapes() -> None:
    assert printable("a\nb\x1b[31m") == "a\\nb\\x1b[31m"
    assert printable("Zürich") == "Zürich"


def test_make_private_dir_refuses_empty_file_and_unwritable_paths(tmp_path: Path) -> None:
    with pytest.raises(FedcareError, match="--out: an empty path is not a folder"):
        make_private_dir("", "--out")
    (tmp_path / "f").write_text("x")
    with pytest.raises(FedcareError, match="exists and is not a folder"):
        make_private_dir(tmp_path / "f", "--out")
    with pytest.raises(FedcareError, match="output_dir: cannot write to /proc/fedcare"):
        make_private_dir("/proc/fedcare", "output_dir")
    assert make_private_dir(tmp_path / "new" / "dir", "--out").is_dir()


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ('{"question": "a\\ud800", "answer": "b"}', r"line 1: a text value holds a lone surrogate \(character 2\)"),
        ('{"question": "a\\u0000", "answer": "b"}', "NUL character"),
        ('{"question": ' + "[" * 20 + "]" * 20 + ', "answer": "b"}', "nested more than 8 levels deep"),
        ('{"question": 1' + "0" * 5000 + "}", r"invalid JSON \(a number is too long\)"),
        (json.dumps({f"k{i}": 1 for i in range(MAX_FIELDS + 1)}), f"{MAX_FIELDS + 1} fields in one value"),
        (json.dumps({"question": "q" * 1_000_001, "answer": "a"}), "over the limit of 1,000,000"),
    ],
)
def test_load_records_refuses_rows_past_the_caps(tmp_path: Path, row: str, reason: str) -> None:
    path = tmp_path / "site.jsonl"
    path.write_text(row + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=reason):
        load_records(path)


def test_load_records_never_shows_names_read_from_the_file(tmp_path: Path) -> None:
    secret = "Jane Roe MRN 4711"
    csv_path = tmp_path / "noheader.csv"
    csv_path.write_text(f"{secret},x\nq,a\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"noheader\.csv line 2: no recognisable record shape \(2 fields") as info:
        load_records(csv_path)
    assert secret not in str(info.value)
    with pytest.raises(DataError, match=r"column 'question' is missing \(the file has 2 columns; is the first line"):
        from common.records import ColumnMapping

        load_records(csv_path, ColumnMapping("question", "answer"))
    dup = tmp_path / "dup.csv"
    dup.write_text(f"{secret},{secret}\nq,a\n", encoding="utf-8")
    with pytest.raises(DataError, match="columns 1 and 2 of the header have the same name") as info:
        load_records(dup)
    assert secret not in str(info.value)


def test_parquet_row_count_is_checked_before_decoding(tmp_path: Path) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    column = pa.DictionaryArray.from_arrays(pa.array(np.zeros(1_000_001, dtype=np.int32)), pa.array(["q"]))
    pq.write_table(pa.table({"question": column, "answer": column}), tmp_path / "bomb.parquet", compression="zstd")
    assert (tmp_path / "bomb.parquet").stat().st_size < 100_000
    with pytest.raises(DataError, match=r"bomb\.parquet: 1,000,001 records, more than 1,000,000"):
        load_records(tmp_path / "bomb.parquet")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a: &x [1, 2]\nb: *x\n", "line 1: YAML anchors and aliases"),
        ("a: " + "[" * 40 + "]" * 40 + "\n", "nested more than 16 levels deep"),
        ("a: 1\na: 2\n", "line 2: key 'a' appears twice"),
        ("- a\n", "expected a mapping"),
        ("a: [1\n", "not valid YAML"),
        ("!!python/object/apply:os.system ['true']\n", "not valid YAML"),
    ],
)
def test_load_yaml_mapping_refuses_aliases_depth_duplicates_and_tags(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=reason):
        load_yaml_mapping(path, "site configuration")


def test_load_yaml_mapping_reads_a_plain_mapping(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("site_id: a\ndata:\n  paths: [x.jsonl]\n", encoding="utf-8")
    assert load_yaml_mapping(path, "site configuration") == {"site_id": "a", "data": {"paths": ["x.jsonl"]}}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"privacy": {"target_epsilon": float("inf")}}, r"privacy\.target_epsilon: expected a finite number, got inf"),
        ({"privacy": {"target_delta": float("nan")}}, "privacy.target_delta: expected a finite number"),
        ({"privacy": {"target_epsilon": 10**400}}, "expected a finite number, got an integer of 401 digits"),
        ({"num_sites": 10**30}, "num_sites: expected an integer below 2"),
        ({"num_sites": 100_000}, r"num_sites: expected in \[1, 1000\]"),
        ({"run_name": "../x"}, "run_name: expected a folder name"),
        ({"num_site": 3}, "num_site: unknown key; did you mean num_sites"),
        ({"privacy": {"target_epsilo": 3}}, "privacy.target_epsilo: unknown key; did you mean privacy.target_epsilon"),
    ],
)
def test_run_config_refuses_non_finite_out_of_range_and_unknown_values(raw: dict, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        run_config_from_dict(raw)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (["model=tinyy"], r"^model=tinyy: no such option in conf/model/; did you mean tiny\?$"),
        (["num_site=3"], r"^num_site: unknown key; did you mean num_sites\?$"),
        (["+experiment=smok"], r"^experiment=smok: no such option in conf/experiment/; did you mean smoke\?$"),
        (["num_sites=["], r"^config override 'num_sites=\[': "),
    ],
)
def test_compose_turns_hydra_errors_into_one_line(overrides: list[str], reason: str) -> None:
    from server.compose import compose

    with pytest.raises(ConfigError, match=reason) as info:
        compose(overrides)
    assert "\n" not in str(info.value)


def test_check_trainable_names_batch_size_and_the_site(tmp_path: Path) -> None:
    from common.config import DataConfig
    from common.datasets import check_trainable, load_site_data

    (tmp_path / "a.jsonl").write_text(GOOD * 6, encoding="utf-8")
    cfg = DataConfig(kind="files", paths=(str(tmp_path / "a.jsonl"),))
    site = load_site_data(cfg, 0, 1)
    check_trainable(site, cfg, 4)
    with pytest.raises(ConfigError, match="train.batch_size: 64 is more than site a's 5 training records"):
        check_trainable(site, cfg, 64)


def test_check_adapter_dir_checks_structure_before_any_model(tmp_path: Path) -> None:
    from common.adapters import check_adapter_dir

    with pytest.raises(AdapterLayoutError, match="not an adapter folder"):
        check_adapter_dir(tmp_path / "none")
    (tmp_path / "adapter_config.json").write_text("{bad", encoding="utf-8")
    with pytest.raises(AdapterLayoutError, match=r"adapter_config\.json: not valid JSON"):
        check_adapter_dir(tmp_path)
    (tmp_path / "adapter_config.json").write_text('{"peft_type": "LORA"}', encoding="utf-8")
    with pytest.raises(AdapterLayoutError, match=r"adapter_model\.safetensors does not exist"):
        check_adapter_dir(tmp_path)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(AdapterLayoutError, match="not a safetensors file with tensors"):
        check_adapter_dir(tmp_path)


def test_check_adapter_dir_accepts_a_real_peft_adapter(tmp_path: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    (tmp_path / "adapter_config.json").write_text('{"peft_type": "LORA"}', encoding="utf-8")
    save_file(
        {"base_model.model.q_proj.lora_A.weight": np.zeros((2, 4), np.float32)},
        str(tmp_path / "adapter_model.safetensors"),
    )
    from common.adapters import check_adapter_dir

    check_adapter_dir(tmp_path)


def test_sites_never_trained_lists_sites_missing_from_the_summary() -> None:
    from simulations.run import sites_never_trained

    summary = {"sites": [{"site_id": "site-0"}, {"site_id": "site-2"}]}
    assert sites_never_trained(summary, 3) == ["site-1"]
    assert sites_never_trained(summary, 2) == ["site-1"]
    assert sites_never_trained({"sites": [{"site_id": "site-0"}]}, 1) == []
