"""The canary audit end to end on the tiny model: planted data, a DP and a no-DP simulation, the report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from common.examples import split_indices
from common.records import load_records


@pytest.mark.slow  # two simulations (in-process engine: the audit is checked here, Ray's engine in test_simulation.py)
def test_canary_audit_reports_both_runs(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from simulations.canary_audit import main

    monkeypatch.setenv("FEDCARE_CACHE", str(cache_dir))
    monkeypatch.chdir(tmp_path)  # Ray and Hydra write nothing into the checkout
    out = tmp_path / "audit"
    rc = main(
        [
            "model=tiny",
            "simulation.engine=inprocess",
            "num_sites=2",
            "num_rounds=2",
            "train.local_steps=10",
            "train.batch_size=8",  # ~29 training records per site: the sites cap the sampling rate at 0.5
            "data.records_per_site=24",
            "data.task_items_per_site=4",  # the audit reads exposures and losses: the runs' task evaluation kept short
            "--canaries",
            "3",
            "--repeats",
            "4",
            "--candidates",
            "50",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "no DP" in printed and "de-identification was OFF" in printed

    report = json.loads((out / "canary_audit.json").read_text())
    top = math.log2(51)
    assert report["max_exposure"] == pytest.approx(top)
    assert set(report["runs"]) == {"base", "dp", "nodp"}
    for run in report["runs"].values():
        assert len(run["exposures"]) == 3
        for canary in run["exposures"]:
            assert math.isfinite(canary["exposure"]) and 0.0 <= canary["exposure"] <= top + 1e-9
        assert 0.0 <= run["mia_auc"] <= 1.0
        assert math.isfinite(run["eval_loss"])
    dp, nodp = report["runs"]["dp"], report["runs"]["nodp"]
    assert dp["dp_enabled"] is True and 0 < dp["epsilon"] <= dp["target_epsilon"]
    assert nodp["dp_enabled"] is False and nodp["epsilon"] is None
    for name in ("dp", "nodp"):  # same training size: same rounds, steps and batches
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["rounds"] == 2 and len(summary["eval_loss_by_round"]) == 3
        config = json.loads((out / name / "config.json").read_text())
        assert config["data"]["deid"] == "off" and config["train"]["local_steps"] == 10

    # Every copy of every canary sits in site 0's training split, as the site itself splits it.
    site0 = sorted((out / "data").glob("*.jsonl"))[0]
    records = load_records(site0)
    train, _ = split_indices(len(records), 0.2, 0)
    secrets = {c["secret"] for c in report["canaries"]}
    positions = [i for i, r in enumerate(records) if any(r.completion.endswith(f"{s}.") for s in secrets)]
    assert len(positions) == 12 and set(positions) <= set(train.tolist())
    assert positions == report["site"]["canary_positions"]


def test_scoring_detects_a_memorised_canary(cache_dir: Path) -> None:
    """The audit's scoring reaches the maximum exposure on a model that has memorised the canary."""
    import torch

    # One thread: on a shared 2-core machine a second torch thread makes these tiny steps ~10x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _memorise_and_score(cache_dir)
    finally:
        torch.set_num_threads(threads)


def _memorise_and_score(cache_dir: Path) -> None:
    import numpy as np
    import torch

    from client.train import per_example_loss
    from common.canaries import candidate_records, exposure, make_canaries, sample_candidates
    from common.config import ModelConfig, RunConfig
    from common.examples import collate, tokenize_record
    from common.model import TINY_MODEL, load_model_and_tokenizer
    from simulations.canary_audit import record_losses

    cfg = RunConfig(model=ModelConfig(name_or_path=TINY_MODEL, cache_dir=str(cache_dir)))
    model, tokenizer = load_model_and_tokenizer(cfg.model)  # a private copy: the session's tiny model stays clean
    canary = make_canaries(1, seed=0)[0]
    candidates = sample_candidates(canary.secret, 60, rng=np.random.default_rng(0))

    def canary_exposure() -> float:
        _, totals = record_losses(model, tokenizer, cfg, [canary.record, *candidate_records(canary, candidates)])
        return exposure(float(totals[0]), totals[1:].tolist(), 10**6)

    assert canary_exposure() < 5.0  # a random model does not know the secret
    torch.manual_seed(0)
    model.requires_grad_(True)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    batch = collate([tokenize_record(canary.record, tokenizer, cfg.train.max_seq_len)], tokenizer.pad_token_id)
    for _ in range(100):  # overfit the one record, as an unprotected model does with a repeated secret
        optimizer.zero_grad()
        per_example_loss(model, batch, "fp32").mean().backward()
        optimizer.step()
    model.eval()
    assert canary_exposure() == pytest.approx(math.log2(61))  # the true secret beats every candidate
