"""LoRA + Opacus DP-SGD on a tiny model: only LoRA trains, adapters change, noise is real, PEFT files load."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from client.train import DPSettings, evaluate_loss, train_round
from common.adapters import adapter_arrays, attach_lora, is_lora_tensor_name, load_adapter_arrays, save_adapter
from common.config import AdapterConfig, TrainConfig
from common.errors import AdapterLayoutError
from common.examples import tokenize_records
from common.synthetic import generate_site_records


@pytest.fixture
def peft_model(tiny):
    _, model, tokenizer = tiny
    return attach_lora(copy.deepcopy(model), AdapterConfig(), seed=0), tokenizer


@pytest.fixture
def examples(tiny):
    _, _, tokenizer = tiny
    return tokenize_records(generate_site_records(0, 24), tokenizer, 96)


def test_attach_lora_trains_only_lora_factors(peft_model) -> None:
    model, _ = peft_model
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    arrays = adapter_arrays(model)
    assert arrays and all(is_lora_tensor_name(n) for n in arrays)
    assert all(np.all(v == 0) for k, v in arrays.items() if "lora_B" in k)  # starts as the base model


def test_dp_round_changes_the_adapter_and_keeps_it_finite(peft_model, examples) -> None:
    model, tokenizer = peft_model
    before = adapter_arrays(model)
    dp = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=4 / len(examples))
    result = train_round(model, examples, TrainConfig(local_steps=8, batch_size=4), precision="fp32",
                         pad_id=tokenizer.pad_token_id, dp=dp, rng=np.random.default_rng(0))
    after = adapter_arrays(model)
    assert result.steps == 8 and result.update_norm > 0
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    assert all(np.isfinite(v).all() for v in after.values())
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())  # Opacus hooks removed


def test_dp_noise_makes_identical_rounds_differ(tiny, examples) -> None:
    _, base, tokenizer = tiny
    ends = []
    for _ in range(2):
        model = attach_lora(copy.deepcopy(base), AdapterConfig(), seed=0)
        dp = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=4 / len(examples))
        train_round(model, examples, TrainConfig(local_steps=2, batch_size=4), precision="fp32",
                    pad_id=tokenizer.pad_token_id, dp=dp, rng=np.random.default_rng(7))  # same batches
        ends.append(adapter_arrays(model))
    assert any(not np.allclose(ends[0][k], ends[1][k]) for k in ends[0])


def test_non_dp_round_is_reproducible(tiny, examples) -> None:
    _, base, tokenizer = tiny
    ends = []
    for _ in range(2):
        model = attach_lora(copy.deepcopy(base), AdapterConfig(), seed=0)
        train_round(model, examples, TrainConfig(local_steps=3, batch_size=4), precision="fp32",
                    pad_id=tokenizer.pad_token_id, dp=None, rng=np.random.default_rng(7))
        ends.append(adapter_arrays(model))
    assert all(np.allclose(ends[0][k], ends[1][k]) for k in ends[0])


def test_training_lowers_the_loss_without_dp(peft_model, examples) -> None:
    model, tokenizer = peft_model
    start = evaluate_loss(model, examples, batch_size=8, precision="fp32", pad_id=tokenizer.pad_token_id)
    train_round(model, examples, TrainConfig(local_steps=30, batch_size=8, learning_rate=1e-2), precision="fp32",
                pad_id=tokenizer.pad_token_id, dp=None, rng=np.random.default_rng(0))
    end = evaluate_loss(model, examples, batch_size=8, precision="fp32", pad_id=tokenizer.pad_token_id)
    assert end < start - 0.1


def test_bf16_autocast_trains_under_dp(peft_model, examples) -> None:
    model, tokenizer = peft_model
    dp = DPSettings(noise_multiplier=0.5, max_grad_norm=1.0, sample_rate=4 / len(examples))
    result = train_round(model, examples, TrainConfig(local_steps=2, batch_size=4), precision="bf16",
                         pad_id=tokenizer.pad_token_id, dp=dp, rng=np.random.default_rng(0))
    assert result.update_norm > 0 and all(v.dtype == np.float32 for v in adapter_arrays(model).values())


def test_saved_adapter_loads_with_peft_from_pretrained(tiny, peft_model, tmp_path) -> None:
    from peft import PeftModel

    _, base, tokenizer = tiny
    model, _ = peft_model
    arrays = {k: np.random.default_rng(1).normal(size=v.shape).astype(np.float32)
              for k, v in adapter_arrays(model).items()}
    load_adapter_arrays(model, arrays)
    save_adapter(model, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path / "adapter"))
    again = adapter_arrays(loaded)
    assert all(np.allclose(again[k], arrays[k]) for k in arrays)
    out = loaded.generate(torch.tensor([[1, 50, 60]]), max_new_tokens=5, do_sample=False)
    assert out.shape[1] == 8


def test_load_adapter_arrays_rejects_foreign_tensors(peft_model) -> None:
    model, _ = peft_model
    arrays = adapter_arrays(model)
    arrays["base_model.model.lm_head.weight"] = np.zeros((2, 2), np.float32)
    with pytest.raises(AdapterLayoutError):
        load_adapter_arrays(model, arrays)
