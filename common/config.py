"""Typed configuration: frozen dataclasses built once from plain dicts, validated at the edge.

Hydra (simulation, coordinator) composes a plain dict; :func:`run_config_from_dict` turns it into a
:class:`RunConfig`. What a site needs from the coordinator travels as a flat :class:`SitePlan`
(``plan_to_flat`` / ``plan_from_flat``) because Flower's records hold flat scalars only.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from common.errors import ConfigError

T = TypeVar("T")

DEFAULT_MODEL = "smollm2-135m-instruct"
_MAX_INT = 2**63 - 1  # what numpy, torch and Flower's records can hold


@dataclass(frozen=True)
class ModelConfig:
    """Which base model to fine-tune and how to run it."""

    name_or_path: str = DEFAULT_MODEL  # built-in GGUF name, a local HF directory, or a hub id
    cache_dir: str = ""  # where converted checkpoints live; "" = $FEDCARE_CACHE or ~/.cache/fedcare
    precision: str = "auto"  # "auto" (bf16 on AMX CPUs and bf16 GPUs, else fp32), "bf16" or "fp32"
    device: str = "auto"  # "auto" (a GPU when visible), "cpu", "cuda" or "cuda:N"; resolved at each site
    num_threads: int = 0  # torch intra-op threads per worker; 0 = torch's default
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~1.3x step time

    def __post_init__(self) -> None:
        _check(
            self.precision in ("auto", "bf16", "fp32"), "model.precision", "'auto', 'bf16' or 'fp32'", self.precision
        )
        _check(
            self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device) is not None,
            "model.device",
            "'auto', 'cpu', 'cuda' or 'cuda:N'",
            self.device,
        )
        _check(self.num_threads >= 0, "model.num_threads", ">= 0", self.num_threads)


@dataclass(frozen=True)
class AdapterConfig:
    """LoRA hyper-parameters (PEFT's LoraConfig, minus what Opacus cannot train)."""

    rank: int = 8  # LoRA rank r
    alpha: int = 16  # LoRA scaling numerator; update scale = alpha / rank
    dropout: float = 0.0  # dropout on the LoRA input, probability
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")  # module names that get adapters
    # FFA-LoRA (Sun et al., ICLR 2024): lora_A stays at its seeded init, identical at every site and the
    # coordinator; only lora_B trains and travels, so averaging B averages the updates B A exactly.
    freeze_a: bool = False
    # Adapters on the last N decoder layers only (0 = every layer). Backpropagation then stops at the
    # lowest adapted layer, so a step costs about forward + (N / layers) x backward, with fewer
    # trainable parameters for DP-SGD's noise to cover.
    top_layers: int = 0

    def __post_init__(self) -> None:
        _check(self.top_layers >= 0, "lora.top_layers", ">= 0 (0 = every layer)", self.top_layers)
        _check(1 <= self.rank <= 1024, "lora.rank", "in [1, 1024]", self.rank)
        _check(self.alpha > 0, "lora.alpha", "> 0", self.alpha)
        _check(0.0 <= self.dropout < 1.0, "lora.dropout", "in [0, 1)", self.dropout)
        _check(len(self.target_modules) > 0, "lora.target_modules", "a non-empty list", self.target_modules)
        # Opacus has no per-sample gradient for LoRA on embeddings (see brief); fail closed.
        bad = [m for m in self.target_modules if "embed" in m or m == "lm_head"]
        _check(not bad, "lora.target_modules", "linear layers only (no embeddings under DP-SGD)", bad)


@dataclass(frozen=True)
class PrivacyConfig:
    """Sample-level differential privacy at each site (Opacus DP-SGD, PRV accountant)."""

    enabled: bool = True  # False trains without DP; the run's outputs record it
    target_epsilon: float = 8.0  # epsilon a site may spend over ALL planned rounds
    target_delta: float = 0.0  # 0 = automatic: 1 / (10 x training records at the site)
    max_grad_norm: float = 1.0  # per-sample L2 clipping bound C
    accountant: str = "prv"  # Opacus accountant: "prv" (tight) or "rdp" (conservative)
    noise_seed: int = 0  # 0 = DP noise and sampling from OS entropy; else reproducible (tests ONLY: weakens DP)
    unit: str = "record"  # privacy unit: "record", or "patient" (all of a patient's records are one unit)
    eval_noise_multiplier: float = 8.0  # Gaussian noise of each held-out metric release, x its sensitivity
    eval_loss_clip: float = 5.0  # held-out loss of one unit is clipped to [0, this], nats/token (its sensitivity)

    def __post_init__(self) -> None:
        _check(self.eval_noise_multiplier > 0, "privacy.eval_noise_multiplier", "> 0", self.eval_noise_multiplier)
        _check(self.eval_loss_clip > 0, "privacy.eval_loss_clip", "> 0", self.eval_loss_clip)
        _check(self.unit in ("record", "patient"), "privacy.unit", "'record' or 'patient'", self.unit)
        _check(self.noise_seed >= 0, "privacy.noise_seed", ">= 0", self.noise_seed)
        _check(self.target_epsilon > 0, "privacy.target_epsilon", "> 0", self.target_epsilon)
        _check(0.0 <= self.target_delta < 1.0, "privacy.target_delta", "in [0, 1)", self.target_delta)
        _check(self.max_grad_norm > 0, "privacy.max_grad_norm", "> 0", self.max_grad_norm)
        _check(self.accountant in ("prv", "rdp"), "privacy.accountant", "'prv' or 'rdp'", self.accountant)


@dataclass(frozen=True)
class SiteLimits:
    """What a site lets any coordinator ask of it (site.yaml ``limits``; in simulation, ``limits`` of the config).

    A round plan above any cap is refused with an error reply that names the key, the asked value and the cap.
    """

    max_run_epsilon: float = 0.0  # epsilon one run may add to the site's spend; 0 = up to the lifetime budget
    min_noise_multiplier: float = 0.5  # DP-SGD never adds less noise than this, whatever the budget allows
    max_noise_multiplier: float = 5.0  # a run that would need more noise is refused (it would train on noise)
    max_sample_rate: float = 0.5  # Poisson sampling rate q = batch_size / units stays at or below this
    max_eval_queries: int = 10  # evaluate replies per run; each is one accounted Gaussian query
    max_rounds: int = 100  # num_rounds of a run
    max_local_steps: int = 200  # train.local_steps per round
    max_batch_size: int = 64  # train.batch_size (expected units per Poisson batch)
    max_eval_batch_size: int = 64  # train.eval_batch_size
    max_seq_len: int = 1024  # train.max_seq_len, tokens
    max_threads: int = 8  # model.num_threads (0 in a plan = torch's default, allowed)
    models: tuple[str, ...] = (DEFAULT_MODEL, "tiny-random-llama")  # base models the site loads: built-in names
    # or local directories the site lists here; never a hub id or a path only the plan names

    def __post_init__(self) -> None:
        _check(self.max_run_epsilon >= 0, "limits.max_run_epsilon", ">= 0", self.max_run_epsilon)
        _check(
            0 < self.min_noise_multiplier <= self.max_noise_multiplier,
            "limits.min_noise_multiplier",
            "in (0, limits.max_noise_multiplier]",
            self.min_noise_multiplier,
        )
        _check(0 < self.max_sample_rate < 1, "limits.max_sample_rate", "in (0, 1)", self.max_sample_rate)
        for key in (
            "max_eval_queries",
            "max_rounds",
            "max_local_steps",
            "max_batch_size",
            "max_eval_batch_size",
            "max_seq_len",
            "max_threads",
        ):
            _check(getattr(self, key) >= 0, f"limits.{key}", ">= 0", getattr(self, key))
        _check(len(self.models) > 0, "limits.models", "at least one model", self.models)


@dataclass(frozen=True)
class TrainConfig:
    """Local training at a site in one round."""

    local_steps: int = 10  # optimizer steps per round (each a Poisson-sampled batch)
    batch_size: int = 8  # EXPECTED batch size; sample_rate = batch_size / training records
    learning_rate: float = 1e-2  # AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    max_seq_len: int = 128  # tokens per example after the chat template; longer ones are cut
    eval_batch_size: int = 16  # examples per forward pass when measuring held-out loss
    max_physical_batch: int = 8  # examples per forward/backward; a larger batch runs in length-sorted parts (0 = whole)

    def __post_init__(self) -> None:
        for key in ("local_steps", "batch_size", "max_seq_len", "eval_batch_size"):
            _check(getattr(self, key) >= 1, f"train.{key}", ">= 1", getattr(self, key))
        _check(self.max_physical_batch >= 0, "train.max_physical_batch", ">= 0", self.max_physical_batch)
        _check(self.max_seq_len >= 16, "train.max_seq_len", ">= 16", self.max_seq_len)
        _check(self.learning_rate > 0, "train.learning_rate", "> 0", self.learning_rate)
        _check(self.weight_decay >= 0, "train.weight_decay", ">= 0", self.weight_decay)
        _check(self.max_seq_len <= 131072, "train.max_seq_len", "<= 131072", self.max_seq_len)


@dataclass(frozen=True)
class DataConfig:
    """Where each site's records come from."""

    kind: str = "synthetic"  # "synthetic" (built in) or "files" (JSONL/JSON/CSV/Parquet)
    records_per_site: int = 48  # synthetic only: records generated per hospital
    paths: tuple[str, ...] = ()  # files: one file per site, or one file split by partition_field
    partition_field: str = ""  # files: split a single file into sites by this field's values
    prompt_column: str = ""  # files: column mapping for other shapes ("" = detect the shape)
    completion_column: str = ""  # files: answer column when prompt_column is set
    max_records_per_site: int = 0  # cap per site after loading, 0 = no cap
    eval_fraction: float = 0.2  # share of each site's records held out for evaluation
    seed: int = 0  # seed of generation, splitting and sampling
    # De-identification before tokenization (common.deid.load_detector): "rules", "presidio", "philter", several
    # joined by "+", a "module:Class" backend, or "off". The default kind (synthetic) uses the fast rules; the
    # data groups for real text (conf/data/files.yaml, medquad.yaml) set "presidio+rules".
    deid: str = "rules"
    deid_replace: str = "placeholder"  # identifiers become "[NAME]"-style placeholders, or "surrogate" fakes
    deid_workers: int = 0  # processes that de-identify; 0 = one per core when a site has >= 2,000 records
    patient_field: str = ""  # files: field with each record's patient id (needed for privacy.unit=patient)
    # files, one path: > 0 splits it into num_sites sites, each partition_field value's records spread
    # over the sites in shares drawn from Dir(alpha) (small = skewed); 0 = one site per value
    dirichlet_alpha: float = 0.0
    task_paths: tuple[str, ...] = ()  # files: one task file per site for task metrics (fedcare evaluate format)
    task_items_per_site: int = 40  # synthetic: closed-answer (triage) test items generated per site
    group_field: str = ""  # task rows' subgroup field for the fairness audit (age_band, sex, ...); "" = none

    def __post_init__(self) -> None:
        _check(self.kind in ("synthetic", "files"), "data.kind", "'synthetic' or 'files'", self.kind)
        _check(0.0 < self.eval_fraction < 1.0, "data.eval_fraction", "in (0, 1)", self.eval_fraction)
        _check(
            4 <= self.records_per_site <= 1_000_000, "data.records_per_site", "in [4, 1000000]", self.records_per_site
        )
        _check(0 <= self.seed < 2**32, "data.seed", "in [0, 2^32)", self.seed)
        _check(
            self.deid_replace in ("placeholder", "surrogate"),
            "data.deid_replace",
            "'placeholder' or 'surrogate'",
            self.deid_replace,
        )
        _check(0 <= self.deid_workers <= 256, "data.deid_workers", "in [0, 256]", self.deid_workers)
        _check(self.max_records_per_site >= 0, "data.max_records_per_site", ">= 0", self.max_records_per_site)
        if self.kind == "files":
            _check(len(self.paths) > 0, "data.paths", "at least one file when data.kind=files", self.paths)
        _check(self.dirichlet_alpha >= 0, "data.dirichlet_alpha", ">= 0", self.dirichlet_alpha)
        if self.dirichlet_alpha > 0:
            _check(
                self.kind == "files" and len(self.paths) == 1,
                "data.dirichlet_alpha",
                "data.kind=files with exactly one file in data.paths",
                self.paths,
            )
        if self.prompt_column or self.completion_column:
            _check(
                bool(self.prompt_column and self.completion_column),
                "data.prompt_column",
                "set together with data.completion_column",
                self.prompt_column,
            )


# Flower strategies (flwr.serverapp.strategy) the coordinator can run, by strategy.name.
STRATEGIES = (
    "fedavg",
    "fedprox",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "fedavgm",
    "fedmedian",
    "fedtrimmedavg",
    "krum",
    "multikrum",
    "bulyan",
)


@dataclass(frozen=True)
class StrategyConfig:
    """How the coordinator picks sites and aggregates adapters (one of Flower's strategies)."""

    name: str = "fedavg"  # one of STRATEGIES (conf/strategy/<name>.yaml documents each one's parameters)
    fraction_train: float = 1.0  # share of connected sites asked to train each round
    min_sites: int = 1  # fewest accepted replies a round needs to update the adapter
    norm_outlier_factor: float = 10.0  # reject an update whose norm exceeds this x the others' median; 0 = off
    proximal_mu: float = 0.0  # FedProx: weight of the proximal term mu/2 ||w - w_global||^2 in each site's loss
    eta: float = 0.01  # FedAdam/FedYogi/FedAdagrad: server learning rate
    beta_1: float = 0.9  # FedAdam/FedYogi: first-moment decay
    beta_2: float = 0.99  # FedAdam/FedYogi: second-moment decay
    tau: float = 1e-3  # FedAdam/FedYogi/FedAdagrad: adaptivity (epsilon added to sqrt(v))
    server_learning_rate: float = 1.0  # FedAvgM: server learning rate
    server_momentum: float = 0.0  # FedAvgM: server momentum (0 = FedAvg)
    trim_beta: float = 0.2  # FedTrimmedAvg: share cut from EACH end per coordinate, in [0, 0.5)
    num_malicious_nodes: int = 0  # Krum/MultiKrum/Bulyan: sites assumed Byzantine (f)
    num_nodes_to_select: int = 1  # MultiKrum: updates kept and averaged (m)
    # Secure aggregation (SecAgg+, Flower's own implementation through its legacy workflow): the
    # coordinator only ever receives the sum of the sites' weighted, quantized, masked adapters.
    secure_aggregation: bool = False  # True = SecAgg+ (server/secure.py + client/secure_app.py)
    secagg_num_shares: float = 1.0  # share of the round's sites each site's secrets are split among
    secagg_threshold: float = 0.67  # share of those shares needed to unmask (3 sites: one may drop out)
    # Each site quantizes (num_examples / max_weight) x tensor, clipped to +-clipping_range: the
    # effective clip on a LoRA value is clipping_range x max_weight / num_examples.
    secagg_clipping_range: float = 1.0  # clip bound of the weighted LoRA values before quantization
    secagg_quantization_range: int = 4194304  # quantization levels over [-clip, clip] (2^22; masks are mod 2^32)
    secagg_max_weight: float = 1000.0  # largest expected site weight (training records); above it values may clip

    def __post_init__(self) -> None:
        _check(self.name in STRATEGIES, "strategy.name", f"one of {list(STRATEGIES)}", self.name)
        _check(0.0 < self.fraction_train <= 1.0, "strategy.fraction_train", "in (0, 1]", self.fraction_train)
        _check(self.min_sites >= 1, "strategy.min_sites", ">= 1", self.min_sites)
        _check(self.norm_outlier_factor >= 0, "strategy.norm_outlier_factor", ">= 0", self.norm_outlier_factor)
        _check(self.proximal_mu >= 0, "strategy.proximal_mu", ">= 0", self.proximal_mu)
        _check(self.eta > 0, "strategy.eta", "> 0", self.eta)
        _check(0.0 <= self.beta_1 < 1.0, "strategy.beta_1", "in [0, 1)", self.beta_1)
        _check(0.0 <= self.beta_2 < 1.0, "strategy.beta_2", "in [0, 1)", self.beta_2)
        _check(self.tau > 0, "strategy.tau", "> 0", self.tau)
        _check(self.server_learning_rate > 0, "strategy.server_learning_rate", "> 0", self.server_learning_rate)
        _check(0.0 <= self.server_momentum < 1.0, "strategy.server_momentum", "in [0, 1)", self.server_momentum)
        _check(0.0 <= self.trim_beta < 0.5, "strategy.trim_beta", "in [0, 0.5)", self.trim_beta)
        _check(self.num_malicious_nodes >= 0, "strategy.num_malicious_nodes", ">= 0", self.num_malicious_nodes)
        _check(self.num_nodes_to_select >= 1, "strategy.num_nodes_to_select", ">= 1", self.num_nodes_to_select)
        if self.secure_aggregation:  # the coordinator only ever holds the sum: a weighted mean, nothing else
            _check(self.name == "fedavg", "strategy.name", "'fedavg' with strategy.secure_aggregation", self.name)
        _check(0.0 < self.secagg_num_shares <= 1.0, "strategy.secagg_num_shares", "in (0, 1]", self.secagg_num_shares)
        _check(0.0 < self.secagg_threshold <= 1.0, "strategy.secagg_threshold", "in (0, 1]", self.secagg_threshold)
        _check(self.secagg_clipping_range > 0, "strategy.secagg_clipping_range", "> 0", self.secagg_clipping_range)
        # Flower sums the sites' quantized values modulo 2^32: leave headroom for the sum.
        _check(
            2 <= self.secagg_quantization_range <= 2**24,
            "strategy.secagg_quantization_range",
            "in [2, 2^24]",
            self.secagg_quantization_range,
        )
        _check(self.secagg_max_weight > 0, "strategy.secagg_max_weight", "> 0", self.secagg_max_weight)


@dataclass(frozen=True)
class CoordinatorConfig:
    """Coordinator behaviour: artifact signing, waiting for sites, resuming."""

    signing_key: str = ""  # Ed25519 private key (PEM) that signs each saved global adapter; "" = unsigned
    resume: bool = False  # continue the run directory output_dir/run_name from its last completed round
    node_wait_s: float = 120.0  # seconds to wait for num_sites sites to connect (then go on with >= min_sites)
    round_timeout_s: float = 0.0  # seconds to wait for a round's replies; 0 = until every site answers or fails
    rejoin_wait_s: float = 0.0  # before each round, seconds to wait for missing sites to (re)connect
    # Sites score their own task sets (site.yaml data.task_paths; the synthetic triage items) in the evaluate
    # reply of: -1 no round, 0 round 0 (the base model) and the last, k > 0 every k rounds (0 too) and the last.
    task_eval_every: int = 0
    task_labels: tuple[str, ...] = ()  # options of the consortium's choice task, in confusion-matrix order, imposed
    # on every site's choice task; () = each site's own options, sorted (synthetic triage: no, yes; else class-0, ...)

    def __post_init__(self) -> None:
        _check(self.task_eval_every >= -1, "coordinator.task_eval_every", ">= -1", self.task_eval_every)
        _check(
            len(set(self.task_labels)) == len(self.task_labels),
            "coordinator.task_labels",
            "distinct options",
            self.task_labels,
        )
        _check(self.node_wait_s >= 0, "coordinator.node_wait_s", ">= 0", self.node_wait_s)
        _check(self.round_timeout_s >= 0, "coordinator.round_timeout_s", ">= 0", self.round_timeout_s)
        _check(self.rejoin_wait_s >= 0, "coordinator.rejoin_wait_s", ">= 0", self.rejoin_wait_s)


@dataclass(frozen=True)
class SimulationConfig:
    """Flower simulation engine resources."""

    cpus_per_site: int = 0  # CPU cores reserved per ClientApp worker; 0 = all cores (one worker)
    gpus_per_site: float = 0.0  # GPU fraction per ClientApp worker (0.5 = two workers share a GPU); 0 = none
    verbose: bool = False  # Flower/Ray debug logging
    exact_loss: bool = True  # after the run, measure every round's exact held-out loss per site (driver only)
    engine: str = "ray"  # ray: Flower's simulation engine; inprocess: every site in this process, one after another

    def __post_init__(self) -> None:
        _check(self.cpus_per_site >= 0, "simulation.cpus_per_site", ">= 0", self.cpus_per_site)
        _check(self.gpus_per_site >= 0.0, "simulation.gpus_per_site", ">= 0", self.gpus_per_site)
        _check(self.engine in ("ray", "inprocess"), "simulation.engine", "ray or inprocess", self.engine)


@dataclass(frozen=True)
class TrackingConfig:
    """Opt-in experiment trackers fed from a finished run's metrics.jsonl / summary / evaluation."""

    tensorboard: bool = False  # write TensorBoard event files to <run>/tensorboard (needs `tensorboard`)
    mlflow_uri: str = ""  # MLflow tracking URI, e.g. file:./mlruns; "" = off (needs `mlflow`)


@dataclass(frozen=True)
class RunConfig:
    """Everything one federated run needs, composed by Hydra at the edge."""

    num_sites: int = 3  # hospitals in the simulation
    num_rounds: int = 2  # federated rounds
    seed: int = 0  # global seed (adapter init, sampling)
    output_dir: str = "runs"  # parent of the run directory
    run_name: str = ""  # run directory name; "" = timestamp
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: AdapterConfig = field(default_factory=AdapterConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    coordinator: CoordinatorConfig = field(default_factory=CoordinatorConfig)
    limits: SiteLimits = field(default_factory=SiteLimits)  # simulation: every virtual site's site.yaml limits
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        _check(
            not self.coordinator.resume or bool(self.run_name),
            "coordinator.resume",
            "run_name set to the run directory to resume",
            self.run_name,
        )
        _check(1 <= self.num_sites <= 1000, "num_sites", "in [1, 1000]", self.num_sites)
        _check(
            self.run_name not in (".", "..") and not any(c in self.run_name for c in "/\\\0"),
            "run_name",
            "a folder name (no '/', not '.' or '..')",
            self.run_name,
        )
        _check(0 <= self.seed < 2**32, "seed", "in [0, 2^32)", self.seed)
        _check(self.num_rounds >= 1, "num_rounds", ">= 1", self.num_rounds)
        _check(self.strategy.min_sites <= self.num_sites, "strategy.min_sites", "<= num_sites", self.strategy.min_sites)
        if self.strategy.secure_aggregation:  # SecAgg+ needs >= 2 sites and has no checkpoint to resume from
            _check(self.num_sites >= 2, "num_sites", ">= 2 with strategy.secure_aggregation", self.num_sites)
            _check(
                not self.coordinator.resume,
                "coordinator.resume",
                "false with strategy.secure_aggregation",
                self.coordinator.resume,
            )
        if self.strategy.name == "bulyan":  # Flower's Bulyan skips aggregation below 4f + 3 replies
            need = 4 * self.strategy.num_malicious_nodes + 3
            _check(
                self.num_sites >= need,
                "num_sites",
                f">= 4 x strategy.num_malicious_nodes + 3 = {need} for Bulyan",
                self.num_sites,
            )
        if self.data.kind == "files" and not self.data.partition_field and not self.data.dirichlet_alpha:
            _check(
                len(self.data.paths) == self.num_sites,
                "data.paths",
                f"one file per site (num_sites={self.num_sites})",
                len(self.data.paths),
            )


@dataclass(frozen=True)
class SitePlan:
    """What the coordinator tells a site for one round: flat, typed, no site secrets."""

    run_id: str  # the coordinator's run name; a site calibrates its noise once per run id
    server_round: int
    num_rounds: int
    num_sites: int
    seed: int
    model: ModelConfig
    lora: AdapterConfig
    privacy: PrivacyConfig
    train: TrainConfig
    data: DataConfig
    proximal_mu: float = 0.0  # FedProx: mu of the proximal term (Flower's strategy sends it as "proximal-mu")
    score_tasks: bool = False  # evaluate: also score the site's own task set (released in the same noised query)
    task_labels: tuple[str, ...] = ()  # options of a choice task, in the coordinator's order (() = the site's own)

    def __post_init__(self) -> None:
        # The run id names files at the site (released updates): no separators, no "..", bounded.
        _check(
            bool(RUN_ID.fullmatch(self.run_id)) and ".." not in self.run_id,
            "run_id",
            "1-64 characters of [A-Za-z0-9._-], starting with a letter or digit, without '..'",
            self.run_id,
        )
        _check(
            1 <= self.server_round <= self.num_rounds or self.server_round == 0,
            "server_round",
            "in [0, num_rounds]",
            self.server_round,
        )


# Keys Flower's strategies add to the round's ConfigRecord, and the SitePlan field each maps to.
FLOWER_CONFIG_KEYS = {"server-round": "server_round", "proximal-mu": "proximal_mu"}


RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def run_config_from_dict(raw: dict[str, Any]) -> RunConfig:
    """Build a validated :class:`RunConfig` from a plain (Hydra-composed) dict.

    Raises:
        ConfigError: on an unknown key, a value of the wrong kind or out of range.
    """
    return build_dataclass(RunConfig, raw, "")


def plan_for_round(cfg: RunConfig, server_round: int, run_id: str = "run") -> SitePlan:
    """The plan sent to every site in ``server_round`` (1-based; 0 = evaluation before training)."""
    return SitePlan(
        run_id=run_id,
        server_round=server_round,
        num_rounds=cfg.num_rounds,
        num_sites=cfg.num_sites,
        seed=cfg.seed,
        model=cfg.model,
        lora=cfg.lora,
        privacy=cfg.privacy,
        train=cfg.train,
        data=cfg.data,
    )


def plan_to_flat(plan: SitePlan) -> dict[str, Any]:
    """Flatten a plan to ``section.key`` scalars (tuples become lists) for a Flower ConfigRecord."""
    flat: dict[str, Any] = {}
    for f in dataclasses.fields(plan):
        value = getattr(plan, f.name)
        if dataclasses.is_dataclass(value):
            for g in dataclasses.fields(value):
                v = getattr(value, g.name)
                flat[f"{f.name}.{g.name}"] = list(v) if isinstance(v, tuple) else v
        else:
            flat[f.name] = list(value) if isinstance(value, tuple) else value
    return flat


def plan_from_flat(flat: dict[str, Any]) -> SitePlan:
    """Inverse of :func:`plan_to_flat`; validates like any other config boundary.

    Raises:
        ConfigError: when a key is unknown or missing, or a value is invalid.
    """
    nested: dict[str, Any] = {}
    flower = {FLOWER_CONFIG_KEYS[k]: v for k, v in flat.items() if k in FLOWER_CONFIG_KEYS}
    flat = {k: v for k, v in flat.items() if k not in FLOWER_CONFIG_KEYS}
    if "server_round" in flower and flower["server_round"] != flat.get("server_round"):
        raise ConfigError(
            f"round plan: server-round {flower['server_round']!r} differs from server_round "
            f"{flat.get('server_round')!r}"
        )
    if "proximal_mu" in flower:
        flat["proximal_mu"] = float(flower["proximal_mu"])
    for key, value in flat.items():
        section, _, name = key.partition(".")
        if name:
            nested.setdefault(section, {})[name] = value
        else:
            nested[key] = value
    missing = [
        f.name for f in dataclasses.fields(SitePlan) if f.name not in nested and f.default is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"round plan: missing keys {missing}")
    return build_dataclass(SitePlan, nested, "")


def config_keys(cls: type = RunConfig, prefix: str = "") -> list[str]:
    """Every dotted key of a config dataclass (``num_sites``, ``privacy.target_epsilon``, ...)."""
    keys: list[str] = []
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        keys.append(prefix + f.name)
        if dataclasses.is_dataclass(hint):
            keys += config_keys(hint, f"{prefix}{f.name}.")  # type: ignore[arg-type]
    return keys


def _kinds_of(raw: dict[Any, Any]) -> str:
    return next(type(key).__name__ for key in raw if not isinstance(key, str)).replace("NoneType", "null")


def _check(ok: bool, key: str, expected: str, got: Any) -> None:
    if not ok:
        raise ConfigError(f"{key}: expected {expected}, got {got!r}")


def build_dataclass(cls: type[T], raw: Any, where: str) -> T:
    """Construct dataclass ``cls`` from ``raw`` recursively, rejecting unknown keys and wrong kinds."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if not all(isinstance(key, str) for key in raw):
        raise ConfigError(f"{where or 'config'}: every key must be a name (found a {_kinds_of(raw)} key)")
    unknown = sorted(set(raw) - names)
    if unknown:
        near = difflib.get_close_matches(unknown[0], sorted(names), n=3)
        hint = f"did you mean {' or '.join(where + n for n in near)}?" if near else f"expected some of {sorted(names)}"
        more = f" (and {len(unknown) - 1} more)" if unknown[1:] else ""
        raise ConfigError(f"{where}{unknown[0]}: unknown key{more}; {hint}")
    kwargs = {name: _coerce(hints[name], value, f"{where}{name}") for name, value in raw.items()}
    required = {
        f.name
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = sorted(required - set(kwargs))
    if missing:
        raise ConfigError(f"{where or 'config'}: missing keys {missing}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, key + ".")
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        return tuple(_coerce(item, v, key) for v in value)
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{key}: unsupported union type")  # not used by our dataclasses
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:
            raise ConfigError(f"{key}: expected a finite number, got an integer of {len(str(value))} digits") from None
    if hint is float and isinstance(value, float) and not math.isfinite(value):
        # inf/nan pass every "> 0" check (nan fails them all silently): e.g. target_epsilon=inf would
        # call a run DP while its noise calibration spends epsilon ~709.
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    if hint is int and isinstance(value, int) and not isinstance(value, bool) and abs(value) > _MAX_INT:
        raise ConfigError(f"{key}: expected an integer below 2^63, got one of {len(str(abs(value)))} digits")
    if hint in (int, float, str) and (not isinstance(value, hint) or isinstance(value, bool)):
        raise ConfigError(f"{key}: expected {hint.__name__}, got {value!r}")
    return value
