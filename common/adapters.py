"""LoRA adapters (PEFT): attach to a base model, read and write their tensors, save in PEFT format.

Tensor names are PEFT's own (``get_peft_model_state_dict``), e.g.
``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``: exactly the keys of
``adapter_model.safetensors``, and the only names that may ever leave a site.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from common.aggregation import check_layout
from common.config import AdapterConfig
from common.errors import AdapterLayoutError, ConfigError

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel

AdapterArrays = dict[str, npt.NDArray[np.float32]]


def is_lora_tensor_name(name: str) -> bool:
    """True for PEFT LoRA factor names (``...lora_A.weight`` / ``...lora_B.weight``)."""
    parts = name.split(".")
    return len(parts) >= 3 and parts[-1] == "weight" and parts[-2] in ("lora_A", "lora_B")


def attach_lora(model: PreTrainedModel, cfg: AdapterConfig, *, seed: int = 0) -> PeftModel:
    """Wrap ``model`` (already on its device) with fresh LoRA adapters; only they are trainable.

    LoRA is applied after the model is on its device (opacus#820: adapters created before the move
    silently stop training). ``seed`` makes lora_A's random init reproducible; lora_B starts at 0.
    With ``cfg.freeze_a`` (FFA-LoRA) lora_A is frozen at that init: only lora_B trains, and
    :func:`adapter_arrays` (what is sent and aggregated) holds only the lora_B tensors.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    layers = _decoder_layers(model) if cfg.top_layers else 0
    if cfg.top_layers > layers:
        raise ConfigError(f"lora.top_layers must be <= the model's {layers} decoder layers, got {cfg.top_layers}")
    peft_cfg = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        layers_to_transform=list(range(layers - cfg.top_layers, layers)) if cfg.top_layers else None,
        bias="none",
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, peft_cfg)
    if cfg.freeze_a:
        for name, param in peft_model.named_parameters():
            if ".lora_A." in name:
                param.requires_grad_(False)
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    if not names or not all(".lora_A." in n or ".lora_B." in n for n in names):
        raise AdapterLayoutError(f"lora: expected only LoRA factors to be trainable, found {len(names)} tensors")
    return peft_model


def _decoder_layers(model: PreTrainedModel) -> int:
    layers = getattr(model.config, "num_hidden_layers", None)
    if not isinstance(layers, int) or layers < 1:
        raise ConfigError("lora.top_layers: the model's config has no num_hidden_layers")
    return layers


def adapter_arrays(model: PeftModel) -> AdapterArrays:
    """The adapter's TRAINABLE tensors as float32 numpy arrays, keyed by PEFT's saved names.

    These are what a site sends and the coordinator aggregates: every LoRA factor, or only lora_B
    under FFA-LoRA (the frozen lora_A is rebuilt from the shared seed everywhere).
    """
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model)
    lora = [(n, p.requires_grad) for n, p in model.named_parameters() if ".lora_A." in n or ".lora_B." in n]
    # Frozen factors are left out only when others train (FFA-LoRA); a model loaded for inference
    # (PeftModel.from_pretrained: nothing trainable) gives all its tensors.
    frozen = {n.replace(".default.", ".") for n, trains in lora if not trains} if any(t for _, t in lora) else set()
    return {k: v.detach().to("cpu").float().numpy().copy() for k, v in state.items() if k not in frozen}


def load_adapter_arrays(model: PeftModel, arrays: AdapterArrays) -> None:
    """Copy ``arrays`` into the model's adapter after checking names, shapes and dtypes.

    Raises:
        AdapterLayoutError: when ``arrays`` is not this adapter's layout.
    """
    import torch
    from peft import set_peft_model_state_dict

    check_layout(arrays, adapter_arrays(model), who="adapter")
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    result = set_peft_model_state_dict(model, state)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise AdapterLayoutError(f"adapter: {len(unexpected)} tensors were not loaded, e.g. {unexpected[:2]}")


def save_adapter(model: PeftModel, out_dir: str | Path) -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` (PeftModel.from_pretrained loads it)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    return out


ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MAX_ADAPTER_BYTES = 1 << 30  # a LoRA adapter is megabytes (rank 8 on SmolLM2: ~1 MB); 1 GiB is far past any


def check_adapter_dir(adapter_dir: Path) -> None:
    """Check a saved adapter's structure before any model is loaded: files, config kind, safetensors header.

    Raises:
        AdapterLayoutError: naming the folder and the file at fault (never their contents).
    """
    import json
    import struct

    from common.errors import printable
    from common.files import SMALL_FILE_BYTES, open_regular, read_regular

    name = printable(adapter_dir)
    if not Path(adapter_dir).is_dir():
        raise AdapterLayoutError(f"{name}: not an adapter folder (expected {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})")
    raw = read_regular(Path(adapter_dir) / ADAPTER_CONFIG, "adapter config", SMALL_FILE_BYTES, AdapterLayoutError)
    try:
        config = json.loads(raw)
    except (ValueError, RecursionError):
        raise AdapterLayoutError(f"{name}/{ADAPTER_CONFIG}: not valid JSON") from None
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise AdapterLayoutError(f'{name}/{ADAPTER_CONFIG}: not a LoRA adapter config (expected peft_type "LORA")')
    with open_regular(
        Path(adapter_dir) / ADAPTER_WEIGHTS, "adapter weights file", MAX_ADAPTER_BYTES, AdapterLayoutError
    ) as handle:
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(8)
        # safetensors: an 8-byte little-endian header length, a JSON header, then the tensor bytes.
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        header: object = None
        if 2 <= length <= min(size - 8, 100 << 20):
            try:
                header = json.loads(handle.read(length))
            except (ValueError, RecursionError):
                header = None
    if not isinstance(header, dict) or not any(isinstance(v, dict) and "data_offsets" in v for v in header.values()):
        raise AdapterLayoutError(f"{name}/{ADAPTER_WEIGHTS}: not a safetensors file with tensors")
