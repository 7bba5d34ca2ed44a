"""Flower's strategies behind fedcare's screening, fed hand-built reply Messages (no training: fast).

The full loop with the real ClientApp is in test_strategies.py (slow tier); these check the same
code paths quickly: which replies are dropped and why, that Flower's strategy does the averaging,
and that the strategy's own state (FedAdam's m_t/v_t, FedAvgM's momentum) survives a save/load.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.serverapp import strategy as flwr_strategy
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from common.config import STRATEGIES, RunConfig, StrategyConfig
from common.errors import FedcareError
from common.wire import ARRAYS, METRICS, NUM_EXAMPLES
from server.strategies import MEAN_BASED, StreamingMean, build_strategy, stream_arrayrecords
from simulations.inprocess import InProcessGrid

NAMES = ("m.lora_A.weight", "m.lora_B.weight")


def _global(value: float = 0.0) -> dict[str, np.ndarray]:
    return {NAMES[0]: np.full((2, 3), value, np.float32), NAMES[1]: np.full((3, 2), value, np.float32)}


class Sites:
    """Stand-in site replies for the screening tests: each node answers with the arrays it is told to."""

    def __init__(self, answers: dict[int, dict[str, np.ndarray] | str], examples: int = 10) -> None:
        self.answers = answers
        self.examples = examples

    def __call__(self, msg: Message, context: Context) -> Message:
        index = int(context.node_config["partition-id"])
        answer = self.answers[index]
        if isinstance(answer, str):
            return Message(Error(code=1001, reason=answer), reply_to=msg)
        metrics = MetricRecord({NUM_EXAMPLES: self.examples, "site_index": index, "update_norm": 1.0})
        return Message(
            RecordDict({ARRAYS: ArrayRecord({k: Array(v) for k, v in answer.items()}), METRICS: metrics}), reply_to=msg
        )


def _round(name: str, answers: dict, server_round: int = 1, start: dict | None = None, strategy=None, **kw):  # noqa: ANN001, ANN202
    cfg = RunConfig(num_sites=len(answers), strategy=StrategyConfig(name=name, **kw))
    strategy = strategy or build_strategy(cfg)
    grid = InProcessGrid(Sites(answers), len(answers))
    start_record = ArrayRecord({k: Array(v) for k, v in (start or _global()).items()})
    messages = strategy.configure_train(server_round, start_record, ConfigRecord({"server_round": server_round}), grid)
    record, _ = strategy.aggregate_train(server_round, grid.send_and_receive(messages))
    return strategy, {k: record[k].numpy() for k in record}


def test_fedavg_is_flowers_weighted_mean_of_the_accepted_updates() -> None:
    strategy, out = _round("fedavg", {0: _global(1.0), 1: _global(3.0)})
    assert np.allclose(out[NAMES[0]], 2.0) and out[NAMES[0]].dtype == np.float32
    assert sorted(strategy.last_round.accepted) == ["site-0", "site-1"] and not strategy.last_round.rejected
    assert strategy.last_round.bytes_up == 2 * (6 + 6) * 4


def test_nan_wrong_shape_outlier_and_error_replies_are_dropped_with_reasons() -> None:
    nan = _global(1.0)
    nan[NAMES[1]][0, 0] = np.nan
    shape = _global(1.0) | {NAMES[0]: np.zeros((4, 3), np.float32)}
    extra = _global(1.0) | {"m.lm_head.weight": np.zeros(2, np.float32)}
    answers = {
        0: _global(1.0),
        1: _global(1.2),
        2: nan,
        3: shape,
        4: _global(500.0),
        5: extra,
        6: "site refused: privacy budget exhausted",
    }
    strategy, out = _round("fedavg", answers)
    rejected = strategy.last_round.rejected
    assert sorted(rejected) == ["site-2", "site-3", "site-4", "site-5"]
    assert "non-finite" in rejected["site-2"] and NAMES[1] in rejected["site-2"]
    assert "wrong layout" in rejected["site-3"] and "[4, 3]" in rejected["site-3"]
    assert "norm_outlier_factor" in rejected["site-4"]
    assert "names differ" in rejected["site-5"]
    assert list(strategy.last_round.failed.values()) == ["site refused: privacy budget exhausted"]
    assert np.allclose(out[NAMES[0]], 1.1)  # the mean of the two accepted updates only


def test_disallowed_metrics_are_rejected() -> None:
    class Chatty(Sites):
        def __call__(self, msg: Message, context: Context) -> Message:
            reply = super().__call__(msg, context)
            if int(context.node_config["partition-id"]) == 1:
                reply.content.metric_records[METRICS]["patient_name_length"] = 3.0
            return reply

    cfg = RunConfig(num_sites=2)
    strategy = build_strategy(cfg)
    grid = InProcessGrid(Chatty({0: _global(1.0), 1: _global(1.0)}), 2)
    messages = strategy.configure_train(
        1, ArrayRecord({k: Array(v) for k, v in _global().items()}), ConfigRecord({"server_round": 1}), grid
    )
    strategy.aggregate_train(1, grid.send_and_receive(messages))
    assert "not an allowed metric name" in strategy.last_round.rejected["site-1"]


def test_too_few_accepted_updates_raise_with_the_reasons() -> None:
    with pytest.raises(FedcareError, match="fewer than strategy.min_sites=2.*non-finite"):
        _round("fedavg", {0: _global(1.0), 1: _global(np.nan)}, min_sites=2)


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_aggregates_three_updates(name: str) -> None:
    _, out = _round(name, {0: _global(1.0), 1: _global(2.0), 2: _global(4.0)})
    assert set(out) == set(NAMES) and all(np.isfinite(v).all() for v in out.values())
    assert not np.allclose(out[NAMES[0]], 0.0)  # it moved from the start


@pytest.mark.parametrize(
    ("name", "kw"), [("fedadam", {}), ("fedyogi", {}), ("fedadagrad", {}), ("fedavgm", {"server_momentum": 0.9})]
)
def test_strategy_state_survives_a_save_and_load(name: str, kw: dict) -> None:
    r1 = {0: _global(1.0), 1: _global(2.0)}
    s, after1 = _round(name, r1, **kw)
    _, r2 = _round(name, {0: _global(3.0), 1: _global(5.0)}, server_round=2, start=after1, strategy=s)
    saved = _round(name, r1, **kw)[0].state_arrays()
    assert saved  # moments / momentum exist after round 1
    fresh = build_strategy(RunConfig(num_sites=2, strategy=StrategyConfig(name=name, **kw)))
    fresh.load_state_arrays(saved)
    _, resumed = _round(name, {0: _global(3.0), 1: _global(5.0)}, server_round=2, start=after1, strategy=fresh)
    blank = build_strategy(RunConfig(num_sites=2, strategy=StrategyConfig(name=name, **kw)))
    _, forgot = _round(name, {0: _global(3.0), 1: _global(5.0)}, server_round=2, start=after1, strategy=blank)
    assert max(float(np.max(np.abs(resumed[k] - r2[k]))) for k in NAMES) < 1e-7
    assert max(float(np.max(np.abs(forgot[k] - r2[k]))) for k in NAMES) > 1e-4  # the state matters


def test_the_deployed_coordinator_refuses_secure_aggregation_instead_of_running_plain_fedavg(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from simulations.cli import main

    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr"))
    monkeypatch.chdir(tmp_path)
    assert main(["coordinator", "run", "strategy=secagg", "--insecure"]) == 2
    assert "refusing rather than running plain FedAvg" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing was submitted


def test_the_streamed_mean_is_flowers_aggregate_arrayrecords_on_random_replies() -> None:
    rng = np.random.default_rng(0)
    shapes = {"a": (8, 64), "b": (64, 8), "big": (40_000,), "half": (5, 5)}
    replies = []
    for _ in range(30):
        arrays = {
            k: rng.standard_normal(v).astype(np.float16 if k == "half" else np.float32) for k, v in shapes.items()
        }
        metrics = MetricRecord({NUM_EXAMPLES: int(rng.integers(1, 500)), "train_loss": float(rng.random())})
        replies.append(RecordDict({ARRAYS: ArrayRecord({k: Array(v) for k, v in arrays.items()}), METRICS: metrics}))
    ours, flowers = stream_arrayrecords(replies, NUM_EXAMPLES), aggregate_arrayrecords(replies, NUM_EXAMPLES)
    assert list(ours) == list(flowers)
    for k in shapes:
        a, b = ours[k].numpy(), flowers[k].numpy()
        assert a.dtype == b.dtype and a.shape == b.shape
        tol = 2e-3 if k == "half" else 1e-5  # Flower sums in the tensor's dtype, the stream in float64
        assert np.allclose(a, b, rtol=tol, atol=tol)


def test_mean_based_strategies_stream_and_robust_ones_keep_flowers_code() -> None:
    for name in STRATEGIES:
        mro = type(build_strategy(RunConfig(num_sites=3, strategy=StrategyConfig(name=name)))).__mro__
        if name in MEAN_BASED:
            assert mro.index(StreamingMean) + 1 == mro.index(flwr_strategy.FedAvg)  # right before FedAvg
        else:
            assert StreamingMean not in mro


@pytest.mark.parametrize("name", MEAN_BASED)
def test_each_mean_based_strategy_gives_flowers_result_over_two_rounds(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(1)
    rounds = [
        {i: {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in _global().items()} for i in range(3)}
        for _ in range(2)
    ]

    def two_rounds() -> dict[str, np.ndarray]:
        strategy, out = _round(name, rounds[0])
        return _round(name, rounds[1], server_round=2, start=out, strategy=strategy)[1]

    streamed = two_rounds()
    monkeypatch.setattr(StreamingMean, "aggregate_train", flwr_strategy.FedAvg.aggregate_train)
    flowers = two_rounds()
    for k in NAMES:
        assert np.allclose(streamed[k], flowers[k], rtol=1e-5, atol=1e-6)


def test_a_tensor_that_is_not_a_plain_numpy_array_is_rejected() -> None:
    pickled = io.BytesIO()
    np.save(pickled, np.array([None], dtype=object), allow_pickle=True)

    class Pickling(Sites):
        def __call__(self, msg: Message, context: Context) -> Message:
            reply = super().__call__(msg, context)
            if int(context.node_config["partition-id"]) == 1:
                bad = Array(dtype="float32", shape=(2, 3), stype="numpy.ndarray", data=pickled.getvalue())
                reply.content.array_records[ARRAYS][NAMES[0]] = bad
            return reply

    strategy = build_strategy(RunConfig(num_sites=2))
    grid = InProcessGrid(Pickling({0: _global(1.0), 1: _global(1.0)}), 2)
    start = ArrayRecord({k: Array(v) for k, v in _global().items()})
    record, _ = strategy.aggregate_train(
        1, grid.send_and_receive(strategy.configure_train(1, start, ConfigRecord(), grid))
    )
    assert strategy.last_round.rejected["site-1"] == f"tensor {NAMES[0]!r} is not a numpy array without pickles"
    assert np.allclose(record[NAMES[0]].numpy(), 1.0)


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records each pass over the updates (True when it computed a mean)."""
    import server.strategies as strategies

    calls: list[bool] = []
    real = strategies.norms_and_mean

    def counted(*args, **kw):  # noqa: ANN002, ANN003, ANN202
        calls.append(len(args) > 2 and args[2] is not None)
        return real(*args, **kw)

    monkeypatch.setattr(strategies, "norms_and_mean", counted)
    return calls


def test_screened_fedavg_is_flowers_mean_in_the_screenings_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    start = {"a": rng.standard_normal((8, 64)).astype(np.float32), "big": np.zeros(40_000, np.float32)}
    answers = {
        i: {k: (v + rng.standard_normal(v.shape)).astype(np.float32) for k, v in start.items()} for i in range(40)
    }

    class Weighted(Sites):
        def __call__(self, msg: Message, context: Context) -> Message:
            reply = super().__call__(msg, context)
            reply.content.metric_records[METRICS][NUM_EXAMPLES] = 1 + 7 * int(context.node_config["partition-id"])
            return reply

    strategy = build_strategy(RunConfig(num_sites=40))
    grid = InProcessGrid(Weighted(answers), 40)
    messages = strategy.configure_train(
        1, ArrayRecord({k: Array(v) for k, v in start.items()}), ConfigRecord({"server_round": 1}), grid
    )
    replies = grid.send_and_receive(messages)
    flowers = aggregate_arrayrecords(
        [
            RecordDict({ARRAYS: r.content.array_records[ARRAYS], METRICS: r.content.metric_records[METRICS]})
            for r in replies
        ],
        NUM_EXAMPLES,
    )
    calls = _counting(monkeypatch)
    record, _ = strategy.aggregate_train(1, replies)
    assert calls == [True]  # norms and mean in one pass, no second pass over the updates
    assert len(strategy.last_round.accepted) == 40
    weights = [1 + 7 * i for i in range(40)]
    for k in start:
        exact = sum(answers[i][k].astype(np.float64) * w for i, w in enumerate(weights)) / sum(weights)
        ours, theirs = record[k].numpy(), flowers[k].numpy()
        assert ours.dtype == theirs.dtype == np.float32
        assert np.allclose(ours, theirs, rtol=1e-5, atol=1e-6)  # Flower sums in float32
        assert np.max(np.abs(ours - exact)) <= 2 * np.finfo(np.float32).eps * np.max(np.abs(exact))


def test_a_dropped_update_makes_the_strategy_average_the_accepted_ones_again(monkeypatch: pytest.MonkeyPatch) -> None:
    nan = _global(1.0)
    nan[NAMES[0]][1, 1] = np.nan
    calls = _counting(monkeypatch)
    strategy, out = _round("fedavg", {0: _global(1.0), 1: _global(2.0), 2: nan, 3: _global(3.0), 4: _global(900.0)})
    assert sorted(strategy.last_round.rejected) == ["site-2", "site-4"]
    assert calls == [True, True]  # the screening's pass, then the mean of the accepted updates only
    assert np.allclose(out[NAMES[0]], 2.0) and np.allclose(out[NAMES[1]], 2.0)
