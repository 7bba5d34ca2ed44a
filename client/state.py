"""The site's persisted state (its privacy ledger). It never leaves the site."""

from __future__ import annotations

from flwr.app import ConfigRecord, Context

from common.privacy import PrivacyLedger

LEDGER_KEY = "privacy_ledger"


def load_ledger(context: Context) -> PrivacyLedger | None:
    """The ledger kept in the node's ``context.state`` (persists across rounds), or None."""
    if LEDGER_KEY not in context.state.config_records:
        return None
    return PrivacyLedger.from_dict(dict(context.state.config_records[LEDGER_KEY]))


def save_ledger(context: Context, ledger: PrivacyLedger) -> None:
    """Store the ledger in ``context.state``; call before training so the round is never un-counted."""
    context.state.config_records[LEDGER_KEY] = ConfigRecord(ledger.to_dict())
