"""Planted identifiers in a site's records never reach the coordinator, the logs or the egress log.

Every error path of the site is exercised with records that carry SECRET: bad files of each kind, a
refused round, foreign tensors, and an unexpected exception whose message quotes a record.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from flwr.app import MessageType

from client import client_app, rounds
from common.config import DataConfig, PrivacyConfig
from tests.integration.conftest import SECRET, context, message, site_node

ROW = {"question": f"Patient {SECRET} asks about metformin", "answer": f"Dear {SECRET}, take it with food."}


def _site(tmp_path: Path, data_file: Path, cfg, target_epsilon: float = 8.0) -> dict[str, str]:  # noqa: ANN001
    """A site daemon's node config: its own site.yaml with an on-disk ledger and an egress log."""
    config = tmp_path / "site.yaml"
    cache = cfg.model.cache_dir  # the site's own model folder (the plan may not name another)
    config.write_text(
        f"site_id: leaky\nsite_index: 0\nstate_dir: {tmp_path / 'state'}\ncoordinator: 127.0.0.1:1\ninsecure: true\n"
        f"model_cache: {cache}\n"
        f"data:\n  paths: [{data_file}]\nprivacy:\n  target_epsilon: {target_epsilon}\n",
        encoding="utf-8",
    )
    return {"site-config": str(config)}


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    good = "\n".join(json.dumps(ROW) for _ in range(8))
    files = {
        "invalid json": (tmp_path / "a.jsonl", good + f'\n{{"question": "{SECRET}", "answer": \n'),
        "empty field": (tmp_path / "b.jsonl", good + "\n" + json.dumps({"question": SECRET, "answer": " "})),
        "missing field": (tmp_path / "c.jsonl", good + "\n" + json.dumps({"input": SECRET})),
        "bad csv": (tmp_path / "d.csv", f'question,answer\n"{SECRET}","ok",extra\n'),
        "bad chat role": (
            tmp_path / "e.jsonl",
            json.dumps({"messages": [{"role": SECRET, "content": "x"}, {"role": "assistant", "content": "y"}]}),
        ),
    }
    for path, text in files.values():
        path.write_text(text, encoding="utf-8")
    bad_utf8 = tmp_path / "f.jsonl"
    bad_utf8.write_bytes((good + "\n").encode() + f'{{"question": "{SECRET} \xff"}}'.encode("latin-1"))
    return {k: v[0] for k, v in files.items()} | {"non-utf8": bad_utf8}


def _assert_clean(reply_reason: str, caplog: pytest.LogCaptureFixture, state: Path) -> None:
    assert SECRET not in reply_reason
    assert "Jane" not in caplog.text and SECRET not in caplog.text
    egress = state / "egress.jsonl"
    if egress.exists():
        assert SECRET not in egress.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "case", ["invalid json", "empty field", "missing field", "bad csv", "bad chat role", "non-utf8"]
)
def test_bad_data_errors_carry_no_record_text(
    case: str, cfg, initial, tmp_path: Path, site_log: pytest.LogCaptureFixture
) -> None:
    caplog = site_log
    path = _bad_files(tmp_path)[case]
    reply = client_app.app(message(cfg, 1, initial, MessageType.TRAIN), context(node_config=_site(tmp_path, path, cfg)))
    assert reply.has_error() and path.name in reply.error.reason
    _assert_clean(reply.error.reason, caplog, tmp_path / "state")


def test_an_exception_quoting_a_record_is_withheld(
    cfg, initial, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, site_log: pytest.LogCaptureFixture
) -> None:
    caplog = site_log
    data = tmp_path / "ok.jsonl"
    data.write_text("\n".join(json.dumps(ROW) for _ in range(12)), encoding="utf-8")

    def parser_echoing_its_input(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - fault injection
        raise ValueError(f"could not parse {SECRET}")

    monkeypatch.setattr(rounds, "train_round", parser_echoing_its_input)
    reply = client_app.app(message(cfg, 1, initial, MessageType.TRAIN), context(node_config=_site(tmp_path, data, cfg)))
    assert reply.has_error() and reply.error.code == client_app.UNEXPECTED_ERROR
    assert reply.error.reason.startswith("ValueError at the site")
    assert "parser_echoing_its_input" in caplog.text  # the stack stays at the site for debugging...
    _assert_clean(reply.error.reason, caplog, tmp_path / "state")  # ...the message does not


def test_refusals_and_layout_errors_carry_no_record_text(
    cfg, initial, tmp_path: Path, site_log: pytest.LogCaptureFixture
) -> None:
    caplog = site_log
    data = tmp_path / "ok.jsonl"
    data.write_text("\n".join(json.dumps(ROW) for _ in range(12)), encoding="utf-8")
    node = _site(tmp_path, data, cfg, target_epsilon=0.001)  # needs noise beyond any use: refused
    reply = client_app.app(message(cfg, 1, initial, MessageType.TRAIN), context(node_config=node))
    assert reply.has_error() and "privacy budget" in reply.error.reason
    foreign = initial | {"base_model.model.lm_head.weight": next(iter(initial.values()))}
    layout = client_app.app(message(cfg, 1, foreign, MessageType.TRAIN), context(node_config=node))
    assert layout.has_error() and "only LoRA adapter tensors" in layout.error.reason
    for r in (reply, layout):
        _assert_clean(r.error.reason, caplog, tmp_path / "state")


def test_identifiers_are_scrubbed_before_training(
    cfg, initial, tmp_path: Path, site_log: pytest.LogCaptureFixture
) -> None:
    caplog = site_log
    data = tmp_path / "phi.jsonl"
    data.write_text("\n".join(json.dumps(ROW) for _ in range(12)), encoding="utf-8")
    reply = client_app.app(message(cfg, 1, initial, MessageType.TRAIN), context(node_config=_site(tmp_path, data, cfg)))
    assert not reply.has_error(), reply.error.reason
    scrubbed = re.search(r"(\d+) identifiers scrubbed", caplog.text)  # the count stays in the site's log
    assert scrubbed and int(scrubbed.group(1)) >= 24  # a name and a phone in each of 12 rows
    from client import runtime

    site = next(v for k, v in runtime._sites.items() if k[0].paths == (str(data),))
    _, _, tokenizer = context_model(cfg)
    text = "".join(tokenizer.decode(e.input_ids) for e in site.train + site.eval)
    assert SECRET not in text and "Jane" not in text and "[NAME]" in text
    assert SECRET not in caplog.text


def test_deid_can_be_switched_off_explicitly(cfg, initial, tmp_path: Path) -> None:
    data = tmp_path / "phi.jsonl"
    data.write_text("\n".join(json.dumps(ROW) for _ in range(12)), encoding="utf-8")
    plain = dataclasses.replace(
        cfg,
        data=DataConfig(kind="files", paths=(str(data), str(data)), deid="off"),
        privacy=PrivacyConfig(enabled=False),
    )
    node = site_node(plain, tmp_path)
    reply = client_app.app(message(plain, 1, initial, MessageType.TRAIN), context(node_config=node))
    assert not reply.has_error(), reply.error.reason


def context_model(cfg):  # noqa: ANN001, ANN201
    from client import runtime

    model, tokenizer = runtime.model_for(cfg.model, cfg.lora, cfg.seed)
    return cfg, model, tokenizer
