"""``fedcare evaluate``: the base model and saved adapters side by side on a task file.

fedcare evaluate ../shared/data/pubmedqa/pqal_dev.jsonl
fedcare evaluate test.jsonl --adapter runs/demo/adapters/round-003 --no-verify --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from common.errors import FedcareError


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("task", help="task file: JSONL, JSON, CSV or Parquet (same column mapping as training data)")
    parser.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="[NAME=]DIR",
        help="a saved adapter to compare with the base model (repeat for several)",
    )
    parser.add_argument(
        "--kind",
        default="auto",
        choices=["auto", "choice", "generation"],
        help="choice: score options by log-likelihood; generation: greedy decoding + ROUGE-L",
    )
    parser.add_argument("--prompt-column", default="", help="prompt column ('' = detect input/prompt/question)")
    parser.add_argument("--answer-column", default="", help="gold column ('' = label, else output/completion/answer)")
    parser.add_argument("--context-column", default="", help="text put before the prompt ('' = 'context' if present)")
    parser.add_argument(
        "--choices", default="", help="comma-separated options ('' = the row's options or the distinct gold answers)"
    )
    parser.add_argument("--group-column", default="", help="subgroup field for the fairness audit")
    parser.add_argument("--limit", type=int, default=0, help="first N rows only (0 = all)")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="generation cap per item")
    parser.add_argument("--max-prompt-tokens", type=int, default=1024, help="prompt tokens kept (cut from the left)")
    parser.add_argument("--no-base", action="store_true", help="score only the adapters")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--key", help="coordinator's public signing key: adapters are verified before use")
    parser.add_argument("--no-verify", action="store_true", help="use unsigned adapters (e.g. from a simulation)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides selecting the base model, e.g. model=tiny")
    return parser


def main(args: argparse.Namespace) -> int:
    import torch

    from common.console import configure_logging
    from common.evaluation import EvalSettings, TaskSpec, evaluate_models, format_results, load_task
    from common.model import load_model_and_tokenizer
    from common.signing import verify_adapter
    from server.compose import compose

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    configure_logging()
    adapters = [_named(a, i) for i, a in enumerate(args.adapter)]
    for _, path in adapters:
        if args.key:
            verify_adapter(path, Path(args.key))
        elif not args.no_verify:
            raise FedcareError(
                f"{path}: pass --key coordinator.pub to verify the adapter's signature, "
                "or --no-verify for an unsigned adapter"
            )
    if args.no_base and not adapters:
        raise FedcareError("evaluate: --no-base needs at least one --adapter")
    spec = TaskSpec(
        kind=args.kind,
        prompt_column=args.prompt_column,
        answer_column=args.answer_column,
        context_column=args.context_column,
        choices=tuple(c.strip() for c in args.choices.split(",") if c.strip()),
        group_column=args.group_column,
        limit=args.limit,
    )
    task = load_task(args.task, spec)
    cfg, _ = compose(args.overrides)
    torch.manual_seed(0)
    if cfg.model.num_threads:
        torch.set_num_threads(cfg.model.num_threads)
    base, tokenizer = load_model_and_tokenizer(cfg.model)
    settings = EvalSettings(
        max_prompt_tokens=args.max_prompt_tokens,
        max_new_tokens=args.max_new_tokens,
        max_seq_len=args.max_prompt_tokens + args.max_new_tokens,
    )
    result = evaluate_models(base, tokenizer, task, adapters, settings, include_base=not args.no_base)
    result["task"]["path"] = str(args.task)
    result["model"] = cfg.model.name_or_path
    print(format_results(result))
    seconds = ", ".join(f"{k} {v:.1f} s" for k, v in result["seconds"].items())
    print(f"\ntime: {seconds}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        print(f"results: {args.json}")
    return 0


def _named(spec: str, index: int) -> tuple[str, Path]:
    name, sep, path = spec.partition("=")
    if not sep:
        path, name = spec, ""
    directory = Path(path)
    if not (directory / "adapter_config.json").exists():
        raise FedcareError(f"--adapter {path}: not an adapter directory (no adapter_config.json)")
    if not name:  # runs/<run>/adapters/round-003 -> <run>/round-003
        parts = directory.resolve().parts
        name = f"{parts[-3]}/{parts[-1]}" if len(parts) >= 3 and parts[-2] == "adapters" else directory.name
    return name or f"adapter-{index + 1}", directory
