"""What crosses the wire between coordinator and sites: record names and the allowed reply metrics.

A site's reply may hold only LoRA adapter tensors (train) and the numeric metrics listed here.
Both sides check it: the site before sending, the coordinator on receipt.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

ARRAYS = "arrays"  # ArrayRecord: the adapter's LoRA tensors
PLAN = "config"  # ConfigRecord: the flat SitePlan of the round
METRICS = "metrics"  # MetricRecord: numbers only
NUM_EXAMPLES = "num-examples"  # Flower's conventional aggregation weight key

TRAIN_METRICS = frozenset({
    NUM_EXAMPLES,  # training records at the site (FedAvg weight)
    "site_index",  # the site's position among the simulation's sites (its partition id)
    "train_loss",  # mean per-example answer-token loss over the round, nats/token
    "steps",  # DP-SGD steps this round
    "examples_seen",  # examples over the round's Poisson batches
    "tokens",  # tokens processed this round
    "seconds",  # wall seconds of the round's steps
    "seconds_per_step",  # seconds / steps
    "update_norm",  # L2 norm of this round's adapter change
    "dp_enabled",  # 1.0 with DP-SGD, 0.0 without
    "epsilon",  # epsilon spent over the whole run so far (inf without DP)
    "target_epsilon",  # the site's budget over all planned rounds
    "delta",  # the site's delta
    "noise_multiplier",  # sigma of DP-SGD
    "sample_rate",  # Poisson sampling rate q = batch_size / records
    "phi_removed",  # identifiers de-identification replaced in the site's records (a count, never values)
    "bf16",  # 1.0 when the site computed in bf16 (model.precision, auto resolved for its hardware), 0.0 fp32
})
EVAL_METRICS = frozenset({NUM_EXAMPLES, "site_index", "eval_loss"})


def check_metrics(metrics: Mapping[str, object], allowed: frozenset[str]) -> None:
    """Raise unless ``metrics`` holds only allowed names with finite-or-inf float/int values.

    Raises:
        ValueError: naming the offending key (never a value, which could be anything).
    """
    for key, value in metrics.items():
        if key not in allowed:
            raise ValueError(f"reply metric {key!r} is not an allowed metric name")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise ValueError(f"reply metric {key!r} is not a number")
