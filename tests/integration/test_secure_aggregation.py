"""SecAgg+ at the aggregation boundary: Flower's real protocol on its simulation engine, 3 tiny sites, 2 rounds
(all three sites in round 1, one dropping out mid-round in round 2), in one simulation.

The sites run the real ``client.secure_app`` logic through a test-only subclass that also writes each
site's plain update to a temporary folder (and, when asked, drops out mid-round), so the test can
compare what the coordinator's strategy received with what the sites computed.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from flwr.client import ClientApp
from flwr.client.mod import secaggplus_mod
from flwr.common import Code, FitRes, Parameters, Status, ndarrays_to_parameters, parameters_to_ndarrays

from client import secure_app
from client.secure_app import SecureSite, _remember_message, secagg_guard
from common.config import (
    CoordinatorConfig,
    DataConfig,
    RunConfig,
    StrategyConfig,
    TrainConfig,
    plan_for_round,
    plan_to_flat,
)
from common.errors import FedcareError
from common.site import write_simulated_sites
from common.wire import NUM_EXAMPLES, PLAN
from server.run_dir import RunDirectory
from server.secure import SecureFedAvg, make_secure_server_app
from tests.integration.conftest import SECRET, context, message, site_node

ROOT = Path(__file__).resolve().parents[2]
UPDATES_ENV = "FEDCARE_TEST_SECAGG_UPDATES"  # test only: folder for the sites' plain updates
DROP_ENV = "FEDCARE_TEST_SECAGG_DROP"  # test only: "<partition id>:<round>" of a site that fails during fit


class RecordingSite(SecureSite):
    """The real site, plus a copy of its plain update for the test (and an optional mid-round dropout)."""

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict]:
        index = int(self.site_context.node_config["partition-id"])
        server_round = int(json.loads(str(config[PLAN]))["server_round"])
        if os.environ.get(DROP_ENV) == f"{index}:{server_round}":
            # After the key exchange, before the masked upload: its masks must be reconstructed.
            raise RuntimeError("test: site drops out during fit")
        arrays, num_examples, metrics = super().fit(parameters, config)
        path = Path(os.environ[UPDATES_ENV]) / f"round-{server_round}-site-{index}.npz"
        np.savez(path, *arrays, num_examples=num_examples)
        return arrays, num_examples, metrics


SITES_ENV = "FEDCARE_TEST_SECAGG_SITES"  # test only: the simulated sites' folder (written by _run)


def recording_client_fn(context: Any) -> Any:
    return RecordingSite(context, Path(os.environ[SITES_ENV])).to_client()


recording_app = ClientApp(client_fn=recording_client_fn, mods=[secagg_guard, secaggplus_mod, _remember_message])


class RecordingFedAvg(SecureFedAvg):
    """Records every argument aggregate_fit receives (the simulation's ServerApp runs in this process)."""

    calls: ClassVar[list[dict[str, Any]]] = []

    def aggregate_fit(self, server_round, results, failures):  # noqa: ANN001, ANN201
        type(self).calls.append(
            {
                "round": server_round,
                "failures": list(failures),
                "results": [(proxy.node_id, res) for proxy, res in results],
                "parameters": [parameters_to_ndarrays(res.parameters) for _, res in results],
                "parameter_objects": {id(res.parameters) for _, res in results},
            }
        )
        return super().aggregate_fit(server_round, results, failures)


def _run(tmp_path: Path, tiny, monkeypatch: pytest.MonkeyPatch, drop: str) -> dict[str, Any]:
    from flwr.simulation import run_simulation

    model_cfg, _, _ = tiny
    cfg = RunConfig(
        num_sites=3,
        num_rounds=2,
        model=model_cfg,
        output_dir=str(tmp_path),
        run_name="secagg",
        train=TrainConfig(local_steps=2, batch_size=4),
        data=DataConfig(records_per_site=24, task_items_per_site=4),  # the aggregation is checked, not the task
        strategy=StrategyConfig(secure_aggregation=True, min_sites=2),
    )  # DP on (default)
    updates = tmp_path / "updates"
    updates.mkdir()
    # Ray workers import this module and the repository's packages, and read the test hooks, from the env.
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv(UPDATES_ENV, str(updates))
    monkeypatch.setenv(SITES_ENV, str(tmp_path / "sites"))
    write_simulated_sites(cfg, tmp_path / "sites")
    monkeypatch.setenv(DROP_ENV, drop)
    RecordingFedAvg.calls = []
    out = RunDirectory(tmp_path / "secagg")
    cores = os.cpu_count() or 1
    run_simulation(
        server_app=make_secure_server_app(cfg, dataclasses.asdict(cfg), out, RecordingFedAvg),
        client_app=recording_app,
        num_supernodes=cfg.num_sites,
        backend_config={
            "client_resources": {"num_cpus": cores, "num_gpus": 0.0},
            "init_args": {"num_cpus": cores, "logging_level": "ERROR"},
        },
    )
    sites: dict[int, dict[int, tuple[list[np.ndarray], int]]] = {}  # round -> site -> (update, examples)
    for path in sorted(updates.glob("round-*-site-*.npz")):
        _, server_round, _, index = path.stem.split("-")
        with np.load(path) as npz:
            sites.setdefault(int(server_round), {})[int(index)] = (
                [npz[f"arr_{i}"] for i in range(len(npz.files) - 1)],
                int(npz["num_examples"]),
            )
    return {"out": out, "sites": sites, "calls": RecordingFedAvg.calls}


def _weighted_mean(sites: dict[int, tuple[list[np.ndarray], int]]) -> list[np.ndarray]:
    total = sum(n for _, n in sites.values())
    return [
        sum(arrays[i].astype(np.float64) * n for arrays, n in sites.values()) / total
        for i in range(len(next(iter(sites.values()))[0]))
    ]


def _check_boundary(run: dict[str, Any], server_round: int, expected_sites: list[int]) -> float:
    """The strategy saw one aggregate, never a site's update; returns the max abs error vs the exact mean."""
    sites = run["sites"][server_round]
    assert sorted(sites) == expected_sites
    call = run["calls"][server_round - 1]
    assert call["round"] == server_round
    # SecAgg+ hands the strategy one FitRes per summed site, all sharing ONE Parameters object (the
    # aggregate); each carries only that site's numeric metrics.
    assert len(call["parameter_objects"]) == 1
    assert len(call["results"]) == len(expected_sites)
    for _, res in call["results"]:
        assert all(isinstance(v, (int, float)) for v in res.metrics.values())
    updates = [arrays for arrays, _ in sites.values()]
    for i, a in enumerate(updates):  # the sites' updates differ (DP noise, data), so "equals one" is meaningful
        for b in updates[i + 1 :]:
            assert max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True)) > 1e-3
    for received in call["parameters"]:
        for update in updates:
            assert max(float(np.max(np.abs(r - u))) for r, u in zip(received, update, strict=True)) > 1e-4
    aggregate = call["parameters"][0]
    error = max(float(np.max(np.abs(r - e))) for r, e in zip(aggregate, _weighted_mean(sites), strict=True))
    print(f"\nSecAgg+ aggregate vs exact weighted mean of {len(sites)} sites: max abs error {error:.3e}")
    return error


@pytest.mark.slow  # Ray: Flower's simulation engine
def test_coordinator_only_receives_the_unmasked_sum_and_tolerates_a_site_dropping_out(
    tmp_path: Path, tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _run(tmp_path, tiny, monkeypatch, drop="1:2")  # site 1 drops out mid-round in round 2
    assert [c["round"] for c in run["calls"]] == [1, 2]
    from safetensors.numpy import load_file

    # Round 1, all three sites: the strategy received the unmasked sum only, no failures, and the saved
    # round-1 adapter IS the aggregate the strategy received.
    error = _check_boundary(run, 1, [0, 1, 2])
    assert error < 1e-4  # quantization: clipping_range 1.0, 2^22 levels, weights n/1000
    assert not run["calls"][0]["failures"]
    saved = load_file(str(run["out"].adapter_dir(1) / "adapter_model.safetensors"))
    for name, value in zip(sorted(saved), run["calls"][0]["parameters"][0], strict=True):
        np.testing.assert_allclose(saved[name], value.astype(np.float32), rtol=0, atol=0)
    summary = json.loads((run["out"].path / "summary.json").read_text())
    assert summary["secure_aggregation"] is True and len(summary["eval_loss_by_round"]) == 3
    assert all(0 < s["epsilon"] <= s["target_epsilon"] for s in summary["sites"])
    adapter_bytes = sum(v.nbytes for v in saved.values())
    # Masked vectors are int64 per value plus one int64 weight factor per site.
    assert summary["bytes_up_per_round"] == [3 * (2 * adapter_bytes + 8), 2 * (2 * adapter_bytes + 8)]  # 2 uploaded

    # Round 2, site 1 drops out after the key exchange: the sum of the two survivors, its masks removed.
    error = _check_boundary(run, 2, [0, 2])
    assert error < 1e-4
    assert run["calls"][1]["failures"]  # Flower's SecAgg+ workflow lists the failed reply twice
    rows = [json.loads(line) for line in (run["out"].path / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2]
    assert rows[0]["sites_trained"] == 3 and rows[0]["sites_failed"] == 0
    assert rows[1]["sites_trained"] == 2 and rows[1]["sites_failed"] == 1
    assert set(rows[1]["sites"]) == {"site-0", "site-2"}
    saved = load_file(str(run["out"].adapter_dir(2) / "adapter_model.safetensors"))
    for name, value in zip(sorted(saved), run["calls"][1]["parameters"][0], strict=True):
        np.testing.assert_allclose(saved[name], value.astype(np.float32), rtol=0, atol=0)


def test_strategy_refuses_separate_updates(tmp_path: Path, tiny) -> None:
    model_cfg, model, _ = tiny
    from common.adapters import attach_lora
    from server.secure import RoundLog, Traffic

    cfg = RunConfig(
        num_sites=3, num_rounds=1, model=model_cfg, strategy=StrategyConfig(secure_aggregation=True, min_sites=2)
    )
    strategy = SecureFedAvg(cfg, RunDirectory(tmp_path), attach_lora(copy.deepcopy(model), cfg.lora), "r")
    strategy.current = RoundLog(1, 0.0, Traffic())
    arrays = [strategy.global_arrays[n] for n in strategy.names]
    results = [(None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), 10, {})) for _ in range(2)]
    with pytest.raises(FedcareError, match="single aggregate"):
        strategy.aggregate_fit(1, results, [])
    shared: Parameters = ndarrays_to_parameters(arrays)
    with pytest.raises(FedcareError, match="min_sites"):
        strategy.aggregate_fit(1, [(None, FitRes(Status(Code.OK, ""), shared, 10, {}))], [])


def test_each_sites_secagg_egress_head_is_signed_into_the_rounds_manifest(tmp_path: Path, tiny) -> None:
    """The heads the sites' SecAgg+ replies report (noted by node id) are signed per site into the manifest."""
    from types import SimpleNamespace

    from flwr.app import ConfigRecord, Message, MessageType, RecordDict
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

    from common.adapters import attach_lora
    from common.credentials import create_signing_keypair
    from common.signing import verify_adapter
    from common.wire import EGRESS
    from server.secure import MeteredGrid, RoundLog

    model_cfg, model, _ = tiny
    key, pub = create_signing_keypair(tmp_path / "keys")
    cfg = RunConfig(
        num_sites=3,
        num_rounds=1,
        model=model_cfg,
        strategy=StrategyConfig(secure_aggregation=True, min_sites=2),
        coordinator=CoordinatorConfig(signing_key=str(key)),
    )
    heads = {11: (5, "a" * 64), 12: (9, "b" * 64)}

    def reply(node: int, egress: dict) -> Message:
        msg = Message(RecordDict(), dst_node_id=node, message_type=MessageType.TRAIN)  # its reply comes from node
        content = RecordDict({RECORD_KEY_CONFIGS: ConfigRecord({})})
        if egress:
            content.config_records[EGRESS] = ConfigRecord(egress)
        return Message(content, reply_to=msg)

    replies = [reply(n, {"seq": s, "head": h}) for n, (s, h) in heads.items()] + [reply(13, {"seq": 1, "head": "x"})]
    grid = MeteredGrid(SimpleNamespace(send_and_receive=lambda messages, timeout=None: replies))
    grid.send_and_receive([])
    assert grid.traffic.egress == heads  # node 13's malformed head is not noted (a warning says so)

    strategy = SecureFedAvg(cfg, RunDirectory(tmp_path / "r"), attach_lora(copy.deepcopy(model), cfg.lora), "r")
    strategy.current = RoundLog(1, 0.0, grid.traffic)
    shared: Parameters = ndarrays_to_parameters([strategy.global_arrays[n] for n in strategy.names])
    results = [
        (SimpleNamespace(node_id=node), FitRes(Status(Code.OK, ""), shared, 10, {"site_index": i, NUM_EXAMPLES: 10}))
        for i, node in enumerate((11, 12, 13))
    ]
    strategy.aggregate_fit(1, results, [])
    sites = verify_adapter(strategy.out.adapter_dir(1), pub)["facts"]["sites"]
    assert (sites["site-0"]["egress_seq"], sites["site-0"]["egress_head"]) == heads[11]
    assert (sites["site-1"]["egress_seq"], sites["site-1"]["egress_head"]) == heads[12]
    assert sites["site-2"]["egress_head"] is None  # not anchored: no valid head came with its replies


def test_a_failing_secure_site_sends_only_fedcare_text(
    tiny, cfg: RunConfig, initial: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Flower forwards an exception's text to the coordinator: a foreign error's text must stay at the site."""

    def boom(*_: Any) -> None:
        raise ValueError(f"tokenizer choked on {SECRET}")

    monkeypatch.setattr(secure_app, "_train", boom)
    site = SecureSite(context(node_config=site_node(cfg, tmp_path)))
    config = {PLAN: json.dumps(plan_to_flat(plan_for_round(cfg, 1, "r")))}
    names = sorted(initial)

    def call(msg: Any, ctx: Any) -> Any:
        return site.fit([initial[n] for n in names], config)

    with pytest.raises(secure_app.SiteError) as err:
        _remember_message(message(cfg, 1, initial, "train"), context(0), call)
    assert SECRET not in str(err.value) and "ValueError at the site" in str(err.value)
    assert err.value.__suppress_context__  # no chained exception for Flower to format
    with pytest.raises(secure_app.SiteError, match="no JSON plan"):
        _remember_message(
            message(cfg, 1, initial, "train"), context(0), lambda m, c: site.fit([initial[n] for n in names], {})
        )
