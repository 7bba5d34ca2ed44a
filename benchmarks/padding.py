"""Padding in a DP-SGD round: the sampled batch whole vs in length-sorted parts; held-out batches sorted vs not.

    python -m benchmarks.padding [overrides] [--site N] [--steps K] [--repeats R] [--json FILE]

A Poisson batch holds records of any length and every row is padded to the longest, so part of
each forward and backward pass is padding. ``client.train`` cuts a sampled batch into parts of
``train.max_physical_batch`` from the batch sorted by length (the same DP-SGD step: each part's
per-sample gradients are clipped into one sum, the noise is drawn once), and held-out batches from
the records sorted by length. This measures both on one site's data (the default demo's by
default; any ``fedcare simulate`` overrides), in one process, the two arms interleaved with the
same Poisson batches and the same pinned test noise, and checks that they end with the same adapter.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def padded_tokens(lengths: list[int], parts: list[list[int]]) -> int:
    """Tokens a pass computes when each part pads its rows to its longest."""
    return sum(len(part) * max(lengths[i] for i in part) for part in parts if part)


def measure(overrides: list[str], *, site: int = 0, steps: int = 4, repeats: int = 2) -> dict[str, Any]:
    """Time ``steps`` DP-SGD steps whole vs in sorted parts, and the held-out pass unsorted vs sorted."""
    import dataclasses

    import numpy as np
    import torch

    from client import runtime
    from client.train import evaluate_example_losses, per_example_loss, physical_batches, train_round
    from common.adapters import adapter_arrays, load_adapter_arrays
    from common.config import plan_for_round
    from common.examples import collate, poisson_batches
    from server.compose import compose
    from simulations.compare import arm_dp

    cfg, _ = compose([*overrides, f"train.local_steps={steps}", "num_rounds=1"])
    plan = plan_for_round(cfg, 1, "padding")
    model, tokenizer = runtime.model_for(cfg.model, cfg.lora, cfg.seed, initial=True)
    data = runtime.examples_for(cfg.data, site, cfg.num_sites, plan, tokenizer)
    precision, pad = runtime.precision_for(cfg.model), tokenizer.pad_token_id
    initial = adapter_arrays(model)
    dp = arm_dp(cfg, len(data.train), cfg.train.batch_size)
    if dp is not None:
        dp = dataclasses.replace(dp, noise_seed=0)  # the same noise in both arms: their adapters must agree
    part = cfg.train.max_physical_batch or 8
    arms = {"whole": dataclasses.replace(cfg.train, max_physical_batch=0)}
    arms[f"sorted parts of {part}"] = dataclasses.replace(cfg.train, max_physical_batch=part)
    lengths = [len(e.input_ids) for e in data.train]
    q = dp.sample_rate if dp else min(1.0, cfg.train.batch_size / len(data.train))
    batches = poisson_batches(len(data.train), q, steps, np.random.default_rng(cfg.seed))
    real = sum(lengths[i] for b in batches for i in b)
    result: dict[str, Any] = {"steps": steps, "records": len(data.train), "real_tokens": real, "arms": {}}
    ends: dict[str, dict[str, np.ndarray]] = {}
    for rep in range(repeats):
        for name in list(arms) if rep % 2 == 0 else list(arms)[::-1]:  # interleaved, each arm first in turn
            train = arms[name]
            load_adapter_arrays(model, initial)
            start = time.perf_counter()
            rng = np.random.default_rng(cfg.seed)
            train_round(model, data.train, train, precision=precision, pad_id=pad, dp=dp, rng=rng)
            seconds = time.perf_counter() - start
            ends[name] = adapter_arrays(model)
            size = train.max_physical_batch
            computed = sum(padded_tokens(lengths, physical_batches(list(b), size, None, lengths)) for b in batches)
            arm = result["arms"].setdefault(name, {"seconds": [], "padded_tokens": computed})
            arm["seconds"].append(seconds)
            arm["padding_fraction"] = 1 - real / computed if computed else 0.0
    first, second = ends.values()
    result["adapter_max_abs_diff"] = float(max(np.abs(first[k] - second[k]).max() for k in first))
    load_adapter_arrays(model, initial)
    held_out, size = data.eval, cfg.train.eval_batch_size
    timings: dict[str, list[float]] = {"unsorted": [], "sorted": []}
    diff = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad():
            unsorted = [
                per_example_loss(model, collate(held_out[s : s + size], pad), precision).double().cpu().numpy()
                for s in range(0, len(held_out), size)
            ]
        timings["unsorted"].append(time.perf_counter() - start)
        start = time.perf_counter()
        ordered = evaluate_example_losses(model, held_out, batch_size=size, precision=precision, pad_id=pad)
        timings["sorted"].append(time.perf_counter() - start)
        diff = float(np.abs(np.concatenate(unsorted) - ordered).max()) if held_out else 0.0
    result["held_out"] = {"records": len(held_out), "batch": size, "seconds": timings, "max_abs_loss_diff": diff}
    return result


def table(result: dict[str, Any]) -> str:
    lines = [f"{result['steps']} DP-SGD steps on {result['records']} records ({result['real_tokens']} real tokens):"]
    for name, arm in result["arms"].items():
        secs = ", ".join(f"{s:.1f}" for s in arm["seconds"])
        computed, padding = arm["padded_tokens"], arm["padding_fraction"]
        lines.append(f"  {name:<20} {secs} s; {computed} tokens computed, {padding:.0%} padding")
    lines.append(f"  the two adapters differ by at most {result['adapter_max_abs_diff']:.1e}")
    h = result["held_out"]
    lines.append(
        f"held-out loss of {h['records']} records in batches of {h['batch']}: unsorted "
        + ", ".join(f"{s:.2f}" for s in h["seconds"]["unsorted"])
        + " s; sorted by length "
        + ", ".join(f"{s:.2f}" for s in h["seconds"]["sorted"])
        + f" s; losses differ by at most {h['max_abs_loss_diff']:.1e}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.padding", description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for `fedcare simulate`")
    parser.add_argument("--site", type=int, default=0, help="whose data")
    parser.add_argument("--steps", type=int, default=4, help="DP-SGD steps per arm")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repetitions")
    parser.add_argument("--json", type=Path, help="write the result here too")
    args = parser.parse_args(argv)
    from common.console import quiet_third_party

    quiet_third_party()
    result = measure(list(args.overrides), site=args.site, steps=args.steps, repeats=args.repeats)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
