"""The release rule: held-out metrics leave a site only clipped, noised and charged, a bounded number of times."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from flwr.app import MessageType

from client import client_app
from client.rounds import resolve_site
from client.state import SiteState
from common.config import PrivacyConfig, SiteLimits
from common.privacy import compute_history_epsilon, release_sums
from common.wire import METRICS
from tests.integration.conftest import context, message, site_node


def test_neighbouring_held_out_sets_stay_indistinguishable_within_the_accounted_epsilon() -> None:
    """k noised releases of two sums that differ by one unit's clipped loss (the sensitivity C): the
    best test (threshold the mean of the releases) never beats TPR <= e^eps FPR + delta, with eps
    the accountant's epsilon of k Gaussian queries."""
    clip, sigma, k, delta, trials = 5.0, 8.0, 10, 1e-5, 4000
    eps = compute_history_epsilon([(sigma, 1.0, 1)] * k, delta)
    rng = np.random.default_rng(0)
    with_record = np.array(
        [[release_sums({"s": np.array(100.0 + clip)}, clip, sigma, rng)["s"] for _ in range(k)] for _ in range(trials)]
    ).mean(axis=1)
    without = np.array(
        [[release_sums({"s": np.array(100.0)}, clip, sigma, rng)["s"] for _ in range(k)] for _ in range(trials)]
    ).mean(axis=1)
    worst = 0.0
    for threshold in np.quantile(without, [0.5, 0.8, 0.95, 0.99]):
        tpr, fpr = float(np.mean(with_record > threshold)), float(np.mean(without > threshold))
        worst = max(worst, tpr - (math.exp(eps) * fpr + delta))
    print(
        f"\n{k} queries, sigma {sigma}, clip {clip}: accounted epsilon {eps:.3f}; worst TPR - (e^eps FPR + delta) "
        f"{worst:.4f} (<= 0: within the guarantee)"
    )
    assert worst <= 0.02  # sampling slack of 4000 trials


def test_repeated_evaluate_requests_are_noised_charged_and_capped(cfg, initial, tmp_path: Path) -> None:
    site_cfg = dataclasses.replace(
        cfg, privacy=PrivacyConfig(accountant="rdp", eval_loss_clip=10.0), limits=SiteLimits(max_eval_queries=3)
    )  # the tiny model's loss is ~5.5
    node = site_node(site_cfg, tmp_path)
    rng = np.random.default_rng(1)
    released = []
    for query in range(3):  # a coordinator probing with crafted adapters
        crafted = {k: (v + rng.normal(0, 0.05, v.shape)).astype(np.float32) for k, v in initial.items()}
        reply = client_app.app(
            message(site_cfg, 0, crafted if query else initial, MessageType.EVALUATE), context(node_config=node)
        )
        assert not reply.has_error(), reply.error.reason
        released.append(dict(reply.content.metric_records[METRICS]))
    refused = client_app.app(message(site_cfg, 0, initial, MessageType.EVALUATE), context(node_config=node))
    assert refused.has_error() and "limits.max_eval_queries" in refused.error.reason
    # Exact held-out loss of the initial adapter, computed here the way the site does.
    from client import runtime
    from client.train import evaluate_example_losses

    site = resolve_site(node)
    model, tokenizer = runtime.model_for(site_cfg.model, site_cfg.lora, site_cfg.seed)
    data = runtime.examples_for(site.config.data, 0, 2, _plan(site_cfg), tokenizer)
    from common.adapters import load_adapter_arrays

    load_adapter_arrays(model, initial)
    exact = float(
        np.mean(
            np.clip(
                evaluate_example_losses(
                    model, data.eval, batch_size=16, precision="fp32", pad_id=tokenizer.pad_token_id
                ),
                0,
                10.0,
            )
        )
    )
    noise_std = 8.0 * 10.0 / len(data.eval)
    assert released[0]["eval_loss"] != pytest.approx(exact, abs=1e-6)  # never the exact value
    assert abs(released[0]["eval_loss"] - exact) < 6 * noise_std
    ledger = SiteState(site.config.state_dir).read_ledger()
    assert [e["kind"] for e in ledger.entries] == ["evaluate"] * 3
    assert released[-1]["epsilon"] == pytest.approx(ledger.epsilon()) and 0 < ledger.epsilon() < 8.0
    assert released[0]["epsilon"] < released[1]["epsilon"] < released[2]["epsilon"]  # each query costs
    # The exact value stays in the site's own record (measured.jsonl): the last query of round 0, and
    # nothing for the refused one.
    record = SiteState(site.config.state_dir).measured("r")
    assert list(record) == [0] and record[0]["eval_records"] == len(data.eval)
    assert record[0]["held_out_loss"] != pytest.approx(exact, abs=1e-6)  # the third, crafted adapter's loss
    lines = SiteState(site.config.state_dir).measured_path.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["held_out_loss"] == pytest.approx(exact, rel=1e-5)
    assert not any(v == pytest.approx(exact, rel=1e-5) for r in released for v in r.values())
    print(
        f"\nheld-out loss exact {exact:.4f} (stays at the site), released {released[0]['eval_loss']:.4f} "
        f"(noise std {noise_std:.3f} over {len(data.eval)} units); epsilon after 3 queries {ledger.epsilon():.3f}"
    )


def _plan(cfg):  # noqa: ANN001, ANN202
    from common.config import plan_for_round

    return plan_for_round(cfg, 0)
