"""``fedcare audit canaries``: plant secret canaries at one site, train with and without DP, measure leakage."""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.canaries import Canary, candidate_records, exposure, make_canaries, membership_auc, sample_candidates
from common.config import RunConfig
from common.console import configure_logging
from common.datasets import load_site_data
from common.errors import ConfigError, FedcareError
from common.examples import IGNORE_INDEX, collate, split_indices, tokenize_record
from common.records import ChatRecord
from common.synthetic import generate_site_records, site_name, write_jsonl
from server.compose import compose

log = logging.getLogger("fedcare.audit")

DIGITS = 6  # secret width: a space of 10**6 secrets
DEID_NOTE = (
    "de-identification was OFF in both runs (it would scrub the canaries' names): "
    "these numbers measure what DP-SGD alone protects"
)
# Keys the audit sets itself; a user's value for them would silently break the planted data or the run layout.
_RESERVED = ("data", "data.kind", "data.paths", "data.deid", "data.partition_field", "output_dir", "run_name")


def plant_canaries(
    records: Sequence[ChatRecord],
    canaries: Sequence[Canary],
    repeats: int,
    *,
    eval_fraction: float,
    split_seed: int,
    seed: int,
) -> tuple[list[ChatRecord], list[int]]:
    """Insert ``repeats`` copies of each canary at positions that the site's split puts in training.

    The site splits its records with ``split_indices(n, eval_fraction, split_seed)`` over the final
    list (tokenization keeps the count), so the split of the final length is computed first, canary
    copies take random training slots, and the original records fill the other slots in order.

    Args:
        records: The site's records without canaries.
        canaries: The canaries to plant.
        repeats: Copies of each canary.
        eval_fraction: The site's held-out share (``data.eval_fraction``).
        split_seed: The site's split seed (``data.seed + site_index``).
        seed: Fixes which training slots the copies take.

    Returns:
        (all records, sorted positions of the canary copies).

    Raises:
        ConfigError: the training split has fewer slots than canary copies.
    """
    copies = [canary.record for canary in canaries for _ in range(repeats)]
    total = len(records) + len(copies)
    train_idx, _ = split_indices(total, eval_fraction, split_seed)
    if len(copies) > len(train_idx):
        raise ConfigError(
            f"canary audit: {len(copies)} canary copies do not fit in {len(train_idx)} training "
            "slots; raise data.records_per_site or lower --canaries/--repeats"
        )
    rng = np.random.default_rng([seed, 0x5107])
    slots = sorted(int(i) for i in rng.choice(train_idx, size=len(copies), replace=False))
    placed: list[ChatRecord | None] = [None] * total
    for slot, position in zip(slots, rng.permutation(len(copies)), strict=True):  # copies spread, not grouped
        placed[slot] = copies[int(position)]
    rest = iter(records)
    out = [record if record is not None else next(rest) for record in placed]
    return out, slots


def main(argv: list[str] | None = None) -> int:
    """Plant canaries at site 0, run the simulation with and without DP, and report what leaked.

    Following Carlini et al. 2019 ("The Secret Sharer"), fake patient records holding random 6-digit
    secrets are planted ``--repeats`` times each in site 0's training split. The same federated
    simulation runs twice, with DP-SGD and with ``privacy=none``, and the final global adapter of each
    (and the bare base model, as a reference) is scored: each canary's exposure against
    ``--candidates`` random secrets, and the AUC of a loss-threshold membership-inference attack on
    site 0's held-in vs held-out records. De-identification is off in both runs: it would scrub the
    canaries' names, and the audit measures what DP alone guarantees. Prints a table and writes
    ``OUT/canary_audit.json``.

    Example::

        python -m simulations.canary_audit model=tiny num_rounds=3 train.local_steps=30 --canaries 5

    Args:
        argv: Options and Hydra overrides (``sys.argv[1:]`` when None).

    Returns:
        0 on success.

    Raises:
        FedcareError: on a bad configuration, a failed run, or canaries the split would not train on.
    """
    from simulations.cli import ArgumentParser  # one-line usage errors, like every fedcare command

    parser = ArgumentParser(prog="fedcare audit canaries", description=__doc__.splitlines()[0])
    parser.add_argument("--canaries", type=int, default=5, help="distinct canaries (fake patients with secrets)")
    parser.add_argument("--repeats", type=int, default=4, help="copies of each canary planted at site 0")
    parser.add_argument(
        "--candidates",
        type=int,
        default=200,
        help="random other secrets each canary is ranked against; exposure resolves up to log2(candidates + 1) bits",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the canaries, their slots and candidates")
    parser.add_argument("--out", default="runs/canary-audit", help="folder for the data, both runs and the report")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both runs, e.g. model=tiny num_rounds=3")
    args = parser.parse_intermixed_args(argv)
    for name in ("canaries", "repeats", "candidates"):
        if getattr(args, name) < 1:
            raise ConfigError(f"canary audit: --{name} must be >= 1")
    configure_logging()
    out = Path(args.out).resolve()
    user = _user_overrides(args.overrides)

    # The files group's split settings are what the sites will use; paths are stand-ins until the files exist.
    num_sites = compose(user)[0].num_sites
    base_cfg, _ = compose(
        [*user, "data=files", f"data.paths=[{','.join(['pending.jsonl'] * num_sites)}]", "data.deid=off"]
    )
    if not base_cfg.privacy.enabled:
        raise ConfigError("canary audit: the DP run needs DP on; drop privacy=none (the audit adds its own no-DP run)")
    canaries = make_canaries(args.canaries, seed=args.seed, digits=DIGITS)
    paths, slots = _write_site_files(out / "data", base_cfg, canaries, args.repeats, args.seed)
    data_overrides = [
        "data=files",
        f"data.paths=[{','.join(_quote(str(p)) for p in paths)}]",
        "data.deid=off",
        f"output_dir={_quote(str(out))}",
    ]
    runs = {
        "dp": [*user, *data_overrides, "run_name=dp"],
        "nodp": [*(o for o in user if _key(o) != "privacy"), *data_overrides, "privacy=none", "run_name=nodp"],
    }
    cfg, _ = compose(runs["dp"])
    site0 = _verify_planting(cfg, canaries, args.repeats)
    _check_canaries_fit(cfg, canaries)
    log.info(
        "planted %d canaries x %d copies at site-0 (%s): all in its training split; %s",
        len(canaries),
        args.repeats,
        site0["name"],
        DEID_NOTE,
    )

    candidates = [
        sample_candidates(c.secret, args.candidates, rng=np.random.default_rng([args.seed, 1, i]), digits=DIGITS)
        for i, c in enumerate(canaries)
    ]
    report: dict[str, Any] = {
        "canaries": [{"name": c.name, "secret": c.secret} for c in canaries],
        "repeats": args.repeats,
        "candidates": args.candidates,
        "space_size": 10**DIGITS,
        "max_exposure": math.log2(args.candidates + 1),
        "chance_exposure": math.log2(math.e),
        "site": {
            "name": site0["name"],
            "records": site0["records"],
            "canary_positions": slots,
            "members": len(site0["members"]),
            "nonmembers": len(site0["nonmembers"]),
            "dropped_cross_split_duplicates": site0["dropped"],
        },
        "deidentification": "off",
        "note": DEID_NOTE,
        "seed": args.seed,
        "user_overrides": user,
        "runs": {},
    }
    from simulations.run import simulate  # Flower and Ray load only when a run is due

    summaries: dict[str, dict[str, Any]] = {}
    for name, overrides in runs.items():  # one after the other: never two simulations at once
        _clear_run_dir(out / name)
        log.info("%s run: federated training (%s)", name, " ".join(overrides))
        summaries[name] = simulate(overrides)
    # Scoring waits for both runs to end, so it never competes with the Ray workers for the cores.
    log.info("base model: scoring canaries and site-0 records (reference for a model that never saw them)")
    report["runs"]["base"] = _score(cfg, None, canaries, candidates, site0)
    report["runs"]["base"]["eval_loss"] = summaries["dp"]["eval_loss_by_round"][0]  # round 0: adapter still a no-op
    for name, summary in summaries.items():
        log.info("%s run: scoring canaries and site-0 records with %s", name, summary["adapter_dir"])
        run_cfg, run_raw = compose(runs[name])
        scores = _score(run_cfg, summary["adapter_dir"], canaries, candidates, site0)
        holder = next(s for s in summary["sites"] if s["site_id"] == "site-0")  # the site with the canaries
        report["runs"][name] = {
            "dp_enabled": summary["dp_enabled"],
            "overrides": runs[name],
            "run_dir": summary.get("run_dir", str(out / name)),
            "adapter_dir": summary["adapter_dir"],
            "sites": summary["sites"],
            "epsilon": holder["epsilon"],
            "target_epsilon": holder["target_epsilon"] if summary["dp_enabled"] else None,
            "delta": holder["delta"] if summary["dp_enabled"] else None,
            "eval_loss": summary["eval_loss_by_round"][-1],
            "eval_loss_by_round": summary["eval_loss_by_round"],
            "wall_seconds": summary["wall_seconds"],
            "config": run_raw,
            **scores,
        }
    report_path = out / "canary_audit.json"
    report_path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(_table(report))
    print(f"report: {report_path}")
    return 0


def _user_overrides(overrides: Sequence[str]) -> list[str]:
    kept = []
    for override in overrides:
        if _key(override) in _RESERVED:
            log.warning("canary audit: ignoring %s (the audit sets it)", override)
        else:
            kept.append(override)
    return kept


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _quote(text: str) -> str:
    # Hydra's quoted-string syntax, so paths with spaces, commas or brackets survive the override grammar.
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _write_site_files(
    folder: Path, cfg: RunConfig, canaries: Sequence[Canary], repeats: int, seed: int
) -> tuple[list[Path], list[int]]:
    paths, slots = [], []
    for index in range(cfg.num_sites):
        records = generate_site_records(index, cfg.data.records_per_site, seed=cfg.data.seed)
        if index == 0:
            records, slots = plant_canaries(
                records, canaries, repeats, eval_fraction=cfg.data.eval_fraction, split_seed=cfg.data.seed, seed=seed
            )
        path = folder / f"{site_name(index)}.jsonl"
        write_jsonl(records, path)
        paths.append(path)
    return paths, slots


def _verify_planting(cfg: RunConfig, canaries: Sequence[Canary], repeats: int) -> dict[str, Any]:
    """Reload site 0 as the site will and check every canary copy is in its training split."""
    site = load_site_data(cfg.data, 0, cfg.num_sites)
    train_idx, eval_idx = split_indices(len(site.records), cfg.data.eval_fraction, cfg.data.seed)
    planted = {c.record for c in canaries}
    positions = [i for i, record in enumerate(site.records) if record in planted]
    train = set(int(i) for i in train_idx)
    if len(positions) != len(canaries) * repeats or not train.issuperset(positions):
        raise FedcareError(
            f"canary audit: {len(positions)} of {len(canaries) * repeats} canary copies reached "
            "site 0's training split (is data.max_records_per_site set?)"
        )
    members = [site.records[i] for i in train_idx if site.records[i] not in planted]
    nonmembers = [site.records[i] for i in eval_idx]
    # Templated synthetic records repeat; an exact copy on both sides is both a member and not, so it is dropped.
    shared = set(members) & set(nonmembers)
    kept_members = [r for r in members if r not in shared]
    kept_nonmembers = [r for r in nonmembers if r not in shared]
    if not kept_members or not kept_nonmembers:
        raise FedcareError(
            "canary audit: site 0 has no distinct held-in or held-out records; raise data.records_per_site"
        )
    return {
        "name": site.name,
        "records": len(site.records),
        "members": kept_members,
        "nonmembers": kept_nonmembers,
        "dropped": len(members) + len(nonmembers) - len(kept_members) - len(kept_nonmembers),
    }


def _check_canaries_fit(cfg: RunConfig, canaries: Sequence[Canary]) -> None:
    """Refuse a max_seq_len that would cut a canary: a truncated secret cannot be learned or scored."""
    from transformers import AutoTokenizer

    from common.model import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(cfg.model))
    for canary in canaries:
        full = tokenize_record(canary.record, tokenizer, 1 << 30)
        if len(full.input_ids) > cfg.train.max_seq_len:
            raise ConfigError(
                f"canary audit: a canary record takes {len(full.input_ids)} tokens, more than "
                f"train.max_seq_len={cfg.train.max_seq_len}; raise train.max_seq_len"
            )


def _score(
    cfg: RunConfig,
    adapter_dir: str | None,
    canaries: Sequence[Canary],
    candidates: Sequence[list[str]],
    site0: dict[str, Any],
) -> dict[str, Any]:
    """Exposure of every canary and membership AUC on site 0, for the base model plus an optional adapter."""
    import torch

    from common.model import load_model_and_tokenizer

    if cfg.model.num_threads:
        torch.set_num_threads(cfg.model.num_threads)
    model, tokenizer = load_model_and_tokenizer(cfg.model)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
    model.eval()
    per_canary = []
    for canary, others in zip(canaries, candidates, strict=True):
        _, totals = record_losses(model, tokenizer, cfg, [canary.record, *candidate_records(canary, others)])
        # Whole-answer log-perplexity ranks the secrets; only the secret's tokens (and what follows) differ.
        true_loss, other_losses = float(totals[0]), [float(x) for x in totals[1:]]
        rank = 1 + sum(x < true_loss for x in other_losses) + 0.5 * sum(x == true_loss for x in other_losses)
        per_canary.append(
            {
                "name": canary.name,
                "secret": canary.secret,
                "loss": true_loss,
                "rank": rank,
                "candidate_loss_median": float(np.median(other_losses)),
                "exposure": exposure(true_loss, other_losses, 10**DIGITS),
            }
        )
    # Per-token mean loss for membership: records differ in length, and the attack thresholds one number.
    member_losses, _ = record_losses(model, tokenizer, cfg, site0["members"])
    nonmember_losses, _ = record_losses(model, tokenizer, cfg, site0["nonmembers"])
    exposures = [c["exposure"] for c in per_canary]
    return {
        "exposures": per_canary,
        "exposure_mean": float(np.mean(exposures)),
        "exposure_max": float(np.max(exposures)),
        "mia_auc": membership_auc(member_losses.tolist(), nonmember_losses.tolist()),
        "member_loss_mean": float(np.mean(member_losses)),
        "nonmember_loss_mean": float(np.mean(nonmember_losses)),
    }


def record_losses(
    model: Any, tokenizer: Any, cfg: RunConfig, records: Sequence[ChatRecord]
) -> tuple[np.ndarray, np.ndarray]:
    """Score records with the answer-token loss the sites train on (``client.train.per_example_loss``).

    Args:
        model: A causal LM, with or without a PEFT adapter.
        tokenizer: Its tokenizer (chat template applied as in training).
        cfg: Supplies ``train.max_seq_len``, ``train.eval_batch_size`` and ``model.precision``.
        records: The records to score.

    Returns:
        (mean loss per answer token, total loss over the answer tokens) of each record, in nats.
    """
    import torch

    from client.train import per_example_loss

    examples = [tokenize_record(r, tokenizer, cfg.train.max_seq_len) for r in records]
    # per_example_loss predicts token t from t-1, so a label at position 0 is never scored.
    counts = np.array([sum(label != IGNORE_INDEX for label in e.labels[1:]) for e in examples], dtype=np.float64)
    means = []
    size = cfg.train.eval_batch_size
    with torch.no_grad():
        for start in range(0, len(examples), size):
            batch = collate(examples[start : start + size], tokenizer.pad_token_id)
            means.append(per_example_loss(model, batch, cfg.model.precision).numpy())
    mean = np.concatenate(means).astype(np.float64)
    return mean, mean * counts


def _clear_run_dir(path: Path) -> None:
    # A run directory appends to metrics.jsonl: a previous audit's run must go, but nothing else is deleted.
    if not path.exists():
        return
    if not (path / "config.json").exists() and any(path.iterdir()):
        raise FedcareError(f"canary audit: {path} exists and is not a fedcare run directory; choose another --out")
    log.info("removing the previous run %s", path)
    shutil.rmtree(path)


def _table(report: dict[str, Any]) -> str:
    top = report["max_exposure"]
    rows = [("run", "epsilon (site-0)", "exposure mean", f"exposure max (of {top:.2f})", "MIA AUC", "eval loss")]
    for name, label in (("base", "base model"), ("dp", "DP"), ("nodp", "no DP")):
        run = report["runs"][name]
        if name == "base":
            eps = "-"
        elif run["dp_enabled"]:
            eps = f"{run['epsilon']:.2f} / {run['target_epsilon']:g}"
        else:
            eps = "inf (DP off)"
        rows.append(
            (
                label,
                eps,
                f"{run['exposure_mean']:.2f} bits",
                f"{run['exposure_max']:.2f} bits",
                f"{run['mia_auc']:.3f}",
                f"{run['eval_loss']:.3f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    site = report["site"]
    head = (
        f"\ncanary audit: {len(report['canaries'])} canaries x {report['repeats']} copies in {site['name']}'s "
        f"training split, each ranked against {report['candidates']} random secrets\n"
        f"exposure: bits, {top:.2f} = the true secret beats every candidate, ~{report['chance_exposure']:.2f} "
        f"= chance; MIA AUC: loss attack on {site['members']} held-in vs {site['nonmembers']} held-out "
        "records, 0.5 = chance\n"
        f"{DEID_NOTE}\n"
    )
    return head + "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
