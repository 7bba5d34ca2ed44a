"""Where a deployment-engine message's time goes: ``python -m benchmarks.startup [--model tiny]``.

Under Flower's deployment engine (flwr 1.42) every train or evaluate message runs in a fresh
``flwr-clientapp`` process (``flwr/supernode/runtime/run_clientapp.py`` pulls ONE task, runs it
and exits), so each message pays interpreter start, imports, model load and data preparation
before its first step. This measures those phases in fresh interpreters, median of repetitions,
next to the training itself, with the same code path a site's ClientApp takes (``client.runtime``).
Each fresh process then handles a second message the way fedcare's long-lived site runner
(``client/pinned_app.py``) does, in the same process: the ``warm_*`` phases.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
c0 = time.process_time()
t0 = time.perf_counter()
import numpy as np
from client import client_app, runtime  # what flwr-clientapp imports when it loads the app
from client.train import train_round, DPSettings
t1, c1 = time.perf_counter(), time.process_time()
from common.config import ModelConfig, RunConfig, TrainConfig, DataConfig, plan_for_round
cfg = RunConfig(num_sites=3, model=ModelConfig(name_or_path=sys.argv[1], cache_dir=sys.argv[2]),
                train=TrainConfig(local_steps=int(sys.argv[3])), data=DataConfig(records_per_site=64))
plan = plan_for_round(cfg, 1)
model, tokenizer = runtime.model_for(plan.model, plan.lora, plan.seed)
t2, c2 = time.perf_counter(), time.process_time()
data = runtime.examples_for(plan.data, 0, 3, plan, tokenizer)
t3, c3 = time.perf_counter(), time.process_time()
dp = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=8 / len(data.train))
result = train_round(model, data.train, plan.train, precision=runtime.precision_for(plan.model),
                     pad_id=tokenizer.pad_token_id, dp=dp, rng=np.random.default_rng(0))
t4, c4 = time.perf_counter(), time.process_time()
# The next message in the same process (a long-lived runner): the caches answer.
model, tokenizer = runtime.model_for(plan.model, plan.lora, plan.seed)
data = runtime.examples_for(plan.data, 0, 3, plan, tokenizer)
t5, c5 = time.perf_counter(), time.process_time()
warm = train_round(model, data.train, plan.train, precision=runtime.precision_for(plan.model),
                   pad_id=tokenizer.pad_token_id, dp=dp, rng=np.random.default_rng(1))
t6, c6 = time.perf_counter(), time.process_time()
print(json.dumps({"imports_s": t1 - t0, "model_load_s": t2 - t1, "site_data_s": t3 - t2, "train_s": t4 - t3,
                  "train_steps_s": result.seconds, "imports_cpu_s": c1 - c0, "model_load_cpu_s": c2 - c1,
                  "site_data_cpu_s": c3 - c2, "train_cpu_s": c4 - c3, "warm_startup_s": t5 - t4,
                  "warm_startup_cpu_s": c5 - c4, "warm_train_s": t6 - t5, "warm_train_cpu_s": c6 - c5,
                  "warm_train_steps_s": warm.seconds, "child_s": t6 - t0}))
"""


def measure(model: str, cache_dir: str, steps: int, repeats: int) -> dict[str, float]:
    """Median seconds of each phase of one message in a fresh interpreter, plus the process start."""
    env = os.environ | {
        "PYTHONPATH": str(ROOT),
        "FLWR_TELEMETRY_ENABLED": "0",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
    }
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", CHILD, model, cache_dir, str(steps)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        wall = time.perf_counter() - start
        phases = json.loads(out.stdout.strip().splitlines()[-1])
        phases["interpreter_start_s"] = wall - phases.pop("child_s")
        phases["process_total_s"] = phases["interpreter_start_s"] + sum(
            phases[k] for k in ("imports_s", "model_load_s", "site_data_s", "train_s")
        )
        samples.append(phases)
    got = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
    got["startup_fraction"] = 1 - got["train_steps_s"] / got["process_total_s"]
    got["warm_total_s"] = got["warm_startup_s"] + got["warm_train_s"]
    got["warm_startup_fraction"] = 1 - got["warm_train_steps_s"] / got["warm_total_s"]
    return got


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=3, help="DP-SGD steps of the measured round")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from common.model import TINY_MODEL

    name = TINY_MODEL if args.model == "tiny" else args.model
    got = measure(name, os.environ.get("FEDCARE_CACHE", ""), args.steps, args.repeats)
    print(
        f"one deployment message ({name}, {args.steps} DP steps), median of {args.repeats} fresh processes; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(f"  {'phase':22} {'wall s':>7} {'cpu s':>7}")
    for key in ("interpreter_start_s", "imports_s", "model_load_s", "site_data_s", "train_s", "process_total_s"):
        cpu = got.get(key.replace("_s", "_cpu_s"))
        print(f"  {key:22} {got[key]:7.2f} {'' if cpu is None else f'{cpu:7.2f}':>7}")
    print(f"  start-up share of the message: {100 * got['startup_fraction']:.0f}%")
    print("next message in the same process (fedcare's long-lived site runner):")
    for key in ("warm_startup_s", "warm_train_s", "warm_total_s"):
        cpu = got.get(key.replace("_s", "_cpu_s"))
        print(f"  {key:22} {got[key]:7.2f} {'' if cpu is None else f'{cpu:7.2f}':>7}")
    print(f"  start-up share of the message: {100 * got['warm_startup_fraction']:.0f}%")
    print(json.dumps(got, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
