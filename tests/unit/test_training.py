"""LoRA + Opacus DP-SGD on a tiny model: only LoRA trains, adapters change, noise is real, PEFT files load."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from client.train import DPSettings, evaluate_loss, grad_samples_to_fp32, per_example_loss, train_round
from common.adapters import adapter_arrays, attach_lora, is_lora_tensor_name, load_adapter_arrays, save_adapter
from common.config import AdapterConfig, TrainConfig
from common.errors import AdapterLayoutError
from common.examples import IGNORE_INDEX, TokenizedExample, collate, tokenize_records
from common.model import load_model_and_tokenizer
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
    result = train_round(
        model,
        examples,
        TrainConfig(local_steps=8, batch_size=4),
        precision="fp32",
        pad_id=tokenizer.pad_token_id,
        dp=dp,
        rng=np.random.default_rng(0),
    )
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
        train_round(
            model,
            examples,
            TrainConfig(local_steps=2, batch_size=4),
            precision="fp32",
            pad_id=tokenizer.pad_token_id,
            dp=dp,
            rng=np.random.default_rng(7),
        )  # same batches
        ends.append(adapter_arrays(model))
    assert any(not np.allclose(ends[0][k], ends[1][k]) for k in ends[0])


def test_non_dp_round_is_reproducible(tiny, examples) -> None:
    _, base, tokenizer = tiny
    ends = []
    for _ in range(2):
        model = attach_lora(copy.deepcopy(base), AdapterConfig(), seed=0)
        train_round(
            model,
            examples,
            TrainConfig(local_steps=3, batch_size=4),
            precision="fp32",
            pad_id=tokenizer.pad_token_id,
            dp=None,
            rng=np.random.default_rng(7),
        )
        ends.append(adapter_arrays(model))
    assert all(np.allclose(ends[0][k], ends[1][k]) for k in ends[0])


def test_training_lowers_the_loss_without_dp(peft_model, examples) -> None:
    model, tokenizer = peft_model
    start = evaluate_loss(model, examples, batch_size=8, precision="fp32", pad_id=tokenizer.pad_token_id)
    train_round(
        model,
        examples,
        TrainConfig(local_steps=30, batch_size=8, learning_rate=1e-2),
        precision="fp32",
        pad_id=tokenizer.pad_token_id,
        dp=None,
        rng=np.random.default_rng(0),
    )
    end = evaluate_loss(model, examples, batch_size=8, precision="fp32", pad_id=tokenizer.pad_token_id)
    assert end < start - 0.1


def test_bf16_autocast_trains_under_dp(peft_model, examples) -> None:
    model, tokenizer = peft_model
    dp = DPSettings(noise_multiplier=0.5, max_grad_norm=1.0, sample_rate=4 / len(examples))
    result = train_round(
        model,
        examples,
        TrainConfig(local_steps=2, batch_size=4),
        precision="bf16",
        pad_id=tokenizer.pad_token_id,
        dp=dp,
        rng=np.random.default_rng(0),
    )
    assert result.update_norm > 0 and all(v.dtype == np.float32 for v in adapter_arrays(model).values())


def test_saved_adapter_loads_with_peft_from_pretrained(tiny, peft_model, tmp_path) -> None:
    from peft import PeftModel

    _, base, tokenizer = tiny
    model, _ = peft_model
    arrays = {
        k: np.random.default_rng(1).normal(size=v.shape).astype(np.float32) for k, v in adapter_arrays(model).items()
    }
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


def _full_vocabulary_loss(model, batch) -> torch.Tensor:
    """The textbook computation: logits at every position, then each example's mean over its answer tokens."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    token_loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(labels.shape)
    return token_loss.sum(dim=1) / (labels != IGNORE_INDEX).sum(dim=1)


def test_answer_only_loss_equals_the_full_vocabulary_reference(peft_model, examples) -> None:
    model, tokenizer = peft_model
    arrays = {
        k: np.random.default_rng(3).normal(0, 0.1, v.shape).astype(np.float32) for k, v in adapter_arrays(model).items()
    }
    load_adapter_arrays(model, arrays)  # a non-zero adapter, so LoRA is part of what is compared
    lengths = (96, 80, 90, 85, 96, 93)
    rows = [TokenizedExample(e.input_ids[:n], e.labels[:n]) for e, n in zip(examples, lengths, strict=False)]
    assert all(any(label != IGNORE_INDEX for label in e.labels) for e in rows)
    batch = collate(rows, tokenizer.pad_token_id)  # rows of different lengths: padding in most
    with torch.no_grad():
        lean = per_example_loss(model, batch, "fp32")
        reference = _full_vocabulary_loss(model, batch)
    assert lean.shape == (6,)
    torch.testing.assert_close(lean, reference, rtol=1e-5, atol=1e-5)


def test_each_per_sample_gradient_is_that_example_alone(peft_model, examples) -> None:
    from opacus import GradSampleModule

    model, tokenizer = peft_model
    load_adapter_arrays(model, {k: np.full(v.shape, 0.05, np.float32) for k, v in adapter_arrays(model).items()})
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean")
    try:
        per_example_loss(model, collate(examples[:4], tokenizer.pad_token_id), "fp32").mean().backward()
        together = [p.grad_sample.clone() for p in params]
        for p in params:
            p.grad_sample = None
            p.grad = None
        per_example_loss(model, collate(examples[2:3], tokenizer.pad_token_id), "fp32").mean().backward()
        alone = [p.grad_sample[0].clone() for p in params]
    finally:
        gsm._close()
        model.eval()
    for rows, row in zip(together, alone, strict=True):
        torch.testing.assert_close(rows[2], row, rtol=1e-4, atol=1e-6)  # padding and batch-mates change nothing


def test_bf16_dp_clips_and_noises_in_fp32(tiny, examples) -> None:
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    cfg, _, tokenizer = tiny
    base, _ = load_model_and_tokenizer(dataclasses.replace(cfg, precision="bf16", device="cpu"))
    model = attach_lora(base, AdapterConfig(), seed=0)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean")
    sigma, clip, batch_size = 2.0, 1e-3, 4  # a tiny clip: every example is clipped
    optimizer = DPOptimizer(
        torch.optim.SGD(params, lr=0.0),
        noise_multiplier=sigma,
        max_grad_norm=clip,
        expected_batch_size=batch_size,
        loss_reduction="mean",
        generator=torch.Generator().manual_seed(0),
    )
    try:
        per_example_loss(model, collate(examples[:batch_size], tokenizer.pad_token_id), "bf16").mean().backward()
        assert {p.grad_sample.dtype for p in params} == {torch.bfloat16}  # what autocast computes
        grad_samples_to_fp32(params)
        assert {p.grad_sample.dtype for p in params} == {torch.float32}
        optimizer.pre_step()  # clip, sum, noise, scale: what optimizer.step() does before SGD
        noised = torch.cat([p.grad.flatten() for p in params])
        clipped = torch.cat([p.summed_grad.flatten() for p in params])  # sum of clipped rows, before noise
    finally:
        gsm._close()
        model.eval()
    assert noised.dtype == torch.float32 and clipped.dtype == torch.float32
    assert float(clipped.norm()) <= batch_size * clip * (1 + 1e-5)
    # noise std = sigma * clip / expected batch size, in fp32 (bf16 noise would be quantised)
    std = float((noised - clipped / batch_size).std())
    assert std == pytest.approx(sigma * clip / batch_size, rel=0.05)


def test_gradient_checkpointing_gives_opacus_the_same_per_sample_gradients(tiny, examples) -> None:
    from opacus import GradSampleModule

    cfg, _, tokenizer = tiny
    batch = collate(examples[:3], tokenizer.pad_token_id)
    grads = []
    for checkpointing in (False, True):
        base, _ = load_model_and_tokenizer(dataclasses.replace(cfg, gradient_checkpointing=checkpointing, device="cpu"))
        assert base.is_gradient_checkpointing == checkpointing
        model = attach_lora(base, AdapterConfig(), seed=0)
        load_adapter_arrays(model, {k: np.full(v.shape, 0.05, np.float32) for k, v in adapter_arrays(model).items()})
        params = [p for p in model.parameters() if p.requires_grad]
        model.train()
        gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean")
        try:
            per_example_loss(model, batch, "fp32").mean().backward()
            grads.append([p.grad_sample.clone() for p in params])
        finally:
            gsm._close()
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads, strict=True))
    assert all(float(g.abs().sum()) > 0 for g in grads[1])


def test_proximal_gradient_goes_into_every_per_sample_row() -> None:
    from client.train import add_proximal_gradient

    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    p.grad_sample = torch.zeros((3, 2))
    add_proximal_gradient([p], [torch.tensor([0.0, 0.0])], 0.5, per_sample=True)
    assert torch.equal(p.grad_sample, torch.tensor([[0.5, 1.0]] * 3))  # d/dw mu/2 ||w - 0||^2 = mu w, per example
    q = torch.nn.Parameter(torch.tensor([1.0]))
    q.grad = torch.tensor([2.0])
    add_proximal_gradient([q], [torch.tensor([3.0])], 1.0, per_sample=False)
    assert torch.equal(q.grad, torch.tensor([0.0]))


def test_fedprox_term_keeps_the_adapter_near_the_global_one(tiny, examples) -> None:
    _, base, tokenizer = tiny
    norms = {}
    for mu in (0.0, 100.0):
        model = attach_lora(copy.deepcopy(base), AdapterConfig(), seed=0)
        norms[mu] = train_round(
            model,
            examples,
            TrainConfig(local_steps=6, batch_size=4),
            precision="fp32",
            pad_id=tokenizer.pad_token_id,
            dp=None,
            rng=np.random.default_rng(7),
            proximal_mu=mu,
        ).update_norm
    assert norms[100.0] < 0.5 * norms[0.0]
    model = attach_lora(copy.deepcopy(base), AdapterConfig(), seed=0)  # and under DP-SGD (hooks mode)
    dp = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=4 / len(examples))
    result = train_round(
        model,
        examples,
        TrainConfig(local_steps=2, batch_size=4),
        precision="fp32",
        pad_id=tokenizer.pad_token_id,
        dp=dp,
        rng=np.random.default_rng(0),
        proximal_mu=1.0,
    )
    assert result.update_norm > 0 and all(np.isfinite(v).all() for v in adapter_arrays(model).values())


def test_ffa_lora_trains_and_sends_only_lora_b(tiny, examples, tmp_path) -> None:
    from peft import PeftModel

    _, base, tokenizer = tiny
    plain = attach_lora(copy.deepcopy(base), AdapterConfig(), seed=3)
    ffa = attach_lora(copy.deepcopy(base), AdapterConfig(freeze_a=True), seed=3)
    sent = adapter_arrays(ffa)
    assert sent and all(".lora_B." in k for k in sent)
    assert sorted(sent) == sorted(k for k in adapter_arrays(plain) if ".lora_B." in k)
    a_before = {n: p.detach().clone() for n, p in ffa.named_parameters() if ".lora_A." in n}
    assert all(torch.equal(a_before[n], p) for n, p in plain.named_parameters() if ".lora_A." in n)  # same seed
    dp = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=4 / len(examples))
    result = train_round(
        ffa,
        examples,
        TrainConfig(local_steps=2, batch_size=4),
        precision="fp32",
        pad_id=tokenizer.pad_token_id,
        dp=dp,
        rng=np.random.default_rng(0),
    )
    assert result.update_norm > 0
    assert all(torch.equal(a_before[n], p) for n, p in ffa.named_parameters() if ".lora_A." in n)
    save_adapter(ffa, tmp_path / "ffa")  # the PEFT file still holds A: it loads on its own
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path / "ffa"))
    assert all(torch.equal(a_before[n], p) for n, p in loaded.named_parameters() if ".lora_A." in n)


def test_physical_batches_keep_a_patients_records_together() -> None:
    from client.train import physical_batches

    assert physical_batches([5, 1, 7], 0) == [[5, 1, 7]]
    assert physical_batches([5, 1, 7, 2, 9], 2) == [[5, 1], [7, 2], [9]]
    units = [0, 0, 1, 1, 1, 2, 3]  # example -> patient
    assert physical_batches([0, 2, 1, 3, 4, 5, 6], 3, units) == [[0, 1], [2, 3, 4], [5, 6]]
    assert physical_batches([2, 3, 4], 2, units) == [[2, 3, 4]]  # one patient alone exceeds the part size
    lengths = [30, 90, 10, 80, 20, 70]  # tokens per example: parts are cut from the batch sorted by length
    assert physical_batches([0, 1, 2, 3, 4, 5], 2, lengths=lengths) == [[2, 4], [0, 5], [3, 1]]
    assert physical_batches([0, 1, 2, 3, 4, 5], 0, lengths=lengths) == [[0, 1, 2, 3, 4, 5]]
    pairs = [0, 0, 1, 1, 2, 2]  # a patient's records stay together; patients sort by their longest record
    assert physical_batches([0, 1, 2, 3, 4, 5], 2, pairs, lengths) == [[4, 5], [2, 3], [0, 1]]


@pytest.mark.parametrize("dp_on", [True, False])
@pytest.mark.parametrize("by_patient", [False, True])
def test_a_batch_run_in_parts_takes_the_same_step(tiny, examples, dp_on: bool, by_patient: bool) -> None:
    """train.max_physical_batch: the sampled batch in parts of 2 gives the adapter of the batch whole
    (same Poisson batches, same pinned noise): clipping per sample, one noise draw, one step."""
    _, base, tokenizer = tiny
    units = [i // 2 for i in range(len(examples))] if by_patient else None
    num_units = len(set(units)) if units else len(examples)
    dp = (
        DPSettings(noise_multiplier=0.7, max_grad_norm=0.05, sample_rate=8 / num_units, noise_seed=11)
        if dp_on
        else None
    )
    ends = []
    for physical in (0, 2):
        model = attach_lora(copy.deepcopy(base), AdapterConfig(), seed=0)
        start = adapter_arrays(model)
        result = train_round(
            model,
            examples,
            TrainConfig(local_steps=3, batch_size=8, max_physical_batch=physical),
            precision="fp32",
            pad_id=tokenizer.pad_token_id,
            dp=dp,
            rng=np.random.default_rng(5),
            units=units,
        )
        ends.append((adapter_arrays(model), result))
    (whole, r0), (parts, r1) = ends
    assert r0.examples_seen == r1.examples_seen > 3 * 2  # batches bigger than a part
    assert r0.train_loss == pytest.approx(r1.train_loss, rel=1e-5)
    # The same update up to float rounding: a batch in other shapes sums in another order (oneDNN
    # picks other kernels; on an AMX CPU the adapters differed by up to 0.2% of the update), and
    # AdamW's normalisation can magnify that where a gradient is near zero. A wrong step (clipped
    # per part, noised per part) moves the adapter by the order of the update itself.
    update = max(float(np.abs(whole[k] - start[k]).max()) for k in whole)
    assert update > 0
    diff = max(float(np.abs(parts[k] - whole[k]).max()) for k in whole)
    assert diff <= 1e-2 * update, (diff, update)


def test_held_out_losses_come_back_in_the_examples_order_from_length_sorted_batches(peft_model) -> None:
    from client.train import evaluate_example_losses

    model, tokenizer = peft_model
    records = generate_site_records(0, 10)
    examples = [tokenize_records([r], tokenizer, 160 + 37 * (i % 4))[0] for i, r in enumerate(records)]
    lengths = [len(e.input_ids) for e in examples]
    assert lengths != sorted(lengths)  # the batches are cut in another order than the examples'
    batched = evaluate_example_losses(model, examples, batch_size=5, precision="fp32", pad_id=tokenizer.pad_token_id)
    with torch.no_grad():
        alone = [float(per_example_loss(model, collate([e], tokenizer.pad_token_id), "fp32")) for e in examples]
    np.testing.assert_allclose(batched, alone, rtol=1e-5)


def test_bf16_lora_inputs_are_not_copied_to_fp32_and_per_sample_gradients_are_unchanged(
    tiny, examples, monkeypatch
) -> None:
    import contextlib

    from opacus import GradSampleModule

    import client.train

    cfg, _, tokenizer = tiny
    base, _ = load_model_and_tokenizer(dataclasses.replace(cfg, precision="bf16", device="cpu"))
    model = attach_lora(base, AdapterConfig(), seed=0)
    params = [p for p in model.parameters() if p.requires_grad]
    batch = collate(examples[:4], tokenizer.pad_token_id)
    seen: list[torch.dtype] = []
    lora_a = [m for name, m in model.named_modules() if name.endswith("lora_A.default")]
    assert lora_a
    hooks = [m.register_forward_pre_hook(lambda _m, args: seen.append(args[0].dtype)) for m in lora_a]

    def per_sample_rows() -> list[torch.Tensor]:
        model.train()
        gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean")
        try:
            per_example_loss(model, batch, "bf16").mean().backward()
            return [p.grad_sample.clone() for p in params]
        finally:
            gsm._close()  # also drops each grad_sample
            model.eval()
            for p in params:
                p.grad = None

    lean = per_sample_rows()
    assert set(seen) == {torch.bfloat16}  # PEFT's fp32 copy of each LoRA input is skipped
    seen.clear()
    monkeypatch.setattr(client.train, "disable_input_dtype_casting", lambda *_a, **_k: contextlib.nullcontext())
    reference = per_sample_rows()  # PEFT's default: each LoRA input upcast to the fp32 weights' dtype
    assert set(seen) == {torch.float32}
    for h in hooks:
        h.remove()
    for a, b in zip(lean, reference, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_blockwise_answer_token_loss_and_its_gradient_match_whole_logits(precision, monkeypatch) -> None:
    from client.train import AnswerTokenCrossEntropy, autocast

    monkeypatch.setattr(AnswerTokenCrossEntropy, "BLOCK_ELEMENTS", 8 * 50)  # blocks of 8 rows: 5 blocks, one short
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(50, 16, generator=gen).to(dtype)  # [vocab, hidden]: frozen
    hidden = (3 * torch.randn(37, 16, generator=gen)).to(dtype).requires_grad_()
    targets = torch.randint(0, 50, (37,), generator=gen)
    upstream = torch.rand(37, generator=gen)  # each token's weight, as a per-example mean gives it
    device = torch.device("cpu")
    with autocast(precision, device):
        blocked = AnswerTokenCrossEntropy.apply(hidden, weight, targets)
    (grad,) = torch.autograd.grad((blocked * upstream).sum(), hidden)
    with autocast(precision, device):
        logits = torch.nn.functional.linear(hidden, weight)
    whole = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
    (reference,) = torch.autograd.grad((whole * upstream).sum(), hidden)
    assert blocked.dtype == torch.float32 and grad.dtype == hidden.dtype
    torch.testing.assert_close(blocked, whole, rtol=1e-6, atol=1e-6)  # the same fp32 logits, reduced alike
    tolerance = 2e-5 if precision == "fp32" else 2e-2  # bf16: the scaling by upstream rounds before or after
    torch.testing.assert_close(grad.float(), reference.float(), rtol=tolerance, atol=tolerance)
    with torch.no_grad(), autocast(precision, device):
        torch.testing.assert_close(AnswerTokenCrossEntropy.apply(hidden, weight, targets), whole)
