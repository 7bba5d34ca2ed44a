"""Shared fixtures: offline environment, a cache with the tiny model, paths to ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Offline by construction: a stray hub download fails fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("FEDCARE_TEST_SEEDS", "1")  # tests may pin privacy.noise_seed (site.yaml refuses it elsewhere)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """The tiny model's matmuls are too small to gain from a second thread, and on a loaded machine
    (CI, six engineers on 2 cores) torch's spinning threads made single tests up to 25x slower.
    Only this process: the slow tier's subprocesses keep torch's default."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model cache for the session: the tiny model is generated into it on first use.

    The real SmolLM2 conversion is shared with the user's cache ($FEDCARE_CACHE or ~/.cache/fedcare)
    by the slow tests, so it happens once per machine.
    """
    return tmp_path_factory.mktemp("fedcare-cache")


@pytest.fixture(scope="session")
def tiny(cache_dir: Path):  # noqa: ANN201 - returns (ModelConfig, model, tokenizer)
    """The tiny offline model config and a loaded (model, tokenizer) pair."""
    from common.config import ModelConfig
    from common.model import TINY_MODEL, load_model_and_tokenizer

    cfg = ModelConfig(name_or_path=TINY_MODEL, cache_dir=str(cache_dir))
    model, tokenizer = load_model_and_tokenizer(cfg)
    return cfg, model, tokenizer


@pytest.fixture
def medquad() -> Path:
    """../shared/data/medquad/medquad.jsonl, or skip where the shared data is absent."""
    path = SHARED_DATA / "medquad" / "medquad.jsonl"
    if not path.exists():
        pytest.skip("../shared/data/medquad is not present on this machine")
    return path
