"""`Scorer`: a trained CTR model of a run directory, scoring (user, history, candidates) requests in one process.

What a request goes through (the whole online path of LLM-CF; the LLM is never called):
    1. ids -> vocabulary ids (unknown user / items -> the out-of-vocabulary id 1; such an item has no id embedding
       of its own and no text embedding, and the result says so per candidate);
    2. for an LLM-CF model, retrieval of K in-context examples per (user, candidate) pair from the saved bank and
       FAISS indexes, batched over the candidates of the request (the same selection as ``llmcf retrieve``);
    3. one forward pass of backbone + ICT over all candidates; scores are sigmoid(logit), as in evaluation. The bank
       rows' example tokens (features, CoT, label) are computed once at load (``ICT.cache_examples``), so a request
       computes only its own candidates' features tokens and the decoder.

Position and the leakage rule: bank rows are train rows; the rule forbids a row of the same user at the same or a
later position than the query. An online request comes after every logged interaction of its user, so its default
position is ``ONLINE_POS`` (the largest int64), which forbids none of the user's rows: they are all in the past. Pass
``pos`` explicitly to score a logged row exactly as the batch evaluation did (the test split's rows also follow every
train row of their user, so both give the same examples for them; they differ only in the seeded example order).

Loading: ``Scorer.load(run_dir, "DIN+llmcf")`` (``llmcf.serve.loading``); explanations: ``llmcf.serve.explainer``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from llmcf.data.schema import OOV
from llmcf.errors import LLMCFError
from llmcf.fingerprint import files_fingerprint
from llmcf.rundir import RunDir
from llmcf.serve.loading import load_served, watched_files

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


class Scorer:
    """One loaded model; immutable once built (a refresh builds a new Scorer: see ``reload``)."""

    def __init__(self, run_dir: str | Path, model_tag: str, seed: int | None = None, device: str = "cpu"):
        """Load models/<model_tag>/seed_<seed> of ``run_dir`` (tags: ``DIN``, ``DIN+llmcf``, ``DIN+llmcf-no_cot``,
        ...; seed None = the seed with the best validation AUC). Same as ``Scorer.load``."""
        m = load_served(run_dir, model_tag, seed, device)
        self.served, self.device_name = m, device
        self.run_dir, self.tag, self.requested_seed, self.cfg = m.run_dir, m.tag, m.requested_seed, m.cfg
        self.seed, self.result, self.model_name, self.model = m.seed, m.result, m.model_name, m.model
        self.warnings, self.ict, self.loaded_at = m.warnings, m.ict, m.loaded_at
        self.vocab, self.items, self.schema = m.inputs.vocab, m.inputs.items, m.inputs.schema
        self.hist_len = m.inputs.hist_len
        self.sim_input = bool(self.ict and m.cfg.ict.sim_input)  # the ICT reads each example's retrieval score
        self.loaded_fingerprint = m.fingerprint
        self.version = m.version
        """Names what is loaded: the tag, the seed and the ``fingerprint`` of the files when loading began."""
        if self.ict:
            self.retriever, self.cot_texts = m.retriever, m.cot_texts
            self.context = m.context.bank  # the ContextBank: gathers the ICT's ctx_* tensors
            self.item_text, self.text_known = m.context.item_text, m.context.text_known
            self.bank_frame = self.retriever.bank.frame
        self._explainer = None

    @classmethod
    def load(cls, run_dir: str | Path, model_tag: str, seed: int | None = None, device: str = "cpu") -> "Scorer":
        """Load a trained model of a run directory (see ``__init__``; ``device``: ``serve.device``)."""
        return cls(run_dir, model_tag, seed, device)

    def reload(self) -> "Scorer":
        """A new Scorer from the same run, tag and seed choice, reading the files as they are now."""
        return type(self)(self.run_dir, self.tag, self.requested_seed, self.device_name)

    def watched_files(self) -> list[Path]:
        """Files whose change means a new model or bank: the model's weights and the retrieval stage's outputs."""
        return watched_files(self.run_dir, self.tag, self.seed, self.requested_seed, self.ict)

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
                  pos: np.ndarray, shared: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """(bank rows [B, K], their retrieval scores or None): same as ``Retriever.query`` (and so as the offline
        precomputation); a request's history mean is computed once for all its candidates. The scores are kept only
        for a model trained with ``ict.sim_input`` (they are its ``ctx_sim`` input)."""
        if shared:
            out = self.retriever.query_shared(users[0], histories[0], items, pos, with_scores=self.sim_input)
        else:
            out = self.retriever.query(users, pos, histories, items, with_scores=self.sim_input)
        return out if self.sim_input else (out, None)

    @torch.inference_mode()
    def _forward(self, batch: dict, ctx: np.ndarray | None, attention: bool = False,
                 sim: np.ndarray | None = None) -> dict:
        if ctx is not None:
            batch = {**batch, **self.context.gather_rows(ctx)}  # the ICT holds the bank's example tokens
        if sim is not None:
            batch["ctx_sim"] = torch.from_numpy(sim)
        from llmcf.train.device import model_device, to_device

        batch = to_device(batch, model_device(self.model))
        out = self.model(batch, return_attention=True) if attention else self.model(batch)
        return {"scores": torch.sigmoid(out["logit"]).float().cpu().numpy(),
                "logits": out["logit"].float().cpu().numpy(),
                "attention": out["attention"].float().cpu().numpy() if attention else None}

    def score_rows(self, users: Sequence[str | None], histories: Sequence[Sequence[str]], items: Sequence[str],
                   pos: Sequence[int] | np.ndarray | None = None, logits: bool = False) -> np.ndarray:
        """Probabilities (``logits``: the logits) for N independent rows (each its own user, history, item and
        position; default ``ONLINE_POS``), e.g. the rows of a split file: the numbers the batch evaluation gives."""
        n = len(items)
        if not (len(users) == len(histories) == n):
            raise ValueError(f"rows differ in length: users {len(users)}, histories {len(histories)}, items {n}")
        hists = [self._clean_history(h)[0] for h in histories]
        users = [None if u is None else str(u) for u in users]
        items = [str(i) for i in items]
        p = np.full(n, ONLINE_POS, np.int64) if pos is None else np.asarray(pos, np.int64).reshape(-1)
        ctx, sim = self._retrieve(users, hists, items, p, shared=False) if self.ict else (None, None)
        return self._forward(self._batch(users, hists, items, shared=False), ctx,
                             sim=sim)["logits" if logits else "scores"]

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
        ctx, sim = self._retrieve([user] * len(items), [hist], items, p, shared=True) if self.ict else (None, None)
        batch = self._batch([user], [hist], items, shared=True)
        return self._result(items, self._forward(batch, ctx, sim=sim)["scores"], batch, len(hist), cut, user, ctx)

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

    def forget_now(self, users: Sequence[str]) -> int:
        """Never retrieve the bank rows of ``users`` again (``Selector.block_users``); returns the rows blocked."""
        return self.retriever.selector.block_users(users) if self.ict else 0

    # ---- explanations -------------------------------------------------------------------------------------------
    def explain(self, candidate: str, history: Sequence[str] = (), user: str | None = None,
                pos: int | None = None):
        """The retrieved in-context examples of one (user, candidate) pair with their CoT texts and labels, and the
        share of the decoder's last-position attention on each example's tokens (``llmcf.serve.explainer``)."""
        if not self.ict:
            raise ValueError(f"the served model {self.tag} has no in-context module, so there is nothing to explain: "
                             f"serve an LLM-CF model (e.g. {self.model_name}+llmcf)")
        if self._explainer is None:
            from llmcf.serve.explainer import Explainer

            self._explainer = Explainer(self)
        return self._explainer.explain(candidate, history, user, pos)

    def score_with_attention(self, item: str, history: Sequence[str], user: str | None, pos: int | None) -> dict:
        """One (user, history, item) scored with the decoder attention: {"result", "attention", "history"}."""
        hist, cut = self._clean_history(history)
        user = None if user is None else str(user)
        p = np.array([ONLINE_POS if pos is None else int(pos)], np.int64)
        ctx, sim = self._retrieve([user], [hist], [item], p, shared=True)
        batch = self._batch([user], [hist], [item], shared=True)
        out = self._forward(batch, ctx, attention=True, sim=sim)
        return {"result": self._result([item], out["scores"], batch, len(hist), cut, user, ctx),
                "attention": out["attention"], "history": hist}

    def _dataset_name(self) -> str:
        try:
            return str(RunDir(self.run_dir).read_stats().get("dataset") or self.cfg.data.dataset)
        except LLMCFError:
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
            d["bank"] = {**self.retriever.describe(), "cot_texts": any(t is not None for t in self.cot_texts)}
        return d

