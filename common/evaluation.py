"""Task evaluation of a base model and its adapters: closed-answer ("choice") and free-text ("generation") tasks.

``choice`` scores every option by its log-likelihood after the chat template, the way
lm-evaluation-harness scores multiple-choice tasks: the prompt is rendered with the model's chat
template and ``add_generation_prompt=True``; each option's text is the continuation; ``acc`` picks
the option with the highest summed log-likelihood, ``acc_norm`` the highest log-likelihood per
character of the option (the harness's length normalisation). Differences from the harness: no
few-shot examples, no target delimiter (the chat template's assistant header ends with a newline),
and the end-of-turn token is not scored. The prompt is run once; its key/value cache is reused for
every option and cropped back after each, so an item costs one prompt forward plus a few tokens.

``generation`` decodes greedily up to ``max_new_tokens`` and scores ROUGE-L F1 against the
reference, and also reports the answer-token loss (teacher forcing, the same per-example mean as
training's held-out loss) and its perplexity exp(total loss / total answer tokens).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import DataError
from common.metrics import baselines, classification_metrics, group_gaps, rouge_l
from common.records import ChatRecord, ColumnMapping, load_records, read_rows
from common.task_release import TaskSums, choice_sums, generation_sums

log = logging.getLogger("fedcare.evaluate")

KINDS = ("auto", "choice", "generation")
_PROMPT_KEYS = ("input", "prompt", "question")
_GOLD_KEYS = ("label", "output", "completion", "answer")
_CHOICE_KEYS = ("choices", "options")
_LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class TaskSpec:
    """How to read a task file (the column mapping of training data plus the closed-answer fields)."""

    kind: str = "auto"  # "choice", "generation", or "auto": choice when the rows carry a label or options
    prompt_column: str = ""  # "" = detect (input / prompt / question, or chat messages for generation)
    answer_column: str = ""  # gold answer; "" = detect (label, then output / completion / answer)
    context_column: str = ""  # optional text put before the prompt ("" = a "context" field when present)
    choices: tuple[str, ...] = ()  # fixed options; () = the row's choices/options, else the distinct gold labels
    group_column: str = ""  # subgroup of each row for the fairness audit ("" = none)
    unit_column: str = ""  # privacy unit of each row (patient id) for a DP release ("" = each row its own unit)
    limit: int = 0  # first N rows only; 0 = all

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataError(f"task kind: expected one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.limit < 0:
            raise DataError(f"task limit: expected >= 0, got {self.limit}")


@dataclass(frozen=True)
class TaskItem:
    """One test item: the prompt turns, the gold answer, its options (choice tasks) and its subgroup."""

    prompt: tuple[tuple[str, str], ...]
    answer: str
    choices: tuple[str, ...] = ()
    group: str | None = None
    unit: str | None = None  # privacy unit (patient id) when the spec names a unit column


@dataclass(frozen=True)
class Task:
    """A loaded task: its kind, its items, and for choice tasks the label set (confusion-matrix order)."""

    name: str
    kind: str
    items: list[TaskItem]
    labels: tuple[str, ...] = ()
    own_choices: bool = False  # options given per row: labels are option positions (A, B, ...)

    def label_of(self, item: TaskItem, text: str) -> str:
        """The class of an answer: itself, or its option letter when the rows carry their own options."""
        return _LETTERS[item.choices.index(text)] if self.own_choices else text


def load_task(path: str | Path, spec: TaskSpec = TaskSpec()) -> Task:
    """Read a JSONL/JSON/CSV/Parquet task file.

    Raises:
        DataError: naming the file, row and field when a row cannot be used (never its text).
    """
    return task_from_rows(Path(path).name, read_rows(path), spec, path)


def task_from_rows(
    name: str, rows: list[tuple[int, dict[str, Any]]], spec: TaskSpec = TaskSpec(), path: str | Path | None = None
) -> Task:
    """A task from (row number, row) pairs; generation tasks also need the file ``path`` (record shapes).

    Raises:
        DataError: naming ``name``, the row and the field when a row cannot be used.
    """
    if spec.limit:
        rows = rows[: spec.limit]
    if not rows:
        raise DataError(f"{name} contains no rows")
    first = rows[0][1]
    kind = spec.kind
    if kind == "auto":
        kind = "choice" if ("label" in first or any(k in first for k in _CHOICE_KEYS) or spec.choices) else "generation"
    if kind == "generation":
        if path is None:
            raise DataError(f"{name}: a generation task is read from a file")
        items = _generation_items(path, spec, rows)
        return Task(name, kind, items)
    items = [_choice_item(row, spec, f"{name} row {number}") for number, row in rows]
    own = any(item.choices for item in items)  # options per row: classes are option positions A, B, ...
    labels = () if own else (spec.choices or tuple(sorted({item.answer for item in items})))
    for (number, _), item in zip(rows, items, strict=True):
        if item.answer not in (item.choices or labels):
            raise DataError(f"{name} row {number}: the gold answer is not one of the options")
    if not own and len(labels) < 2:
        raise DataError(f"{name}: a choice task needs at least 2 distinct answers (set the choices)")
    items = [_with_options(item, item.choices or labels) for item in items]  # keeps group and unit
    if own:
        labels = tuple(_LETTERS[: max(len(item.choices) for item in items)])
    return Task(name, kind, items, labels, own_choices=own)


SYNTHETIC_LABELS = ("no", "yes")  # options of the synthetic triage task (common.synthetic.generate_site_task)


def site_task(data: Any, site_index: int, choices: Sequence[str] = (), unit_column: str = "") -> Task | None:
    """Site ``site_index``'s task set from a ``DataConfig``: generated triage items (synthetic data),
    the site's file in ``data.task_paths`` (a site daemon's own: index 0), or None when the site has none.

    ``choices`` fix a choice task's options and their order (the coordinator's ``task_labels``; the
    synthetic triage task always has ``SYNTHETIC_LABELS``); a generation task ignores them.
    ``unit_column`` names each row's privacy unit (its patient id) for a DP release.
    """
    spec = TaskSpec(
        prompt_column=data.prompt_column,
        answer_column=data.completion_column,
        group_column=data.group_field,
        unit_column=unit_column,
    )
    if data.kind == "synthetic":
        from common.synthetic import generate_site_task

        rows = list(enumerate(generate_site_task(site_index, data.task_items_per_site, seed=data.seed), start=1))
        triage = TaskSpec(
            kind="choice",
            group_column=data.group_field,
            choices=tuple(choices) or SYNTHETIC_LABELS,
            unit_column=unit_column,
        )
        return task_from_rows("synthetic triage", rows, triage, None) if rows else None
    if site_index >= len(data.task_paths):
        return None
    task = load_task(data.task_paths[site_index], spec)
    if choices and task.kind == "choice" and not task.own_choices:  # the options in the coordinator's order
        task = load_task(data.task_paths[site_index], dataclasses.replace(spec, choices=tuple(choices)))
    return task


def coordinator_task_labels(labels: Sequence[str], data: Any) -> tuple[str, ...]:
    """The names a coordinator gives the classes of the sites' released confusion matrices: its
    ``task_labels``, else the synthetic triage options when its data is synthetic, else () (class-0, ...)."""
    return tuple(labels) or (SYNTHETIC_LABELS if data.kind == "synthetic" else ())


def task_sums(task: Task, scores: Sequence[ItemScore], *, loss_clip: float, by_unit: bool = False) -> TaskSums:
    """A scored task reduced to the bounded sums a site may release (``common.task_release``).

    Raises:
        DataError: when ``by_unit`` and an item has no unit (the task file lacks the patient field).
    """
    units = None
    if by_unit:
        if any(i.unit is None for i in task.items):
            raise DataError(f"{task.name}: privacy.unit=patient needs each task row's patient field")
        units = [i.unit for i in task.items]
    if task.kind == "choice":
        gold = [task.label_of(i, i.answer) for i in task.items]
        predicted = [task.label_of(i, s.predicted) for i, s in zip(task.items, scores, strict=True)]
        return choice_sums(gold, predicted, task.labels, units)
    return generation_sums([s.rouge_l for s in scores], [s.loss for s in scores], loss_clip, units)


def _with_options(item: TaskItem, options: tuple[str, ...]) -> TaskItem:
    """Close the prompt with the options to answer from (the text lm-evaluation-harness would score)."""
    ((role, text),) = item.prompt
    return dataclasses.replace(
        item, prompt=((role, f"{text}\nAnswer with one of: {', '.join(options)}."),), choices=options
    )


def _text(row: dict[str, Any], key: str, where: str) -> str:
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{where}: field {key!r} is missing or empty")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(f"{where}: field {key!r} must be text")
    return str(value).strip()


def _pick(row: dict[str, Any], given: str, candidates: Sequence[str], what: str, where: str) -> str:
    if given:
        return given
    for key in candidates:
        if key in row:
            return key
    raise DataError(f"{where}: no {what} field (expected one of {', '.join(candidates)}; set the column)")


def _group(row: dict[str, Any], spec: TaskSpec, where: str) -> str | None:
    return _text(row, spec.group_column, where) if spec.group_column else None


def _unit(row: dict[str, Any], spec: TaskSpec, where: str) -> str | None:
    return _text(row, spec.unit_column, where) if spec.unit_column else None


def _choice_item(row: dict[str, Any], spec: TaskSpec, where: str) -> TaskItem:
    prompt_key = _pick(row, spec.prompt_column, _PROMPT_KEYS, "prompt", where)
    gold_key = _pick(row, spec.answer_column, _GOLD_KEYS, "answer", where)
    text = _text(row, prompt_key, where)
    context_key = spec.context_column or ("context" if "context" in row else "")
    if context_key:
        text = f"{_text(row, context_key, where)}\n\nQuestion: {text}"
    choices: tuple[str, ...] = ()
    own = next((k for k in _CHOICE_KEYS if k in row), None)
    gold = row.get(gold_key)
    if own is not None and not spec.choices:
        options = row[own]
        if (
            not isinstance(options, list)
            or len(options) < 2
            or not all(isinstance(o, str) and o.strip() for o in options)
        ):
            raise DataError(f"{where}: field {own!r} must be a list of at least 2 non-empty texts")
        choices = tuple(o.strip() for o in options)
        if isinstance(gold, int) and not isinstance(gold, bool):  # an index into the options
            if not 0 <= gold < len(choices):
                raise DataError(f"{where}: field {gold_key!r} is an index outside the {len(choices)} options")
            gold = choices[gold]
        elif isinstance(gold, str) and len(gold.strip()) == 1 and gold.strip().upper() in _LETTERS:
            index = _LETTERS.index(gold.strip().upper())  # a letter
            if index < len(choices) and gold.strip() not in choices:
                gold = choices[index]
        text += "\nOptions:\n" + "\n".join(f"- {o}" for o in choices)
    answer = _text({gold_key: gold}, gold_key, where)
    return TaskItem(((("user", text),)), answer, choices, _group(row, spec, where), _unit(row, spec, where))


def _generation_items(path: str | Path, spec: TaskSpec, rows: list[tuple[int, dict[str, Any]]]) -> list[TaskItem]:
    columns = ColumnMapping(spec.prompt_column, spec.answer_column) if spec.prompt_column else None
    records: list[ChatRecord] = load_records(path, columns)[: len(rows)]
    name = Path(path).name
    items = []
    for r, (number, row) in zip(records, rows, strict=True):
        where = f"{name} row {number}"
        items.append(TaskItem(r.prompt, r.completion, (), _group(row, spec, where), _unit(row, spec, where)))
    return items


# ----------------------------------------------------------------------------------------------
# Scoring


@dataclass
class ItemScore:
    """What the model did on one item. Generated text stays in memory (it may echo record text); a site
    keeps only :func:`item_record` of it, in its own state dir."""

    predicted: str = ""
    predicted_norm: str = ""
    rouge_l: float = math.nan
    loss: float = math.nan
    answer_tokens: int = 0
    loglik: list[float] = field(default_factory=list)


def item_record(kind: str, score: ItemScore) -> dict[str, Any]:
    """What a site keeps of one item's score of a ``kind`` task in its own record: the chosen options
    (choice) or the numbers (generation), never generated text."""
    if kind == "choice":
        return {"predicted": score.predicted, "predicted_norm": score.predicted_norm}
    return {"rouge_l": score.rouge_l, "loss": score.loss, "answer_tokens": score.answer_tokens}


def item_score(record: dict[str, Any]) -> ItemScore:
    """:func:`item_record` back to a score :func:`summarize_scores` takes."""
    return ItemScore(
        predicted=record.get("predicted", ""),
        predicted_norm=record.get("predicted_norm", ""),
        rouge_l=float(record.get("rouge_l", math.nan)),
        loss=float(record.get("loss", math.nan)),
        answer_tokens=int(record.get("answer_tokens", 0)),
    )


def prompt_ids(tokenizer: Any, turns: Sequence[tuple[str, str]], max_prompt_tokens: int) -> list[int]:
    """The prompt after the chat template with the assistant header, cut from the left to the cap."""
    messages = [{"role": role, "content": content} for role, content in turns]
    if getattr(tokenizer, "chat_template", None):
        ids = list(
            tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)[
                "input_ids"
            ]
        )
    else:
        ids = list(tokenizer("\n".join(c for _, c in turns) + "\n")["input_ids"])
    return ids[-max_prompt_tokens:]


def score_choice(model: Any, tokenizer: Any, item: TaskItem, max_prompt_tokens: int) -> ItemScore:
    """Log-likelihood of every option after the prompt, reusing the prompt's KV cache across options."""
    import torch

    ids = prompt_ids(tokenizer, item.prompt, max_prompt_tokens)
    key = _cache_keyword(model)
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), use_cache=True)
        cache = getattr(out, key)
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        logliks: list[float] = []
        for option in item.choices:
            option_ids = list(tokenizer(option, add_special_tokens=False)["input_ids"])
            total = float(first[option_ids[0]])
            if len(option_ids) > 1:
                rest = model(input_ids=torch.tensor([option_ids[:-1]]), use_cache=True, **{key: cache})
                logp = torch.log_softmax(rest.logits[0].float(), dim=-1)
                total += float(logp[torch.arange(len(option_ids) - 1), torch.tensor(option_ids[1:])].sum())
                cache.crop(-(len(option_ids) - 1))  # drop the option again: back to the prompt for the next
            logliks.append(total)
    return _choice_score(item, logliks)


def _choice_score(item: TaskItem, logliks: list[float]) -> ItemScore:
    """The option with the highest log-likelihood (``acc``) and per character (``acc_norm``); ties: the first."""
    best = max(range(len(logliks)), key=lambda i: (logliks[i], -i))
    best_norm = max(range(len(logliks)), key=lambda i: (logliks[i] / max(1, len(item.choices[i])), -i))
    return ItemScore(predicted=item.choices[best], predicted_norm=item.choices[best_norm], loglik=logliks)


def score_choices(
    model: Any, tokenizer: Any, items: Sequence[TaskItem], settings: EvalSettings, progress: Any = None
) -> list[ItemScore]:
    """:func:`score_choice` for every item, faster: items whose options are one token each (yes/no,
    A/B/C/D) need only the prompt's last-position log-probabilities, so their prompts run
    ``settings.generation_batch`` at a time, left-padded, in one forward pass that computes only that
    position's logits; the others go one at a time through :func:`score_choice`."""
    import torch

    scores: list[ItemScore | None] = [None] * len(items)
    single: dict[int, list[int]] = {}
    for i, item in enumerate(items):
        options = [list(tokenizer(o, add_special_tokens=False)["input_ids"]) for o in item.choices]
        if all(len(o) == 1 for o in options):
            single[i] = [o[0] for o in options]
        else:
            scores[i] = score_choice(model, tokenizer, item, settings.max_prompt_tokens)
            if progress is not None:
                progress.update(1)
    prompts = {i: prompt_ids(tokenizer, items[i].prompt, settings.max_prompt_tokens) for i in single}
    order = sorted(single, key=lambda i: (-len(prompts[i]), i))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for chunk, ids, mask in _left_padded(prompts, order, settings.generation_batch, pad):
        with torch.no_grad():
            logits = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0),  # left padding: each prompt starts at 0
                logits_to_keep=1,
            ).logits[:, -1]
        logp = torch.log_softmax(logits.float(), dim=-1)
        for row, i in enumerate(chunk):
            scores[i] = _choice_score(items[i], [float(logp[row, t]) for t in single[i]])
        if progress is not None:
            progress.update(len(chunk))
    return [s for s in scores if s is not None]


def _cache_keyword(model: Any) -> str:
    """The KV-cache argument's name: ``cache`` in transformers >= 5.2x, ``past_key_values`` before."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"


def answer_loss(model: Any, tokenizer: Any, item: TaskItem, max_seq_len: int) -> tuple[float, int]:
    """(mean answer-token loss in nats, answer tokens) of the gold answer under teacher forcing."""
    import torch

    from common.examples import IGNORE_INDEX, tokenize_record

    example = tokenize_record(ChatRecord(item.prompt, item.answer), tokenizer, max_seq_len)
    ids = torch.tensor([example.input_ids])
    labels = torch.tensor([example.labels])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float()
    target = labels[0, 1:]
    token_loss = torch.nn.functional.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum")
    n = int((target != IGNORE_INDEX).sum())
    return float(token_loss) / max(1, n), n


def _left_padded(
    prompts: Mapping[int, list[int]] | Sequence[list[int]], order: Sequence[int], size: int, pad: int
) -> Iterator[tuple[list[int], Any, Any]]:
    """``order``'s prompt indices ``size`` at a time: (indices, input ids, attention mask), left-padded with ``pad``."""
    import torch

    for start in range(0, len(order), size):
        chunk = list(order[start : start + size])
        width = max(len(prompts[i]) for i in chunk)
        ids = torch.tensor([[pad] * (width - len(prompts[i])) + prompts[i] for i in chunk])
        mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in chunk])
        yield chunk, ids, mask


def generate_answers(
    model: Any, tokenizer: Any, items: Sequence[TaskItem], settings: EvalSettings, progress: Any = None
) -> list[str]:
    """Greedy decoding of at most ``settings.max_new_tokens`` tokens after each item's prompt.

    Prompts go through ``generate`` ``settings.generation_batch`` at a time, left-padded (one decoding
    step serves the whole batch, which is what makes generation affordable on a CPU), longest first
    so a batch's prompts are of similar length; the order is fixed, so the same inputs give the same
    texts on every run. ``progress`` (a tqdm bar) advances by the items of each batch.
    """
    import torch

    prompts = [prompt_ids(tokenizer, item.prompt, settings.max_prompt_tokens) for item in items]
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    pad = tokenizer.pad_token_id
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    stops = {pad, tokenizer.eos_token_id, *(config_eos if isinstance(config_eos, list) else [config_eos])} - {None}
    texts = [""] * len(prompts)
    for chunk, ids, mask in _left_padded(prompts, order, settings.generation_batch, pad):
        width = ids.shape[1]
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=settings.max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=pad,
            )
        for row, i in zip(out[:, width:].tolist(), chunk, strict=True):
            end = next((n for n, token in enumerate(row) if token in stops), len(row))  # finished rows are padded
            texts[i] = str(tokenizer.decode(row[:end], skip_special_tokens=True)).strip()
        if progress is not None:
            progress.update(len(chunk))
    return texts


@dataclass(frozen=True)
class EvalSettings:
    """Budgets of one evaluation (tokens)."""

    max_prompt_tokens: int = 1024  # prompt tokens kept after the chat template (cut from the left)
    max_new_tokens: int = 128  # generation cap per item
    max_seq_len: int = 1024  # prompt + answer tokens for the answer-token loss
    generation_batch: int = 8  # prompts run together (left-padded): generation, and choice items with one-token options

    @classmethod
    def for_training_length(cls, max_seq_len: int) -> EvalSettings:
        """The budgets a run uses for its sites' task sets, from its ``train.max_seq_len``."""
        return cls(max_prompt_tokens=max_seq_len * 4, max_new_tokens=max_seq_len, max_seq_len=max_seq_len * 5)


def score_task(
    model: Any,
    tokenizer: Any,
    task: Task,
    settings: EvalSettings = EvalSettings(),
    *,
    desc: str = "",
    progress: bool = True,
) -> list[ItemScore]:
    """Score every item of ``task`` with ``model`` (deterministic: no sampling, fixed order)."""
    from tqdm import tqdm

    model.eval()
    # In a log file (not a terminal) a bar line every 30 s is enough.
    bar = tqdm(
        total=len(task.items),
        desc=desc or task.name,
        unit="item",
        disable=not progress,
        file=sys.stderr,
        leave=False,
        mininterval=0.1 if sys.stderr.isatty() else 30.0,
    )
    with bar:
        if task.kind == "choice":
            scores = score_choices(model, tokenizer, task.items, settings, bar)
        else:
            texts = generate_answers(model, tokenizer, task.items, settings, bar)
            scores = [
                ItemScore(predicted=text, loss=loss, answer_tokens=n)
                for text, (loss, n) in zip(
                    texts, (answer_loss(model, tokenizer, i, settings.max_seq_len) for i in task.items), strict=True
                )
            ]
    if task.kind == "generation":
        for score, value in zip(
            scores, rouge_l([i.answer for i in task.items], [s.predicted for s in scores]), strict=True
        ):
            score.rouge_l = value
    return scores


def summarize_scores(task: Task, scores: Sequence[ItemScore]) -> dict[str, Any]:
    """Task metrics of one model, with per-group metrics when the items carry a group."""
    metrics = _metrics(task, list(task.items), list(scores))
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(task.items):
        if item.group is not None:
            groups.setdefault(item.group, []).append(i)
    result: dict[str, Any] = {"metrics": metrics}
    if groups:
        by_group = {
            g: _metrics(task, [task.items[i] for i in idx], [scores[i] for i in idx])
            for g, idx in sorted(groups.items())
        }
        result["groups"] = by_group
        result["fairness"] = group_gaps(by_group, primary_metric(task.kind))
    return result


def primary_metric(kind: str) -> str:
    """The headline number of a task kind (higher is better)."""
    return "accuracy" if kind == "choice" else "rouge_l"


def _metrics(task: Task, items: list[TaskItem], scores: list[ItemScore]) -> dict[str, Any]:
    if task.kind == "choice":
        gold = [task.label_of(i, i.answer) for i in items]
        out = classification_metrics(
            gold, [task.label_of(i, s.predicted) for i, s in zip(items, scores, strict=True)], task.labels
        )
        norm = classification_metrics(
            gold, [task.label_of(i, s.predicted_norm) for i, s in zip(items, scores, strict=True)], task.labels
        )
        out["accuracy_norm"] = norm["accuracy"]
        out["macro_f1_norm"] = norm["macro_f1"]
        return out
    tokens = sum(s.answer_tokens for s in scores)
    total = sum(s.loss * s.answer_tokens for s in scores)
    return {
        "n": len(items),
        "rouge_l": float(sum(s.rouge_l for s in scores) / len(scores)),
        "loss": float(sum(s.loss for s in scores) / len(scores)),
        "perplexity": float(math.exp(total / max(1, tokens))),
    }


def evaluate_models(
    base: Any,
    tokenizer: Any,
    task: Task,
    adapters: Sequence[tuple[str, str | Path]],
    settings: EvalSettings = EvalSettings(),
    *,
    include_base: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate the base model and each adapter on ``task``; returns the JSON-ready result.

    The base model is wrapped once by PEFT; each adapter is loaded under its own name and selected
    in turn; the base is scored with the adapters disabled.
    """
    result: dict[str, Any] = {"task": {"name": task.name, "kind": task.kind, "n": len(task.items)}, "models": []}
    if task.kind == "choice":
        result["task"]["labels"] = list(task.labels)
        result["baselines"] = baselines([task.label_of(i, i.answer) for i in task.items], task.labels)
    timings: dict[str, float] = {}
    model = base
    if adapters:
        from peft import PeftModel

        model = PeftModel.from_pretrained(base, str(adapters[0][1]), adapter_name=adapters[0][0])
        for extra_name, extra_path in adapters[1:]:
            model.load_adapter(str(extra_path), adapter_name=extra_name)
    entries: list[tuple[str, str | None]] = ([("base", None)] if include_base else []) + [
        (n, str(p)) for n, p in adapters
    ]
    for name, where in entries:
        start = time.perf_counter()
        if where is None and adapters:
            with model.disable_adapter():
                scores = score_task(model, tokenizer, task, settings, desc=name, progress=progress)
        else:
            if adapters:
                model.set_adapter(name)
            scores = score_task(model, tokenizer, task, settings, desc=name, progress=progress)
        timings[name] = time.perf_counter() - start
        result["models"].append({"name": name, "adapter": where, **summarize_scores(task, scores)})
    result["seconds"] = timings  # wall time: the only key that differs between identical runs
    return result


def evaluate_sites(
    base: Any,
    tokenizer: Any,
    tasks: dict[str, Task],
    adapter: str | Path,
    settings: EvalSettings = EvalSettings(),
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Base model vs ``adapter`` on each site's task, and on all sites' items pooled (``evaluation.json``).

    All tasks must be of one kind with one label set. Returns ``{"task", "kind", "metric", "labels",
    "baselines", "sites": {site: {"base", "final"}}, "pooled": {"base", "final"}}``, each entry the
    output of :func:`summarize_scores`.
    """
    from peft import PeftModel

    first = next(iter(tasks.values()))
    if any(t.kind != first.kind or t.labels != first.labels for t in tasks.values()):
        raise DataError("evaluation: every site's task must have the same kind and options")
    model = PeftModel.from_pretrained(base, str(adapter), adapter_name="final")
    scores: dict[str, dict[str, list[ItemScore]]] = {"base": {}, "final": {}}
    for site, task in tasks.items():
        for which in ("base", "final"):
            start = time.perf_counter()
            with model.disable_adapter() if which == "base" else contextlib.nullcontext():
                scores[which][site] = score_task(
                    model, tokenizer, task, settings, desc=f"{site} {which}", progress=progress
                )
            log.info(
                "task metrics: %s %s: %d items in %.0f s", site, which, len(task.items), time.perf_counter() - start
            )
    model.unload()  # leave ``base`` as it was
    return site_evaluation(tasks, scores)


def site_evaluation(tasks: dict[str, Task], scores: dict[str, dict[str, list[ItemScore]]]) -> dict[str, Any]:
    """``evaluation.json`` from each site's item scores of the base model and the final adapter
    (``scores["base"][site]``, ``scores["final"][site]``): per site, per subgroup and pooled."""
    first = next(iter(tasks.values()))
    pooled = Task(
        "all sites", first.kind, [i for t in tasks.values() for i in t.items], first.labels, first.own_choices
    )
    result: dict[str, Any] = {
        "task": first.name,
        "kind": first.kind,
        "metric": primary_metric(first.kind),
        "labels": list(first.labels),
        "sites": {},
        "pooled": {},
    }
    if first.kind == "choice":
        result["baselines"] = baselines([pooled.label_of(i, i.answer) for i in pooled.items], pooled.labels)
    for site, task in tasks.items():
        result["sites"][site] = {w: summarize_scores(task, scores[w][site]) for w in ("base", "final")}
    for which in ("base", "final"):
        result["pooled"][which] = summarize_scores(pooled, [s for site in tasks for s in scores[which][site]])
    return result


def baselines_line(base: dict[str, Any]) -> str:
    """One line: the majority-class and chance baselines (:func:`common.metrics.baselines`)."""
    return (
        f"baselines: majority class '{base['majority']['label']}' accuracy "
        f"{base['majority']['accuracy']:.4f} (macro-F1 {base['majority']['macro_f1']:.4f}); "
        f"chance accuracy {base['chance']['accuracy']:.4f} (macro-F1 {base['chance']['macro_f1']:.4f})"
    )


def format_results(result: dict[str, Any]) -> str:
    """A console report: one column per model, then per-class numbers and confusion matrices."""
    task = result["task"]
    models = result["models"]
    kind = task["kind"]
    keys = (
        ["accuracy", "accuracy_norm", "macro_precision", "macro_recall", "macro_f1"]
        if kind == "choice"
        else ["rouge_l", "loss", "perplexity"]
    )
    names = [m["name"] for m in models]
    width = max(10, *(len(n) for n in names))
    lines = [f"{task['name']}: {task['n']} items, {kind} task"]
    lines.append(f"{'metric':<16}" + "".join(f"{n:>{width + 2}}" for n in names))
    for key in keys:
        lines.append(f"{key:<16}" + "".join(f"{m['metrics'][key]:>{width + 2}.4f}" for m in models))
    if kind == "choice":
        lines.append(baselines_line(result["baselines"]))
        labels = task["labels"]
        for m in models:
            lines.append(f"\n{m['name']}: per class (precision / recall / F1 / support)")
            for lab in labels:
                c = m["metrics"]["per_class"][lab]
                lines.append(f"  {lab:<14} {c['precision']:.4f} / {c['recall']:.4f} / {c['f1']:.4f} / {c['support']}")
            lines.append("  confusion matrix (rows = gold, columns = predicted):")
            cw = max(6, *(len(lab) for lab in labels)) + 1
            lines.append("  " + " " * cw + "".join(f"{lab:>{cw}}" for lab in labels))
            for lab, row in zip(labels, m["metrics"]["confusion_matrix"]["matrix"], strict=True):
                lines.append(f"  {lab:>{cw}}" + "".join(f"{v:>{cw}}" for v in row))
    for m in models:
        if "fairness" in m:
            f = m["fairness"]
            lines.append(
                f"\n{m['name']}: {f['metric']} by group: "
                + ", ".join(f"{g} {m['groups'][g][f['metric']]:.4f} (n={m['groups'][g]['n']})" for g in m["groups"])
            )
            if f["best_group"] is not None:
                lines.append(
                    f"  worst group: {f['worst_group']}; largest gap {f['largest_gap']:.4f} (vs {f['best_group']})"
                )
    return "\n".join(lines)
