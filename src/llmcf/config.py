"""Typed configuration: dataclasses loaded from YAML, overridable from the command line.

Every section maps one-to-one onto the arguments of the code that uses it. The resolved config is written next to
every run's outputs (``config.yaml`` in the run directory), so a result always says how it was produced.

Override syntax on the CLI: ``--set train.lr=0.001 --set model.params.num_heads=4`` (values parsed as YAML).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or override names an unknown field or holds a value of the wrong type."""


VARIANTS = ("base", "full", "no_cot", "mean_pool")
"""Training variants: the backbone alone, LLM-CF, and the ICT ablations (``ict.variant`` takes the last three)."""
TASKS = ("ctr", "sequential")
BASELINES = ("textemb", "kd", "kar", "boost")
"""Baselines trained in the same harness (``llmcf train --baseline``; ``llmcf.train.baselines``): frozen item-text
features, knowledge distillation of the RecGen model's p(Yes), KAR (Xi et al. 2023), and boost (a second backbone
fitted to the trained one's residual: the no-knowledge control of the residual methods)."""
RESIDUAL_BASELINES = ("textemb", "kar", "boost")
"""Baselines that can learn the residual of the trained base model kept frozen (``baseline.residual``; boost always
does)."""


def model_tag(name: str, ict: bool = False, variant: str = "full", task: str = "ctr", baseline: str | None = None) -> str:
    """The folder name of a trained model under ``models/``: ``[seq-]<name>[+llmcf[-<variant>]]``, or
    ``[seq-]<name>+<baseline>`` for a baseline (``BASELINES``; never together with the ICT)."""
    base = f"seq-{name}" if task == "sequential" else name
    if baseline:
        if ict:
            raise ConfigError(f"baseline '{baseline}' and the ICT (--ict) are separate methods: train one at a time")
        return f"{base}+{baseline}"
    if not ict:
        return base
    return f"{base}+llmcf" if variant == "full" else f"{base}+llmcf-{variant}"


def baseline_tag(b: "BaselineConfig") -> str | None:
    """The ``<name>`` of a baseline's model tag: ``textemb-residual`` / ``kar-residual`` with ``baseline.residual``
    (boost is always residual and keeps its name)."""
    if b.name and b.residual and b.name != "boost":
        return f"{b.name}-residual"
    return b.name


def check_residual_baseline(b: "BaselineConfig") -> None:
    if b.residual and b.name and b.name not in RESIDUAL_BASELINES:
        raise ConfigError(f"baseline.residual: {b.name} has no feature to fit the base model's residual with "
                          f"(residual baselines: {', '.join(RESIDUAL_BASELINES)})")


def backbone_params(params: dict[str, Any], name: str) -> dict[str, Any]:
    """The constructor arguments of backbone ``name`` from a ``params`` mapping: an entry whose value is a mapping is
    keyed by a backbone name (matched case-insensitively) and holds that backbone's own arguments, which override the
    shared entries (plain values) every backbone gets. No backbone takes a mapping as an argument."""
    shared = {k: v for k, v in params.items() if not _is_backbone_key(k, v)}
    own = [v for k, v in params.items() if _is_backbone_key(k, v) and k.lower() == name.lower()]
    return {**shared, **(own[0] if own else {})}


def _is_backbone_key(key: str, value: Any) -> bool:
    return isinstance(value, dict)


@dataclass
class DataConfig:
    dataset: str = "ml-100k"
    """Embedded name (``ml-100k``, from the recbole wheel) or a path to a folder of raw data."""
    format: str = "auto"
    """auto | atomic | movielens | amazon2014 | amazon2018 | amazon2023."""
    history_len: int = 20
    label: str = "auto"
    """auto | rating (explicit: rating >= threshold) | implicit (positives + sampled negatives) | column (0/1 column)."""
    rating_threshold: float = 4.0
    num_negatives: int = 1
    split: str = "ratio"
    """loo (per-user leave-one-out) | ratio (per-user chronological ratio) | time (global time split)."""
    split_ratio: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    max_users: int | None = None
    """Keep only the first N users (sorted id order, seeded shuffle): for small demos."""
    seed: int = 42
    item_noun: str = "item"
    """Domain wording used by the LLM prompts: e.g. movie / product."""
    positive_verb: str = "likes"
    """e.g. 'purchases' (Amazon), 'likes' (ratings >= threshold)."""
    negative_verb: str = "does not like"
    on_duplicate: str = "drop"
    """drop (exact duplicate interaction rows are dropped, the count recorded in stats.json) | error."""
    engine: str = "auto"
    """How `llmcf data build` builds the samples: pandas (in memory) | duckdb (out of core, bounded memory, needs
    ``pip install llmcf[scale]``) | auto (duckdb from ``engine_auto_rows`` interactions when it is installed, else pandas).
    Both write the same tables (llmcf.data.duck)."""
    engine_memory: str = "2GB"
    """DuckDB's memory limit for the duckdb engine (beyond it DuckDB spills to a temporary folder under TMPDIR)."""
    engine_auto_rows: int = 500_000
    """engine: auto picks duckdb from this many interactions on."""


@dataclass
class ModelConfig:
    name: str = "DIN"
    embed_dim: int = 32
    mlp: list[int] = field(default_factory=lambda: [200, 80])
    dropout: float = 0.1
    params: dict[str, Any] = field(default_factory=dict)
    """Backbone-specific constructor arguments (see each backbone's docstring), keyed by backbone name for a
    multi-model run (``{xDeepFM: {cin_layers: [100, 100]}, AutoInt: {num_heads: 4}}``); entries not keyed by a
    name apply to every backbone. See ``params_for``."""

    def params_for(self, name: str) -> dict[str, Any]:
        return backbone_params(self.params, name)


@dataclass
class TrainConfig:
    lr: float = 0.01
    weight_decay: float = 1e-4
    batch_size: int = 128
    eval_batch_size: int = 2048
    max_epochs: int = 20
    patience: int = 2
    seeds: int = 1
    seed: int = 0
    threads: int | None = None
    max_steps_per_epoch: int | None = None
    ict_weight_decay: float = 0.0
    """L2 on the ICT module's own parameters (the backbone keeps ``weight_decay``). Adam's coupled L2 at lr 0.01 drives
    weights with small gradients to zero: with 1e-4 the decoder's attention weights collapsed (mean |w| ~3e-4, uniform
    attention) on ml-100k, so the default is none."""
    ict_lr: float | None = None
    """Adam learning rate of the ICT module's own parameters (None = ``lr``)."""
    device: str = "auto"
    """Where training and evaluation run (model, batches, buffers such as the ICT's item-text matrix): auto (cuda
    when available, else cpu) | cpu | cuda | cuda:N. Asking for cuda without it is an error, never a fallback."""
    amp: bool = False
    """Mixed precision (torch.autocast: float16 with a gradient scaler on cuda, bfloat16 on cpu)."""
    grad_clip: float | None = None
    """Clip the global gradient L2 norm to this value before each optimiser step (None = no clipping)."""
    plateau_lr_factor: float | None = None
    """CTR training: multiply the learning rate by this factor after every epoch that does not improve validation
    AUC (not below 1e-6; None = keep it constant, the paper's rule). Early stopping still counts those epochs, so
    with patience 2 the model gets one more epoch at the lower rate. FuxiCTR's trainers do this by default (factor
    0.1); benchmarks/results/fuxictr.md measures what it is worth on DCN."""
    min_epochs: int = 0
    """CTR training: early stopping (and the plateau decay) apply only from this epoch on; before it every epoch
    trains at the full rate. For a module that starts flat, e.g. a frozen-backbone residual probe whose first epochs
    move validation AUC only in the fifth decimal (README, the residual probe). The best validation epoch is kept
    as always."""


@dataclass
class LLMConfig:
    backend: str = "auto"
    """auto (llamacpp when llama-cpp-python is installed, else hf) | hf | llamacpp | openai | vllm."""
    model: str = "smollm2-135m"
    """``smollm2-135m`` (the embedded default) or a local model directory."""
    endpoint: str | None = None
    """For backend=openai: base URL of an OpenAI-compatible server (API key from $OPENAI_API_KEY)."""
    batch_size: int = 8
    max_concurrency: int = 8
    timeout_s: float = 120.0
    max_retries: int = 3
    dtype: str = "auto"
    """hf backend inference (CoT, KAR and self-distilled texts; p(Yes), MMLU, perplexity): auto | float32 | bfloat16 |
    float16. ``auto`` = bfloat16 where the hardware computes it natively (a CPU with AVX512-BF16 or AMX, a CUDA GPU
    with bf16), float32 elsewhere; ~2x cheaper p(Yes) and ~1.5x cheaper generation on such a CPU
    (benchmarks/results/generation.md). RecGen *training* loads float32 weights under ``auto`` (``recgen.amp`` for
    bf16 autocast); an explicit value applies to training too. ``auto`` is hashed as float32, so it reruns no stage
    that float32 ran."""
    prompt_style: str = "compact"
    """The wording of the LLM prompts of RecGen (training and its p(Yes) eval), CoT generation and the KD teacher:
    ``compact`` (the default since 2026-12-04: ``Title | brand | categories`` item lines without field labels or
    categories shared by nearly every item, a short system turn and CoT instruction) | ``full`` (the wording of every
    run recorded before: item lines as ``title: ...; category: ...``, the long CoT instruction, the chat template's
    default system turn for RecGen). Same content; compact has 27-28 % fewer CoT-prompt tokens and 14-19 % fewer
    RecGen-prompt tokens (``llmcf.llm.prompt_style``; benchmarks/results/prompts.md). KAR's prompts keep their own
    wording."""
    device: str = "auto"
    """hf backend: auto (cuda if available) | cpu | cuda | cuda:N."""
    api_model: str | None = None
    """For backend=openai: the model name sent to the server (default: ``model``)."""
    send_top_k: bool = True
    """For backend=openai: send top_k (vLLM/SGLang accept it; the official OpenAI API does not)."""
    threads: int | None = None
    """hf backend / RecGen training: torch CPU threads (None = torch default). On a busy machine 1 thread can be
    several times faster than an oversubscribed default. llamacpp backend: llama.cpp threads (None = 2)."""
    n_ctx: int = 2048
    """llamacpp backend: context window in tokens (prompt + new tokens)."""
    gguf_type: str = "q8_0"
    """llamacpp backend: GGUF type a non-shipped model directory (the RecGen-tuned model) is exported to: q8_0 | f16."""
    executor: str = "local"
    """The sharded LLM stages (CoT generation, the KD teacher's p(Yes), KAR's texts): local (one backend in this
    process) | ray (Ray Data, an actor pool of ``ray_actors`` backends, ``pip install 'llmcf[ray]'``). The shards
    written are the same either way (``llmcf.llm.executors``)."""
    ray_address: str | None = None
    """executor: ray — the cluster to join (``auto``, ``ray://host:10001``); None starts a local Ray instance."""
    ray_actors: int = 2
    """executor: ray — backends (actors) running at once."""
    ray_cpus_per_actor: float = 1.0
    """executor: ray — CPUs Ray reserves per actor (``ray_gpus_per_actor`` for GPU engines such as vLLM)."""
    ray_gpus_per_actor: float = 0.0


@dataclass
class RecGenConfig:
    method: str = "lora"
    """full | lora"""
    lora_r: int = 8
    lora_alpha: int = 16
    lora_layers: int | None = None
    """LoRA on the top N decoder layers only (None = all): the backward pass stops below them, so a step costs less
    (benchmarks/results/recgen.md)."""
    amp: bool = False
    """Mixed precision for RecGen training: the forward pass runs under ``torch.autocast`` in bfloat16 while the
    weights, the LoRA adapters and AdamW stay float32. Pays on CPUs with native bf16 (AVX512-BF16 or AMX; see
    ``lscpu``) and on CUDA; elsewhere bf16 is emulated and slower. Cost and accuracy: benchmarks/results/recgen.md."""
    lr: float = 1e-4
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    micro_batch: int = 2
    """Rows per forward/backward pass: each batch runs in chunks of at most this many rows, gradients summed (the
    update is the same; only peak memory and padding change). Activations of a 384-token row take ~1.5 GB on CPU,
    so an 8-row pass peaked at 12.5 GB RSS; chunks of 2 stay near 3.5 GB. Not part of the model's fingerprint."""
    warmup_ratio: float = 0.05
    cutoff_len: int = 512
    num_rec: int = 2000
    general_data: str | None = None
    """JSON Lines of instruction/input/output; None = self-distilled general prompts."""
    general_ratio: float = 0.25
    history_items: int = 10
    eval_rows: int = 500
    mmlu_dir: str | None = None
    mmlu_subjects: list[str] = field(default_factory=list)
    skip: bool = False
    """Use the base model for CoT generation (the paper's untuned-CoT ablation)."""
    lora_dropout: float = 0.05
    seed: int = 0
    save_every: int = 50
    """Optimizer steps between resumable checkpoints (run_dir/llm/recgen/ckpt)."""
    self_distill_samples: int = 1
    """Answers per general prompt when general_data is None (sampled at temperature 0.7, top-p 0.9)."""
    self_distill_max_new_tokens: int = 200
    heldout_general: int = 40
    """General rows held out of training for the perplexity check."""
    mmlu_shots: int = 5
    mmlu_max_questions: int | None = 100
    """Per subject (None = all test questions)."""


@dataclass
class CoTConfig:
    fraction: float | None = 0.1
    count: int | None = None
    candidates: int = 3
    temperature: float = 0.6
    top_k: int = 50
    top_p: float = 1.0
    max_new_tokens: int = 256
    history_items: int = 10
    shard_size: int = 64
    seed: int = 0
    min_chars: int = 10
    """Candidates shorter than this (stripped) score 0."""
    echo_threshold: float = 0.5
    """A candidate is an echo (score 0) when this share of its word 8-grams occurs verbatim in the prompt, or this
    share of the instruction's 8-grams occurs in it."""
    completeness: str = "text"
    """text (the paper: cosine of the whole CoT to each aspect sentence) | sentences (per aspect, its best sentence)."""


@dataclass
class EmbedConfig:
    encoder: str = "minilm"
    """``minilm`` (embedded all-MiniLM-L6-v2), ``mpnet`` or a sentence-transformers folder."""
    batch_size: int = 64
    cache_dir: str | None = None
    """On-disk embedding cache (keyed by sha256 of model + text); None = ``<run_dir>/embed/cache``."""
    executor: str = "local"
    """local (the encoder in this process) | ray (chunks of ``Encoder.chunk`` texts through a Ray Data pool of
    ``llm.ray_actors`` encoder actors on the cluster of ``llm.ray_address``; ``pip install 'llmcf[ray]'``). Same
    vectors either way."""


@dataclass
class RetrievalConfig:
    k: int = 4
    balanced: bool = True
    history_weight: float = 0.5
    target_weight: float = 0.5
    leakage: str = "same_or_later"
    """same_or_later (default, safe) | later (the original code's rule)."""
    index: str = "auto"
    """auto (exact ``flat`` for a label bucket of at most ``auto_exact_max`` vectors, ``ivf`` above) | flat | ivf |
    hnsw. Recall and speed of each on 10^5 and 10^6 keys: benchmarks/results/scaling.md."""
    auto_exact_max: int = 1_000_000
    """index: auto — the largest label bucket searched exactly (every preset's bank is far below it)."""
    nlist: int = 256
    nprobe: int = 16
    hnsw_m: int = 32
    hnsw_ef_construction: int = 40
    bank: str = "cot"
    """cot (the paper: the bank is the train rows with a kept CoT) | hybrid (every train row is a candidate; rows
    without a CoT carry the ICT's learned "no CoT" token instead, so coverage no longer depends on how many CoTs
    the LLM wrote)."""
    hnsw_ef_search: int = 64
    """HNSW search breadth (raised to the fetch size when that is larger)."""
    margin: int = 16
    """Over-fetch per label bucket before the leakage filter; short queries are re-searched with a larger k."""
    query_batch: int = 2048
    """Queries per FAISS search call (and per progress-bar step)."""
    seed: int = 0
    selection: str = "similar"
    """similar (the method: the most similar allowed bank rows) | random (a control: the same number of bank rows of
    each label drawn at random per query — seeded by the query, same leakage rule — so the module, the bank and the
    label balance stay and only what similarity chooses is removed; scores are written as 0, so it refuses
    ``ict.sim_input``)."""


@dataclass
class ICTConfig:
    enabled: bool = False
    variant: str = "full"
    """full | no_cot | mean_pool"""
    dim: int = 32
    layers: int = 2
    heads: int = 2
    recon_weight: float = 1.0
    dropout: float = 0.1
    field_dim: int = 16
    """Size of the ICT's own field embeddings (user, item, brand, category) inside each features token."""
    fusion: str = "concat"
    """concat (the paper: the ICT vector is an extra input of the backbone) | residual (safe fusion: the backbone is
    built exactly as without the ICT and the ICT adds ``MLP(w)`` to its logit through a zero-initialised last layer,
    so LLM-CF starts equal to the backbone and moves away only where training says so). Ranking task only."""
    sim_input: bool = False
    """Add each example's retrieval similarity to the query (``Linear(1, dim)`` of the score) to its tokens (needs
    the ``<split>_sim.npy`` files every ``llmcf retrieve`` writes). Ranking task only."""
    warm_start: bool = False
    """With fusion=residual: start the backbone from the trained base model of the same seed
    (``models/<backbone>/seed_<s>/model.safetensors``; train the base first) and keep those weights if no epoch
    beats them on validation."""
    freeze_backbone: bool = False
    """With warm_start: the backbone keeps the trained base model's weights exactly (no gradient, and held in eval
    mode, so dropout and batch-norm statistics do not move either); only the ICT and its fusion head learn, on the
    base model's residual. The clean probe of what the in-context module adds to a trained backbone: its epoch 0 is
    the base model, so the difference is the module's alone."""


def check_sim_input(retrieval: RetrievalConfig, ict: ICTConfig) -> None:
    """``ict.sim_input`` reads the retrieval scores, which ``retrieval.selection: random`` does not have."""
    if ict.sim_input and retrieval.selection == "random":
        raise ConfigError("ict.sim_input reads each example's retrieval score, and retrieval.selection: random draws "
                          "its examples without one (scores 0): turn one of them off")


def check_frozen_backbone(ict: ICTConfig) -> None:
    """``ict.freeze_backbone`` keeps a trained base model, so it needs ``ict.warm_start`` to load one."""
    if ict.freeze_backbone and not ict.warm_start:
        raise ConfigError("ict.freeze_backbone keeps the trained base model's weights: it needs ict.warm_start: true "
                          "(and ict.fusion: residual)")


@dataclass
class BaselineConfig:
    """The cheaper ways of bringing an LLM's knowledge into a backbone (``llmcf train --baseline NAME``,
    ``llmcf.train.baselines``). Each trains as ``<backbone>+<name>`` with the same data, optimiser and early
    stopping as the backbone alone.

    textemb: the frozen encoder vectors (embed/items.npy) of the target item and the mean of the history's, through
    ``MLP(2·D → hidden → dim)``, given to the backbone as its ``extra`` input.
    kd: the RecGen model's p(Yes) for ``kd_rows`` sampled train rows (cached in baselines/kd/, resumable) as a soft
    label beside BCE: ``kd_weight · T² · BCE(σ(z/T), σ(logit(p)/T))`` summed over the scored rows of a batch and
    divided by the batch size.
    kar: one LLM text per user (preferences, from their training interactions only) and per item (factual
    knowledge), cached in baselines/kar/ (resumable shards), embedded by the configured encoder and mapped by a
    hybrid-expert adaptor (``kar_shared_experts`` shared + ``kar_dedicated_experts`` per side, a softmax gate per
    side) to two ``dim`` vectors, concatenated as the backbone's ``extra`` input.
    boost: a second backbone of the same kind, fresh, fitted to the residual of the trained base model of the same
    seed, which is kept frozen: ``logit = base(x) + g · second(x)``, g a learned scalar starting at 0 (one round of
    boosting; needs the base model trained first, as ``ict.warm_start``). No LLM, no text: it measures what extra
    capacity on the residual alone buys, the control for the residual methods (``ict.freeze_backbone``,
    ``baseline.residual``)."""

    name: str | None = None
    """None (no baseline) | textemb | kd | kar | boost."""
    residual: bool = False
    """textemb / kar: instead of entering the backbone as an ``extra`` input from the start, the feature learns the
    residual of the trained base model of the same seed, kept frozen (as ``ict.freeze_backbone``): ``logit = base(x)
    + MLP(feature(x))`` with the MLP's last layer zero-initialised, so training starts at the base model. Needs the
    base model trained first. Tagged ``<backbone>+<name>-residual``. (boost is always residual; kd has no feature.)"""
    dim: int = 32
    """Size of each vector given to the backbone (kar gives two: user and item)."""
    hidden: int = 64
    """Hidden size of the textemb MLP and of every KAR expert."""
    dropout: float = 0.1
    partial: bool = False
    """kd / kar: train on the LLM stage's finished shards only and never generate (a generation stopped by a time
    budget): unscored rows get no soft label, users/items without a text the "missing" vector. The used counts are
    recorded in the model's ``llm_stage``."""
    kd_rows: int = 2000
    """Train rows scored by the teacher (a seeded uniform sample; all rows if fewer)."""
    kd_weight: float = 1.0
    kd_temperature: float = 1.0
    kd_seed: int = 0
    kd_shard_size: int = 64
    kd_history_items: int | None = None
    """History items shown in the teacher's prompt (None: ``recgen.history_items``, the prompt it was tuned on)."""
    kar_users: int | None = None
    """Users given a preference text (a seeded sample; None = all users in train). The others get a learned
    "missing" vector."""
    kar_items: int | None = None
    """Items given a knowledge text (a seeded sample; None = all items). The others get a learned "missing" vector."""
    kar_sample: str = "random"
    """How a budget (kar_users / kar_items) picks: random (seeded uniform) | popular (most training rows first)."""
    kar_history_items: int = 15
    """The user's most recent training interactions shown in the preference prompt."""
    kar_max_new_tokens: int = 96
    """New tokens per KAR text (greedy decoding)."""
    kar_shared_experts: int = 2
    kar_dedicated_experts: int = 2
    kar_seed: int = 0
    kar_shard_size: int = 32


@dataclass
class SeqConfig:
    """Sequential recommendation (next-item retrieval): samples, sampled softmax, full-ranking evaluation."""

    history_len: int = 20
    hidden: int = 64
    """User/item vector size of every sequential backbone."""
    num_negatives: int = 256
    """Uniform negatives shared by a batch for the sampled softmax; 0 = full softmax over all items."""
    lr: float = 1e-3
    weight_decay: float = 1e-5
    max_epochs: int = 50
    fusion_alpha: float = 0.1
    """ICT fusion u + alpha·w (SASRec, GRU4Rec, SR-GNN); YouTubeDNN uses an MLP over [u ; w]."""
    remove_history: bool = False
    """Exclude the history items from the ranking (the paper keeps them: false)."""
    ks: list[int] = field(default_factory=lambda: [5, 10, 20])
    params: dict[str, Any] = field(default_factory=dict)
    """Backbone-specific constructor arguments (see each sequential backbone's docstring), keyed by backbone name
    or shared, as ``model.params``."""

    def params_for(self, name: str) -> dict[str, Any]:
        return backbone_params(self.params, name)


@dataclass
class ServeConfig:
    """`llmcf serve` (llmcf.serve): request limits and model refresh. Longer requests get a 413 with a message;
    a history within max_history but longer than data.history_len is cut to its last history_len items."""

    max_candidates: int = 1000
    max_history: int = 200
    max_body_bytes: int = 1_000_000
    watch_seconds: float = 0.0
    """Poll the served model's and the bank's files every N seconds and swap in a new version when they change
    (0 = off; POST /v1/admin/reload swaps on demand)."""
    threads: int | None = None
    """torch CPU threads of the server (None = torch default)."""
    device: str = "cpu"
    """Where the served model scores: cpu | cuda | cuda:N | auto (cuda when available). Asking for cuda without it
    is an error, never a fallback."""
    admin_max_failures: int = 5
    """Wrong admin tokens one client may send within admin_failure_window seconds before it gets 429s."""
    admin_failure_window: float = 60.0
    keep_alive_seconds: float = 75.0
    """How long the server keeps an idle HTTP/1.1 connection open (uvicorn's timeout_keep_alive, whose own default is
    5 s). A client that reuses a pooled connection just as the server closes it sees a dropped request; keeping this
    above the clients' pool idle timeout (httpx: 5 s) lets the client close first. Clients should still retry a
    transport error (scoring is idempotent)."""


def _tune_space() -> dict[str, Any]:
    return {"train.lr": {"low": 1e-4, "high": 3e-2, "log": True},
            "train.weight_decay": {"low": 1e-7, "high": 1e-3, "log": True},
            "model.embed_dim": {"choices": [16, 32, 64]},
            "model.dropout": {"low": 0.0, "high": 0.5}}


def _tune_models() -> dict[str, Any]:
    return {"DeepFM": {"model.mlp": {"choices": [[200, 80], [256, 128, 64], [128, 64]]}},
            "xDeepFM": {"model.params.xDeepFM.cin_layers": {"choices": [[100, 100], [64, 64], [128, 128, 128]]}},
            "DCN": {"model.params.DCN.cross_layers": {"low": 1, "high": 4}},
            "DCNv2": {"model.params.DCNv2.cross_layers": {"low": 1, "high": 4}},
            "AutoInt": {"model.params.AutoInt.attention_layers": {"low": 1, "high": 3},
                        "model.params.AutoInt.num_heads": {"choices": [1, 2, 4]}},
            "DIN": {"model.params.DIN.attention_mlp": {"choices": [[80, 40], [64, 32], [128, 64]]}}}


def _tune_ict() -> dict[str, Any]:
    return {"ict.dim": {"choices": [16, 32, 64]},
            "ict.layers": {"low": 1, "high": 3},
            "train.ict_lr": {"low": 1e-4, "high": 3e-2, "log": True},
            "ict.recon_weight": {"choices": [0.0, 0.1, 1.0]},
            "retrieval.k": {"choices": [2, 4, 8]}}


def _tune_baselines() -> dict[str, Any]:
    feature = {"baseline.dim": {"choices": [16, 32, 64]}, "baseline.hidden": {"choices": [32, 64, 128]},
               "baseline.dropout": {"low": 0.0, "high": 0.5}}
    return {"textemb": dict(feature),
            "kar": {**feature, "baseline.kar_shared_experts": {"low": 1, "high": 3},
                    "baseline.kar_dedicated_experts": {"low": 1, "high": 3}},
            "kd": {"baseline.kd_weight": {"low": 0.1, "high": 3.0, "log": True},
                   "baseline.kd_temperature": {"choices": [1.0, 2.0, 4.0]}}}


@dataclass
class TuneConfig:
    """`llmcf tune` (llmcf.tune): Optuna TPE search on validation AUC. A search space maps a dotted config field to
    a distribution: ``{low, high}`` (float; ``log: true`` for a log scale; integers when both bounds are integers,
    optional ``step``) or ``{choices: [...]}`` (any YAML values, lists included). The space of a trial is ``space``
    (every backbone) ∪ ``models[<backbone>]`` ∪ (with --ict) ``ict`` ∪ (with --baseline NAME) ``baselines[NAME]``
    (the baseline's own fields: its feature sizes, dropout, KD weight and temperature); a later one overrides an
    earlier one's field and a field mapped to null is left out (``ict.recon_weight`` is left out for a variant without the reconstruction
    loss: no_cot, mean_pool). Setting ``models`` in a preset replaces the shipped per-backbone table."""

    trials: int = 20
    """Trials per study (``--trials`` overrides): give the backbone and LLM-CF the same number."""
    seed: int = 0
    """Seed of the TPE sampler."""
    startup_trials: int = 5
    """Random trials before TPE starts modelling."""
    start_at_config: bool = True
    """A new study's first trial trains the config's own values of the searched fields (each one its distribution
    can hold; the others are sampled), so the study's best is never below the untuned configuration on validation
    (for the seeds it trains). Resuming a study never adds it."""
    seeds: int = 1
    """Seeds per trial (``train.seed`` .. ``train.seed + seeds - 1``): the objective is their mean validation AUC.
    One seed is a noisy selector on small data (benchmarks/results/tuned-ml-100k-DCN.md: the backbone's best trial
    won on one seed and had unstable seeds); 3 costs 3× per trial. A study keeps the value it was started with."""
    space: dict[str, Any] = field(default_factory=_tune_space)
    models: dict[str, Any] = field(default_factory=_tune_models)
    ict: dict[str, Any] = field(default_factory=_tune_ict)
    baselines: dict[str, Any] = field(default_factory=_tune_baselines)
    """Per baseline (textemb | kd | kar), the ``baseline.*`` fields searched with ``llmcf tune --baseline NAME``
    beside the backbone's; fields that change the LLM stage (kd_rows, kar_users, ...) cannot be tuned."""


@dataclass
class PartitionConfig:
    """Partitioned (SISA/APA-style) training for exact forgetting (``llmcf.partitioned``, ``llmcf.forget``).

    ``shards`` = S disjoint user shards (1 = one unpartitioned run, today's behaviour). Each shard is a complete run
    directory ``shards/<k>/`` (its own RecGen adapter, CoTs, bank, sub-models); the served/evaluated model averages
    the S sub-models' logits. A user's shard is a seeded hash of the user id (``llmcf.data.partition.shard_of``)."""

    shards: int = 1
    seed: int = 0
    """Seed of the user -> shard hash."""
    shard: int = -1
    """Set by ``llmcf run`` in a shard's own config.yaml: which shard of its parent run this run directory is."""


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    recgen: RecGenConfig = field(default_factory=RecGenConfig)
    cot: CoTConfig = field(default_factory=CoTConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    ict: ICTConfig = field(default_factory=ICTConfig)
    seq: SeqConfig = field(default_factory=SeqConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    models: list[str] = field(default_factory=lambda: ["DIN"])
    """Backbones trained by ``llmcf run``."""
    seq_models: list[str] = field(default_factory=list)
    """Sequential backbones trained by ``llmcf run`` (SASRec, GRU4Rec, YouTubeDNN, SRGNN), each as base and, when
    ``full`` is among the variants, with the ICT."""
    variants: list[str] = field(default_factory=lambda: ["base", "full", "no_cot"])
    """Training variants of ``llmcf run``: base (backbone alone) | full (LLM-CF) | no_cot | mean_pool (ablations)."""
    baselines: list[str] = field(default_factory=list)
    """Baselines ``llmcf run`` trains for every CTR backbone (``BASELINES``: textemb | kd | kar), tagged
    ``<backbone>+<name>``, with the ``baseline`` section's settings."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def section_hash(self, *names: str) -> str:
        """Stable hash of some sections (``llmcf.fingerprint.section_hash``)."""
        from llmcf.fingerprint import section_hash

        return section_hash(self, *names)


def _build(cls, values: dict[str, Any], where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, val in values.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown field '{key}' (known: {', '.join(sorted(known))})")
        f = known[key]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            kwargs[key] = _build(type(default), val, f"{where}.{key}")
        else:
            kwargs[key] = _coerce(val, default, f"{where}.{key}")
    return cls(**kwargs)


def _coerce(val, default, where):
    if val is None or default is None:
        return val
    if isinstance(default, bool):
        if isinstance(val, bool):
            return val
        raise ConfigError(f"{where}: expected true/false, got {val!r}")
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(val, int) and not isinstance(val, bool):
            return val
        raise ConfigError(f"{where}: expected an integer, got {val!r}")
    if isinstance(default, float):
        if isinstance(val, (int, float)) and not isinstance(val, bool):
            return float(val)
        if isinstance(val, str):  # YAML 1.1 reads 1e-3 (no dot) as a string: take it as the number it spells
            try:
                num = float(val)
            except ValueError:
                num = None
            if num is not None and math.isfinite(num):
                return num
        raise ConfigError(f"{where}: expected a number, got {val!r}")
    if isinstance(default, str) and not isinstance(val, str):
        raise ConfigError(f"{where}: expected a string, got {val!r}")
    if isinstance(default, list) and not isinstance(val, list):
        raise ConfigError(f"{where}: expected a list, got {val!r}")
    if isinstance(default, dict) and not isinstance(val, dict):
        raise ConfigError(f"{where}: expected a mapping, got {val!r}")
    return val


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: '{p}' is not a section")
    node[parts[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML preset (or the defaults) and apply ``section.field=value`` overrides."""
    tree: dict[str, Any] = {}
    if path is not None:
        p = resolve_preset(path)
        try:
            tree = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from e
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected section.field=value")
        key, raw = item.split("=", 1)
        _set_path(tree, key.strip(), yaml.safe_load(raw))
    return _build(Config, tree, str(path) if path else "config")


def resolve_preset(path: str | Path) -> Path:
    """A path to a YAML file, or the name of a preset shipped in the package (``demo``, ``ml-100k``, ...)."""
    p = Path(path)
    if p.exists():
        return p
    shipped = Path(__file__).parent / "presets" / f"{path}.yaml"
    if shipped.exists():
        return shipped
    raise ConfigError(f"config '{path}': no such file, and no shipped preset of that name")


def config_from_dict(tree: dict[str, Any]) -> Config:
    return _build(Config, tree, "config")


def save_config(cfg: Config, path: str | Path) -> None:
    from llmcf.io import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(cfg.to_dict(), sort_keys=False))
