"""Speed of fedcare, side by side in one process: ``python -m benchmarks.run`` prints a table and JSON.

    python -m benchmarks.run                   # SmolLM2-135M, batch 8 x 256 tokens, a few minutes
    python -m benchmarks.run --model tiny      # the offline 2-layer model: seconds (what the test runs)
    python -m benchmarks.run --demo            # also times the default demo (`fedcare demo`), minutes more
    python -m benchmarks.run --json out.json   # also write the JSON to a file

What it measures (each number's unit is in its name):
- tokens/s of one fedcare DP-SGD round, the same round without DP (same Poisson batches), and Hugging
  Face Trainer + PEFT without DP (what FlowerTune's clients run) on the same model, LoRA, data,
  batch size and precision; the three are interleaved and repeated, and the median is reported.
- DP/non-DP step-time ratio; training FLOP/s as a fraction of this machine's measured matmul peak.
- adapter bytes per round and site (one way) against full-model bytes, fp32 and bf16/fp16.
- aggregating 1,000 site updates of a 1M-parameter adapter: seconds and peak extra memory.
- peak memory per simulated site, with 20 virtual sites served by one worker process.

The machine may be shared: absolute numbers move with the load, ratios taken in one run much less.
The load average at the start and end is printed with the table.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
MEDQUAD = SHARED_DATA / "medquad" / "medquad.jsonl"


@dataclasses.dataclass(frozen=True)
class Setup:
    """What every contender trains on."""

    model: str = "smollm2-135m-instruct"
    precision: str = "auto"
    batch_size: int = 8  # records per step (fedcare: expected size of a Poisson batch)
    max_seq_len: int = 256  # tokens per record after the chat template
    steps: int = 3  # optimizer steps per measured run
    repeats: int = 3  # interleaved repetitions; the median is reported
    records: int = 160  # training records (MedQuAD answers when ../shared/data is present, else synthetic)
    aggregate_updates: int = 1000  # site updates aggregated at once
    aggregate_parameters: int = 1_000_000  # parameters of each update (float32)
    sites: int = 20  # virtual sites served by one worker in the memory measurement


def matmul_peak_gflops(dtype_name: str, max_size: int = 2048, budget_s: float = 0.5) -> float:
    """GFLOP/s of a square matmul in ``dtype_name`` with torch's current thread count: sizes double
    from 256 up to ``max_size`` while one product takes under ``budget_s`` (a CPU without bf16
    hardware emulates it at ~0.1 GFLOP/s, where a 2048^3 product would take minutes); median of 3
    at the last size."""
    import torch

    dtype = getattr(torch, dtype_name)
    size = 256
    while True:
        a = torch.randn(size, size).to(dtype)
        b = torch.randn(size, size).to(dtype)
        a @ b  # warm-up (oneDNN kernels, page faults)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        if size >= max_size or statistics.median(times) * 8 > budget_s:
            return 2 * size**3 / statistics.median(times) / 1e9
        size *= 2


def _records(setup: Setup) -> tuple[list[Any], str]:
    from common.records import load_records
    from common.synthetic import generate_site_records

    if MEDQUAD.exists():
        return load_records(MEDQUAD)[: setup.records], "MedQuAD"
    return generate_site_records(0, setup.records), "synthetic (../shared/data absent)"


def _load(setup: Setup, cache_dir: str) -> tuple[Any, Any, Any]:
    from common.config import ModelConfig
    from common.model import TINY_MODEL, load_model_and_tokenizer

    name = TINY_MODEL if setup.model == "tiny" else setup.model
    cfg = ModelConfig(name_or_path=name, cache_dir=cache_dir, precision=setup.precision)
    base, tokenizer = load_model_and_tokenizer(cfg)
    return cfg, base, tokenizer


def training_speed(setup: Setup, cache_dir: str) -> dict[str, Any]:
    """tokens/s and step seconds of fedcare DP, fedcare non-DP and HF Trainer + PEFT, interleaved."""
    import torch

    from client.train import DPSettings, train_round
    from common.adapters import attach_lora
    from common.config import AdapterConfig, TrainConfig
    from common.examples import tokenize_records
    from common.model import resolve_device, resolve_precision

    cfg, base, tokenizer = _load(setup, cache_dir)
    precision = resolve_precision(cfg.precision, resolve_device(cfg.device))
    records, source = _records(setup)
    examples = tokenize_records(records, tokenizer, setup.max_seq_len)
    train_cfg = TrainConfig(local_steps=setup.steps, batch_size=setup.batch_size, max_seq_len=setup.max_seq_len)
    lora = AdapterConfig()
    model = attach_lora(base, lora, seed=0)
    peer = attach_lora(copy.deepcopy(base), lora, seed=0) if _has_trainer() else None
    dp = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=setup.batch_size / len(examples), noise_seed=1)

    def fedcare(with_dp: bool, steps: int, seed: int) -> tuple[float, float, int]:
        result = train_round(
            model,
            examples,
            dataclasses.replace(train_cfg, local_steps=steps),
            precision=precision,
            pad_id=tokenizer.pad_token_id,
            dp=dp if with_dp else None,
            rng=np.random.default_rng(seed),
        )
        return result.seconds, result.seconds / result.steps, result.tokens

    runs: dict[str, Callable[[int, int], tuple[float, float, int]]] = {
        "fedcare_dp": lambda steps, seed: fedcare(True, steps, seed),
        "fedcare_no_dp": lambda steps, seed: fedcare(False, steps, seed),
    }
    if peer is not None:
        runs["hf_trainer_peft_no_dp"] = lambda steps, seed: _hf_trainer(
            peer, examples, tokenizer, setup, precision, steps, seed
        )
    for run in runs.values():  # warm-up: allocator, oneDNN kernels, Opacus hooks
        run(1, 0)
    samples: dict[str, list[tuple[float, float, int]]] = {k: [] for k in runs}
    for rep in range(setup.repeats):
        for name, run in runs.items():  # same seed in a repetition: the two fedcare runs share batches
            samples[name].append(run(setup.steps, 100 + rep))
    rows: dict[str, Any] = {}
    for name, got in samples.items():
        rows[name] = {
            "tokens_per_s": statistics.median(tok / sec for sec, _, tok in got),
            "seconds_per_step": statistics.median(step for _, step, _ in got),
            "tokens_per_run": statistics.median(tok for _, _, tok in got),
        }
    dp_ratio = statistics.median(
        d[1] / n[1] for d, n in zip(samples["fedcare_dp"], samples["fedcare_no_dp"], strict=True)
    )
    flops_per_token = _training_flops_per_token(model)
    return {
        "precision": precision,
        "data": source,
        "records": len(examples),
        "threads": torch.get_num_threads(),
        "runs": rows,
        "dp_over_no_dp_step": dp_ratio,
        "dp_over_peer_tokens_per_s": (
            rows["fedcare_dp"]["tokens_per_s"] / rows["hf_trainer_peft_no_dp"]["tokens_per_s"]
        )
        if peer
        else None,
        "training_flops_per_token": flops_per_token,
        "dp_training_gflops": flops_per_token * rows["fedcare_dp"]["tokens_per_s"] / 1e9,
        "adapter": adapter_bytes(model),
    }


def _has_trainer() -> bool:
    try:
        import accelerate  # noqa: F401  - Trainer needs it
        from transformers import Trainer  # noqa: F401
    except ImportError:
        return False
    return True


def _hf_trainer(
    model: Any, examples: list[Any], tokenizer: Any, setup: Setup, precision: str, steps: int, seed: int
) -> tuple[float, float, int]:
    """Hugging Face Trainer + PEFT, defaults as FlowerTune's clients use them, on fedcare's padded batches."""
    import tempfile

    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    from common.examples import collate

    tokens = 0
    marks: list[float] = []

    def collator(features: list[Any]) -> dict[str, Any]:
        return collate(features, tokenizer.pad_token_id)

    class Clock(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            if not marks:
                marks.append(time.perf_counter())

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            marks.append(time.perf_counter())

    class CountingTrainer(Trainer):  # type: ignore[misc]
        """Counts the tokens of the batches it trains on (the data loader fetches ahead)."""

        def training_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            nonlocal tokens
            tokens += int(inputs["attention_mask"].sum())
            return super().training_step(model, inputs, *args, **kwargs)

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=setup.batch_size,
            max_steps=steps,
            learning_rate=2e-3,
            bf16=precision == "bf16",
            use_cpu=True,
            report_to=[],
            logging_strategy="no",
            save_strategy="no",
            disable_tqdm=True,
            seed=seed,
            dataloader_num_workers=0,
            remove_unused_columns=False,
        )
        trainer = CountingTrainer(
            model=model, args=args, train_dataset=_ListDataset(examples), data_collator=collator, callbacks=[Clock()]
        )
        trainer.remove_callback(PrinterCallback)  # without a progress bar it prints its final metrics dict
        trainer.train()
    seconds = marks[-1] - marks[0]
    return seconds, seconds / steps, tokens


class _ListDataset:
    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]


def _training_flops_per_token(model: Any) -> float:
    """Matmul FLOPs per trained token of a LoRA step with a frozen base: forward (2 x params) plus
    the backward to the activations (2 x params; the frozen weights get no gradient). Embedding
    lookups are free; the output layer is counted at every token (fedcare skips it off-answer, so
    this slightly overstates fedcare's work: the figure is the conventional model FLOPs)."""
    base = model.get_base_model()
    params = sum(p.numel() for name, p in base.named_parameters() if "embed_tokens" not in name)
    head = base.get_output_embeddings().weight.numel()  # tied: not among named_parameters twice
    if base.config.tie_word_embeddings:
        params += head
    return 4.0 * params


def adapter_bytes(model: Any) -> dict[str, int]:
    """Bytes one site sends per round (the adapter, one way) against the full model's, as Flower
    serializes them (an ArrayRecord of numpy arrays)."""
    from flwr.app import Array, ArrayRecord

    from common.adapters import adapter_arrays

    arrays = adapter_arrays(model)
    base = model.get_base_model()
    full = sum(p.numel() for p in base.parameters())

    def wire(dtype: Any) -> int:
        record = ArrayRecord(array_dict={k: Array.from_numpy_ndarray(v.astype(dtype)) for k, v in arrays.items()})
        return sum(len(record[k].data) for k in record)

    count = sum(v.size for v in arrays.values())
    return {
        "adapter_parameters": int(count),
        "model_parameters": int(full),
        "adapter_bytes_fp32": wire(np.float32),
        "adapter_bytes_fp16": wire(np.float16),
        "model_bytes_fp32": 4 * full,
        "model_bytes_bf16": 2 * full,
    }


def aggregation_speed(
    num_updates: int = 1000, parameters: int = 1_000_000, tensors: int = 120, flower_updates: int = 50
) -> dict[str, float]:
    """One round's aggregation of ``num_updates`` site replies carrying ``parameters`` float32 values in
    ``tensors`` tensors (SmolLM2's LoRA on q/v has 120), timed as the coordinator runs it: the FedAvg
    strategy of ``server.strategies.build_strategy`` (screening every reply, then the streamed weighted
    mean) on real reply Messages. Peak extra memory (tracemalloc) is taken in a second, traced run.
    Beside it, Flower's ``aggregate_arrayrecords`` on the first ``flower_updates`` replies (0: skip)."""
    import uuid

    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

    from common.config import RunConfig
    from common.wire import ARRAYS, METRICS, NUM_EXAMPLES
    from server.strategies import build_strategy
    from simulations.inprocess import InProcessGrid

    rng = np.random.default_rng(0)
    size = parameters // tensors
    proto = rng.standard_normal((tensors, size), dtype=np.float32)
    names = [f"layers.{j}.lora.weight" for j in range(tensors)]
    header = Array(proto[0]).data[: -proto[0].nbytes]  # the .npy header np.save writes for one tensor
    weights = np.asarray([float(10 + i % 7) for i in range(num_updates)])
    scales = 1 + 1e-3 * np.arange(num_updates)  # site i sends proto * scale_i: distinct bytes per reply

    def record(values: np.ndarray) -> ArrayRecord:
        out = ArrayRecord()
        for j, name in enumerate(names):
            out[name] = Array(dtype="float32", shape=(size,), stype="numpy.ndarray", data=header + values[j].tobytes())
        return out

    def round_replies() -> tuple[Any, list[Message]]:
        strategy = build_strategy(RunConfig(num_sites=num_updates))
        grid = InProcessGrid(lambda msg, ctx: msg, num_updates)
        sent = list(strategy.configure_train(1, record(proto), ConfigRecord(), grid))
        replies = []
        for i, msg in enumerate(sent):
            msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            metrics = MetricRecord({NUM_EXAMPLES: float(weights[i]), "site_index": i})
            replies.append(
                Message(RecordDict({ARRAYS: record(proto * np.float32(scales[i])), METRICS: metrics}), reply_to=msg)
            )
        return strategy, replies

    update_bytes = parameters * 4
    strategy, replies = round_replies()
    flower_seconds = math.nan
    if flower_updates:
        contents = [r.content for r in replies[:flower_updates]]
        start = time.perf_counter()
        aggregate_arrayrecords(contents, NUM_EXAMPLES)
        flower_seconds = time.perf_counter() - start
    start, cpu = time.perf_counter(), time.process_time()
    aggregate, _ = strategy.aggregate_train(1, replies)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    if len(strategy.last_round.accepted) != num_updates:
        raise RuntimeError(f"aggregation benchmark: replies rejected: {strategy.last_round.rejected}")
    expected = proto[0] * float(np.sum(weights * scales.astype(np.float32)) / weights.sum())
    if not np.allclose(aggregate[names[0]].numpy(), expected, rtol=1e-6):
        raise RuntimeError("aggregation benchmark: the mean is wrong")
    del aggregate, strategy, replies
    strategy, replies = round_replies()
    tracemalloc.start()
    strategy.aggregate_train(1, replies)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "updates": num_updates,
        "parameters": parameters,
        "tensors": tensors,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "peak_extra_bytes": float(peak),
        "peak_extra_updates": peak / update_bytes,
        "flower_updates": flower_updates,
        "flower_seconds": flower_seconds,
        "flower_seconds_per_update": flower_seconds / flower_updates if flower_updates else math.nan,
        "seconds_per_update": seconds / num_updates,
    }


def site_memory(setup: Setup, cache_dir: str, sites: int = 20) -> dict[str, float]:
    """Resident memory of one worker serving ``sites`` virtual sites (one DP step each), as the
    simulation does: one cached model, each site's tokenized records, the Opacus step's peak."""
    import resource

    from client import runtime
    from client.train import DPSettings, train_round
    from common.config import AdapterConfig, DataConfig, RunConfig, TrainConfig, plan_for_round

    cfg, _, _ = _load(setup, cache_dir)
    run = RunConfig(
        num_sites=sites,
        model=cfg,
        lora=AdapterConfig(),
        train=TrainConfig(local_steps=1, batch_size=setup.batch_size, max_seq_len=setup.max_seq_len),
        data=DataConfig(records_per_site=64),
    )
    plan = plan_for_round(run, 1)
    model, tokenizer = runtime.model_for(plan.model, plan.lora, plan.seed)
    loaded = _rss_bytes()
    for index in range(sites):
        data = runtime.examples_for(plan.data, index, sites, plan, tokenizer)
        dp = DPSettings(
            noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=min(1.0, setup.batch_size / len(data.train))
        )
        train_round(
            model,
            data.train,
            plan.train,
            precision=runtime.precision_for(plan.model),
            pad_id=tokenizer.pad_token_id,
            dp=dp,
            rng=np.random.default_rng(index),
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "sites": sites,
        "rss_after_model_bytes": loaded,
        "rss_after_sites_bytes": _rss_bytes(),
        "peak_rss_bytes": float(peak),
        "peak_rss_per_site_bytes": peak / sites,
    }


def _rss_bytes() -> float:
    with open("/proc/self/statm", encoding="ascii") as fh:
        return float(int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))


def demo_wall_seconds() -> dict[str, float]:
    """Wall time of the default demo (`fedcare demo`: 3 hospitals federated with DP on SmolLM2, then each
    alone), install excluded."""
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "simulations.cli", "demo", f"output_dir={out}"],
            cwd=out,
            env=os.environ | {"PYTHONPATH": str(ROOT)},
            check=True,
            capture_output=True,
        )
        return {"seconds": time.perf_counter() - start}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("fedcare").setLevel(logging.WARNING)
    logging.getLogger("flwr").setLevel(logging.WARNING)  # the strategy's per-round lines during the aggregation
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def table(result: dict[str, Any]) -> str:
    """The human-readable table of a ``run`` result."""
    t = result["training"]
    lines = [
        f"fedcare speed ({t['precision']}, batch {result['setup']['batch_size']} x "
        f"{result['setup']['max_seq_len']} tokens, {t['data']}, {t['threads']} threads; "
        f"load average {result['load_before']:.1f} -> {result['load_after']:.1f})",
        f"{'':34} {'tokens/s':>9} {'s/step':>8}",
    ]
    for name, row in t["runs"].items():
        lines.append(f"{name:34} {row['tokens_per_s']:9.0f} {row['seconds_per_step']:8.2f}")
    peer = t["dp_over_peer_tokens_per_s"]
    lines += [
        f"DP step / non-DP step                {t['dp_over_no_dp_step']:.3f}x",
        f"fedcare DP tokens/s / peer's         {peer:.2f}x" if peer else "peer: transformers Trainer unavailable",
    ]
    peak = result["matmul_peak_gflops"]
    lines.append(
        f"matmul peak: fp32 {peak['float32']:.0f}, bf16 {peak['bfloat16']:.0f} GFLOP/s; "
        f"DP training {t['dp_training_gflops']:.1f} GFLOP/s = "
        f"{100 * t['dp_training_gflops'] / peak['float32' if t['precision'] == 'fp32' else 'bfloat16']:.1f}%"
        " of peak"
    )
    a = t["adapter"]
    ratio = a["model_bytes_fp32"] / a["adapter_bytes_fp32"]
    lines.append(
        f"bytes per round per site: adapter {a['adapter_bytes_fp32'] / 1e6:.2f} MB fp32 "
        f"({a['adapter_bytes_fp16'] / 1e6:.2f} MB fp16) vs full model {a['model_bytes_fp32'] / 1e6:.0f} MB "
        f"fp32 ({a['model_bytes_bf16'] / 1e6:.0f} MB bf16): {ratio:.0f}x less"
    )
    lines.append(aggregation_line(result["aggregation"]))
    m = result["sites"]
    lines.append(
        f"{m['sites']} virtual sites on one worker: peak RSS {m['peak_rss_bytes'] / 1e9:.2f} GB "
        f"({m['peak_rss_per_site_bytes'] / 1e6:.0f} MB per site; model loaded "
        f"{m['rss_after_model_bytes'] / 1e9:.2f} GB)"
    )
    if "demo" in result:
        lines.append(f"default demo (fedcare demo): {result['demo']['seconds']:.0f} s wall")
    return "\n".join(lines)


def aggregation_line(g: dict[str, float]) -> str:
    """One table line for :func:`aggregation_speed`'s result."""
    line = (
        f"aggregate {g['updates']} updates x {g['parameters'] / 1e6:.0f}M params (coordinator's FedAvg, screening "
        f"included): {g['seconds']:.2f} s ({g['cpu_seconds']:.2f} s CPU), peak extra memory "
        f"{g['peak_extra_bytes'] / 1e6:.0f} MB = {g['peak_extra_updates']:.1f} updates"
    )
    if g["flower_updates"]:
        line += (
            f"; Flower's aggregate_arrayrecords: {g['flower_seconds']:.2f} s for {g['flower_updates']} "
            f"({g['flower_seconds_per_update'] / g['seconds_per_update']:.0f}x the time per update)"
        )
    return line


def run(setup: Setup, *, demo: bool = False, cache_dir: str = "") -> dict[str, Any]:
    """Every measurement of the module, in one process; returns the JSON-able result."""
    import torch

    load_before = os.getloadavg()[0]
    result: dict[str, Any] = {
        "setup": dataclasses.asdict(setup),
        "load_before": load_before,
        "matmul_peak_gflops": {d: matmul_peak_gflops(d) for d in ("float32", "bfloat16")},
        "torch_threads": torch.get_num_threads(),
    }
    with _quiet():
        result["training"] = training_speed(setup, cache_dir)
        result["aggregation"] = aggregation_speed(setup.aggregate_updates, setup.aggregate_parameters)
        result["sites"] = site_memory(setup, cache_dir, setup.sites)
    if demo:
        result["demo"] = demo_wall_seconds()
    result["load_after"] = os.getloadavg()[0]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=Setup.model, help="smollm2-135m-instruct (default), tiny, or a local dir")
    parser.add_argument("--precision", default=Setup.precision, choices=["auto", "bf16", "fp32"])
    parser.add_argument("--batch-size", type=int, default=Setup.batch_size)
    parser.add_argument("--max-seq-len", type=int, default=Setup.max_seq_len)
    parser.add_argument("--steps", type=int, default=Setup.steps)
    parser.add_argument("--repeats", type=int, default=Setup.repeats)
    parser.add_argument("--sites", type=int, default=Setup.sites, help="virtual sites on one worker (memory)")
    parser.add_argument("--aggregate-updates", type=int, default=Setup.aggregate_updates)
    parser.add_argument("--demo", action="store_true", help="also time the default demo (several minutes)")
    parser.add_argument("--aggregation-only", action="store_true", help="measure only the aggregation (no model)")
    parser.add_argument("--json", type=Path, help="write the JSON result here too")
    args = parser.parse_args(argv)
    setup = Setup(
        model=args.model,
        precision=args.precision,
        batch_size=args.batch_size,
        max_seq_len=args.max_seq_len,
        steps=args.steps,
        repeats=args.repeats,
        sites=args.sites,
        aggregate_updates=args.aggregate_updates,
    )
    if args.aggregation_only:
        with _quiet():
            aggregation = aggregation_speed(setup.aggregate_updates, setup.aggregate_parameters)
        print(aggregation_line(aggregation))
        print(json.dumps(aggregation, indent=2, sort_keys=True))
        return 0
    result = run(setup, demo=args.demo, cache_dir=os.environ.get("FEDCARE_CACHE", ""))
    text = json.dumps(result, indent=2, sort_keys=True)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    print(table(result))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
