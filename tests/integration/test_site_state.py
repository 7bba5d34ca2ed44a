"""A site's state dir: the ledger survives concurrent runs, is never silently reset, keeps its accountant."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from client.state import SiteState
from common.config import PrivacyConfig
from common.errors import ConfigError, SiteStateError
from common.privacy import PrivacyLedger

ROOT = Path(__file__).resolve().parents[2]
PRIVACY = PrivacyConfig(target_epsilon=8.0)


def _append(ledger: PrivacyLedger) -> tuple[PrivacyLedger, int]:
    ledger.entries.append(
        {
            "run": "r",
            "server_round": 1,
            "kind": "train",
            "noise_multiplier": 1.0,
            "sample_rate": 0.1,
            "steps": 1,
            "released": "",
        }
    )
    return ledger, len(ledger.entries)


def test_a_missing_ledger_in_a_state_dir_that_released_is_an_error(tmp_path: Path) -> None:
    state = SiteState(tmp_path)
    assert state.update_ledger(PRIVACY, 40, _append) == 1  # a fresh site: a new ledger
    state.ledger_path.unlink()
    state.egress_path.write_text('{"seq": 1, "error": null, "epsilon": 0.8}\n')
    with pytest.raises(SiteStateError, match="missing, but this state dir already released"):
        state.update_ledger(PRIVACY, 40, _append)


def test_a_site_that_only_sent_refusals_starts_its_ledger(tmp_path: Path) -> None:
    # A plan over the site's limits is refused (an error entry, no epsilon) before any DP release:
    # there is nothing to account, so the next acceptable plan must not brick the site.
    state = SiteState(tmp_path)
    state.egress_path.parent.mkdir(parents=True, exist_ok=True)
    state.egress_path.write_text('{"seq": 1, "error": "train.batch_size: over the cap", "epsilon": null}\n')
    assert state.update_ledger(PRIVACY, 40, _append) == 1


def test_a_corrupt_ledger_is_an_error_not_a_fresh_budget(tmp_path: Path) -> None:
    state = SiteState(tmp_path)
    state.update_ledger(PRIVACY, 40, _append)
    state.ledger_path.write_text(state.ledger_path.read_text()[:-20])
    with pytest.raises(SiteStateError, match="corrupt privacy ledger"):
        state.update_ledger(PRIVACY, 40, _append)
    state.ledger_path.write_text(json.dumps({"version": 2, "target_epsilon": 8}))
    with pytest.raises(SiteStateError, match="corrupt"):
        state.read_ledger()


def test_changing_accountant_or_unit_against_an_existing_ledger_is_refused(tmp_path: Path) -> None:
    state = SiteState(tmp_path)
    state.update_ledger(PRIVACY, 40, _append)
    with pytest.raises(ConfigError, match="privacy.accountant: the site's ledger was kept with accountant 'prv'"):
        state.update_ledger(PrivacyConfig(accountant="rdp"), 40, _append)
    with pytest.raises(ConfigError, match="privacy.unit"):
        state.update_ledger(PrivacyConfig(unit="patient"), 40, _append)
    assert len(state.read_ledger().entries) == 1  # refusals save nothing


def test_a_failing_change_saves_nothing_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    state = SiteState(tmp_path)
    state.update_ledger(PRIVACY, 40, _append)

    def boom(ledger: PrivacyLedger) -> tuple[PrivacyLedger, None]:
        raise ConfigError("refused")

    with pytest.raises(ConfigError):
        state.update_ledger(PRIVACY, 40, boom)
    assert len(state.read_ledger().entries) == 1
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.slow
def test_two_concurrent_trainings_at_one_site_keep_every_ledger_entry(tmp_path: Path, cache_dir: Path, tiny) -> None:
    from common.config import DataConfig, RunConfig
    from common.site import write_simulated_sites

    cfg = RunConfig(num_sites=2, model=tiny[0], data=DataConfig(records_per_site=20))
    site_yaml = write_simulated_sites(cfg, tmp_path / "sites")[0]
    env = os.environ | {"PYTHONPATH": str(ROOT), "FLWR_TELEMETRY_ENABLED": "0"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.integration.site_worker", str(site_yaml), run, str(cache_dir)],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for run in ("run-a", "run-b")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
    ledger = SiteState(tmp_path / "sites" / "site-0").read_ledger()
    assert sorted((e["run"], e["server_round"]) for e in ledger.entries) == [
        ("run-a", 1),
        ("run-a", 2),
        ("run-b", 1),
        ("run-b", 2),
    ]
    assert all(e["released"] for e in ledger.entries)  # the second save of each round was not lost either
    # Recompute epsilon from the raw entries with Opacus directly (no compaction, no caching).
    from opacus.accountants import PRVAccountant

    accountant = PRVAccountant()
    accountant.history = [(e["noise_multiplier"], e["sample_rate"], e["steps"]) for e in ledger.entries]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recomputed = accountant.get_epsilon(ledger.delta)
    print(
        f"\nconcurrent runs: ledger epsilon {ledger.epsilon():.4f}, recomputed {recomputed:.4f}, "
        f"{len(ledger.entries)} entries"
    )
    assert ledger.epsilon() == pytest.approx(recomputed, rel=1e-6)
    assert ledger.epsilon() <= ledger.target_epsilon
