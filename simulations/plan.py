"""``fedcare plan``: noise multiplier and noise-to-signal of a few batch/steps choices; recommends one.

fedcare plan                                  # the configured demo sites
fedcare plan --records 2000 privacy.target_epsilon=4 num_rounds=5
"""

from __future__ import annotations

import argparse
import json

from common.errors import ConfigError


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--records",
        type=int,
        default=0,
        help="training records per site (0 = from the config: synthetic sites, or the files)",
    )
    parser.add_argument(
        "--budget-examples",
        type=int,
        default=0,
        help="examples a site may process over the run (0 = the configured train.batch_size x "
        "train.local_steps x num_rounds: the compute you already spend)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides: privacy.target_epsilon, num_rounds, data...")
    return parser


def main(args: argparse.Namespace) -> int:
    from common.planning import format_plan, plan_options, plan_to_dict, recommend
    from server.compose import compose

    cfg, _ = compose(args.overrides)
    records = args.records or _training_records(cfg)
    budget = args.budget_examples or cfg.train.batch_size * cfg.train.local_steps * cfg.num_rounds
    options = plan_options(
        records,
        cfg.privacy.target_epsilon,
        cfg.num_rounds,
        target_delta=cfg.privacy.target_delta,
        accountant=cfg.privacy.accountant,
    )
    chosen = recommend(options, budget)
    if args.json:
        print(json.dumps(plan_to_dict(options, chosen), indent=2))
    else:
        print(format_plan(options, chosen, records, cfg.privacy.target_epsilon, cfg.num_rounds, budget))
    return 0


def _training_records(cfg) -> int:  # noqa: ANN001 - a RunConfig
    from common.datasets import load_site_data

    if cfg.data.kind != "synthetic" and not cfg.data.paths:
        raise ConfigError("plan: pass --records N (training records per site)")
    smallest = min(len(load_site_data(cfg.data, i, cfg.num_sites).records) for i in range(cfg.num_sites))
    return max(1, round(smallest * (1 - cfg.data.eval_fraction)))
