"""Console logging of fedcare's own progress lines (the ``fedcare`` logger, INFO, to stderr)."""

from __future__ import annotations

import logging
import os
import sys
import warnings


def configure_logging(level: int = logging.INFO) -> None:
    """Give the ``fedcare`` logger one stderr handler; idempotent, safe in every worker process."""
    logger = logging.getLogger("fedcare")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)
    quiet_third_party()


def quiet_third_party() -> None:
    """Keep the console to fedcare's own lines: no transformers/PEFT banners or loading bars."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # else the variables above reach it when it is imported
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    logging.getLogger("peft").setLevel(logging.ERROR)
    # Flower prints through its own console handler; opacus calls logging.basicConfig() when it is
    # imported, so a propagating flwr logger would print every Flower line twice.
    logging.getLogger("flwr").propagate = False
    for module in ("transformers", "peft", "torch", "opacus"):  # deprecation notices meant for their developers
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)


def quiet_simulation_engine(verbose: bool = False) -> None:
    """The local simulation's console: fedcare's line per round instead of Flower's strategy lines.

    Flower's INFO lines (``configure_train: Sampled 3 nodes``, ``aggregate_train: Received 3 results``)
    repeat what fedcare's coordinator logs per round (failed and rejected sites are fedcare warnings);
    its notice that ``run_simulation`` is deprecated in favour of ``flwr run`` and Ray's tip about a
    future GPU default are meant for developers of those calls. ``verbose`` keeps Flower's debug lines.
    """
    flower = logging.getLogger("flwr")
    flower.setLevel(logging.DEBUG if verbose else logging.WARNING)
    if not any(isinstance(f, _RunSimulationNotice) for f in flower.filters):
        flower.addFilter(_RunSimulationNotice())
    warnings.filterwarnings("ignore", message="Tip: In future versions of Ray", category=FutureWarning)


class _RunSimulationNotice(logging.Filter):
    """Drops Flower's deprecation notice for ``run_simulation``, the call fedcare's simulation is built on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (str(record.msg).startswith("DEPRECATED FEATURE") and "run_simulation" in str(record.args))
