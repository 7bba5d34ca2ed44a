"""Sites refuse SecAgg+ instructions that would let a dishonest coordinator unmask one site's update."""

from __future__ import annotations

import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Stage
from flwr.common.secure_aggregation.secaggplus_constants import Key as K

from client import secure_app
from client.secure_app import SECAGG_REFUSED, secagg_guard
from common.wire import EGRESS


def _run(configs: dict) -> tuple[Message, list[Message]]:
    msg = Message(
        RecordDict({RECORD_KEY_CONFIGS: ConfigRecord(configs)}), dst_node_id=7, message_type=MessageType.TRAIN
    )
    passed: list[Message] = []

    def call_next(m: Message, c: Context) -> Message:
        passed.append(m)
        return Message(RecordDict(), reply_to=m)

    ctx = Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})
    return secagg_guard(msg, ctx, call_next), passed


def _setup(sites: int, shares: int, threshold: int) -> dict:
    return {
        K.STAGE: Stage.SETUP,
        K.SAMPLE_NUMBER: sites,
        K.SHARE_NUMBER: shares,
        K.THRESHOLD: threshold,
        K.CLIPPING_RANGE: 1.0,
        K.TARGET_RANGE: 2**22,
        K.MOD_RANGE: 2**32,
        K.MAX_WEIGHT: 1000.0,
    }


@pytest.mark.parametrize(
    ("configs", "reason"),
    [
        (_setup(2, 2, 2), "fewer than 3"),
        (_setup(4, 4, 2), "not above half"),
        (_setup(5, 5, 1), "not above half"),
        ({K.STAGE: Stage.UNMASK, K.ACTIVE_NODE_ID_LIST: [7, 8, 9], K.DEAD_NODE_ID_LIST: [9]}, "both as active"),
        ({K.STAGE: Stage.UNMASK, K.ACTIVE_NODE_ID_LIST: [8, 8, 9], K.DEAD_NODE_ID_LIST: []}, "listed twice"),
        ({K.STAGE: Stage.UNMASK, K.ACTIVE_NODE_ID_LIST: [8, 9], K.DEAD_NODE_ID_LIST: [7]}, "this site"),
    ],
)
def test_inconsistent_instructions_get_an_error_reply_and_reach_nothing(configs: dict, reason: str) -> None:
    reply, passed = _run(configs)
    assert reply.has_error() and reply.error.code == SECAGG_REFUSED and reason in reply.error.reason
    assert passed == []  # neither Flower's SecAgg+ mod nor the site logic saw the message


@pytest.mark.parametrize(
    "configs",
    [
        _setup(3, 3, 2),
        _setup(10, 10, 6),
        {K.STAGE: Stage.UNMASK, K.ACTIVE_NODE_ID_LIST: [7, 8], K.DEAD_NODE_ID_LIST: [9]},
        {K.STAGE: Stage.SHARE_KEYS},
    ],
)
def test_consistent_instructions_pass_through(configs: dict) -> None:
    reply, passed = _run(configs)
    assert not reply.has_error() and len(passed) == 1


def test_the_secure_client_app_runs_the_guard_first() -> None:
    mods = secure_app.app._mods
    assert mods.index(secagg_guard) < mods.index(secure_app.secaggplus_mod)  # before Flower's secaggplus_mod
    assert "_egress_of_protocol" in mods[0].__qualname__  # outermost: every reply is logged, refusals too


def test_every_secagg_reply_and_refusal_is_recorded_in_the_egress_log(cfg, tmp_path) -> None:  # noqa: ANN001
    """The real chain (egress mod -> guard -> Flower's secaggplus_mod): a setup stage's public keys leave the site,
    and the site's log names them with the SHA-256 of exactly the bytes sent; a refusal is logged with its reason."""
    import hashlib
    import json
    from pathlib import Path

    from common.audit import verify_log
    from tests.integration.conftest import site_node

    node = site_node(cfg, tmp_path)
    app = secure_app.secure_site_app()
    egress, guard, flower_mod = app._mods[0], app._mods[1], app._mods[2]

    def never(m: Message, c: Context) -> Message:
        raise AssertionError("the setup stage must not reach the site logic")

    def chain(configs: dict) -> Message:
        msg = Message(
            RecordDict({RECORD_KEY_CONFIGS: ConfigRecord(configs)}),
            dst_node_id=7,
            message_type=MessageType.TRAIN,
            group_id="3",
        )
        ctx = Context(run_id=1, node_id=7, node_config=node, state=RecordDict(), run_config={})
        return egress(msg, ctx, lambda m, c: guard(m, c, lambda m2, c2: flower_mod(m2, c2, never)))

    reply = chain(_setup(3, 3, 2))
    assert not reply.has_error()
    sent = reply.content.config_records[RECORD_KEY_CONFIGS]
    log_path = Path(node["site-config"]).parent / "egress.jsonl"
    entry = json.loads(log_path.read_text().splitlines()[-1])
    assert entry["message_type"] == "secagg-setup" and entry["server_round"] == 3 and entry["error"] is None
    logged = {t["name"]: t["sha256"] for t in entry["tensors"]}
    assert logged == {key: hashlib.sha256(value).hexdigest() for key, value in sent.items()}
    assert entry["tensor_bytes"] == sum(len(v) for v in sent.values()) > 0
    # The reply carries the log's head after its own entry (the coordinator signs it into the round's manifest).
    assert dict(reply.content.config_records[EGRESS]) == {"seq": entry["seq"], "head": entry["hash"]}
    assert set(reply.content.config_records) == {RECORD_KEY_CONFIGS, EGRESS}  # nothing else leaves with it
    logged_head = entry["hash"]

    refused = chain(_setup(2, 2, 2))
    assert refused.has_error()
    entry = json.loads(log_path.read_text().splitlines()[-1])
    assert entry["message_type"] == "secagg-setup" and "fewer than 3" in entry["error"] and entry["tensors"] == []
    assert verify_log(log_path, anchors=[(1, logged_head)]) == 2
