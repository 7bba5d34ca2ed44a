# ruff: noqa: E501 - a table of cases reads best one case per line
"""The adversarial corpus: hostile and careless inputs for every ``fedcare`` command, by category.

Each case builds its files in a fresh folder and returns the command's argv. Every case expects a clean
refusal (exit 2, one ``fedcare: error:`` line) unless ``expect="ok"``; none may print ``SECRET``, a
traceback or a raw control character, run over 30 s or use over 1 GB. ``runner.py`` executes them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SECRET = "Jane Roe MRN 4711-0815"  # planted in record text, field names and values; must never be printed
GOOD = {"question": "What is a fever?", "answer": "A raised body temperature."}
SMOKE = ["model=tiny", "+experiment=smoke"]


@dataclass(frozen=True)
class Case:
    """One hostile input: ``build(folder) -> argv`` for ``python -m simulations.cli``."""

    category: str
    name: str
    build: Callable[[Path], list[str]]
    expect: str = "error"  # "error": exit 2 and one line; "ok": exit 0
    fast: bool = True  # cheap enough in-process for the default test tier (no model, no engine, no bomb)
    alone: bool = False  # a bomb: the slow tier runs it in a subprocess of its own (its own time and peak memory)

    @property
    def id(self) -> str:
        return f"{self.category}/{self.name}"


def _w(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _jsonl(path: Path, rows: list) -> Path:
    return _w(path, "".join(json.dumps(r) + "\n" for r in rows))


def _good(d: Path, name: str = "good.jsonl", n: int = 8) -> Path:
    return _jsonl(d / name, [GOOD] * n)


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _link(path: Path, target: str) -> Path:
    path.symlink_to(target)
    return path


def _parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _parquet_bomb(path: Path, rows: int = 4_000_000, text: str = "q") -> Path:
    """A few KB of dictionary-encoded Parquet that expands to ``rows`` rows when materialised."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    indices = pa.array(np.zeros(rows, dtype=np.int32))
    column = pa.DictionaryArray.from_arrays(indices, pa.array([text]))
    pq.write_table(pa.table({"question": column, "answer": column}), path, compression="zstd")
    return path


def _deep_json(depth: int) -> str:
    return '{"question": ' + "[" * depth + "]" * depth + ', "answer": "a"}'


def _check(builder: Callable[[Path], Path], *extra: str) -> Callable[[Path], list[str]]:
    return lambda d: ["check-data", str(builder(d)), *extra]


def _site_yaml(d: Path, body: str) -> list[str]:
    return ["site", "start", "--config", str(_w(d / "site.yaml", body))]


def _site_good_body(d: Path, data: str = "good.jsonl") -> str:
    if data == "good.jsonl":
        _good(d)
    return (
        f"site_id: a\nsite_index: 0\nstate_dir: state\ncoordinator: 127.0.0.1:1\ninsecure: true\n"
        f"data:\n  paths: [{json.dumps(data)}]\n"
    )


def _adapter(d: Path, config: str | None = '{"peft_type": "LORA"}', weights: bytes | None = b"garbage") -> Path:
    a = d / "adapter"
    a.mkdir()
    if config is not None:
        _w(a / "adapter_config.json", config)
    if weights is not None:
        _w(a / "adapter_model.safetensors", weights)
    return a


def _signed_adapter(d: Path, manifest: str | bytes) -> list[str]:
    a = _adapter(d)
    _w(a / "fedcare-signature.json", manifest)
    return ["verify", str(a), "--key", str(_pubkey(d))]


def _pubkey(d: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    pub = ed25519.Ed25519PrivateKey.generate().public_key()
    return _w(
        d / "coordinator.pub",
        pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    )


def _manifest(**over: object) -> str:
    body = {"version": 1, "algorithm": "ed25519", "files": {}, "public_key_fingerprint": "x", "signature": "AA=="}
    body.update(over)
    return json.dumps(body)


def _audit(action: str, builder: Callable[[Path], Path]) -> Callable[[Path], list[str]]:
    return lambda d: ["audit", action, str(builder(d))]


def _sim(*overrides: str) -> Callable[[Path], list[str]]:
    return lambda d: ["simulate", *SMOKE, f"output_dir={d / 'runs'}", *overrides]


def _sim_files(builder: Callable[[Path], Path], *overrides: str) -> Callable[[Path], list[str]]:
    return lambda d: [
        "simulate",
        *SMOKE,
        f"output_dir={d / 'runs'}",
        "num_sites=1",
        "data=files",
        f"data.paths=[{json.dumps(str(builder(d)))}]",
        *overrides,
    ]


_FAST_VALUES = {"privacy.target_epsilon=inf", "privacy.target_delta=nan", "train.batch_size=1000", "seed=-1"}
LONG = "x" * 300  # longer than NAME_MAX (255)
HUGE_INT = "9" * 5000  # over Python's 4300-digit int conversion limit
ESC = "\x1b[31mred\x1b[0m"

CASES: list[Case] = [
    # --- record text in errors: names read from the file are data -------------------------------------
    Case("record-text", "csv-without-header", _check(lambda d: _w(d / "a.csv", f"{SECRET},ok\nq,a\n"))),
    Case(
        "record-text",
        "csv-without-header-mapped",
        _check(
            lambda d: _w(d / "a.csv", f"{SECRET},ok\nq,a\n"),
            "--prompt-column",
            "question",
            "--completion-column",
            "answer",
        ),
    ),
    Case(
        "record-text",
        "csv-header-secret-column-mapped",
        _check(
            lambda d: _w(d / "a.csv", f"question,{SECRET}\nq,a\n"),
            "--prompt-column",
            "question",
            "--completion-column",
            "answer",
        ),
    ),
    Case("record-text", "jsonl-key-is-secret", _check(lambda d: _jsonl(d / "a.jsonl", [{SECRET: "x"}]))),
    Case("record-text", "json-key-is-secret", _check(lambda d: _w(d / "a.json", json.dumps([{SECRET: "x"}])))),
    Case(
        "record-text",
        "jsonl-ambiguous-with-secret-key",
        _check(lambda d: _jsonl(d / "a.jsonl", [{**GOOD, "input": "i", "output": "o", SECRET: 1}])),
    ),
    Case(
        "record-text",
        "jsonl-many-secret-keys",
        _check(lambda d: _jsonl(d / "a.jsonl", [{f"{SECRET} {i}": i for i in range(30)}])),
    ),
    Case("record-text", "parquet-column-is-secret", _check(lambda d: _parquet(d / "a.parquet", [{SECRET: "x"}]))),
    Case(
        "record-text",
        "parquet-secret-column-mapped",
        _check(
            lambda d: _parquet(d / "a.parquet", [{SECRET: "x", "q": "y"}]),
            "--prompt-column",
            "question",
            "--completion-column",
            "answer",
        ),
    ),
    Case(
        "record-text",
        "secret-in-role",
        _check(
            lambda d: _jsonl(
                d / "a.jsonl", [{"messages": [{"role": SECRET, "content": "x"}, {"role": "assistant", "content": "y"}]}]
            )
        ),
    ),
    Case("record-text", "secret-in-invalid-json", _check(lambda d: _w(d / "a.jsonl", f'{{"question": "{SECRET}'))),
    Case(
        "record-text",
        "secret-in-non-utf8",
        _check(lambda d: _w(d / "a.jsonl", f'{{"question": "{SECRET}\xe9", "answer": "a"}}\n'.encode("latin-1"))),
    ),
    Case("record-text", "secret-in-csv-short-row", _check(lambda d: _w(d / "a.csv", f"question,answer\n{SECRET}\n"))),
    Case(
        "record-text",
        "secret-as-last-role",
        _check(lambda d: _jsonl(d / "a.jsonl", [{"messages": [{"role": "user", "content": SECRET}]}])),
    ),
    Case(
        "record-text",
        "secret-keys-partition-field-absent",
        _sim_files(lambda d: _jsonl(d / "a.jsonl", [{**GOOD, SECRET: "x"}]), "data.partition_field=hospital"),
    ),
    Case(
        "record-text",
        "secret-in-patient-field-value",
        _sim_files(
            lambda d: _jsonl(d / "a.jsonl", [{**GOOD, "pid": {"name": SECRET}}] * 8),
            "data.patient_field=pid",
            "privacy.unit=patient",
        ),
    ),
    Case("record-text", "secret-in-csv-duplicate-header", _check(lambda d: _w(d / "a.csv", f"{SECRET},{SECRET}\n"))),
    # --- data files: shape, size, depth, numbers, encodings --------------------------------------------
    Case(
        "data",
        "huge-integer-jsonl",
        _check(lambda d: _w(d / "a.jsonl", f'{{"question": {HUGE_INT}, "answer": "a"}}\n')),
    ),
    Case("data", "huge-integer-json", _check(lambda d: _w(d / "a.json", f'[{{"question": {HUGE_INT}}}]'))),
    Case("data", "deep-json-100k", _check(lambda d: _w(d / "a.jsonl", _deep_json(100_000) + "\n"))),
    Case("data", "deep-json-900", _check(lambda d: _w(d / "a.jsonl", _deep_json(900) + "\n"))),
    Case("data", "deep-json-file", _check(lambda d: _w(d / "a.json", "[" + _deep_json(5000) + "]"))),
    Case("data", "deep-messages", _check(lambda d: _w(d / "a.jsonl", '{"messages": ' + "[" * 200 + "]" * 200 + "}\n"))),
    Case("data", "lone-surrogate", _check(lambda d: _w(d / "a.jsonl", '{"question": "a\\ud800b", "answer": "c"}\n'))),
    Case("data", "lone-surrogate-low", _check(lambda d: _w(d / "a.json", '[{"question": "q", "answer": "\\udfff"}]'))),
    Case(
        "data",
        "lone-surrogate-in-messages",
        _check(
            lambda d: _w(
                d / "a.jsonl",
                json.dumps(
                    {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}
                ).replace('"y"', '"\\udbff"')
                + "\n",
            )
        ),
    ),
    Case("data", "nan-field", _check(lambda d: _w(d / "a.jsonl", '{"question": NaN, "answer": "a"}\n'))),
    Case("data", "infinity-field", _check(lambda d: _w(d / "a.jsonl", '{"question": "q", "answer": Infinity}\n'))),
    Case("data", "field-2mb", _check(lambda d: _jsonl(d / "a.jsonl", [{"question": "q" * 2_000_000, "answer": "a"}]))),
    Case(
        "data", "many-fields", _check(lambda d: _jsonl(d / "a.jsonl", [{**GOOD, **{f"k{i}": i for i in range(5000)}}]))
    ),
    Case(
        "data", "csv-100k-columns", _check(lambda d: _w(d / "a.csv", ",".join(f"c{i}" for i in range(100_000)) + "\n"))
    ),
    Case("data", "csv-nul-byte", _check(lambda d: _w(d / "a.csv", b"question,answer\nq\x00,a\n"))),
    Case("data", "csv-huge-cell", _check(lambda d: _w(d / "a.csv", "question,answer\n" + "q" * 1_200_000 + ",a\n"))),
    Case("data", "csv-unterminated-quote", _check(lambda d: _w(d / "a.csv", 'question,answer\n"q,a\n'))),
    Case("data", "empty-file", _check(lambda d: _w(d / "a.jsonl", ""))),
    Case("data", "bom-only", _check(lambda d: _w(d / "a.jsonl", b"\xef\xbb\xbf"))),
    Case("data", "utf16-file", _check(lambda d: _w(d / "a.jsonl", json.dumps(GOOD).encode("utf-16")))),
    Case("data", "binary-garbage", _check(lambda d: _w(d / "a.jsonl", bytes(range(256)) * 10))),
    Case("data", "json-top-level-object", _check(lambda d: _w(d / "a.json", json.dumps({SECRET: [GOOD]})))),
    Case("data", "json-top-level-string", _check(lambda d: _w(d / "a.json", json.dumps(SECRET)))),
    Case("data", "jsonl-array-row", _check(lambda d: _w(d / "a.jsonl", json.dumps([SECRET]) + "\n"))),
    Case(
        "data",
        "jsonl-duplicate-keys",
        _check(lambda d: _w(d / "a.jsonl", '{"question": "q", "answer": "a", "answer": 5}\n')),
    ),
    Case("data", "parquet-corrupt", _check(lambda d: _w(d / "a.parquet", b"PAR1" + SECRET.encode() + b"PAR1"))),
    Case(
        "data",
        "parquet-truncated",
        _check(lambda d: _w(d / "a.parquet", _parquet(d / "x.parquet", [GOOD]).read_bytes()[:-9])),
    ),
    Case("data", "parquet-bomb-4m-rows", _check(lambda d: _parquet_bomb(d / "a.parquet")), fast=False, alone=True),
    Case(
        "data",
        "parquet-bomb-wide-strings",
        _check(lambda d: _parquet_bomb(d / "a.parquet", 200_000, "x" * 50_000)),
        fast=False,
        alone=True,
    ),
    Case(
        "data",
        "parquet-nested-struct",
        _check(lambda d: _parquet(d / "a.parquet", [{"question": {"a": {"b": SECRET}}, "answer": "a"}])),
    ),
    Case("data", "parquet-int-column", _check(lambda d: _parquet(d / "a.parquet", [{"question": 5, "answer": "a"}]))),
    Case("data", "unsupported-suffix", _check(lambda d: _w(d / "a.txt", SECRET))),
    Case("data", "no-suffix", _check(lambda d: _w(d / "data", SECRET))),
    Case("data", "good-file-ok", _check(lambda d: _good(d)), expect="ok"),
    Case("data", "good-csv-ok", _check(lambda d: _w(d / "a.csv", "question,answer\nq,a\n")), expect="ok"),
    Case("data", "good-parquet-ok", _check(lambda d: _parquet(d / "a.parquet", [GOOD] * 3)), expect="ok"),
    Case(
        "data",
        "emoji-and-rtl-ok",
        _check(lambda d: _jsonl(d / "a.jsonl", [{"question": "\u202eq\U0001f600", "answer": "\u2028a"}])),
        expect="ok",
    ),
    # --- paths: special files, long names, escapes ------------------------------------------------------
    Case("paths", "fifo-jsonl", _check(lambda d: _fifo(d / "a.jsonl"))),
    Case("paths", "fifo-csv", _check(lambda d: _fifo(d / "a.csv"))),
    Case("paths", "fifo-parquet", _check(lambda d: _fifo(d / "a.parquet"))),
    Case("paths", "dev-zero", _check(lambda d: _link(d / "a.jsonl", "/dev/zero"))),
    Case("paths", "dev-urandom", _check(lambda d: _link(d / "a.csv", "/dev/urandom"))),
    Case("paths", "dev-null", _check(lambda d: _link(d / "a.json", "/dev/null"))),
    Case("paths", "directory", _check(lambda d: (d / "a.jsonl").mkdir() or d / "a.jsonl")),
    Case("paths", "missing", _check(lambda d: d / "absent.jsonl")),
    Case("paths", "dangling-link", _check(lambda d: _link(d / "a.jsonl", str(d / "nowhere")))),
    Case("paths", "link-loop", _check(lambda d: _link(d / "a.jsonl", str(d / "a.jsonl")))),
    Case("paths", "name-too-long", lambda d: ["check-data", str(d / f"{LONG}.jsonl")]),
    Case("paths", "path-too-long", lambda d: ["check-data", str(d / ("/".join(["y" * 200] * 30)) / "a.jsonl")]),
    Case("paths", "parent-is-file", lambda d: ["check-data", str(_good(d) / "a.jsonl")]),
    Case("paths", "newline-in-name", lambda d: ["check-data", str(d / "a\nfedcare: ok.jsonl")]),
    Case("paths", "ansi-in-name", lambda d: ["check-data", str(d / f"{ESC}.jsonl")]),
    Case("paths", "newline-in-good-name-ok", _check(lambda d: _good(d, "a\nb.jsonl")), expect="ok"),
    Case("paths", "nul-in-name", lambda d: ["check-data", "a\x01b.jsonl"]),
    Case("paths", "fifo-site-yaml", lambda d: ["site", "start", "--config", str(_fifo(d / "site.yaml"))]),
    Case(
        "paths", "dev-zero-site-yaml", lambda d: ["site", "start", "--config", str(_link(d / "site.yaml", "/dev/zero"))]
    ),
    Case("paths", "directory-site-yaml", lambda d: ["site", "start", "--config", str(d)]),
    Case("paths", "fifo-public-key", lambda d: ["verify", str(_adapter(d)), "--key", str(_fifo(d / "k.pub"))]),
    Case(
        "paths",
        "dev-zero-public-key",
        lambda d: ["verify", str(_adapter(d)), "--key", str(_link(d / "k.pub", "/dev/zero"))],
    ),
    Case("paths", "directory-public-key", lambda d: ["verify", str(_adapter(d)), "--key", str(d)]),
    Case("paths", "fifo-enroll-key", lambda d: ["coordinator", "enroll", "--insecure", str(_fifo(d / "s.pub"))]),
    Case(
        "paths",
        "dev-zero-enroll-key",
        lambda d: ["coordinator", "enroll", "--insecure", str(_link(d / "s.pub", "/dev/zero"))],
    ),
    Case(
        "paths",
        "binary-enroll-key",
        lambda d: ["coordinator", "enroll", "--insecure", str(_w(d / "s.pub", b"\xff\xfe"))],
    ),
    Case("paths", "fifo-manifest", lambda d: ["verify", str(_link_manifest(d)), "--key", str(_pubkey(d))]),
    Case("paths", "fifo-data-in-site-yaml", lambda d: _site_yaml(d, _site_good_body(d, str(_fifo(d / "x.jsonl"))))),
    Case("paths", "fifo-data-in-simulate", _sim_files(lambda d: _fifo(d / "x.jsonl"))),
    Case("paths", "dev-zero-data-in-simulate", _sim_files(lambda d: _link(d / "x.jsonl", "/dev/zero"))),
    # --- config: values out of range, not finite, unknown keys and groups -------------------------------
    # Each of these composes Hydra (~0.5 s): the default tier runs a few, the property tests cover the value space.
    *[
        Case("config", f"value-{o.split('=')[0]}-{o.split('=')[1][:12]}", _sim(o), fast=o in _FAST_VALUES)
        for o in [
            "privacy.target_epsilon=inf",
            "privacy.target_epsilon=nan",
            "privacy.target_epsilon=-1",
            "privacy.target_epsilon=1e400",
            "privacy.target_epsilon=0",
            "privacy.target_delta=nan",
            "privacy.target_delta=1",
            "privacy.target_delta=-0.1",
            "privacy.max_grad_norm=inf",
            "privacy.max_grad_norm=nan",
            "train.learning_rate=nan",
            "train.learning_rate=inf",
            "train.weight_decay=nan",
            "train.weight_decay=-1",
            "lora.dropout=nan",
            "lora.alpha=inf",
            "lora.rank=100000000",
            "data.records_per_site=1000000000",
            "num_sites=100000",
            "num_sites=0",
            f"num_sites={HUGE_INT}",
            f"seed={HUGE_INT}",
            "seed=-1",
            "num_rounds=-3",
            "train.batch_size=1000",
            "train.local_steps=0",
            "data.eval_fraction=nan",
            "strategy.fraction_train=nan",
            "coordinator.node_wait_s=inf",
            "coordinator.round_timeout_s=nan",
            "simulation.cpus_per_site=-1",
            "model.num_threads=-2",
            "train.max_seq_len=1000000000",
            "privacy.noise_seed=-5",
            "strategy.secagg_clipping_range=inf",
            "privacy.accountant=gdp",
            "model.precision=fp8",
        ]
    ],
    Case("config", "unknown-group-option", _sim("model=tinyy")),
    Case("config", "unknown-group", _sim("modle=tiny")),
    Case("config", "unknown-key", _sim("num_site=3")),
    Case("config", "unknown-nested-key", _sim("privacy.target_epsilo=3")),
    Case("config", "unknown-key-plus", _sim("+privacy.nosuch=1")),
    Case("config", "unknown-experiment", _sim("+experiment=smok")),
    Case("config", "override-syntax-bracket", _sim("num_sites=[")),
    Case("config", "override-no-key", _sim("=3")),
    Case("config", "override-no-value", _sim("num_sites")),
    Case("config", "override-wrong-type", _sim("num_sites=abc")),
    Case("config", "override-list-for-int", _sim("num_sites=[1,2]")),
    Case("config", "override-dict-for-int", _sim("num_sites={a:1}")),
    Case("config", "override-interpolation", _sim("run_name=${oc.env:HOME}x${nosuch}")),
    Case("config", "override-string-for-int", _sim('num_sites="three sites"')),
    Case("config", "data-files-without-paths", _sim("data=files")),
    Case("config", "data-missing-path", _sim_files(lambda d: d / "absent.jsonl")),
    Case("config", "prompt-column-alone", _sim("data.prompt_column=q")),
    Case("config", "batch-larger-than-file", _sim_files(lambda d: _good(d, n=6), "train.batch_size=64")),
    Case("config", "model-path-missing", _sim("model.name_or_path=/nonexistent/model")),
    Case("config", "model-path-is-file", lambda d: _sim(f"model.name_or_path={_good(d)}")(d)),
    Case("config", "output-dir-is-file", lambda d: ["simulate", *SMOKE, f"output_dir={_good(d)}"]),
    Case("config", "output-dir-unwritable", lambda d: ["simulate", *SMOKE, "output_dir=/proc/fedcare-runs"]),
    Case("config", "run-name-escapes", _sim("run_name=../../etc")),
    Case("config", "run-name-slash", _sim("run_name=a/b")),
    Case("config", "prepare-model-unknown-model", lambda d: ["prepare-model", "model=nosuch"]),
    Case("config", "prepare-model-missing-path", lambda d: ["prepare-model", "model.name_or_path=/nonexistent/m"]),
    Case("config", "canaries-zero", lambda d: ["audit", "canaries", "--canaries", "0", *SMOKE]),
    Case("config", "canaries-huge-int", lambda d: ["audit", "canaries", "--canaries", HUGE_INT, *SMOKE]),
    Case("config", "canaries-bad-override", lambda d: ["audit", "canaries", "num_site=3"]),
    Case(
        "config",
        "canaries-inf-epsilon",
        lambda d: ["audit", "canaries", "--out", str(d / "o"), *SMOKE, "privacy.target_epsilon=inf"],
    ),
    Case(
        "config",
        "coordinator-run-bad-override",
        lambda d: ["coordinator", "run", "--insecure", "--superlink", "127.0.0.1:1", "num_site=3"],
    ),
    Case(
        "config",
        "coordinator-run-inf-epsilon",
        lambda d: ["coordinator", "run", "--insecure", "--superlink", "127.0.0.1:1", "privacy.target_epsilon=inf"],
    ),
    Case(
        "config",
        "coordinator-resume-missing",
        lambda d: ["coordinator", "run", "--insecure", "--superlink", "127.0.0.1:1", "--resume", str(d / "nope")],
    ),
    # --- command line: option order, partners, bad values -----------------------------------------------
    Case("cli", "completion-column-alone", _check(lambda d: _good(d), "--completion-column", "answer")),
    Case("cli", "prompt-column-alone", _check(lambda d: _good(d), "--prompt-column", "question")),
    Case(
        "cli",
        "mapping-after-files-ok",
        lambda d: ["check-data", str(_good(d)), "--prompt-column", "question", "--completion-column", "answer"],
        expect="ok",
    ),
    Case("cli", "unknown-command", lambda d: ["simulat"]),
    Case("cli", "no-command", lambda d: []),
    Case("cli", "unknown-option", lambda d: ["check-data", "--nosuch", "x.jsonl"]),
    Case("cli", "check-data-no-files", lambda d: ["check-data"]),
    Case(
        "cli",
        "generate-options-after-overrides",
        lambda d: ["generate", str(d / "nope"), "hi", "model=tiny", "--no-verify"],
    ),
    Case(
        "cli",
        "generate-max-tokens-huge",
        lambda d: ["generate", str(_adapter(d)), "hi", "--no-verify", "--max-new-tokens", HUGE_INT],
    ),
    Case(
        "cli",
        "generate-max-tokens-negative",
        lambda d: ["generate", str(_adapter(d)), "hi", "--no-verify", "--max-new-tokens", "-5", "model=tiny"],
    ),
    Case("cli", "generate-without-key", lambda d: ["generate", str(_adapter(d)), "hi"]),
    Case("cli", "verify-without-key", lambda d: ["verify", str(_adapter(d))]),
    Case("cli", "certs-out-empty", lambda d: ["certs", "--out", ""]),
    Case("cli", "certs-out-is-file", lambda d: ["certs", "--out", str(_good(d))]),
    Case("cli", "certs-out-unwritable", lambda d: ["certs", "--out", "/proc/fedcare-certs"]),
    Case("cli", "certs-out-too-long", lambda d: ["certs", "--out", str(d / LONG)]),
    Case("cli", "certs-site-slash", lambda d: ["certs", "--out", str(d / "c"), "--site", "../evil"]),
    Case("cli", "certs-site-newline", lambda d: ["certs", "--out", str(d / "c"), "--site", "a\nb"]),
    Case("cli", "certs-site-empty", lambda d: ["certs", "--out", str(d / "c"), "--site", ""]),
    Case("cli", "certs-host-garbage", lambda d: ["certs", "--out", str(d / "c"), "--host", "a b\x01c"]),
    Case("cli", "coordinator-start-no-certs", lambda d: ["coordinator", "start"]),
    Case(
        "cli",
        "coordinator-start-missing-certs",
        lambda d: ["coordinator", "start", "--certs", str(d / "none"), "--state-dir", str(d / "s")],
    ),
    Case(
        "cli",
        "coordinator-start-state-unwritable",
        lambda d: ["coordinator", "start", "--insecure", "--state-dir", "/proc/fedcare-state"],
    ),
    Case(
        "cli",
        "coordinator-start-bad-port",
        lambda d: ["coordinator", "start", "--insecure", "--port", "99999999", "--state-dir", str(d / "s")],
    ),
    Case("cli", "coordinator-enroll-no-ca", lambda d: ["coordinator", "enroll", str(_w(d / "s.pub", "x"))]),
    Case("cli", "coordinator-enroll-missing", lambda d: ["coordinator", "enroll", "--insecure", str(d / "nope.pub")]),
    Case("cli", "coordinator-enroll-wrong-key", lambda d: ["coordinator", "enroll", "--insecure", str(_pubkey(d))]),
    Case(
        "cli",
        "coordinator-run-ca-missing",
        lambda d: ["coordinator", "run", "--ca", str(d / "ca.crt"), "--superlink", "127.0.0.1:1"],
    ),
    Case(
        "cli",
        "coordinator-run-signing-key-missing",
        lambda d: [
            "coordinator",
            "run",
            "--insecure",
            "--superlink",
            "127.0.0.1:1",
            "--signing-key",
            str(d / "nope.key"),
        ],
    ),
    Case("cli", "audit-no-log", lambda d: ["audit", "verify"]),
    # --- site.yaml: loading and schema ------------------------------------------------------------------
    Case("site", "alias-bomb", lambda d: _site_yaml(d, _alias_bomb())),
    Case("site", "single-alias", lambda d: _site_yaml(d, "a: &x 1\nb: *x\n")),
    Case("site", "deep-nesting", lambda d: _site_yaml(d, "a: " + "[" * 1000 + "]" * 1000 + "\n")),
    Case("site", "deep-block-nesting", lambda d: _site_yaml(d, "".join(" " * i + f"k{i}:\n" for i in range(300)))),
    Case("site", "python-tag", lambda d: _site_yaml(d, "!!python/object/apply:os.system ['true']\n")),
    Case("site", "not-a-mapping", lambda d: _site_yaml(d, "- a\n- b\n")),
    Case("site", "empty", lambda d: _site_yaml(d, "")),
    Case("site", "invalid-yaml", lambda d: _site_yaml(d, f"a: [{SECRET}\n")),
    Case("site", "binary", lambda d: _site_yaml(d, "\x00\x01\x02")),
    Case(
        "site",
        "huge-int",
        lambda d: _site_yaml(d, _site_good_body(d).replace("site_index: 0", f"site_index: {HUGE_INT}")),
    ),
    Case("site", "index-string", lambda d: _site_yaml(d, _site_good_body(d).replace("site_index: 0", "site_index: x"))),
    Case(
        "site", "index-negative", lambda d: _site_yaml(d, _site_good_body(d).replace("site_index: 0", "site_index: -1"))
    ),
    Case(
        "site",
        "data-is-list",
        lambda d: _site_yaml(
            d, "site_id: a\nsite_index: 0\nstate_dir: s\ncoordinator: x\ninsecure: true\ndata: [1, 2]\n"
        ),
    ),
    Case(
        "site",
        "data-paths-string",
        lambda d: _site_yaml(
            d, "site_id: a\nsite_index: 0\nstate_dir: s\ncoordinator: x\ninsecure: true\ndata: {paths: abc}\n"
        ),
    ),
    Case(
        "site",
        "data-paths-nested",
        lambda d: _site_yaml(
            d, "site_id: a\nsite_index: 0\nstate_dir: s\ncoordinator: x\ninsecure: true\ndata: {paths: [[a, b]]}\n"
        ),
    ),
    Case("site", "privacy-is-string", lambda d: _site_yaml(d, _site_good_body(d) + "privacy: lots\n")),
    Case("site", "privacy-inf", lambda d: _site_yaml(d, _site_good_body(d) + "privacy: {target_epsilon: .inf}\n")),
    Case("site", "privacy-nan-delta", lambda d: _site_yaml(d, _site_good_body(d) + "privacy: {target_delta: .nan}\n")),
    Case("site", "unknown-key", lambda d: _site_yaml(d, _site_good_body(d) + "site_idx: 3\n")),
    Case("site", "unknown-key-odd", lambda d: _site_yaml(d, _site_good_body(d) + '"no such key": 3\n')),
    Case("site", "key-not-string", lambda d: _site_yaml(d, _site_good_body(d) + "? [a, b]\n: 3\n")),
    Case("site", "null-key", lambda d: _site_yaml(d, _site_good_body(d) + "~: 3\n")),
    Case("site", "missing-keys", lambda d: _site_yaml(d, "site_id: a\n")),
    Case(
        "site",
        "insecure-string",
        lambda d: _site_yaml(d, _site_good_body(d).replace("insecure: true", "insecure: yes please")),
    ),
    Case(
        "site",
        "state-dir-unwritable",
        lambda d: _site_yaml(d, _site_good_body(d).replace("state_dir: state", "state_dir: /proc/fedcare-s")),
    ),
    Case(
        "site",
        "state-dir-is-file",
        lambda d: _site_yaml(d, _site_good_body(d).replace("state_dir: state", "state_dir: good.jsonl")),
    ),
    Case("site", "bad-data", lambda d: _site_yaml(d, _site_good_body(d, str(_w(d / "x.csv", f"{SECRET},a\n"))))),
    Case(
        "site",
        "data-tokenizer-breaker",
        lambda d: _site_yaml(d, _site_good_body(d, str(_w(d / "x.jsonl", '{"question": "\\ud800", "answer": "a"}\n')))),
    ),
    Case("site", "missing-config", lambda d: ["site", "start", "--config", str(d / "none.yaml")]),
    Case(
        "site",
        "timestamp-value",
        lambda d: _site_yaml(d, _site_good_body(d).replace("site_id: a", "site_id: 2001-12-14")),
    ),
    Case("site", "duplicate-key", lambda d: _site_yaml(d, _site_good_body(d) + "site_id: b\n")),
    # --- adapters for generate ---------------------------------------------------------------------------
    Case("adapter", "missing-dir", lambda d: ["generate", str(d / "nope"), "hi", "--no-verify", "model=tiny"]),
    Case("adapter", "is-file", lambda d: ["generate", str(_good(d)), "hi", "--no-verify", "model=tiny"]),
    Case(
        "adapter", "empty-dir", lambda d: ["generate", str(_adapter(d, None, None)), "hi", "--no-verify", "model=tiny"]
    ),
    Case(
        "adapter",
        "no-weights",
        lambda d: ["generate", str(_adapter(d, weights=None)), "hi", "--no-verify", "model=tiny"],
    ),
    Case(
        "adapter",
        "corrupt-config",
        lambda d: ["generate", str(_adapter(d, config="{not json")), "hi", "--no-verify", "model=tiny"],
    ),
    Case(
        "adapter",
        "config-wrong-type",
        lambda d: ["generate", str(_adapter(d, config='["LORA"]')), "hi", "--no-verify", "model=tiny"],
    ),
    Case(
        "adapter",
        "config-deep",
        lambda d: ["generate", str(_adapter(d, config="[" * 100000 + "]" * 100000)), "hi", "--no-verify", "model=tiny"],
    ),
    Case(
        "adapter",
        "corrupt-weights",
        lambda d: ["generate", str(_adapter(d, config=_lora_config())), "hi", "--no-verify", "model=tiny"],
    ),
    Case("adapter", "fifo-weights", lambda d: ["generate", str(_fifo_weights(d)), "hi", "--no-verify", "model=tiny"]),
    Case(
        "adapter",
        "config-secret",
        lambda d: ["generate", str(_adapter(d, config=json.dumps({SECRET: 1}))), "hi", "--no-verify", "model=tiny"],
    ),
    Case("adapter", "unsigned-with-key", lambda d: ["generate", str(_adapter(d)), "hi", "--key", str(_pubkey(d))]),
    Case(
        "adapter",
        "model-path-missing",
        lambda d: [
            "generate",
            str(_adapter(d, config=_lora_config())),
            "hi",
            "--no-verify",
            "model.name_or_path=/nonexistent",
        ],
    ),
    # --- signatures --------------------------------------------------------------------------------------
    Case("signature", "no-manifest", lambda d: ["verify", str(_adapter(d)), "--key", str(_pubkey(d))]),
    Case("signature", "manifest-not-json", lambda d: _signed_adapter(d, f"{{{SECRET}")),
    Case("signature", "manifest-deep", lambda d: _signed_adapter(d, "[" * 100_000 + "]" * 100_000)),
    Case(
        "signature",
        "manifest-huge-int",
        lambda d: _signed_adapter(d, _manifest(version=int(HUGE_INT[:4000])).replace("9" * 4000, HUGE_INT)),
    ),
    Case("signature", "manifest-list", lambda d: _signed_adapter(d, "[]")),
    Case("signature", "manifest-binary", lambda d: _signed_adapter(d, b"\xff\xfe\x00")),
    Case("signature", "manifest-bad-files", lambda d: _signed_adapter(d, _manifest(files=[SECRET]))),
    Case("signature", "manifest-traversal", lambda d: _signed_adapter(d, _manifest(files={"../../x": "0" * 64}))),
    Case("signature", "manifest-bad-signature", lambda d: _signed_adapter(d, _manifest(signature="!!"))),
    Case("signature", "manifest-non-ascii-signature", lambda d: _signed_adapter(d, _manifest(signature="\u00e9"))),
    Case("signature", "manifest-wrong-version", lambda d: _signed_adapter(d, _manifest(version=2))),
    Case("signature", "manifest-signature-int", lambda d: _signed_adapter(d, _manifest(signature=5))),
    Case("signature", "key-garbage", lambda d: ["verify", str(_adapter(d)), "--key", str(_w(d / "k.pub", SECRET))]),
    Case("signature", "key-missing", lambda d: ["verify", str(_adapter(d)), "--key", str(d / "nope.pub")]),
    Case(
        "signature",
        "key-rsa-ssh",
        lambda d: [
            "verify",
            str(_adapter(d)),
            "--key",
            str(_w(d / "k.pub", "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQ== x\n")),
        ],
    ),
    Case(
        "signature",
        "key-huge",
        lambda d: ["verify", str(_adapter(d)), "--key", str(_w(d / "k.pub", b"A" * 50_000_000))],
        fast=False,
        alone=True,
    ),
    Case("signature", "adapter-missing", lambda d: ["verify", str(d / "nope"), "--key", str(_pubkey(d))]),
    Case("signature", "adapter-has-fifo", lambda d: ["verify", str(_fifo_weights(d)), "--key", str(_pubkey(d))]),
    Case("signature", "adapter-has-link", lambda d: ["verify", str(_link_in_adapter(d)), "--key", str(_pubkey(d))]),
    # --- issue 8's commands (report, plan, compare, evaluate): structure and options -----------------------
    Case("cli", "report-missing-dir", lambda d: ["report", str(d / "nope")]),
    Case("cli", "report-fifo-summary", lambda d: ["report", str(_fifo_summary(d))]),
    Case("cli", "report-summary-deep", lambda d: ["report", str(_summary(d, "[" * 100_000 + "]" * 100_000))]),
    Case("cli", "plan-records-huge", lambda d: ["plan", "--records", HUGE_INT]),
    Case("cli", "plan-records-negative", lambda d: ["plan", "--records", "-5", "model=tiny"]),
    Case("cli", "plan-bad-override", lambda d: ["plan", "num_site=3"]),
    Case("cli", "compare-bad-override", lambda d: ["compare", "num_site=3"]),
    Case("cli", "evaluate-unknown-option", lambda d: ["evaluate", "--nosuch"]),
    Case("cli", "evaluate-adapter-missing", lambda d: ["evaluate", "--adapter", str(d / "nope"), "model=tiny"]),
    # --- audit logs --------------------------------------------------------------------------------------
    *[
        Case("audit", f"{action}-{name}", _audit(action, builder))
        for action in ("verify", "show")
        for name, builder in [
            ("fifo", lambda d: _fifo(d / "egress.jsonl")),
            ("dev-zero", lambda d: _link(d / "egress.jsonl", "/dev/zero")),
            ("directory", lambda d: d),
            ("missing", lambda d: d / "none.jsonl"),
            ("binary", lambda d: _w(d / "egress.jsonl", b"\xff\xfe\x00\n")),
            ("deep", lambda d: _w(d / "egress.jsonl", "[" * 100_000 + "]" * 100_000 + "\n")),
            ("huge-int", lambda d: _w(d / "egress.jsonl", f'{{"seq": {HUGE_INT}}}\n')),
            ("secret-line", lambda d: _w(d / "egress.jsonl", f'{{"{SECRET}": 1}}\n')),
            ("no-newline", lambda d: _w(d / "egress.jsonl", '{"seq": 1}')),
            ("name-too-long", lambda d: d / f"{LONG}.jsonl"),
        ]
    ],
]


def _alias_bomb(levels: int = 12) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _lora_config() -> str:
    return json.dumps(
        {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"], "task_type": "CAUSAL_LM"}
    )


def _fifo_weights(d: Path) -> Path:
    a = _adapter(d, config=_lora_config(), weights=None)
    _fifo(a / "adapter_model.safetensors")
    return a


def _link_in_adapter(d: Path) -> Path:
    a = _adapter(d)
    _link(a / "extra.bin", "/etc/hostname")
    return a


def _summary(d: Path, text: str) -> Path:
    run = d / "run"
    run.mkdir()
    _w(run / "summary.json", text)
    return run


def _fifo_summary(d: Path) -> Path:
    run = d / "run"
    run.mkdir()
    _fifo(run / "summary.json")
    return run


def _link_manifest(d: Path) -> Path:
    a = _adapter(d)
    _fifo(a / "fedcare-signature.json")
    return a


# Commands that compose the Hydra config take ~0.5 s per case: the default tier keeps one case per kind of
# failure there (the property tests cover the config value space); the slow tier runs them all, in the one
# runner subprocess of the cheap cases (``python -m tests.fuzz.runner --in-process``).
_FAST_HYDRA = {
    "config/value-privacy.target_epsilon-inf",
    "config/unknown-group-option",
    "config/unknown-nested-key",
    "config/override-syntax-bracket",
    "config/batch-larger-than-file",
    "config/model-path-missing",
    "config/coordinator-run-bad-override",
    "config/canaries-bad-override",
    "paths/fifo-data-in-simulate",
    "record-text/secret-in-patient-field-value",
    "config/prepare-model-unknown-model",
}


def _composes(case: Case) -> bool:
    source = case.build.__code__.co_consts + tuple(
        c
        for cell in (case.build.__closure__ or ())
        for c in getattr(cell.cell_contents, "__code__", None) and cell.cell_contents.__code__.co_consts or ()
    )
    return case.category == "config" or any(
        isinstance(w, str) and w in ("simulate", "prepare-model", "canaries") for w in source
    )


CASES = [
    dataclasses.replace(c, fast=False) if c.fast and _composes(c) and c.id not in _FAST_HYDRA else c for c in CASES
]
BY_ID = {case.id: case for case in CASES}
assert len(BY_ID) == len(CASES), "case ids must be unique"
