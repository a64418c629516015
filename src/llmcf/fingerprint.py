"""Every hash llmcf computes, in one module: stage stamps, trained-seed caches, retrieval / CoT / RecGen / embedding
cache keys and the serving file fingerprint.

Two kinds of hash live here:
    * **content hashes** of what a stage or model *reads* (config sections, upstream stamps, file bytes): a cached
      artifact is reused exactly when its hash is unchanged;
    * **file-state fingerprints** (size + modification time of files): cheap "did the offline stage write again?"
      checks, used where re-reading large files would cost more than a recomputation.

Rules that keep cached artifacts valid across versions: a hash function here is changed only together with a note in
the commit; fields listed in ``NOT_HASHED`` change how a stage runs (memory, batching), never what it writes.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

NOT_HASHED: dict[str, tuple[str, ...]] = {"recgen": ("micro_batch",), "data": ("on_duplicate", "engine", "engine_memory", "engine_auto_rows"),
                                          "train": ("device",), "embed": ("executor",),
                                          "llm": ("executor", "ray_address", "ray_actors", "ray_cpus_per_actor",
                                                  "ray_gpus_per_actor")}
"""Settings that change how a stage runs (memory, whether it refuses some input), not what it writes: left out of the
stage and model hashes."""

ADDED_AT_DEFAULT: dict[tuple[str, str], object] = {("train", "ict_lr"): None, ("ict", "fusion"): "concat",
                                                   ("ict", "warm_start"): False, ("ict", "sim_input"): False,
                                                   ("ict", "freeze_backbone"): False,
                                                   ("baseline", "residual"): False,
                                                   ("retrieval", "bank"): "cot", ("retrieval", "selection"): "similar",
                                                   ("train", "amp"): False,
                                                   ("train", "grad_clip"): None, ("train", "plateau_lr_factor"): None,
                                                   ("train", "min_epochs"): 0,
                                                   ("retrieval", "auto_exact_max"): 1_000_000,
                                                   ("recgen", "lora_layers"): None, ("recgen", "amp"): False,
                                                   ("llm", "prompt_style"): "full"}
"""Config fields added after results were recorded: left out of every hash while at their default (the behaviour
before they existed), so adding a switch neither reruns a stage nor retrains a cached seed."""

HASHED_AS: dict[tuple[str, str], dict] = {("retrieval", "index"): {"auto": "flat"}, ("llm", "dtype"): {"auto": "float32"}}
"""Values hashed as another one: ``index: auto`` (the default since the scaling work) builds the exact flat index
for every bank bucket up to ``retrieval.auto_exact_max`` vectors, which covers every run recorded with ``flat``, so
those runs keep their stage stamps and trained seeds. (A run whose bucket exceeds the threshold and that was
retrieved with ``flat`` before keeps that exact index until its retrieval stage reruns for another reason.)
``llm.dtype: auto`` (the default since the bf16 measurements) is float32 on hardware without native bf16, and only
changes inference precision elsewhere: runs recorded with float32 keep their stamps."""

SEED_FIELDS = ("seed", "seeds")
"""train.* fields that say which seeds to run; one seed's result does not depend on them."""

STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "data": ("data",),
    "recgen": ("llm", "recgen"),
    "cot_generate": ("llm", "cot"),
    "cot_score": ("embed", "cot"),
    "embed": ("embed",),
    "retrieve": ("retrieval",),
}
"""Config sections each offline stage of ``llmcf run`` reads (besides its upstream stamp)."""


# ---- primitives ---------------------------------------------------------------------------------------------------
def digest(payload: Any, n: int = 16) -> str:
    """Short stable hash of a JSON-able value (keys sorted; non-JSON values by ``str``)."""
    return text_digest(json.dumps(payload, sort_keys=True, default=str), n)


def text_digest(text: str, n: int | None = 16) -> str:
    h = hashlib.sha256(text.encode()).hexdigest()
    return h if n is None else h[:n]


def strings_digest(values: Iterable, n: int = 16) -> str:
    """Hash of a sequence of values (each as ``str``), order-sensitive."""
    h = hashlib.sha256()
    for v in values:
        h.update(str(v).encode() + b"\x1f")
    return h.hexdigest()[:n]


def file_sha(path: Path, n: int = 16) -> str:
    """Content hash of one file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:n]


def file_digest(path: Path) -> dict:
    """{"bytes": size, "sha256": full hex digest} of one file, read in 1 MiB blocks (what data/stats.json records)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"bytes": Path(path).stat().st_size, "sha256": h.hexdigest()}


def stat_token(path: Path, name: str | None = None) -> str:
    """``name:size:mtime_ns`` of a file (``name:missing`` when absent)."""
    name = Path(path).name if name is None else name
    try:
        st = Path(path).stat()
    except FileNotFoundError:
        return f"{name}:missing"
    return f"{name}:{st.st_size}:{st.st_mtime_ns}"


def files_fingerprint(paths: Sequence[Path], n: int = 12) -> str:
    """File-state fingerprint of some files (names, sizes, mtimes; duplicates counted once)."""
    return text_digest("|".join(stat_token(p) for p in dict.fromkeys(paths)), n)


def dir_fingerprint(path: Path) -> str:
    """File-state fingerprint of every file under a folder (relative names, sizes, mtimes)."""
    h = hashlib.sha256()
    path = Path(path)
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(path)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


# ---- config hashes ------------------------------------------------------------------------------------------------
def without_added_defaults(section: str, values: dict) -> dict:
    """One config section (as a dict) less its ``ADDED_AT_DEFAULT`` fields that are still at their default."""
    return {f: HASHED_AS.get((section, f), {}).get(v, v) if isinstance(v, str) else v for f, v in values.items()
            if (section, f) not in ADDED_AT_DEFAULT or ADDED_AT_DEFAULT[(section, f)] != v}


def section_payload(cfg, *names: str) -> dict:
    """The named config sections (or ``section.field`` values) as a dict, without their ``NOT_HASHED`` fields (nor
    ``ADDED_AT_DEFAULT`` ones at their default)."""
    d = cfg.to_dict()
    out = {}
    for n in names:
        if "." in n:
            sec, f = n.split(".", 1)
            out[n] = d[sec][f]
        else:
            out[n] = {k: v for k, v in without_added_defaults(n, d[n]).items() if k not in NOT_HASHED.get(n, ())} \
                if isinstance(d[n], dict) else d[n]
    return out


def section_hash(cfg, *names: str) -> str:
    """Stable hash of some config sections: used by ``llmcf run`` to skip stages whose config is unchanged."""
    return digest(section_payload(cfg, *names))


def stage_hash(cfg, stage: str, upstream: str) -> str:
    """Stamp of one offline stage: its config sections (``STAGE_SECTIONS``) and the stamp of the stage before it."""
    return text_digest(section_hash(cfg, *STAGE_SECTIONS[stage]) + upstream)


def seed_hash(payload: dict) -> str:
    """Hash of the config one seed's training reads (``payload``: section -> dict), without ``SEED_FIELDS`` of the
    ``train`` section, so asking for more seeds keeps the ones already trained (``ADDED_AT_DEFAULT`` fields at their
    default are left out too)."""
    payload = {k: without_added_defaults(k, sec) if isinstance(sec, dict) else sec for k, sec in payload.items()}
    free = {k: ({f: v for f, v in sec.items() if f not in SEED_FIELDS} if k == "train" else sec)
            for k, sec in payload.items()}
    return digest(free)


CTR_SECTIONS = ("data", "model", "train", "ict", "retrieval")
SEQ_TRAIN_FIELDS = ("batch_size", "eval_batch_size", "patience", "max_steps_per_epoch", "amp", "grad_clip")
"""The train.* fields the sequential task reads (plus ``ict_weight_decay`` with the ICT); every other training
setting of the sequential task is in the ``seq`` section."""


def ctr_payload(cfg, model_name: str | None = None) -> dict:
    """What one seed of a CTR model reads: data, model (with only ``model_name``'s params), train, ict, retrieval.
    A base model leaves out the ICT-only L2 setting (so it keeps its cache when only that changes)."""
    payload = section_payload(cfg, *CTR_SECTIONS)
    payload["model"]["params"] = cfg.model.params_for(model_name or cfg.model.name)
    if not cfg.ict.enabled:
        payload["train"].pop("ict_weight_decay", None)
    baseline = getattr(cfg, "baseline", None)
    if baseline is not None and baseline.name:  # a baseline reads its own fields of its section; other models none
        fields = section_payload(cfg, "baseline")["baseline"]
        prefix = f"{baseline.name}_"
        payload["baseline"] = {k: v for k, v in fields.items()
                               if k in ("name", "residual") or k.startswith(prefix)
                               or (k in BASELINE_SHARED_FIELDS and baseline.name in ("textemb", "kar"))
                               or (k == "partial" and baseline.name in ("kd", "kar"))}
    return payload


BASELINE_SHARED_FIELDS = ("dim", "hidden", "dropout")
"""The ``baseline`` fields every feature baseline (textemb, kar) reads (``residual`` is hashed for any baseline once
set); the rest belong to the method their prefix names (``kd_*``, ``kar_*``), so changing a KAR budget never
retrains textemb or kd."""


def seq_payload(cfg, model_name: str, ict: bool) -> dict:
    """What one seed of a sequential model reads: the seq section (with only ``model_name``'s params), the
    ``SEQ_TRAIN_FIELDS`` of train (+ ``ict_weight_decay`` with the ICT), and with the ICT the ict and retrieval
    sections. ``train.lr``, ``train.weight_decay`` and ``train.max_epochs`` are not read (``seq.*`` are)."""
    d = cfg.to_dict()
    train = {k: d["train"][k] for k in SEQ_TRAIN_FIELDS + (("ict_weight_decay",) if ict else ())}
    seq = {**d["seq"], "params": cfg.seq.params_for(model_name)}
    base = cfg.baseline.name  # only when set: every existing sequential seed keeps its hash
    return {"seq": seq, "train": train, **({"ict": d["ict"], "retrieval": d["retrieval"]} if ict else {}),
            **({"baseline": {"name": base, "dropout": cfg.baseline.dropout}} if base else {})}


def ctr_config_hash(cfg, model_name: str | None = None) -> str:
    """The config hash of a CTR model's seeds (``seed_hash`` of ``ctr_payload``)."""
    return seed_hash(ctr_payload(cfg, model_name))


def seq_config_hash(cfg, model_name: str, ict: bool) -> str:
    return seed_hash(seq_payload(cfg, model_name, ict))


def model_cache_key(config_hash: str, *parts: object) -> str:
    """The ``config_hash`` recorded in a seed's result.json: the hash of what it read, the backbone name and the
    stamps of the upstream artifacts (``-``-joined; the first field is the config hash serving checks)."""
    return "-".join([config_hash, *(str(p) for p in parts)])


def key_config_hash(key: str) -> str:
    """The config-hash field of a ``model_cache_key``."""
    return str(key or "").split("-")[0]


# ---- stage caches -------------------------------------------------------------------------------------------------
RETRIEVAL_INPUTS = ("cot/selected.parquet", "embed/cot.npy", "embed/items.npy", "embed/item_ids.json",
                    "data/train.parquet", "data/valid.parquet", "data/test.parquet")


def retrieval_fingerprint(run_dir: Path, retrieval_cfg: dict) -> str:
    """What ``llmcf retrieve`` read: its config and the file state of its inputs (``RETRIEVAL_INPUTS``)."""
    parts = [json.dumps(without_added_defaults("retrieval", retrieval_cfg), sort_keys=True)]
    for rel in RETRIEVAL_INPUTS:
        st = (Path(run_dir) / rel).stat()
        parts.append(f"{rel}:{st.st_size}:{st.st_mtime_ns}")
    return text_digest("|".join(parts))


def seq_data_stamp(cfg) -> str:
    """Config the sequential samples are built from (data source, label rule, users, seed, history length)."""
    d = cfg.data
    return text_digest(json.dumps([d.dataset, d.format, d.label, d.rating_threshold, d.max_users, d.seed,
                                   cfg.seq.history_len]))


def seq_context_stamp(retrieval_fp: str | None, data_stamp: str | None, vocab_sha: str | None, train_rows: int) -> str:
    """In-context ids of the sequential rows: the retrieval stage's fingerprint and the seq samples they index."""
    return text_digest(json.dumps([retrieval_fp, data_stamp, vocab_sha, train_rows]))


def generation_id(parts: dict) -> str:
    """Identity of one CoT generation (pool, sampling, seed, shard size, model): shards of another id are stale."""
    return digest(parts, 12)


def pool_hash(system: str, keys: Iterable[str], prompts: Iterable[str]) -> str:
    """Hash of a CoT pool: the system prompt and every (row key, prompt) pair in order."""
    h = hashlib.sha256(system.encode())
    for k, p in zip(keys, prompts):
        h.update(b"\x1e" + k.encode() + b"\x1f" + p.encode())
    return h.hexdigest()[:16]


def recgen_fingerprint(recgen_cfg: dict, base: str, data_digest: str, dtype: str) -> str:
    """What the tuned RecGen model depends on (as the JSON text recorded with it): its config without evaluation,
    checkpointing and memory fields, the base model, the training mix and the dtype."""
    rec = {k: v for k, v in without_added_defaults("recgen", recgen_cfg).items()
           if not k.startswith("mmlu") and k not in ("eval_rows", "save_every", "skip", *NOT_HASHED["recgen"])}
    return json.dumps({"recgen": rec, "base": base, "data": data_digest, "dtype": dtype}, sort_keys=True, default=str)


def self_distill_key(base: str, samples: int, max_new_tokens: int, seed: int, prompts: list[str]) -> str:
    """Cache key of the base model's answers to the general prompts."""
    return text_digest(json.dumps([base, samples, max_new_tokens, seed, prompts]))


def records_digest(records: Iterable[dict]) -> str:
    """Order-sensitive hash of JSON-able records (e.g. the RecGen training examples)."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(r, sort_keys=True).encode())
    return h.hexdigest()[:16]


def embedding_key(model_id: str, text: str) -> str:
    """Key of one text in the on-disk embedding cache (full sha256 of model id + text)."""
    return text_digest(f"{model_id}\n{text}", None)


def encoder_slug(model_id: str) -> str:
    """Folder suffix of an encoder's embedding cache."""
    return text_digest(model_id, 12)
