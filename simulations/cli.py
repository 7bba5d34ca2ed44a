"""The ``fedcare`` command line: simulate, check-data, prepare-model, generate.

Errors fedcare raises on purpose (bad config, bad data, exhausted budget) print one line and exit
with status 2; they never print a traceback or any record text.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from common.errors import FedcareError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fedcare", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help="run N hospitals on Flower's simulation engine",
                         description="Hydra overrides, e.g.: num_sites=5 num_rounds=3 privacy.target_epsilon=4")
    sim.add_argument("overrides", nargs="*", help="Hydra overrides (key=value, group=option)")
    chk = sub.add_parser("check-data", help="validate site data files without training")
    chk.add_argument("files", nargs="+", help="JSONL, JSON, CSV or Parquet files")
    chk.add_argument("--prompt-column", default="", help="column mapping for other shapes")
    chk.add_argument("--completion-column", default="", help="answer column, with --prompt-column")
    prep = sub.add_parser("prepare-model", help="convert/cache the base model once (SmolLM2 GGUF -> safetensors)")
    prep.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=tiny")
    gen = sub.add_parser("generate", help="generate text with the base model plus a saved adapter")
    gen.add_argument("adapter", help="adapter directory (adapter_config.json + adapter_model.safetensors)")
    gen.add_argument("prompt", help="user message")
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("overrides", nargs="*", help="Hydra overrides selecting the base model")
    args = parser.parse_args(argv)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "simulate": _simulate, "check-data": _check_data, "prepare-model": _prepare_model, "generate": _generate,
    }
    try:
        return commands[args.command](args)
    except FedcareError as err:
        print(f"fedcare: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedcare: interrupted", file=sys.stderr)
        return 130


def _simulate(args: argparse.Namespace) -> int:
    from simulations.run import main as run_main

    return run_main(args.overrides)


def _check_data(args: argparse.Namespace) -> int:
    from common.records import ColumnMapping, load_records

    columns = ColumnMapping(args.prompt_column, args.completion_column) if args.prompt_column else None
    for path in args.files:
        records = load_records(path, columns)
        print(f"{path}: {len(records)} records OK")
    return 0


def _prepare_model(args: argparse.Namespace) -> int:
    from common.model import resolve_model
    from server.compose import compose

    cfg, _ = compose(args.overrides)
    print(resolve_model(cfg.model))
    return 0


def _generate(args: argparse.Namespace) -> int:
    import torch
    from peft import PeftModel

    from common.model import load_model_and_tokenizer
    from server.compose import compose

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cfg, _ = compose(args.overrides)
    base, tokenizer = load_model_and_tokenizer(cfg.model)
    model = PeftModel.from_pretrained(base, args.adapter)
    enc = tokenizer.apply_chat_template([{"role": "user", "content": args.prompt}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=args.max_new_tokens, do_sample=False)
    print(tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
