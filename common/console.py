"""Console logging of fedcare's own progress lines (the ``fedcare`` logger, INFO, to stderr)."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: int = logging.INFO) -> None:
    """Give the ``fedcare`` logger one stderr handler; idempotent, safe in every worker process."""
    logger = logging.getLogger("fedcare")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)
