"""One round of local training at a site (Opacus DP-SGD on LoRA), and held-out evaluation."""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from peft.helpers import disable_input_dtype_casting

from common.adapters import adapter_arrays
from common.config import TrainConfig
from common.errors import FedcareError
from common.examples import IGNORE_INDEX, TokenizedExample, collate, poisson_batches, poisson_unit_batches
from common.model import resolve_precision

Progress = Callable[[int, int, float], None]  # (step, steps, batch loss)


@dataclass(frozen=True)
class DPSettings:
    """DP-SGD parameters of one round, fixed by the site's privacy ledger."""

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    noise_seed: int | None = None  # None = OS entropy (real privacy); an int only for reproducible tests


@dataclass(frozen=True)
class RoundResult:
    """What one local round produced (numbers only; the adapter is read from the model)."""

    train_loss: float  # mean of per-batch mean per-example losses, nats per answer token
    steps: int  # optimizer steps taken (empty Poisson batches included: they still add noise)
    examples_seen: int  # examples over all batches
    tokens: int  # non-padding tokens over all batches
    seconds: float  # wall time of the steps
    update_norm: float  # L2 norm of the adapter change this round


def per_example_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], precision: str) -> torch.Tensor:
    """Mean answer-token cross-entropy of each example, shape [batch].

    Each example's loss is normalised by its own answer-token count, so a per-sample gradient
    depends on that sample alone (a batch-wide token mean would couple samples and break DP-SGD's
    clipping). The output layer runs only on the hidden states that predict an answer token
    (prompt and padding positions never reach the vocabulary projection, forward or backward),
    a block of them at a time (``AnswerTokenCrossEntropy``): only a block's logits are upcast to
    fp32, and the backward keeps one hidden-sized gradient row per answer token, not the logits.
    (Under DP-SGD the output layer stays frozen: ``AdapterConfig`` refuses LoRA on it, whose
    per-sample rows would be tokens.)

    Under bf16 autocast PEFT would copy each LoRA layer's input up to fp32 (its weights' dtype), and
    autocast would cast it straight back to bf16 for the product: two copies of the hidden states per
    adapted layer, plus a third in Opacus's hook, which stores that fp32 input and casts it to bf16
    again for the per-sample product. The values are bf16 either way, so the casting is switched off
    and the loss, gradients and per-sample gradients are bit for bit the same.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    device = head.weight.device
    labels = batch["labels"][:, 1:].to(device)
    rows, cols = (labels != IGNORE_INDEX).nonzero(as_tuple=True)  # position t predicts token t + 1
    bf16 = resolve_precision(precision, str(device)) == "bf16"
    with autocast(precision, device), disable_input_dtype_casting(model, active=bf16):
        hidden = base.get_decoder()(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device), use_cache=False
        )[0]
        answer_hidden, targets = hidden[rows, cols], labels[rows, cols]  # [answer tokens, hidden size]
        cap = getattr(base.config, "final_logit_softcapping", None)  # Gemma-2 style logit capping
        if type(head) is torch.nn.Linear and head.bias is None and not head.weight.requires_grad and not cap:
            token_loss = AnswerTokenCrossEntropy.apply(answer_hidden, head.weight, targets)
        else:  # a trained, biased, wrapped or capped head: the plain path, whole logits
            logits = head(answer_hidden)
            if cap:
                logits = torch.tanh(logits / cap) * cap
            token_loss = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
    size = labels.size(0)
    counts = torch.bincount(rows, minlength=size).clamp(min=1)
    return torch.zeros(size, dtype=token_loss.dtype, device=device).index_add_(0, rows, token_loss) / counts


class AnswerTokenCrossEntropy(torch.autograd.Function):
    """Cross-entropy of each answer token through a frozen output layer, a block of rows at a time.

    The plain path makes the logits of every answer token at once ([tokens, vocab] in the compute
    dtype), upcasts them to fp32, keeps the fp32 log-softmax for the backward and makes two more
    tensors of that size there. Here each block of rows (about 32 MB of fp32 logits) is projected,
    upcast, reduced to its losses and, when the hidden states need a gradient, turned at once into
    that gradient, ``(softmax - onehot) @ W`` ([rows, hidden size]), which is all the backward keeps:
    a token's loss gradient w.r.t. its hidden state is that row times the token's incoming gradient.
    The same products in the same dtypes as the plain path (autocast applies to them alike), so the
    losses agree to rounding; the weight gets no gradient (it is frozen)."""

    BLOCK_ELEMENTS = 1 << 23  # fp32 logits per block: 32 MB

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        rows = max(1, AnswerTokenCrossEntropy.BLOCK_ELEMENTS // weight.size(0))
        losses = torch.empty(hidden.size(0), dtype=torch.float32, device=hidden.device)
        grads = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None  # type: ignore[attr-defined]
        for start in range(0, hidden.size(0), rows):
            block, target = hidden[start : start + rows], targets[start : start + rows, None]
            logits = torch.nn.functional.linear(block, weight).float()
            picked, top = logits.gather(1, target), logits.amax(dim=-1, keepdim=True)
            total = logits.sub_(top).exp_().sum(dim=-1, keepdim=True)  # in place: no second block of fp32
            losses[start : start + rows] = (top + total.log() - picked).squeeze(1)  # logsumexp - target logit
            if grads is not None:
                softmax = logits.div_(total)
                softmax.scatter_add_(1, target, torch.full_like(target, -1.0, dtype=softmax.dtype))
                grads[start : start + rows] = torch.matmul(softmax.to(weight.dtype), weight)
        ctx.save_for_backward(grads)
        return losses

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_losses: torch.Tensor
    ) -> tuple[torch.Tensor | None, None, None]:
        (grads,) = ctx.saved_tensors  # type: ignore[attr-defined]
        if grads is None:
            return None, None, None
        return (grads * grad_losses[:, None]).to(grads.dtype), None, None


def train_round(
    model: torch.nn.Module,
    examples: Sequence[TokenizedExample],
    cfg: TrainConfig,
    *,
    precision: str,
    pad_id: int,
    dp: DPSettings | None,
    rng: np.random.Generator,
    progress: Progress | None = None,
    units: Sequence[int] | None = None,
    proximal_mu: float = 0.0,
) -> RoundResult:
    """Run ``cfg.local_steps`` optimizer steps on Poisson-sampled batches; updates ``model`` in place.

    With ``dp`` set, Opacus computes per-sample gradients (hooks mode: ~1.03-1.10x a plain step for
    LoRA), clips each to ``max_grad_norm``, adds Gaussian noise of std ``noise_multiplier x
    max_grad_norm`` and divides by the expected batch size. Without it the same batches train with
    plain AdamW, so the two modes are comparable step for step.

    With ``units`` (the patient of each example), DP is patient-level: Poisson sampling picks
    patients, each with all their records, and the per-record gradients of one patient are averaged
    into one row before clipping, so clipping and noise bound a whole patient's contribution.

    With ``proximal_mu > 0`` (FedProx) each example's loss gains mu/2 ||w - w_round_start||^2, the
    distance of the trainable LoRA factors from the received global adapter. Under DP its gradient
    mu (w - w_start) is added to every per-sample gradient BEFORE Opacus clips them
    (:func:`add_proximal_gradient`), so the clipped, noised quantity is the FedProx loss's gradient.

    Raises:
        FedcareError: when the adapter did not change (the silent LoRA failure of opacus#820).
    """
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    before = adapter_arrays(model)  # type: ignore[arg-type]
    params = [p for p in model.parameters() if p.requires_grad]
    anchor = [p.detach().clone() for p in params] if proximal_mu > 0 else None  # FedProx: the global adapter
    optimizer: torch.optim.Optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    num_units = len(set(units)) if units is not None else len(examples)
    sample_rate = dp.sample_rate if dp else min(1.0, cfg.batch_size / num_units)
    if units is not None:
        batches = poisson_unit_batches(units, sample_rate, cfg.local_steps, rng)
    else:
        batches = poisson_batches(len(examples), sample_rate, cfg.local_steps, rng)
    lengths = [len(e.input_ids) for e in examples]
    device = params[0].device
    trainer: torch.nn.Module = model
    if dp is not None:
        trainer = GradSampleModule(model, batch_first=True, loss_reduction="mean")
        seed = dp.noise_seed if dp.noise_seed is not None else int.from_bytes(os.urandom(8), "little")
        noise = torch.Generator(device).manual_seed(seed)  # unpredictable unless a test pins it
        optimizer = DPOptimizer(
            optimizer,
            noise_multiplier=dp.noise_multiplier,
            max_grad_norm=dp.max_grad_norm,
            expected_batch_size=max(1, round(dp.sample_rate * num_units)),
            loss_reduction="mean",
            generator=noise,
        )
    losses: list[float] = []
    seen = tokens = 0
    # Opacus hooks on a frozen base warn on every backward that no *input* needs a gradient:
    # expected (only the LoRA weights do), so silence exactly that warning.
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    model.train()
    start = time.perf_counter()
    try:
        for step, idx in enumerate(batches, start=1):
            optimizer.zero_grad(set_to_none=True)
            if len(idx) == 0:
                if dp is not None:  # an empty Poisson batch still takes a (pure-noise) DP step
                    for p in params:
                        p.grad_sample = torch.zeros((0, *p.shape), dtype=torch.float32, device=device)
                    optimizer.step()
                continue
            total = 0.0  # sum of the per-example losses of the whole (logical) batch
            parts = physical_batches(idx, cfg.max_physical_batch, units, lengths)
            for n, part in enumerate(parts, start=1):
                last = n == len(parts)
                batch = collate([examples[i] for i in part], pad_id)
                per_example = per_example_loss(model, batch, precision)  # Opacus's hooks sit on its modules
                total += float(per_example.detach().sum())
                tokens += int(batch["attention_mask"].sum())
                if dp is not None:
                    # Per-sample gradients whatever the part's size; Opacus clips them into summed_grad.
                    per_example.mean().backward()
                    grad_samples_to_fp32(params)  # clip, sum and noise in fp32 whatever the compute precision
                    if units is not None:
                        average_grad_samples_by_unit(params, [units[i] for i in part])
                    if anchor is not None:
                        add_proximal_gradient(params, anchor, proximal_mu, per_sample=True)
                    if not last:  # clip and accumulate only: the noise and the step come with the last part
                        optimizer.signal_skip_step(do_skip=True)  # type: ignore[attr-defined]
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)  # drops grad_sample, keeps summed_grad
                else:
                    (per_example.sum() / len(idx)).backward()  # the parts' gradients add up to the batch mean's
                    if last and anchor is not None:
                        add_proximal_gradient(params, anchor, proximal_mu, per_sample=False)
            optimizer.step()
            losses.append(total / len(idx))
            seen += len(idx)
            if progress is not None:
                progress(step, len(batches), losses[-1])
    finally:
        seconds = time.perf_counter() - start
        model.eval()
        optimizer.zero_grad(set_to_none=True)
        if dp is not None:
            trainer._close()  # type: ignore[operator]  # removes Opacus hooks: the model is reused
            for p in params:
                for attr in ("summed_grad", "grad_sample"):
                    if hasattr(p, attr):
                        delattr(p, attr)
    after = adapter_arrays(model)  # type: ignore[arg-type]
    update_norm = float(np.sqrt(sum(float(np.sum((after[k] - before[k]) ** 2)) for k in after)))
    if update_norm == 0.0:
        raise FedcareError("training: the LoRA adapter did not change in a round (see opacus#820)")
    return RoundResult(
        train_loss=float(np.mean(losses)) if losses else float("nan"),
        steps=len(batches),
        examples_seen=seen,
        tokens=tokens,
        seconds=seconds,
        update_norm=update_norm,
    )


def physical_batches(
    idx: Sequence[int], size: int, units: Sequence[int] | None = None, lengths: Sequence[int] | None = None
) -> list[list[int]]:
    """Split one Poisson batch into parts of at most ``size`` examples (0: the batch whole), which
    ``train_round`` runs one after another before a single optimizer step (the same step in less
    memory). With ``units``, a patient's records stay in one part (a part may then exceed ``size``
    when one patient alone does), so each patient is still one clipped row. With ``lengths`` (tokens
    per example) the parts are cut from the batch sorted by length, so each part pads its rows to a
    length close to their own: less of every forward and backward pass is spent on padding."""
    idx = list(idx)
    if size <= 0 or len(idx) <= size:
        return [idx]
    groups: dict[int, list[int]] = {}
    for i in idx:
        groups.setdefault(units[i] if units is not None else i, []).append(i)
    ordered = list(groups.values())
    if lengths is not None:
        ordered.sort(key=lambda group: max(lengths[i] for i in group))
    parts: list[list[int]] = [[]]
    for group in ordered:
        if parts[-1] and len(parts[-1]) + len(group) > size:
            parts.append([])
        parts[-1].extend(group)
    return parts


@torch.no_grad()
def grad_samples_to_fp32(params: Sequence[torch.nn.Parameter]) -> None:
    """Upcast per-sample gradients computed in bf16 (autocast) so Opacus clips and noises in fp32.

    The clipping bound holds on the values that are summed, so clipping the upcast rows in fp32
    keeps each example's contribution within ``max_grad_norm`` exactly.
    """
    for p in params:
        rows = p.grad_sample  # type: ignore[attr-defined]
        if rows.dtype != torch.float32:
            p.grad_sample = rows.float()  # type: ignore[attr-defined]


@torch.no_grad()
def add_proximal_gradient(
    params: Sequence[torch.nn.Parameter], anchor: Sequence[torch.Tensor], mu: float, *, per_sample: bool
) -> None:
    """Add FedProx's gradient mu (w - anchor) to each parameter's gradient, or to each of its per-sample rows.

    Per sample (DP-SGD), every row of ``grad_sample`` is one example's loss gradient: adding the
    proximal gradient there makes it the gradient of that example's loss + mu/2 ||w - anchor||^2,
    which Opacus then clips and noises like any other.
    """
    for p, ref in zip(params, anchor, strict=True):
        term = mu * (p.detach() - ref)
        if per_sample:
            p.grad_sample = p.grad_sample + term.unsqueeze(0).to(p.grad_sample.dtype)  # type: ignore[attr-defined]
        else:
            p.grad = term if p.grad is None else p.grad + term


@torch.no_grad()
def average_grad_samples_by_unit(params: Sequence[torch.nn.Parameter], row_units: Sequence[int]) -> int:
    """Replace each parameter's per-record ``grad_sample`` rows by one row per unit (their mean).

    Opacus then clips and noises per unit: one patient = one "sample" of DP-SGD. Returns the
    number of units in the batch.
    """
    order = {u: n for n, u in enumerate(dict.fromkeys(row_units))}
    index = torch.tensor([order[u] for u in row_units], dtype=torch.long)
    counts = torch.bincount(index, minlength=len(order)).clamp(min=1)
    for p in params:
        rows = p.grad_sample  # type: ignore[attr-defined]
        summed = torch.zeros((len(order), *rows.shape[1:]), dtype=rows.dtype, device=rows.device).index_add_(
            0, index.to(rows.device), rows
        )
        p.grad_sample = summed / counts.view(-1, *([1] * (rows.dim() - 1))).to(rows)  # type: ignore[attr-defined]
    return len(order)


@torch.no_grad()
def evaluate_example_losses(
    model: torch.nn.Module, examples: Sequence[TokenizedExample], *, batch_size: int, precision: str, pad_id: int
) -> np.ndarray:
    """Per-example answer-token loss on ``examples`` (nats per token), shape [examples], in their order.

    Batches are cut from the examples sorted by length (a fixed order), so a batch pads its rows to
    a length close to their own."""
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    out = np.zeros(len(examples))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = collate([examples[i] for i in chunk], pad_id)
        out[chunk] = per_example_loss(model, batch, precision).double().cpu().numpy()
    return out


def evaluate_loss(
    model: torch.nn.Module, examples: Sequence[TokenizedExample], *, batch_size: int, precision: str, pad_id: int
) -> float:
    """Mean per-example answer-token loss on ``examples`` (nats per token)."""
    return float(
        evaluate_example_losses(model, examples, batch_size=batch_size, precision=precision, pad_id=pad_id).mean()
    )


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[None]:
    """bf16 autocast on ``device`` for ``precision="bf16"`` (or ``auto`` where bf16 is fast); else nothing."""
    if resolve_precision(precision, str(device)) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
