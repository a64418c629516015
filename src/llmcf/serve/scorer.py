"""`Scorer`: a trained CTR model of a run directory, scoring (user, history, candidates) requests in one process.

What a request goes through (the whole online path of LLM-CF; the LLM is never called):
    1. ids -> vocabulary ids (unknown user / items -> the out-of-vocabulary id 1; such an item has no id embedding
       of its own and no text embedding, and the result says so per candidate);
    2. for an LLM-CF model, retrieval of K in-context examples per (user, candidate) pair from the saved bank and
       FAISS indexes, batched over the candidates of the request (the same selection as ``llmcf retrieve``);
    3. one forward pass of backbone + ICT over all candidates; scores are sigmoid(logit), as in evaluation.

Position and the leakage rule: bank rows are train rows; the rule forbids a row of the same user at the same or a
later position than the query. An online request comes after every logged interaction of its user, so its default
position is ``ONLINE_POS`` (the largest int64), which forbids none of the user's rows: they are all in the past. Pass
``pos`` explicitly to score a logged row exactly as the batch evaluation did (the test split's rows also follow every
train row of their user, so both give the same examples for them; they differ only in the seeded example order).

Loading: ``Scorer.load(run_dir, "DIN+llmcf")`` reads run_dir/models/<tag>/config.yaml (the config the model was
trained with), the seed's model.safetensors (default seed: best validation AUC), the vocabulary, and for LLM-CF
models the bank, indexes, CoT embeddings and item text matrix (the ICT's text buffers are not in the state dict).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from llmcf.config import load_config
from llmcf.data.schema import OOV
from llmcf.errors import DataError, RunError
from llmcf.fingerprint import ctr_config_hash, files_fingerprint, key_config_hash

ONLINE_POS = int(np.iinfo(np.int64).max)
"""Default query position of an online request: after every logged row of its user (no bank row is excluded)."""


@dataclass
class ScoreResult:
    """Scores of one request, in candidate order. ``known``: the item is in the vocabulary; ``text``: the model
    used a text embedding for it (None for a backbone without the ICT, which reads no text)."""

    items: list[str]
    scores: np.ndarray
    known: np.ndarray
    text: np.ndarray | None
    user_known: bool
    history_used: int
    history_unknown: int
    history_truncated: int
    ctx: np.ndarray | None = None
    """[B, K] in-context bank rows per candidate (-1 = missing), LLM-CF models only."""
    notes: list[str] = field(default_factory=list)

    def top(self, k: int) -> list[int]:
        """Indices of the k best candidates, best first (ties keep request order)."""
        return np.argsort(-self.scores, kind="stable")[:k].tolist()


def _pick_seed(tag_dir: Path, seed: int | None) -> tuple[int, dict]:
    """(seed, result.json) of the requested seed, or of the one with the best validation AUC (ties: lowest seed)."""
    found = {}
    for d in sorted(tag_dir.glob("seed_*")):
        r, w = d / "result.json", d / "model.safetensors"
        if r.exists() and w.exists():
            try:
                found[int(d.name[5:])] = json.loads(r.read_text())
            except (ValueError, json.JSONDecodeError) as e:
                raise DataError(f"unreadable result: {e}", file=str(r)) from e
    if not found:
        raise RunError(f"{tag_dir}: no trained seed (seed_*/model.safetensors + result.json); train it with "
                       f"`llmcf train --run {tag_dir.parent.parent} ...` first")
    if seed is None:
        seed = min(found, key=lambda s: (-float(found[s].get("valid", {}).get("auc", float("-inf"))), s))
    elif seed not in found:
        raise RunError(f"{tag_dir}: no trained seed {seed} (have {sorted(found)})")
    return seed, found[seed]


class Scorer:
    """One loaded model; immutable once built (a refresh builds a new Scorer: see ``reload``)."""

    def __init__(self, run_dir: str | Path, model_tag: str, seed: int | None = None):
        """Load models/<model_tag>/seed_<seed> of ``run_dir`` (tags: ``DIN``, ``DIN+llmcf``, ``DIN+llmcf-no_cot``,
        ...; seed None = the seed with the best validation AUC). Same as ``Scorer.load``."""
        from safetensors.torch import load_file

        from llmcf.data.features import make_schema
        from llmcf.data.vocab import Vocab
        from llmcf.models.llmcf_model import build_model

        run_dir = Path(run_dir)
        tag_dir = run_dir / "models" / model_tag
        if not tag_dir.is_dir():
            have = sorted(p.name for p in (run_dir / "models").iterdir()) if (run_dir / "models").is_dir() else []
            raise RunError(f"{tag_dir}: no such model (trained models here: {', '.join(have) or 'none'})")
        cfg_path = tag_dir / "config.yaml"
        if not cfg_path.exists():
            raise RunError(f"{cfg_path}: missing (written by `llmcf train`)")
        cfg = load_config(cfg_path)
        self.run_dir, self.tag, self.requested_seed, self.cfg = run_dir, model_tag, seed, cfg
        self.seed, self.result = _pick_seed(tag_dir, seed)
        self.ict = bool(cfg.ict.enabled)
        fingerprint = self.fingerprint()  # before reading: a file changing while we load shows up as a new version
        self.model_name = str(self.result.get("model", model_tag.split("+")[0]))
        self.warnings: list[str] = []
        want = key_config_hash(self.result.get("config_hash", ""))
        have = ctr_config_hash(cfg, self.model_name)
        if want and want != have:
            self.warnings.append(f"{cfg_path} was rewritten after seed {self.seed} was trained (config hash {have} "
                                 f"!= {want} in result.json): the weights loaded, but retrain if scores look off")
        vpath = run_dir / "data" / "vocab.json"
        if not vpath.exists():
            raise RunError(f"{vpath}: missing; run `llmcf data build --out {run_dir}` first")
        self.vocab = Vocab.load(vpath)
        self.hist_len = int(cfg.data.history_len)
        self.items = pd.read_parquet(run_dir / "data" / "items.parquet")
        self.schema = make_schema(self.vocab, self.items, self.hist_len)
        if self.ict:
            self._load_context()
            model = build_model(self.model_name, self.schema, cfg.model, cfg.ict,
                                item_text=torch.from_numpy(self.item_text), cot_dim=self.context.cot_dim)
        else:
            model = build_model(self.model_name, self.schema, cfg.model, None)
        wpath = tag_dir / f"seed_{self.seed}" / "model.safetensors"
        try:
            state = load_file(str(wpath))
        except Exception as e:  # safetensors raises its own error type for a damaged file
            raise RunError(f"{wpath}: unreadable weights ({e}); retrain or restore the file") from e
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as e:  # shape mismatch: the data or model config changed since training
            raise RunError(f"{wpath} does not fit the model built from {cfg_path} and the run's vocabulary "
                           f"({str(e).strip().splitlines()[-1].strip()}): retrain with `llmcf train`") from e
        if missing or unexpected:
            raise RunError(f"{wpath}: weights do not match {self.model_name} (missing {missing[:3]}, unexpected "
                           f"{unexpected[:3]}): retrain with `llmcf train`")
        self.model = model.eval()
        self.loaded_at = time.time()
        self.loaded_fingerprint = fingerprint
        self.version = f"{self.tag}@seed{self.seed}:{fingerprint}"
        """Names what is loaded: the tag, the seed and the ``fingerprint`` of the files when loading began."""

    @classmethod
    def load(cls, run_dir: str | Path, model_tag: str, seed: int | None = None) -> "Scorer":
        """Load a trained model of a run directory (see ``__init__``)."""
        return cls(run_dir, model_tag, seed)

    def _load_context(self) -> None:
        from llmcf.models.context import ContextBank, item_text_matrix
        from llmcf.retrieval.stage import Retriever

        run_dir = self.run_dir
        self.retriever = Retriever.load(run_dir)  # the retrieval config the in-context ids were built with
        rc, mc = self.retriever.cfg, self.cfg.retrieval
        if (rc.k, rc.history_weight, rc.target_weight, rc.leakage, rc.balanced) != \
                (mc.k, mc.history_weight, mc.target_weight, mc.leakage, mc.balanced):
            self.warnings.append("retrieval/meta.json and the model's config.yaml disagree on retrieval settings; "
                                 "serving with the ones of retrieval/meta.json (those of the saved index)")
        self.context = ContextBank.from_run(run_dir, self.vocab, self.hist_len)
        self.bank_frame = self.retriever.bank.frame
        if len(self.bank_frame) != len(self.context):
            raise RunError(f"{run_dir}/retrieval: bank.parquet and the ContextBank disagree; rerun `llmcf retrieve`")
        self.item_text = item_text_matrix(run_dir, self.vocab)
        self.text_known = np.abs(self.item_text).sum(1) > 0
        sel_path = run_dir / "cot" / "selected.parquet"
        self.cot_texts: list[str | None] = [None] * len(self.bank_frame)
        if sel_path.exists():
            sel = pd.read_parquet(sel_path)
            aligned = len(sel) == len(self.bank_frame) and "cot" in sel.columns and \
                (sel["user_id"].astype(str).to_numpy() == self.bank_frame["user_id"].to_numpy()).all() and \
                (sel["pos"].to_numpy(np.int64) == self.bank_frame["pos"].to_numpy(np.int64)).all()
            if aligned:
                self.cot_texts = sel["cot"].astype(str).tolist()
            else:
                self.warnings.append(f"{sel_path} no longer matches retrieval/bank.parquet (rerun `llmcf retrieve`): "
                                     "explanations come without CoT texts")

    def reload(self) -> "Scorer":
        """A new Scorer from the same run, tag and seed choice, reading the files as they are now."""
        return type(self)(self.run_dir, self.tag, self.requested_seed)

    def watched_files(self) -> list[Path]:
        """Files whose change means a new model or bank: the model's weights and the retrieval stage's outputs."""
        tag_dir = self.run_dir / "models" / self.tag
        files = [tag_dir / "summary.json", tag_dir / "config.yaml", tag_dir / f"seed_{self.seed}" / "model.safetensors"]
        if self.requested_seed is None:
            files += sorted(tag_dir.glob("seed_*/model.safetensors"))
        if self.ict:
            r = self.run_dir / "retrieval"
            files += [r / "meta.json", r / "bank.parquet", r / "index_pos.faiss", r / "index_neg.faiss",
                      self.run_dir / "embed" / "cot.npy", self.run_dir / "embed" / "items.npy"]
        return files

    def fingerprint(self) -> str:
        """Hash of the sizes and modification times of ``watched_files`` (changes when the offline stage writes)."""
        return files_fingerprint(self.watched_files())

    # ---- scoring ------------------------------------------------------------------------------------------------
    def _clean_history(self, history: Sequence[str] | None) -> tuple[list[str], int]:
        hist = [str(h) for h in (history or [])]
        cut = max(0, len(hist) - self.hist_len)
        return (hist[cut:] if self.hist_len > 0 else []), cut

    def _batch(self, users: Sequence[str | None], histories: Sequence[list[str]], items: Sequence[str],
               shared: bool) -> dict[str, torch.Tensor]:
        from llmcf.data.features import encode_history

        n = len(items)
        uid = self.vocab.encode_users([u for u in users]) if not shared else \
            np.repeat(self.vocab.encode_users([users[0]]), n)
        if shared:
            h, hl = encode_history([histories[0]], self.vocab, self.hist_len)
            h, hl = np.repeat(h, n, 0), np.repeat(hl, n)
        else:
            h, hl = encode_history(list(histories), self.vocab, self.hist_len)
        return {"user": torch.from_numpy(uid), "item": torch.from_numpy(self.vocab.encode_items(list(items))),
                "hist": torch.from_numpy(h), "hist_len": torch.from_numpy(hl),
                "label": torch.zeros(n, dtype=torch.float32)}

    def _retrieve(self, users: Sequence[str | None], histories: Sequence[list[str]], items: Sequence[str],
                  pos: np.ndarray, shared: bool) -> np.ndarray:
        """Same as ``Retriever.query`` (and so as the offline precomputation); a request's history mean is computed
        once for all its candidates."""
        from llmcf.retrieval.bank import compose_keys

        r = self.retriever
        hm = r.items.history_means([histories[0]] if shared else list(histories))
        if shared:
            hm = np.repeat(hm, len(items), 0)
        t = r.items.targets(list(items)) if r.cfg.target_weight > 0 else None
        keys = compose_keys(hm, t, r.cfg)
        return r.selector.select(keys, list(users), pos, [str(i) for i in items])

    @torch.inference_mode()
    def _forward(self, batch: dict, ctx: np.ndarray | None, attention: bool = False) -> dict:
        if ctx is not None:
            batch = {**batch, **self.context.gather(ctx)}
        out = self.model(batch, return_attention=True) if attention else self.model(batch)
        return {"scores": torch.sigmoid(out["logit"]).float().numpy(),
                "attention": out["attention"].float().numpy() if attention else None}

    def score_rows(self, users: Sequence[str | None], histories: Sequence[Sequence[str]], items: Sequence[str],
                   pos: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Probabilities for N independent rows (each its own user, history, item and position; default
        ``ONLINE_POS``), e.g. the rows of a split file: the numbers the batch evaluation gives for them."""
        n = len(items)
        if not (len(users) == len(histories) == n):
            raise ValueError(f"rows differ in length: users {len(users)}, histories {len(histories)}, items {n}")
        hists = [self._clean_history(h)[0] for h in histories]
        users = [None if u is None else str(u) for u in users]
        items = [str(i) for i in items]
        p = np.full(n, ONLINE_POS, np.int64) if pos is None else np.asarray(pos, np.int64).reshape(-1)
        ctx = self._retrieve(users, hists, items, p, shared=False) if self.ict else None
        return self._forward(self._batch(users, hists, items, shared=False), ctx)["scores"]

    def score(self, candidates: Sequence[str], history: Sequence[str] = (), user: str | None = None,
              pos: int | None = None) -> ScoreResult:
        """Score every candidate item for one user (id optional, unknown allowed) with their recent items
        (``history``, oldest first; only the last ``data.history_len`` are used). ``pos`` defaults to ``ONLINE_POS``."""
        items = [str(c) for c in candidates]
        if not items:
            raise ValueError("no candidates to score")
        hist, cut = self._clean_history(history)
        user = None if user is None else str(user)
        p = np.full(len(items), ONLINE_POS if pos is None else int(pos), np.int64)
        ctx = self._retrieve([user] * len(items), [hist], items, p, shared=True) if self.ict else None
        batch = self._batch([user], [hist], items, shared=True)
        return self._result(items, self._forward(batch, ctx)["scores"], batch, len(hist), cut, user, ctx)

    def _result(self, items, scores, batch, n_hist, cut, user, ctx) -> ScoreResult:
        """ScoreResult of one request (one user and history: row 0 of the encoded batch)."""
        ids = batch["item"].numpy()
        known = ids > OOV
        text = self.text_known[ids] if self.ict else None
        hist_unknown = int((batch["hist"][0] == OOV).sum())
        user_known = user is not None and int(batch["user"][0]) > OOV
        notes = []
        unknown = [i for i, k in zip(items, known) if not k]
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            notes.append(f"{len(unknown)} candidate(s) not in the training vocabulary ({shown}): scored as the "
                         "out-of-vocabulary item, which has no id embedding of its own and no text embedding")
        if self.ict:
            no_text = [i for i, k, t in zip(items, known, text) if k and not t]
            if no_text:
                notes.append(f"{len(no_text)} known candidate(s) have no text embedding (e.g. {no_text[0]!r})")
        if user is not None and not user_known:
            notes.append(f"user {user!r} is not in the training vocabulary: scored as the unknown user")
        if hist_unknown:
            notes.append(f"{hist_unknown} history item(s) are not in the training vocabulary (out-of-vocabulary id)")
        if cut:
            notes.append(f"history cut to its last {self.hist_len} items (the model's history length)")
        return ScoreResult(items=items, scores=scores, known=known, text=text, user_known=user_known,
                           history_used=n_hist, history_unknown=hist_unknown, history_truncated=cut, ctx=ctx,
                           notes=notes)

    # ---- explanations -------------------------------------------------------------------------------------------
    def explain(self, candidate: str, history: Sequence[str] = (), user: str | None = None,
                pos: int | None = None) -> dict:
        """The retrieved in-context examples of one (user, candidate) pair with their CoT texts and labels, and the
        share of the decoder's last-position attention (last layer, mean over heads) on each example's tokens."""
        if not self.ict:
            raise ValueError(f"the served model {self.tag} has no in-context module, so there is nothing to explain: "
                             f"serve an LLM-CF model (e.g. {self.model_name}+llmcf)")
        item = str(candidate)
        hist, cut = self._clean_history(history)
        user = None if user is None else str(user)
        p = np.array([ONLINE_POS if pos is None else int(pos)], np.int64)
        ctx = self._retrieve([user], [hist], [item], p, shared=True)
        batch = self._batch([user], [hist], [item], shared=True)
        out = self._forward(batch, ctx, attention=True)
        res = self._result([item], out["scores"], batch, len(hist), cut, user, ctx)
        att = out["attention"][0].mean(0)  # [T] over the tokens, mean over heads
        ict = self.model.ict
        names = ict.token_names(ctx.shape[1])
        r = self.retriever
        qkey = self._query_key(hist, item)
        examples = []
        for slot, row in enumerate(ctx[0].tolist()):
            toks = {n[0]: float(att[t]) for t, n in enumerate(names) if n[1:] == str(slot + 1)}
            if row < 0:
                examples.append({"slot": slot + 1, "bank_row": None, "missing": True, "attention": 0.0})
                continue
            b = self.bank_frame.iloc[row]
            bkey = np.concatenate([np.sqrt(r.cfg.history_weight) * r.bank.hist[row],
                                   np.sqrt(r.cfg.target_weight) * r.bank.target[row]]) \
                if r.cfg.target_weight > 0 else np.sqrt(r.cfg.history_weight) * r.bank.hist[row]
            label = int(b["label"])
            examples.append({
                "slot": slot + 1, "bank_row": int(row), "missing": False, "user_id": str(b["user_id"]),
                "pos": int(b["pos"]), "item_id": str(b["item_id"]), "title": self._title(str(b["item_id"])),
                "label": label,
                "decision": self.cfg.data.positive_verb if label == 1 else self.cfg.data.negative_verb,
                "cot": self.cot_texts[row], "similarity": float(np.dot(qkey, bkey)),
                "attention": float(sum(toks.values())), "token_attention": toks,
                "history": [str(h) for h in b["history"]][-self.hist_len:],
            })
        query_att = float(att[-1])
        return {"item_id": item, "title": self._title(item), "score": float(res.scores[0]),
                "known": bool(res.known[0]), "text": bool(res.text[0]), "user_known": res.user_known,
                "examples": examples, "query_attention": query_att,
                "missing_examples": int((ctx[0] < 0).sum()), "reason": self._reason(examples, item),
                "notes": res.notes, "tokens": names, "heads": int(out["attention"].shape[1])}

    def _query_key(self, hist: list[str], item: str) -> np.ndarray:
        from llmcf.retrieval.bank import compose_keys

        r = self.retriever
        t = r.items.targets([item]) if r.cfg.target_weight > 0 else None
        return compose_keys(r.items.history_means([hist]), t, r.cfg)[0]

    def _title(self, item_id: str) -> str | None:
        if not hasattr(self, "_titles"):
            t = self.items.set_index(self.items["item_id"].astype(str))
            self._titles = t["title"].astype(str).to_dict() if "title" in t.columns else {}
        title = self._titles.get(item_id)
        return title or None

    def _reason(self, examples: list[dict], item: str) -> str:
        present = [e for e in examples if not e["missing"]]
        if not present:
            return "no in-context example could be retrieved: the score comes from the backbone and the query alone"
        top = max(present, key=lambda e: e["attention"])
        what = top["title"] or top["item_id"]
        text = f"Most attended example ({top['attention']:.0%} of the query's attention): user {top['user_id']} " \
               f"{top['decision']} {what!r}"
        if top["cot"]:
            cot = " ".join(top["cot"].split())
            text += f". Its reasoning: {cot[:400]}{'…' if len(cot) > 400 else ''}"
        return text

    def _dataset_name(self) -> str:
        stats = self.run_dir / "data" / "stats.json"
        try:
            return str(json.loads(stats.read_text()).get("dataset") or self.cfg.data.dataset)
        except (OSError, json.JSONDecodeError):
            return self.cfg.data.dataset

    # ---- description --------------------------------------------------------------------------------------------
    def info(self) -> dict:
        import faiss
        import platform

        import llmcf

        d = {"model": self.tag, "backbone": self.model_name, "llmcf": self.ict,
             "variant": self.cfg.ict.variant if self.ict else None, "seed": self.seed, "version": self.version,
             "run_dir": str(self.run_dir), "dataset": self._dataset_name(), "history_len": self.hist_len,
             "vocabulary": {"users": len(self.vocab.user), "items": len(self.vocab.item)},
             "metrics": {"valid": self.result.get("valid"), "test": self.result.get("test")},
             "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
             "params": int(sum(p.numel() for p in self.model.parameters())),
             "versions": {"llmcf": llmcf.__version__, "torch": torch.__version__, "faiss": faiss.__version__,
                          "python": platform.python_version()},
             "warnings": self.warnings}
        if self.ict:
            r = self.retriever
            d["bank"] = {"rows": len(self.bank_frame), "positives": int((r.bank.labels == 1).sum()),
                         "negatives": int((r.bank.labels == 0).sum()), "k": int(r.cfg.k), "balanced": r.cfg.balanced,
                         "leakage": r.cfg.leakage, "index": r.cfg.index,
                         "cot_texts": any(t is not None for t in self.cot_texts)}
        return d

