"""The site's persisted state (its privacy ledger). It never leaves the site.

Two stores: the node's ``context.state`` (simulation: survives rounds, not the process) and a JSON
file in the site's state directory (site daemon: survives crashes and restarts; written atomically
and fsynced before a round trains).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol

from flwr.app import ConfigRecord, Context

from common.privacy import PrivacyLedger

LEDGER_KEY = "privacy_ledger"


class LedgerStore(Protocol):
    def load(self) -> PrivacyLedger | None: ...
    def save(self, ledger: PrivacyLedger) -> None: ...


class ContextLedgerStore:
    """Ledger kept in the node's ``context.state`` (persists across rounds of one run)."""

    def __init__(self, context: Context) -> None:
        self.context = context

    def load(self) -> PrivacyLedger | None:
        if LEDGER_KEY not in self.context.state.config_records:
            return None
        return PrivacyLedger.from_dict(json.loads(str(self.context.state.config_records[LEDGER_KEY]["json"])))

    def save(self, ledger: PrivacyLedger) -> None:
        self.context.state.config_records[LEDGER_KEY] = ConfigRecord({"json": json.dumps(ledger.to_dict())})


class FileLedgerStore:
    """Ledger kept in a JSON file; a crash mid-write leaves the previous version intact."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> PrivacyLedger | None:
        if not self.path.exists():
            return None
        return PrivacyLedger.from_dict(json.loads(self.path.read_text(encoding="utf-8")))

    def save(self, ledger: PrivacyLedger) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(ledger.to_dict(), fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
