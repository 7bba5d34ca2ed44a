"""The console shows each line once: fedcare's own logger, and Flower's through its own handler only."""

from __future__ import annotations

import logging

import pytest

from common.console import configure_logging


def test_flower_lines_are_not_printed_twice_after_opacus_configures_the_root_logger(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import flwr.common.logger  # noqa: F401  # Flower's logger: level DEBUG, its own console handler
    import opacus.utils.module_utils  # noqa: F401  # its import calls logging.basicConfig(): a root handler

    root = logging.getLogger()
    saved = (root.handlers[:], logging.getLogger("flwr").propagate)
    try:
        probe = logging.StreamHandler()
        root.addHandler(probe)
        configure_logging()
        records: list[logging.LogRecord] = []
        probe.emit = records.append  # type: ignore[method-assign]
        logging.getLogger("flwr").info("configure_train: Sampled 3 nodes (out of 3)")
        logging.getLogger("fedcare.site").info("site 0 round 1 step 1/5")
        assert records == []  # neither reaches the root logger's handlers
    finally:
        root.handlers[:] = saved[0]
        logging.getLogger("flwr").propagate = saved[1]
