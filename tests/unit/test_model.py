"""Precision and device choice (auto), bf16 loading, gradient checkpointing: CPU twins of the GPU paths."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from common.adapters import attach_lora
from common.config import AdapterConfig, ModelConfig
from common.errors import ConfigError
from common.model import bf16_is_fast, cpu_has_amx, load_model_and_tokenizer, resolve_device, resolve_precision

SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
ZEN3 = "processor\t: 0\nflags\t\t: fpu sse avx2 fma\nbugs\t\t: amx_bf16_not_a_flag\n"


def test_amx_is_read_from_the_cpu_flags_line_only() -> None:
    assert cpu_has_amx(SAPPHIRE_RAPIDS)
    assert not cpu_has_amx(ZEN3)  # the word elsewhere than in "flags" does not count
    assert not cpu_has_amx("")


def test_auto_precision_follows_the_hardware_and_explicit_values_win() -> None:
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        here = "bf16" if cpu_has_amx(fh.read()) else "fp32"
    assert resolve_precision("auto", "cpu") == here == ("bf16" if bf16_is_fast("cpu") else "fp32")
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"


def test_device_auto_and_missing_gpus() -> None:
    assert resolve_device("cpu") == "cpu"
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert resolve_device("auto") == ("cuda:0" if gpus else "cpu")
    with pytest.raises(ConfigError, match="model.device"):
        resolve_device(f"cuda:{gpus}")  # one past the last GPU (cuda:0 on a machine without one)


@pytest.mark.parametrize(("field", "value"), [("precision", "fp16"), ("device", "gpu"), ("device", "cuda:x")])
def test_model_config_rejects_unknown_precision_and_device(field: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"model.{field}"):
        ModelConfig(**{field: value})


def test_bf16_loads_bf16_base_weights_with_fp32_lora(tiny) -> None:
    cfg, _, _ = tiny
    model, _ = load_model_and_tokenizer(dataclasses.replace(cfg, precision="bf16", device="cpu"))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    peft_model = attach_lora(model, AdapterConfig(), seed=0)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)  # PEFT upcasts adapters


def test_simulation_gives_each_worker_its_cpu_and_gpu_share() -> None:
    from common.config import SimulationConfig
    from simulations.run import ray_backend_config

    cpu_only = ray_backend_config(SimulationConfig(), cores=2)
    assert cpu_only["client_resources"] == {"num_cpus": 2, "num_gpus": 0.0}  # one worker, one model
    shared = ray_backend_config(SimulationConfig(cpus_per_site=1, gpus_per_site=0.5), cores=2)
    assert shared["client_resources"] == {"num_cpus": 1, "num_gpus": 0.5}
    assert shared["init_args"]["num_gpus"] == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    with pytest.raises(ConfigError, match="simulation.gpus_per_site"):
        SimulationConfig(gpus_per_site=-1.0)


def test_top_layers_adapts_only_the_last_layers_and_backprop_stops_there(tiny) -> None:
    cfg, _, _ = tiny
    model, _ = load_model_and_tokenizer(dataclasses.replace(cfg, device="cpu"))
    layers = model.config.num_hidden_layers
    peft_model = attach_lora(model, AdapterConfig(top_layers=1), seed=0)
    adapted = {n.split(".layers.")[1].split(".")[0] for n, p in peft_model.named_parameters() if p.requires_grad}
    assert adapted == {str(layers - 1)}
    ids = torch.tensor([[1, 5, 7, 9]])
    hidden = (
        peft_model.get_base_model()
        .model.layers[layers - 2]
        .register_forward_hook(lambda _m, _i, out: seen.append(out[0] if isinstance(out, tuple) else out))
    )
    seen: list[torch.Tensor] = []
    peft_model(input_ids=ids, labels=ids).loss.backward()
    hidden.remove()
    assert not seen[0].requires_grad  # below the lowest adapter nothing is recorded for backward
    assert all(p.grad is not None for p in peft_model.parameters() if p.requires_grad)
    with pytest.raises(ConfigError, match="lora.top_layers"):
        attach_lora(
            load_model_and_tokenizer(dataclasses.replace(cfg, device="cpu"))[0], AdapterConfig(top_layers=layers + 1)
        )
    with pytest.raises(ConfigError, match="lora.top_layers"):
        AdapterConfig(top_layers=-1)


def test_the_cached_site_model_can_be_reset_to_the_seeded_init(tiny) -> None:
    from client import runtime
    from common.adapters import adapter_arrays

    cfg, _, _ = tiny
    lora = AdapterConfig(rank=2, alpha=4)  # a shape no other test caches
    model, _ = runtime.model_for(cfg, lora, seed=3)
    init = adapter_arrays(model)
    with torch.no_grad():  # what a site's training leaves in the process's model
        for name, param in model.named_parameters():
            if ".lora_" in name:
                param.add_(0.5)
    assert runtime.model_for(cfg, lora, seed=3)[0] is model  # cached: still the trained weights
    assert any((adapter_arrays(model)[k] != v).any() for k, v in init.items())
    reset, _ = runtime.model_for(cfg, lora, seed=3, initial=True)
    assert reset is model and all((adapter_arrays(model)[k] == v).all() for k, v in init.items())
    assert all(not v.any() for k, v in init.items() if "lora_B" in k)  # B = 0: the base model
