"""The speed benchmark runs end to end on the tiny model and its numbers hang together."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from benchmarks.run import Setup, aggregation_speed, run, table


def test_aggregation_benchmark_checks_the_mean_and_reports_memory() -> None:
    got = aggregation_speed(num_updates=20, parameters=64_000)
    assert got["seconds"] > 0 and got["updates"] == 20
    assert 0.5 < got["peak_extra_updates"] < 3  # the result and one tensor's sum, not a stack of updates
    assert got["flower_seconds"] > 0 and got["tensors"] == 120


@pytest.mark.slow  # HF Trainer, Opacus and 2 virtual sites on the tiny model: ~20 s on 2 quiet cores
def test_speed_benchmark_runs_on_the_tiny_model(cache_dir: Path) -> None:
    setup = Setup(
        model="tiny",
        batch_size=4,
        max_seq_len=64,
        steps=2,
        repeats=1,
        records=24,
        aggregate_updates=10,
        aggregate_parameters=10_000,
        sites=2,
    )
    result = run(setup, cache_dir=str(cache_dir))
    runs = result["training"]["runs"]
    assert set(runs) == {"fedcare_dp", "fedcare_no_dp", "hf_trainer_peft_no_dp"}
    assert all(r["tokens_per_s"] > 0 and r["tokens_per_run"] > 0 for r in runs.values())
    assert result["training"]["dp_over_no_dp_step"] > 0
    adapter = result["training"]["adapter"]
    assert adapter["adapter_bytes_fp16"] < adapter["adapter_bytes_fp32"] < adapter["model_bytes_fp32"]
    assert result["sites"]["peak_rss_bytes"] >= result["sites"]["rss_after_model_bytes"]
    assert "DP step / non-DP step" in table(result)


@pytest.mark.slow  # a fresh interpreter, as Flower's deployment engine starts one per message
def test_startup_benchmark_splits_a_message_into_phases(cache_dir: Path) -> None:
    from benchmarks.startup import measure
    from common.model import TINY_MODEL

    got = measure(TINY_MODEL, str(cache_dir), steps=1, repeats=1)
    phases = ("interpreter_start_s", "imports_s", "model_load_s", "site_data_s", "train_s")
    assert all(got[k] > 0 for k in phases)
    assert sum(got[k] for k in phases) == pytest.approx(got["process_total_s"])
    assert 0 < got["startup_fraction"] < 1


def test_every_lever_row_composes_and_changes_what_it_names() -> None:
    from benchmarks.levers import ROWS
    from server.compose import compose

    base, _ = compose(["+experiment=smoke"])
    for name, extra in ROWS.items():
        cfg, _ = compose(["+experiment=smoke", *extra])
        assert (cfg == base) == (name == "default"), name
    assert not compose(["+experiment=smoke", *ROWS["no_dp"]])[0].privacy.enabled
    assert compose(["+experiment=smoke", *ROWS["ffa_lora"]])[0].lora.freeze_a


def test_lever_table_gives_each_row_its_share_of_the_no_dp_gain() -> None:
    from benchmarks.levers import table

    def row(name: str, after: float) -> dict:
        return {"row": name, "lever": name, "before": 3.0, "after": after, "gain": 3.0 - after, "noise_multiplier": 1.0,
                "batch": 16, "steps": 15, "trainable": 10, "seconds": 1.0}  # fmt: skip

    text = table([row("default", 2.5), row("no_dp", 2.0), row("lr_high", 2.2)])
    lines = text.splitlines()
    assert "| 50% |" in lines[2] and "| 100% |" in lines[3] and "| 80% |" in lines[4]


@pytest.mark.slow  # two DP-SGD arms and two held-out passes on the tiny model: ~10 s, too long for the fast tier
def test_padding_benchmark_gives_the_same_adapter_with_less_padding(cache_dir: Path) -> None:
    from benchmarks.padding import measure, table

    overrides = ["+experiment=smoke", f"model.cache_dir={cache_dir}", "train.batch_size=8", "train.max_seq_len=384"]
    got = measure([*overrides, "train.max_physical_batch=2"], steps=1, repeats=1)
    whole, parts = got["arms"]["whole"], got["arms"]["sorted parts of 2"]
    assert got["real_tokens"] > 0 and parts["padded_tokens"] < whole["padded_tokens"]  # records of unequal length
    assert 0 <= parts["padding_fraction"] < whole["padding_fraction"]
    assert got["adapter_max_abs_diff"] < 1e-5  # the same DP-SGD step, pinned noise
    assert got["held_out"]["max_abs_loss_diff"] < 1e-4
    assert "sorted by length" in table(got)


def test_mts_benchmark_deals_mts_dialog_to_the_sites_and_composes(tmp_path: Path) -> None:
    from benchmarks.mts import overrides
    from server.compose import compose
    from tests.conftest import SHARED_DATA

    if not (SHARED_DATA / "mts-dialog" / "train.csv").exists():
        pytest.skip("../shared/data/mts-dialog is not present on this machine")
    got = overrides(SHARED_DATA, tmp_path, 3)
    sites = sorted(tmp_path.glob("site-*.csv"))
    tasks = sorted(tmp_path.glob("task-*.csv"))
    counts = [sum(1 for _ in csv.DictReader(p.open(newline="", encoding="utf-8"))) for p in sites]
    assert counts == [401, 400, 400]  # every train.csv dialogue, dealt round-robin
    assert [sum(1 for _ in csv.DictReader(p.open(newline="", encoding="utf-8"))) for p in tasks] == [34, 33, 33]
    cfg, _ = compose(got)
    assert list(cfg.data.paths) == [str(p) for p in sites] and list(cfg.data.task_paths) == [str(p) for p in tasks]
    assert (cfg.data.prompt_column, cfg.data.completion_column) == ("dialogue", "section_text")


def test_mts_benchmark_says_where_the_data_is_missing(tmp_path: Path) -> None:
    from benchmarks.mts import overrides

    with pytest.raises(SystemExit, match="no MTS-Dialog at"):
        overrides(tmp_path, tmp_path / "out", 3)
