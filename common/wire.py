"""What crosses the wire between coordinator and sites, and the release rule for every number a site sends.

The release rule: a site's reply holds only

* LoRA adapter tensors trained by DP-SGD under the site's budget (train replies);
* numbers that are data-independent: the site's configuration, its ledger's accounting, and the
  sizes of its training and held-out sets (treated as public, as DP-SGD's sample rate already is);
* post-processing of what was released: ``update_norm`` is the norm of the DP-trained adapter's
  change, which the coordinator could compute from the tensors themselves;
* held-out metrics as a per-unit clipped sum plus Gaussian noise, each evaluate reply charged to
  the site's ledger as one query (``common.privacy.release_sums`` / ``charge_query``).

Record-dependent training numbers (the loss of the secret batches, tokens, examples seen, wall time,
identifiers scrubbed) stay in the site's own log. Both sides enforce it: the site before sending, the
coordinator on receipt (:func:`check_metrics`). A site that runs with DP off releases exact metrics and
says so (``dp_enabled`` 0); nothing it sends is then covered.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

ARRAYS = "arrays"  # ArrayRecord: the adapter's LoRA tensors
PLAN = "config"  # ConfigRecord: the flat SitePlan of the round
METRICS = "metrics"  # MetricRecord: numbers only
NUM_EXAMPLES = "num-examples"  # Flower's conventional aggregation weight key
EGRESS = "egress"  # ConfigRecord of every reply: {"seq": int, "head": hex} of the site's egress log after it

PUBLIC = "data-independent"  # site configuration, ledger accounting, data set sizes
DERIVED = "post-processing of DP-released tensors"
ACCOUNTED = "clipped sum + Gaussian noise, charged to the site's ledger"

_BUDGET = {
    "dp_enabled": PUBLIC,  # 1.0 with DP, 0.0 without (then nothing the site sends is covered)
    "epsilon": PUBLIC,  # epsilon the site has spent over its life, after this reply (inf without DP)
    "target_epsilon": PUBLIC,  # the site's lifetime budget
    "epsilon_remaining": PUBLIC,  # target_epsilon - epsilon
    "delta": PUBLIC,  # the site's delta
    "noise_multiplier": PUBLIC,  # sigma of this release (DP-SGD, or the evaluation query)
}
TRAIN_METRICS: Mapping[str, str] = {
    NUM_EXAMPLES: PUBLIC,  # training records at the site (FedAvg weight)
    "site_index": PUBLIC,  # the site's index (site.yaml)
    "steps": PUBLIC,  # DP-SGD steps this round (= the plan's local_steps)
    "update_norm": DERIVED,  # L2 norm of this round's adapter change
    "sample_rate": PUBLIC,  # Poisson sampling rate q = batch_size / units
    "bf16": PUBLIC,  # 1.0 when the site computed in bf16 (model.precision, auto resolved for its hardware), 0.0 fp32
    **_BUDGET,
}
MAX_TASK_CLASSES = 10  # options of a choice task whose confusion matrix a site may release (A..J)
TASK_PREFIX = "task_"  # reply metrics of the site's own task set (common.task_release); not averaged as-is


def confusion_key(gold: int, predicted: int) -> str:
    """Reply metric name of one confusion-matrix cell (gold class row, predicted class column)."""
    return f"{TASK_PREFIX}confusion_{gold}_{predicted}"


EVAL_METRICS: Mapping[str, str] = {
    NUM_EXAMPLES: PUBLIC,  # held-out records at the site
    "site_index": PUBLIC,
    "eval_loss": ACCOUNTED,  # mean held-out loss, nats/token: sum of per-unit losses clipped to
    # [0, privacy.eval_loss_clip], released with the reply's other sums (common.task_release), over units
    **_BUDGET,
    # The site's task set, scored when the plan asks (score_tasks): released in the SAME noised query as
    # eval_loss, every sum scaled to a per-unit bound of 1 (joint sensitivity sqrt(number of sums)).
    f"{TASK_PREFIX}units": PUBLIC,  # privacy units (items, or patients) in the site's task set: its size
    f"{TASK_PREFIX}classes": PUBLIC,  # options of its choice task (0 = a generation task)
    f"{TASK_PREFIX}noise_std": PUBLIC,  # std of the Gaussian noise on each released count / ROUGE-L sum (0 = DP off)
    f"{TASK_PREFIX}loss_clip": PUBLIC,  # generation: per-unit answer loss clip (nats/token); its noise std x this
    **{confusion_key(i, j): ACCOUNTED for i in range(MAX_TASK_CLASSES) for j in range(MAX_TASK_CLASSES)},
    # choice: per-unit share of items with gold class i predicted as j (1 per item under privacy.unit=record), noised
    f"{TASK_PREFIX}rouge_l_sum": ACCOUNTED,  # generation: sum of per-unit ROUGE-L F1 (each in [0, 1]), noised
    f"{TASK_PREFIX}loss_sum": ACCOUNTED,  # generation: sum of per-unit answer-token loss clipped to [0, loss_clip]
}


def check_egress(record: Mapping[str, object]) -> tuple[int, str]:
    """The (seq, head hash) a reply reports for the site's egress log; the only strings a site sends.

    The head hash is a function of what the site already released (hashes and numbers) and timestamps,
    so it says nothing about records; anchored in the coordinator's signed manifest it lets the site
    (or an auditor) detect a rewritten or truncated log.

    Raises:
        ValueError: unless the record is exactly {"seq": positive int, "head": 64 lowercase hex}.
    """
    if set(record) != {"seq", "head"}:
        raise ValueError(f"reply record {EGRESS!r}: expected exactly the keys 'seq' and 'head'")
    seq, head = record["seq"], record["head"]
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise ValueError(f"reply record {EGRESS!r}: 'seq' is not a positive integer")
    if not isinstance(head, str) or len(head) != 64 or set(head) - set("0123456789abcdef"):
        raise ValueError(f"reply record {EGRESS!r}: 'head' is not a SHA-256 hex digest")
    return seq, head


def check_metrics(metrics: Mapping[str, object], allowed: Mapping[str, str]) -> None:
    """Raise unless ``metrics`` holds only allowed names with finite-or-inf float/int values.

    Raises:
        ValueError: naming the offending key (never a value, which could be anything).
    """
    for key, value in metrics.items():
        if key not in allowed:
            raise ValueError(f"reply metric {key!r} is not an allowed metric name (see common.wire's release rule)")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise ValueError(f"reply metric {key!r} is not a number")
