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


def test_the_simulation_console_keeps_flower_warnings_but_not_its_round_lines_or_the_run_simulation_notice() -> None:
    from flwr.common.logger import warn_deprecated_feature

    from common.console import quiet_simulation_engine

    flower = logging.getLogger("flwr")
    saved = (flower.level, flower.filters[:])
    records: list[logging.LogRecord] = []
    probe = logging.Handler()
    probe.emit = records.append  # type: ignore[method-assign]
    flower.addHandler(probe)
    try:
        quiet_simulation_engine()
        quiet_simulation_engine()  # idempotent: one filter
        flower.info("configure_train: Sampled 3 nodes (out of 3)")
        warn_deprecated_feature("The `run_simulation` function is deprecated and will be removed")
        warn_deprecated_feature("The `start_client` function is deprecated")
        flower.warning("a site timed out")
        assert [r.getMessage().splitlines()[0] for r in records] == [
            "DEPRECATED FEATURE: The `start_client` function is deprecated",
            "a site timed out",
        ]
        quiet_simulation_engine(verbose=True)
        flower.debug("debug line")
        assert records[-1].getMessage() == "debug line"
    finally:
        flower.removeHandler(probe)
        flower.setLevel(saved[0])
        flower.filters[:] = saved[1]
