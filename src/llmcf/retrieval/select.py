"""Balanced, leakage-safe selection of in-context examples, vectorised over batches of queries.

For each query (user, pos, key): the best ``k - k//2`` positive and ``k//2`` negative bank rows (``balanced``), or
the best ``k`` over both labels, never a row of the same user at the same or a later position (``leakage:
same_or_later``; ``later`` forbids only strictly later positions, the original code's rule). A query with user
None (an unknown user at serving time) has no same-user rule. Each label bucket is searched with ``k' = need +
margin`` results, filtered, and only the queries still short are searched again with a 4x larger k' (up to the whole
bucket), so the result is exact for a flat index. The selected rows come in a random order seeded by ``cfg.seed`` and
the query itself (user, pos, target), so it is deterministic and independent of batching; missing slots (a short
bucket) are -1 and always at the end of the row.

``selection: random`` (a control) keeps all of that except the similarity: each label bucket's rows are drawn
uniformly at random per query (seeded by the same per-query seed, without repeats, the leakage rule applied), and
their scores are 0.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import faiss
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from llmcf.config import ConfigError, RetrievalConfig
from llmcf.lookup import IdIndex
from llmcf.retrieval.index import search

RULES = ("same_or_later", "later")
SELECTIONS = ("similar", "random")
_GROWTH = 4


def check_config(cfg: RetrievalConfig) -> None:
    if cfg.leakage not in RULES:
        raise ConfigError(f"retrieval.leakage='{cfg.leakage}': expected one of {', '.join(RULES)}")
    if cfg.selection not in SELECTIONS:
        raise ConfigError(f"retrieval.selection='{cfg.selection}': expected one of {', '.join(SELECTIONS)}")
    if cfg.k < 1:
        raise ConfigError(f"retrieval.k={cfg.k}: expected a positive integer")
    if cfg.margin < 0 or cfg.query_batch < 1:
        raise ConfigError("retrieval.margin must be >= 0 and retrieval.query_batch >= 1")


def query_seeds(seed: int, users: Sequence[str | None], pos: np.ndarray, targets: Sequence[str | None]) -> np.ndarray:
    """A stable 64-bit seed per query (blake2b of seed, user, pos, target), independent of the process."""
    out = np.empty(len(pos), np.uint64)
    salt = str(int(seed)).encode()
    for i, (u, p, t) in enumerate(zip(users, pos.tolist(), targets)):
        h = hashlib.blake2b(f"{u}\x1f{p}\x1f{t}".encode(), digest_size=8, key=salt)
        out[i] = int.from_bytes(h.digest(), "little")
    return out


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (uint64 -> well-spread uint64)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def shuffle_order(ctx: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Column order [N, k] permuting each row's valid entries by its seed, -1 entries last."""
    n, k = ctx.shape
    with np.errstate(over="ignore"):
        slots = seeds[:, None] + np.arange(1, k + 1, dtype=np.uint64)[None, :] * np.uint64(0x9E3779B97F4A7C15)
    keys = _mix(slots)
    keys[ctx < 0] = np.iinfo(np.uint64).max
    return np.argsort(keys, axis=1, kind="stable")


def shuffle_rows(ctx: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Permute each row's valid entries by its seed; -1 entries go to the end."""
    return np.take_along_axis(ctx, shuffle_order(ctx, seeds), axis=1)


class Selector:
    """Selection over one index per label. ``indexes[label]`` holds the bank rows ``np.flatnonzero(labels == label)``
    in order; returned ids are bank row indices (int64)."""

    def __init__(self, bank_users: Sequence[str], bank_pos: np.ndarray, bank_labels: np.ndarray,
                 indexes: dict[int, faiss.Index], cfg: RetrievalConfig):
        check_config(cfg)
        self.cfg = cfg
        self.users = IdIndex(pd.unique(np.asarray([str(u) for u in bank_users], dtype=object)))
        self.bank_user = self.users.positions([str(u) for u in bank_users])
        self.bank_pos = np.asarray(bank_pos, dtype=np.int64)
        labels = np.asarray(bank_labels)
        self.rows = {lab: np.flatnonzero(labels == lab).astype(np.int64) for lab in (0, 1)}
        self.indexes = indexes
        self.blocked = np.zeros(len(self.bank_user), dtype=bool)
        """Bank rows never returned (``block_users``: a forgotten user's rows, until the bank is rebuilt)."""
        self.stats = {"searches": 0, "re_searched_queries": 0}
        """Counters: FAISS search calls, and queries searched again because the leakage filter left them short."""
        for lab in (0, 1):
            nt = indexes[lab].ntotal
            if nt != len(self.rows[lab]):
                raise ValueError(f"index for label {lab} holds {nt} vectors, the bank {len(self.rows[lab])} rows")

    def user_codes(self, users: Sequence[str | None]) -> np.ndarray:
        """Bank user code per query user; -1 for None or a user without bank rows (no same-user rule applies)."""
        return self.users.positions(["\x00none" if u is None else str(u) for u in users])

    def forbidden(self, rows: np.ndarray, ucode: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Mask of candidate bank rows [N, k] the leakage rule forbids for queries (ucode [N], pos [N])."""
        safe = np.where(rows >= 0, rows, 0)
        same = (self.bank_user[safe] == ucode[:, None]) & (ucode[:, None] >= 0) & (rows >= 0)
        rpos = self.bank_pos[safe]
        later = rpos >= pos[:, None] if self.cfg.leakage == "same_or_later" else rpos > pos[:, None]
        return (same & later) | (self.blocked[safe] & (rows >= 0))

    def block_users(self, users: Sequence[str]) -> int:
        """Never return the bank rows of ``users`` again (one array swap: a concurrent query sees the old mask or
        the new one). Returns the number of rows blocked."""
        codes = self.users.positions([str(u) for u in users])
        mask = self.blocked | np.isin(self.bank_user, codes[codes >= 0])
        self.blocked = mask
        return int(mask.sum())

    def _top_valid(self, label: int, keys: np.ndarray, ucode: np.ndarray, pos: np.ndarray,
                   m: int) -> tuple[np.ndarray, np.ndarray]:
        """Best ``m`` allowed rows of one label bucket: (rows [N, m] with -1 padding, scores with -inf padding)."""
        n = len(keys)
        out_r = np.full((n, m), -1, np.int64)
        out_s = np.full((n, m), -np.inf, np.float32)
        index, rows_map = self.indexes[label], self.rows[label]
        ntotal = int(index.ntotal)
        if ntotal == 0 or m == 0 or n == 0:
            return out_r, out_s
        todo = np.arange(n)
        k, first = m + int(self.cfg.margin), True
        while todo.size:
            k = min(k, ntotal)
            sc, ids = search(index, keys[todo], k, self.cfg)
            self.stats["searches"] += 1
            if not first:
                self.stats["re_searched_queries"] += int(todo.size)
            first = False
            if ids.shape[1] < m:  # bucket smaller than m: pad
                pad = m - ids.shape[1]
                ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
                sc = np.pad(sc, ((0, 0), (0, pad)), constant_values=-np.inf)
            g = np.where(ids >= 0, rows_map[np.maximum(ids, 0)], -1)
            ok = (g >= 0) & ~self.forbidden(g, ucode[todo], pos[todo])
            order = np.argsort(~ok, axis=1, kind="stable")[:, :m]  # allowed first, score order kept
            sel_ok = np.take_along_axis(ok, order, axis=1)
            sel_r = np.where(sel_ok, np.take_along_axis(g, order, axis=1), -1)
            sel_s = np.where(sel_ok, np.take_along_axis(sc, order, axis=1), -np.inf)
            # done: enough allowed rows, the whole bucket seen, or an approximate index ran out of reachable rows
            done = (ok.sum(axis=1) >= m) | (k >= ntotal) | (ids[:, -1] < 0)
            out_r[todo[done]], out_s[todo[done]] = sel_r[done], sel_s[done]
            todo = todo[~done]
            k *= _GROWTH
        return out_r, out_s

    def _random_valid(self, rows_map: np.ndarray, salt: int, ucode: np.ndarray, pos: np.ndarray, seeds: np.ndarray,
                      m: int) -> tuple[np.ndarray, np.ndarray]:
        """``m`` allowed rows of ``rows_map`` drawn uniformly without repeats per query (``selection: random``):
        (rows [N, m] with -1 padding, scores 0 with -inf padding, as ``_top_valid``)."""
        n, nb = len(pos), len(rows_map)
        out_r = np.full((n, m), -1, np.int64)
        if nb and m and n:
            tries = m + int(self.cfg.margin)
            with np.errstate(over="ignore"):
                slots = (seeds ^ np.uint64(salt))[:, None] + \
                    np.arange(1, tries + 1, dtype=np.uint64)[None, :] * np.uint64(0x9E3779B97F4A7C15)
            g = rows_map[(_mix(slots) % np.uint64(nb)).astype(np.int64)]
            eq = g[:, :, None] == g[:, None, :]
            repeat = np.tril(eq, -1).any(axis=2)  # equal to an earlier draw of the same query
            ok = ~repeat & ~self.forbidden(g, ucode, pos)
            order = np.argsort(~ok, axis=1, kind="stable")[:, :m]
            out_r = np.where(np.take_along_axis(ok, order, axis=1), np.take_along_axis(g, order, axis=1), -1)
            for i in np.flatnonzero(ok.sum(axis=1) < m):  # rare: draw from the whole bucket, in a seeded order
                perm = rows_map[np.random.default_rng(int(seeds[i]) ^ salt).permutation(nb)]
                allowed = perm[~self.forbidden(perm[None, :], ucode[i:i + 1], pos[i:i + 1])[0]][:m]
                out_r[i] = -1
                out_r[i, :len(allowed)] = allowed
        return out_r, np.where(out_r >= 0, 0.0, -np.inf).astype(np.float32)

    def select_batch(self, keys: np.ndarray, ucode: np.ndarray, pos: np.ndarray, seeds: np.ndarray,
                     with_scores: bool = False):
        """[N, k] bank rows; with ``with_scores`` also their retrieval scores [N, k] float32 (0 for a missing
        slot), in the same (shuffled) order."""
        k = int(self.cfg.k)
        at_random = self.cfg.selection == "random"
        if at_random and not self.cfg.balanced:
            every = np.arange(len(self.bank_user), dtype=np.int64)
            ctx, sc = self._random_valid(every, 3, ucode, pos, seeds, k)
        elif self.cfg.balanced:
            def pick(label: int, m: int):
                # salts 1 (positives) and 2 (negatives): the draws every recorded random-control run used
                return self._random_valid(self.rows[label], 2 - label, ucode, pos, seeds, m) if at_random \
                    else self._top_valid(label, keys, ucode, pos, m)

            (rp, sp), (rn, sn) = pick(1, k - k // 2), pick(0, k // 2)
            ctx, sc = np.concatenate([rp, rn], axis=1), np.concatenate([sp, sn], axis=1)
        else:
            rp, sp = self._top_valid(1, keys, ucode, pos, k)
            rn, sn = self._top_valid(0, keys, ucode, pos, k)
            r, s = np.concatenate([rp, rn], axis=1), np.concatenate([sp, sn], axis=1)
            order = np.argsort(-s, axis=1, kind="stable")[:, :k]
            ctx, sc = np.take_along_axis(r, order, axis=1), np.take_along_axis(s, order, axis=1)
        order = shuffle_order(ctx, seeds)
        ctx = np.take_along_axis(ctx, order, axis=1)
        if not with_scores:
            return ctx
        sc = np.take_along_axis(sc, order, axis=1)
        return ctx, np.where(ctx >= 0, sc, 0.0).astype(np.float32)

    def select(self, keys: np.ndarray, users: Sequence[str | None], pos: np.ndarray,
               targets: Sequence[str | None], progress: bool = False, desc: str = "retrieve",
               with_scores: bool = False):
        """[N, k] int64 bank rows for N queries (keys from ``bank.compose_keys``); -1 where a bucket is short. With
        ``with_scores``: (rows, scores [N, k] float32), a score being the key inner product (0 for a missing slot)."""
        pos = np.asarray(pos, dtype=np.int64)
        if not (len(keys) == len(users) == len(pos) == len(targets)):
            raise ValueError(f"query arrays differ in length: keys {len(keys)}, users {len(users)}, pos {len(pos)}, "
                             f"targets {len(targets)}")
        keys = np.ascontiguousarray(keys, dtype=np.float32)
        ucode = self.user_codes(users)
        seeds = query_seeds(self.cfg.seed, users, pos, targets)
        out = np.full((len(keys), int(self.cfg.k)), -1, np.int64)
        scores = np.zeros((len(keys), int(self.cfg.k)), np.float32)
        bs = int(self.cfg.query_batch)
        for a in tqdm(range(0, len(keys), bs), desc=desc, unit="batch", disable=not progress):
            b = slice(a, a + bs)
            out[b], scores[b] = self.select_batch(keys[b], ucode[b], pos[b], seeds[b], with_scores=True)
        return (out, scores) if with_scores else out

    def violations(self, ctx: np.ndarray, users: Sequence[str | None], pos: np.ndarray) -> int:
        """Number of selected ids that break the leakage rule (a post-check: must be 0)."""
        return int(self.forbidden(ctx, self.user_codes(users), np.asarray(pos, dtype=np.int64)).sum())

    def same_position_hits(self, ctx: np.ndarray, users: Sequence[str | None], pos: np.ndarray) -> int:
        """Selected ids of the query's own user at the query's position (only possible with ``leakage: later``)."""
        safe = np.where(ctx >= 0, ctx, 0)
        ucode = self.user_codes(users)
        same = (self.bank_user[safe] == ucode[:, None]) & (ucode[:, None] >= 0) & (ctx >= 0)
        return int((same & (self.bank_pos[safe] == np.asarray(pos, np.int64)[:, None])).sum())
