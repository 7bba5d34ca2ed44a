"""Task evaluation on the tiny model: task loading, KV-cached option scoring, generation, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from common.errors import DataError
from common.evaluation import (
    EvalSettings,
    TaskItem,
    TaskSpec,
    evaluate_models,
    format_results,
    generate_answers,
    load_task,
    prompt_ids,
    score_choice,
)


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_load_choice_task_with_context_and_label_set(tmp_path: Path) -> None:
    rows = [
        {"question": f"q{i}?", "context": "ctx", "label": lab, "sex": "f" if i % 2 else "m"}
        for i, lab in enumerate(["yes", "no", "maybe", "yes"])
    ]
    task = load_task(_write(tmp_path / "t.jsonl", rows), TaskSpec(group_column="sex"))
    assert task.kind == "choice"
    assert task.labels == ("maybe", "no", "yes")
    item = task.items[0]
    assert item.choices == ("maybe", "no", "yes") and item.answer == "yes" and item.group == "m"
    text = item.prompt[0][1]
    assert text.startswith("ctx\n\nQuestion: q0?") and text.endswith("Answer with one of: maybe, no, yes.")


def test_load_choice_task_with_own_options_uses_letters(tmp_path: Path) -> None:
    rows = [
        {"question": "q?", "choices": ["red", "blue", "green"], "label": 2},
        {"question": "r?", "choices": ["up", "down"], "label": "A"},
    ]
    task = load_task(_write(tmp_path / "mc.jsonl", rows))
    assert task.labels == ("A", "B", "C")
    assert [i.answer for i in task.items] == ["green", "up"]
    assert task.label_of(task.items[0], "green") == "C"


def test_load_task_errors_name_file_and_row(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.jsonl", [{"question": "q?", "label": "yes"}, {"question": "", "label": "no"}])
    with pytest.raises(DataError, match=r"bad.jsonl row 2: field 'question' is missing or empty"):
        load_task(path)
    path = _write(tmp_path / "bad2.jsonl", [{"question": "q?", "label": "yes"}, {"question": "p?", "label": "no"}])
    with pytest.raises(DataError, match=r"bad2.jsonl row 2: the gold answer is not one of the options"):
        load_task(path, TaskSpec(choices=("yes", "maybe")))
    with pytest.raises(DataError, match="task kind"):
        TaskSpec(kind="ranking")


def test_kv_cached_option_scores_equal_full_forward(tiny) -> None:  # noqa: ANN001
    _, model, tokenizer = tiny
    item = TaskItem(
        (("user", "Is aspirin an antiplatelet drug? Answer yes or no."),), "yes", ("yes", "no", "maybe not")
    )
    score = score_choice(model, tokenizer, item, 512)
    ids = prompt_ids(tokenizer, item.prompt, 512)
    for option, cached in zip(item.choices, score.loglik, strict=True):
        opt = tokenizer(option, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids + opt])).logits[0].float(), dim=-1)
        full = sum(float(logp[len(ids) - 1 + j, t]) for j, t in enumerate(opt))
        assert cached == pytest.approx(full, abs=1e-4)
    assert score.predicted == item.choices[max(range(3), key=lambda i: score.loglik[i])]


def test_evaluate_models_is_deterministic_and_formats(tiny, tmp_path: Path) -> None:  # noqa: ANN001
    _, model, tokenizer = tiny
    rows = [
        {
            "question": f"Does patient {i} need a referral?",
            "label": ["yes", "no"][i % 2],
            "site": ["a", "b"][i % 3 == 0],
        }
        for i in range(8)
    ]
    task = load_task(_write(tmp_path / "c.jsonl", rows), TaskSpec(group_column="site"))
    first = evaluate_models(model, tokenizer, task, [], progress=False)
    second = evaluate_models(model, tokenizer, task, [], progress=False)
    first.pop("seconds"), second.pop("seconds")
    assert first == second
    metrics = first["models"][0]["metrics"]
    assert sum(map(sum, metrics["confusion_matrix"]["matrix"])) == 8
    assert first["baselines"]["majority"]["accuracy"] == 0.5
    assert first["models"][0]["fairness"]["worst_group"] in ("a", "b")
    text = format_results({**first, "seconds": {}})
    assert "macro_f1" in text and "confusion matrix" in text and "worst group" in text


def test_generation_task_reports_rouge_loss_perplexity(tiny, tmp_path: Path) -> None:  # noqa: ANN001
    _, model, tokenizer = tiny
    rows = [
        {"input": "Summarize: chest pain for two days.", "output": "Chest pain, two days."},
        {"input": "Summarize: cough and fever.", "output": "Cough, fever."},
    ]
    task = load_task(_write(tmp_path / "g.jsonl", rows))
    assert task.kind == "generation"
    out = evaluate_models(model, tokenizer, task, [], EvalSettings(max_new_tokens=8), progress=False)
    m = out["models"][0]["metrics"]
    assert m["n"] == 2 and 0.0 <= m["rouge_l"] <= 1.0
    assert m["loss"] > 0 and m["perplexity"] > 1.0


def test_batched_generation_gives_the_texts_of_one_prompt_at_a_time(tiny) -> None:  # noqa: ANN001
    """Left-padded batches (prompts of different lengths) decode exactly what each prompt alone does."""
    import copy

    _, base, tokenizer = tiny
    model = copy.deepcopy(base)  # random weights of a larger scale, so greedy decoding says something varied
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    prompts = ["Summarize: cough.", "Summarize: chest pain for two days, worse on exertion.", "Note: fever", "Hi"]
    items = [TaskItem(prompt=(("user", p),), answer="x") for p in prompts]
    alone = generate_answers(model, tokenizer, items, EvalSettings(max_new_tokens=12, generation_batch=1))
    batched = generate_answers(model, tokenizer, items, EvalSettings(max_new_tokens=12, generation_batch=3))
    assert batched == alone and len(set(alone)) > 1


def test_batched_choice_scoring_gives_the_log_likelihoods_of_one_item_at_a_time(tiny) -> None:  # noqa: ANN001
    """One-token options: left-padded prompts of different lengths in one forward give each item's own
    log-likelihoods; multi-token options take the prompt-cache path; the order of items is kept."""
    import copy

    from common.evaluation import score_choice, score_choices

    _, base, tokenizer = tiny
    model = copy.deepcopy(base)
    torch.manual_seed(4)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    prompts = ["Urgent?", "Chest pain for two days, worse on exertion, in a 70-year-old. Urgent?", "Fever. Urgent?"]
    items = [TaskItem(prompt=(("user", p),), answer="2", choices=("1", "2")) for p in prompts]
    items.insert(1, TaskItem(prompt=(("user", "Which?"),), answer="chest pain", choices=("chest pain", "fever today")))
    assert [len(tokenizer(o, add_special_tokens=False)["input_ids"]) for o in ("1", "2")] == [1, 1]  # the tiny vocab
    alone = [score_choice(model, tokenizer, item, 1024) for item in items]
    batched = score_choices(model, tokenizer, items, EvalSettings(generation_batch=2))
    assert [s.loglik for s in batched] == [pytest.approx(s.loglik, rel=1e-4, abs=1e-4) for s in alone]
    assert [s.predicted for s in batched] == [s.predicted for s in alone]
    assert len({tuple(s.loglik) for s in alone}) == len(items)  # every item scored differently


def test_adapter_side_by_side_differs_from_base(tiny, tmp_path: Path) -> None:  # noqa: ANN001
    from transformers import AutoModelForCausalLM

    from common.adapters import attach_lora, save_adapter
    from common.config import AdapterConfig
    from common.model import resolve_model

    cfg, _, tokenizer = tiny
    peft_model = attach_lora(AutoModelForCausalLM.from_pretrained(resolve_model(cfg)), AdapterConfig(), seed=1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    adapter = save_adapter(peft_model, tmp_path / "adapter")
    rows = [{"question": f"q{i}?", "label": ["yes", "no"][i % 2]} for i in range(4)]
    task = load_task(_write(tmp_path / "c.jsonl", rows))
    base = AutoModelForCausalLM.from_pretrained(resolve_model(cfg))
    out = evaluate_models(base, tokenizer, task, [("trained", adapter)], progress=False)
    assert [m["name"] for m in out["models"]] == ["base", "trained"]
    alone = evaluate_models(
        AutoModelForCausalLM.from_pretrained(resolve_model(cfg)), tokenizer, task, [], progress=False
    )
    assert out["models"][0]["metrics"] == alone["models"][0]["metrics"]  # disable_adapter() = the base model


def test_site_task_reads_task_files_with_the_training_column_mapping(tmp_path: Path) -> None:
    # A dialogue -> note task file uses the same columns as the training data (data.prompt_column /
    # data.completion_column), so a site needs no second mapping for its task set.
    from common.config import DataConfig
    from common.evaluation import site_task

    path = tmp_path / "val.csv"
    path.write_text("dialogue,section_text,section_header\nDoctor: any pain?,No pain reported.,ROS\n", encoding="utf-8")
    data = DataConfig(
        kind="files",
        paths=[str(path)],
        task_paths=[str(path)],
        prompt_column="dialogue",
        completion_column="section_text",
        group_field="section_header",
    )
    task = site_task(data, 0)
    assert task is not None and task.kind == "generation"
    (item,) = task.items
    assert item.answer == "No pain reported." and item.group == "ROS"
    assert "any pain" in item.prompt[0][1]
    assert site_task(data, 1) is None
