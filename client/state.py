"""The site's persisted state: its privacy ledger, the updates it already released and the exact metrics
it measured on its own data. Never leaves the site.

Both live in the site's ``state_dir`` (a daemon's own folder, or ``<run>/sites/site-N`` in a
simulation). The ledger is a JSON file changed only under an exclusive ``flock`` held across
load, check, record and save, so two runs training at one site at once can never lose an entry;
it is written to a unique temporary file, fsynced and renamed. A missing ledger in a state dir that
already released something, or a ledger that does not parse, is an error: never a fresh budget.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from common.config import PrivacyConfig
from common.errors import SiteStateError
from common.privacy import PrivacyLedger

T = TypeVar("T")
LEDGER_FILE = "privacy_ledger.json"
EGRESS_FILE = "egress.jsonl"
MEASURED_FILE = "measured.jsonl"


class SiteState:
    """A site's state directory."""

    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir)
        self.ledger_path = self.dir / LEDGER_FILE
        self.egress_path = self.dir / EGRESS_FILE
        self.released_dir = self.dir / "released"
        self.measured_path = self.dir / MEASURED_FILE

    def read_ledger(self) -> PrivacyLedger | None:
        """The ledger as it is now (under the lock), or None before the site's first DP release."""
        with self._locked():
            return self._load()

    def update_ledger(
        self, privacy: PrivacyConfig, num_units: int, change: Callable[[PrivacyLedger], tuple[PrivacyLedger, T]]
    ) -> T:
        """Load (or create) the ledger, apply ``change`` and save what it returns, all under one exclusive lock.

        ``change`` is a pure function such as ``lambda l: charge_round(l, ...)``; when it raises, nothing
        is saved. The site's current lifetime budget (``privacy.target_epsilon``) replaces the stored one;
        delta, accountant and unit stay as the ledger was created.

        Raises:
            SiteStateError: the ledger is missing from a state dir that already released, or corrupt.
            ConfigError: the site now asks another accountant or privacy unit than the ledger's.
        """
        with self._locked():
            ledger = self._load() or PrivacyLedger.create(
                target_epsilon=privacy.target_epsilon,
                target_delta=privacy.target_delta,
                num_records=num_units,
                accountant=privacy.accountant,
                unit=privacy.unit,
            )
            ledger.check_compatible(accountant=privacy.accountant, unit=privacy.unit)
            ledger.target_epsilon = privacy.target_epsilon  # the site's budget of today wins
            new, result = change(ledger)
            self._save(new)
            return result

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.dir / (LEDGER_FILE + ".lock"), "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _egress_shows_dp_release(self) -> bool:
        """Whether the egress log holds a DP release (an entry with an epsilon), which a ledger must account.

        Error replies and non-DP releases carry no epsilon: a site refused before its first DP release
        (a plan over its limits, say) has nothing in a ledger, and starts one.
        """
        if not self.egress_path.exists():
            return False
        with open(self.egress_path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                except ValueError:
                    return True  # unreadable: fail closed, as for a corrupt ledger
                if isinstance(entry, dict) and entry.get("epsilon") is not None:
                    return True
        return False

    def _load(self) -> PrivacyLedger | None:
        if not self.ledger_path.exists():
            released = self.released_dir.exists() and any(self.released_dir.iterdir())
            if released or self._egress_shows_dp_release():
                raise SiteStateError(
                    f"{self.ledger_path}: missing, but this state dir already released "
                    f"({'updates in released/' if released else 'entries in egress.jsonl'}); restore the ledger from "
                    "your backup: the site will not start a fresh budget"
                )
            return None
        try:
            return PrivacyLedger.from_dict(json.loads(self.ledger_path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise SiteStateError(
                f"{self.ledger_path}: corrupt privacy ledger ({type(err).__name__}); restore it "
                "from your backup: the site will not start a fresh budget"
            ) from None

    def _save(self, ledger: PrivacyLedger) -> None:
        _write_durably(self.ledger_path, json.dumps(ledger.to_dict(), indent=2, sort_keys=True).encode("utf-8"))

    # -- the released-update store: answer a retried round with the update already sent (no new cost) --

    def released_path(self, run_id: str, server_round: int, received_sha: str) -> Path:
        return self.released_dir / f"{run_id}-round-{server_round:03d}-{received_sha[:16]}.npz"

    def keep_released(
        self, run_id: str, server_round: int, received_sha: str, arrays: dict[str, np.ndarray], metrics: dict[str, Any]
    ) -> None:
        """Keep an update (and its reply metrics) before it is sent."""
        path = self.released_path(run_id, server_round, received_sha)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            np.savez(
                fh,
                **{f"a:{k}": v for k, v in arrays.items()},
                **{f"m:{k}": np.asarray(v, dtype=np.float64) for k, v in metrics.items()},
            )
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def find_released(
        self, run_id: str, server_round: int, received_sha: str
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """The update this round already released from the same global adapter, or None."""
        path = self.released_path(run_id, server_round, received_sha)
        if not path.exists():
            return None
        with np.load(path) as npz:
            arrays = {k[2:]: npz[k] for k in npz.files if k.startswith("a:")}
            metrics: dict[str, Any] = {k[2:]: float(npz[k]) for k in npz.files if k.startswith("m:")}
        return arrays, metrics

    # -- the site's own record of what it measured exactly (the coordinator only ever gets noised sums) --

    def record_measured(self, run_id: str, server_round: int, measured: dict[str, Any]) -> None:
        """Append the exact numbers one evaluate message measured on the site's held-out and task data."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        line = json.dumps({"run_id": run_id, "round": server_round, **measured}, sort_keys=True)
        with open(self.measured_path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def measured(self, run_id: str) -> dict[int, dict[str, Any]]:
        """This site's exact records of ``run_id`` by round (a retried round: its last record)."""
        if not self.measured_path.exists():
            return {}
        out: dict[int, dict[str, Any]] = {}
        for line in self.measured_path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record.get("run_id") == run_id:
                out[int(record["round"])] = record
        return out


def _write_durably(path: Path, data: bytes) -> None:
    """Write to a unique temporary file beside ``path``, fsync, rename over ``path``, fsync the folder."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
