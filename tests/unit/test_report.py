"""report.html from a run directory's files: every plot is written and referenced; the sweep curve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.report import fairness_rows, sweep_points, write_report, write_sweep_report


def _metrics(acc: float, n: int = 10) -> dict:
    return {
        "n": n,
        "accuracy": acc,
        "macro_precision": acc,
        "macro_recall": acc,
        "macro_f1": acc,
        "confusion_matrix": {"labels": ["no", "yes"], "matrix": [[n // 2, 0], [n - n // 2, 0]]},
    }


def _run(tmp: Path, name: str, epsilon: float | None, final_loss: float) -> Path:
    run = tmp / name
    run.mkdir(parents=True)
    sites = [
        {
            "site_id": f"site-{i}",
            "examples": 40,
            "epsilon": epsilon and epsilon * 0.99,
            "delta": 0.0025,
            "target_epsilon": epsilon,
            "noise_multiplier": 0.9,
            "dp_enabled": epsilon is not None,
        }
        for i in range(2)
    ]
    (run / "summary.json").write_text(
        json.dumps(
            {
                "rounds": 2,
                "dp_enabled": epsilon is not None,
                "sites": sites,
                "eval_loss_by_round": [2.7, 2.6, final_loss],
                "bytes_up_per_round": [2000, 2000],
                "bytes_down_per_round": [2000, 2000],
                "wall_seconds": 10.0,
            }
        )
    )
    (run / "config.json").write_text(
        json.dumps(
            {"model": {"name_or_path": "tiny"}, "privacy": {"accountant": "prv", "target_epsilon": epsilon or 8}}
        )
    )
    rows = [
        {
            "round": r,
            "eval_loss_by_site": {"site-0": 2.6, "site-1": 2.5},
            "bytes_up": 2000,
            "bytes_down": 2000,
            "sites": {s["site_id"]: {"epsilon": (epsilon or 0) * r / 2} for s in sites},
        }
        for r in (1, 2)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def entry(acc: float, groups: bool) -> dict:
        out = {"metrics": _metrics(acc)}
        if groups:
            out["groups"] = {"18-44": _metrics(acc + 0.1), "65+": _metrics(acc - 0.2)}
            out["fairness"] = {
                "metric": "accuracy",
                "worst_group": "65+",
                "best_group": "18-44",
                "largest_gap": 0.3,
                "ranked": ["65+", "18-44"],
            }
        return out

    (run / "evaluation.json").write_text(
        json.dumps(
            {
                "task": "triage",
                "kind": "choice",
                "metric": "accuracy",
                "labels": ["no", "yes"],
                "baselines": {
                    "majority": {"label": "no", "accuracy": 0.5, "macro_f1": 0.33},
                    "chance": {"accuracy": 0.5, "macro_f1": 0.5},
                },
                "sites": {
                    "site-0": {"base": entry(0.5, False), "final": entry(0.7, False)},
                    "site-1": {"base": entry(0.6, False), "final": entry(0.55, False)},
                },
                "pooled": {"base": entry(0.55, True), "final": entry(0.62, True)},
            }
        )
    )
    return run


def test_write_report_writes_and_references_every_plot(tmp_path: Path) -> None:
    run = _run(tmp_path, "r", 8.0, 2.4)
    page = write_report(run).read_text()
    for name in ("loss", "epsilon", "bytes", "task", "confusion"):
        assert (run / "report" / f"{name}.png").stat().st_size > 1000
        assert f'src="report/{name}.png"' in page
    assert "worst group <b>65+</b>" in page and "site site-1 (-0.050)" in page  # who lost
    assert "2.700 &rarr; 2.600 &rarr; 2.400" in page


def test_fairness_rows_list_sites_then_groups() -> None:
    rows, gaps = fairness_rows(
        json.loads(
            json.dumps(
                {
                    "metric": "accuracy",
                    "sites": {"site-0": {"base": {"metrics": _metrics(0.5)}, "final": {"metrics": _metrics(0.75)}}},
                    "pooled": {
                        "base": {"metrics": _metrics(0.5), "groups": {"a": _metrics(0.4)}},
                        "final": {"metrics": _metrics(0.75), "groups": {"a": _metrics(0.3)}},
                    },
                }
            )
        )
    )
    assert rows[0] == ["site", "site-0", 10, 0.5, 0.75, 0.25]
    assert rows[1][:2] == ["group", "a"] and rows[1][5] == pytest.approx(-0.1)
    assert gaps == {"base": None, "final": None}


def test_write_report_requires_a_finished_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="summary.json"):
        write_report(tmp_path)


def test_sweep_report_orders_runs_by_epsilon(tmp_path: Path) -> None:
    for i, (eps, loss) in enumerate([(16.0, 2.2), (1.0, 2.6), (4.0, 2.4), (None, 1.0)]):
        _run(tmp_path / "multirun", str(i), eps, loss)
    points = sweep_points(tmp_path / "multirun")
    assert [p["target_epsilon"] for p in points] == [1.0, 4.0, 16.0, None]
    assert [p["final_loss"] for p in points] == [2.6, 2.4, 2.2, 1.0]
    page = write_sweep_report(tmp_path / "multirun")
    assert (tmp_path / "multirun" / "report" / "privacy_utility.png").stat().st_size > 1000
    assert 'src="report/privacy_utility.png"' in page.read_text()


def test_tensorboard_tracking_writes_the_run_scalars(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from common.config import TrackingConfig
    from common.tracking import log_run, run_scalars

    run = _run(tmp_path, "r", 8.0, 2.4)
    tags = {t for t, _, _ in run_scalars(run)}
    assert {"eval_loss/all_sites", "eval_loss/site-0", "epsilon/site-1", "traffic/bytes_up", "task/accuracy"} <= tags
    assert log_run(run, TrackingConfig()) == []  # opt-in: nothing without a tracker
    assert log_run(run, TrackingConfig(tensorboard=True)) == [str(run / "tensorboard")]
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.value for e in events.Scalars("eval_loss/all_sites")] == pytest.approx([2.7, 2.6, 2.4])
    assert [e.step for e in events.Scalars("task/accuracy")] == [0, 2]


def test_exact_losses_measure_every_rounds_saved_adapter_and_the_report_plots_them(
    tmp_path: Path, cache_dir: Path
) -> None:
    # A simulation's driver measures the exact held-out loss of the base model and of each round's
    # saved global adapter (real PEFT files) at every site; the report then plots those, not the
    # sites' noised releases, and says so.
    import torch

    from client import runtime
    from common.adapters import save_adapter
    from server.compose import compose
    from simulations.report import exact_losses

    cfg, _ = compose(["+experiment=smoke", f"model.cache_dir={cache_dir}", "num_rounds=1"])
    model, _ = runtime.model_for(cfg.model, cfg.lora, cfg.seed)
    run = _run(tmp_path, "r", 8.0, 2.4)
    save_adapter(model, run / "adapters" / "round-000")  # the coordinator saves the initial adapter too
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.add_(0.05)  # a trained round's adapter differs from the initial one (B = 0)
    save_adapter(model, run / "adapters" / "round-001")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.sub_(0.05)
    result = exact_losses(cfg, run)
    assert result is not None and [r["round"] for r in result["by_round"]] == [0, 1]
    first, last = result["by_round"]
    assert set(first["sites"]) == {f"site-{i}" for i in range(cfg.num_sites)}
    assert all(v > 0 for v in first["sites"].values()) and first["sites"] != last["sites"]
    assert json.loads((run / "exact_loss.json").read_text()) == json.loads(json.dumps(result))
    page = write_report(run).read_text()
    assert f"exact held-out loss {first['mean']:.3f} &rarr; {last['mean']:.3f}" in page
    assert (run / "report" / "loss.png").stat().st_size > 1000
    off, _ = compose(["+experiment=smoke", f"model.cache_dir={cache_dir}", "simulation.exact_loss=false"])
    assert exact_losses(off, run) is None


def test_exact_losses_come_from_the_sites_own_records_when_every_round_is_there(tmp_path: Path) -> None:
    # Every simulated site keeps the exact held-out loss it measured (measured.jsonl in its state
    # dir); the driver reads those instead of loading the model again. A model that cannot load
    # proves it: the records alone give exact_loss.json. With a round missing it would measure.
    from client.state import SiteState
    from server.compose import compose
    from simulations.report import exact_losses

    run = _run(tmp_path, "r", 8.0, 2.4)
    for r in range(2):
        (run / "adapters" / f"round-{r:03d}").mkdir(parents=True)
        (run / "adapters" / f"round-{r:03d}" / "adapter_model.safetensors").write_bytes(b"")
    cfg, _ = compose(["+experiment=smoke", f"model.cache_dir={tmp_path / 'no-model'}", "num_rounds=1"])
    losses = {"site-0": [3.0, 2.5], "site-1": [4.0, 3.0]}
    for site, values in losses.items():
        state = SiteState(run / "sites" / site)
        state.record_measured("other-run", 0, {"held_out_loss": 9.0, "eval_records": 10})  # not this run
        for r, loss in enumerate(values):
            state.record_measured("r", r, {"held_out_loss": loss + 1.0, "eval_records": 10})  # retried: last wins
            state.record_measured("r", r, {"held_out_loss": loss, "eval_records": 10 if site == "site-0" else 30})
    result = exact_losses(cfg, run)
    assert result is not None and [r["round"] for r in result["by_round"]] == [0, 1]
    assert result["by_round"][1]["sites"] == {"site-0": 2.5, "site-1": 3.0}
    assert result["by_round"][0]["mean"] == pytest.approx((3.0 * 10 + 4.0 * 30) / 40)
    assert result["eval_records"] == {"site-0": 10, "site-1": 30}
    assert json.loads((run / "exact_loss.json").read_text()) == result


def test_task_metrics_come_from_the_sites_item_scores_of_round_0_and_the_last(tmp_path: Path) -> None:
    # The sites score their task sets in round 0 (base model) and the last round and keep each item's
    # chosen option in measured.jsonl; the driver builds evaluation.json from those (no model: the
    # final adapter's folder does not even exist) with per-site, per-group and pooled numbers. A site
    # without its records makes the driver score everything itself (and so need the adapter).
    from client.state import SiteState
    from common.evaluation import ItemScore, item_record, site_task
    from server.compose import compose
    from simulations.report import evaluate_run

    cfg, _ = compose(["+experiment=smoke", f"model.cache_dir={tmp_path / 'no-model'}", "data.group_field=sex"])
    run = _run(tmp_path, "r", 8.0, 2.4)
    for i in range(cfg.num_sites):
        task = site_task(cfg.data, i)
        assert task is not None
        state = SiteState(run / "sites" / f"site-{i}")
        for r, answer in ((0, lambda item: "no"), (cfg.num_rounds, lambda item: item.answer)):
            kept = [item_record("choice", ItemScore(answer(item), answer(item))) for item in task.items]
            state.record_measured(
                "r", r, {"held_out_loss": 1.0, "eval_records": 4, "task": {"name": task.name, "scores": kept}}
            )
    result = evaluate_run(cfg, run, run / "adapters" / "round-002")
    assert result is not None and json.loads((run / "evaluation.json").read_text()) == result
    site = result["sites"]["site-0"]
    gold = [item.answer for item in site_task(cfg.data, 0).items]
    assert site["final"]["metrics"]["accuracy"] == 1.0
    assert site["base"]["metrics"]["accuracy"] == pytest.approx(gold.count("no") / len(gold))
    assert result["pooled"]["final"]["metrics"]["n"] == cfg.num_sites * cfg.data.task_items_per_site
    assert set(site["final"]["groups"]) == {"female", "male"}
    from simulations.report import gain_table

    exact = {
        "by_round": [
            {"mean": 3.0, "sites": {"site-0": 3.0, "site-1": 3.0}},
            {"mean": 2.0, "sites": {"site-0": 1.5, "site-1": 2.5}},
        ]
    }
    lines = gain_table(result, exact).splitlines()
    assert "held-out loss" in lines[1] and "macro-P" in lines[1] and "macro-R" in lines[1]
    assert lines[3].split()[:4] == ["site-0", "3.000", "1.500", f"{site['base']['metrics']['accuracy']:.3f}"]
    assert lines[3].split()[4] == "1.000" and lines[-2].split()[:3] == ["pooled", "3.000", "2.000"]
    no = sum(item.answer == "no" for i in range(cfg.num_sites) for item in site_task(cfg.data, i).items)
    assert lines[-1].startswith("pooled baselines: majority class 'no' accuracy ")
    assert f"accuracy {no / result['pooled']['final']['metrics']['n']:.4f}" in lines[-1]
    (run / "sites" / "site-1" / "measured.jsonl").unlink()
    with pytest.raises(ValueError, match="adapter_config.json"):
        evaluate_run(cfg, run, run / "adapters" / "round-002")  # falls back: scores with the (absent) adapter


def test_the_sites_released_task_metrics_are_shown_as_dp_noised(tmp_path: Path) -> None:
    from common.task_release import release_metrics, task_metrics
    from tests.unit.test_task_release import LABELS, choice_sums

    run = _run(tmp_path, "r", 8.0, 2.4)
    summary = json.loads((run / "summary.json").read_text())
    release = choice_sums(["no", "yes", "yes"], ["no", "yes", "no"], LABELS)
    site = release_metrics(release, {"confusion": [[1.2, -0.4], [0.8, 1.1]]}, 11.3)
    tasks = task_metrics({"site-0": site, "site-1": site}, LABELS)
    summary |= {"task_metrics": tasks, "task_metrics_by_round": {"0": tasks, "2": tasks}}
    (run / "summary.json").write_text(json.dumps(summary))
    page = write_report(run).read_text()
    assert "Task metrics released by the sites (DP-noised releases)" in page
    assert "<b>DP-noised releases</b>" in page and "11.3000" in page  # the noise std per count
    assert "<td>pooled</td>" in page and "Pooled confusion matrix" in page
    assert "<td>no</td><td>2.4000</td><td>0.0000</td>" in page  # pooled "no" row: 2.4, -0.8 clamped to 0


def test_report_errors_are_one_clear_line(tmp_path: Path) -> None:
    from common.errors import FedcareError

    with pytest.raises(FedcareError, match="no finished run.*fedcare simulate --multirun"):
        write_sweep_report(tmp_path)
    with pytest.raises(FedcareError, match="not a sweep folder"):
        write_sweep_report(tmp_path / "missing")
    with pytest.raises(FedcareError, match="not a run directory"):
        write_report(tmp_path / "missing")
    run = _run(tmp_path, "r", 8.0, 2.4)
    (run / "metrics.jsonl").write_text('{"round": 1}\n{"round": \n')
    with pytest.raises(FedcareError, match="metrics.jsonl line 2: not valid JSON"):
        write_report(run)


def test_the_console_line_of_the_released_task_metrics_says_they_are_noised() -> None:
    from common.task_release import release_metrics, task_metrics
    from simulations.report import released_task_line
    from tests.unit.test_task_release import LABELS, choice_sums

    release = choice_sums(["no", "yes"], ["no", "yes"], LABELS)
    noised = task_metrics({"site-0": release_metrics(release, {"confusion": [[1.0, 0.0], [0.5, 0.5]]}, 3.0)}, LABELS)
    assert released_task_line(noised) == (
        "task accuracy released by the sites (DP-noised counts, noise std 3.0 pooled over 2 units): "
        "pooled 0.750; site-0 0.750"
    )
    exact = task_metrics({"site-0": release_metrics(release, release.sums, 0.0)}, LABELS)
    assert "(exact: DP off): pooled 1.000" in released_task_line(exact)
