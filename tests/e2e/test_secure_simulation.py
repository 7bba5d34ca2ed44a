"""End to end with secure aggregation: ``fedcare simulate strategy=secagg`` on Flower's engine, DP-SGD on."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from flwr.common.secure_aggregation.secaggplus_constants import Key as SecAggKey

from tests.e2e.test_simulation import check_run, run_cli


@pytest.mark.slow
def test_three_sites_under_secagg_and_dp(tmp_path: Path, cache_dir: Path) -> None:
    from common.credentials import create_signing_keypair

    key, pub = create_signing_keypair(tmp_path / "keys")
    result = run_cli(
        [
            "simulate",
            "+experiment=smoke",
            "strategy=secagg",
            "num_sites=3",
            "simulation.verbose=true",  # Flower's INFO lines: its SecAgg+ workflow's "Secure aggregation completed"
            "data.task_items_per_site=4",  # the protocol and its logs are checked, not the task evaluation
            f"output_dir={tmp_path}",
            "run_name=secure",
            f"coordinator.signing_key={key}",
        ],
        cache_dir,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "secure"
    summary = check_run(run_dir, sites=3, rounds=2, dp=True)  # every site's epsilon within its target
    assert summary["secure_aggregation"] is True
    assert "Secure aggregation completed" in result.stderr and "held-out loss by round" in result.stdout
    from safetensors.numpy import load_file

    saved = load_file(str(Path(summary["adapter_dir"]) / "adapter_model.safetensors"))
    adapter_bytes = sum(a.nbytes for a in saved.values())
    # What came up were masked int64 vectors (one value per LoRA value, plus each site's weight factor).
    assert summary["bytes_up_per_round"] == [3 * (2 * adapter_bytes + 8)] * 2
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(r["secure_aggregation"] and r["bytes_up_protocol"] > 0 and r["sites_failed"] == 0 for r in rows)
    # Each site logged what it computed (the plain update, "train") and every SecAgg+ reply that actually left:
    # its public keys, encrypted shares, the masked vector (with the fit metrics beside it) and its unmask shares.
    from collections import Counter

    from common.audit import verify_log
    from common.signing import verify_adapter

    stages = ("setup", "share_keys", "collect_masked_vectors", "unmask")
    logged_protocol: Counter[int] = Counter()
    masked_bytes: Counter[int] = Counter()
    for i in range(3):
        log = run_dir / "sites" / f"site-{i}" / "egress.jsonl"
        entries = [json.loads(line) for line in log.read_text().splitlines()]
        assert verify_log(log) == len(entries) == 3 + 2 + 2 * len(stages)
        kinds = Counter(e["message_type"] for e in entries)
        assert kinds == {"evaluate": 3, "train": 2, **{f"secagg-{s}": 2 for s in stages}}
        for entry in entries:
            assert entry["error"] is None
            names = {t["name"] for t in entry["tensors"]}
            if entry["message_type"] == "train":
                assert names == set(saved)
            elif entry["message_type"].startswith("secagg-"):
                assert names and entry["tensor_bytes"] > 0 and entry["run"].startswith("flwr-")
            else:
                assert names == set()
        masked = [e for e in entries if e["message_type"] == "secagg-collect_masked_vectors"]
        assert all(e["tensor_bytes"] >= 2 * adapter_bytes for e in masked)  # int64 per LoRA value
        for e in masked:  # one serialized array per adapter tensor plus the weight factor, each an .npy file
            vectors = [t for t in e["tensors"] if t["name"].startswith(f"{SecAggKey.MASKED_PARAMETERS}.")]
            assert len(vectors) == len(saved) + 1
            masked_bytes[e["server_round"]] += sum(math.prod(t["shape"]) for t in vectors)
        assert all(any(name.endswith("epsilon") for name in e["metrics"]) for e in masked)
        # Each round's signed manifest anchors the site's log at its unmask reply of that round, and every key
        # and share byte the coordinator received (bytes_up_protocol) is in some site's log.
        for r in (1, 2):
            facts = verify_adapter(run_dir / "adapters" / f"round-{r:03d}", pub)["facts"]["sites"][f"site-{i}"]
            (unmask,) = [e for e in entries if e["message_type"] == "secagg-unmask" and e["server_round"] == r]
            assert (facts["egress_seq"], facts["egress_head"]) == (unmask["seq"], unmask["hash"])
            assert verify_log(log, anchors=[(facts["egress_seq"], facts["egress_head"])]) == len(entries)
            logged_protocol[r] += sum(
                math.prod(t["shape"])
                for e in entries
                if e["server_round"] == r
                and e["message_type"] in {f"secagg-{s}" for s in ("setup", "share_keys", "unmask")}
                for t in e["tensors"]
                if t["dtype"] == "uint8"
            )
    assert [logged_protocol[r] for r in (1, 2)] == [row["bytes_up_protocol"] for row in rows]
    # The coordinator counts the masked arrays' values; the log has their .npy bytes (values + a header of <= 128 B).
    for r, row in enumerate(rows, start=1):
        assert row["bytes_up"] < masked_bytes[r] <= row["bytes_up"] + 3 * (len(saved) + 1) * 128
    log = run_dir / "sites" / "site-0" / "egress.jsonl"
    audit = run_cli(
        ["audit", "verify", str(log), "--adapter", summary["adapter_dir"], "--site", "site-0"], cache_dir, tmp_path
    )
    assert audit.returncode == 0 and "OK" in audit.stdout, audit.stdout + audit.stderr
