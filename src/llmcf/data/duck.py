"""Sample building out of core (``data.engine: duckdb``): the same tables as the pandas engine, in bounded memory.

The interactions go into an on-disk DuckDB database in a temporary folder; ordering (``pos``), labels, the
``history`` lists (a window ``list(item_id)`` over the ``history_len`` rows strictly before each position), splits,
the vocabulary and the statistics are SQL over it, and each split is streamed to Parquet in row groups of
``ROW_GROUP_ROWS`` rows. DuckDB holds at most ``data.engine_memory`` and spills the rest to the temporary folder
(``TMPDIR``, default /tmp). What stays in Python memory is O(interactions) numbers, never a string per history
entry: the validated input columns, and for sampled negatives (implicit labels) the user / item codes the seeded
sampler of ``llmcf.data.samples`` draws from, so the draws are the pandas engine's, row for row.

Every rule is that of the pandas engine (``samples.py``, ``splits.py``, ``vocab.py``): strings sort by code point
(DuckDB's binary collation on UTF-8 = Python's ``sorted``), ties in time keep the input order, per-user split
counts come from ``splits.ratio_counts`` and time cuts from ``splits.time_cuts``. ``tests/test_data_engine.py``
asserts that both engines write equal tables.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from llmcf.config import DataConfig
from llmcf.data.checks import check_split_summary
from llmcf.data.samples import _frame, interaction_columns, sample_negatives, select_users
from llmcf.data.schema import SPLITS, RawDataset
from llmcf.data.splits import (LOO_RULE, RATIO_RULE, TIME_RULE, _ratios, check_method, finish_protocol, ratio_counts,
                               time_cuts)
from llmcf.data.vocab import Vocab
from llmcf.errors import DataError
from llmcf.io import atomic_path

ENGINES = ("auto", "pandas", "duckdb")
ROW_GROUP_ROWS = 1 << 17
"""Rows per Parquet row group of the split files this engine writes (a reader can stream them group by group)."""


def available() -> bool:
    try:
        import duckdb  # noqa: F401
    except ImportError:
        return False
    return True


def choose_engine(cfg: DataConfig, n_interactions: int) -> str:
    """``pandas`` or ``duckdb`` for ``cfg.engine`` (auto: duckdb from ``engine_auto_rows`` rows when installed)."""
    e = cfg.engine
    if e not in ENGINES:
        raise DataError(f"unknown data engine {e!r}; expected auto | pandas | duckdb", field="data.engine")
    if e == "duckdb" and not available():
        raise DataError("the duckdb engine needs the duckdb package: pip install 'llmcf[scale]' "
                        "(or data.engine: pandas)", field="data.engine")
    if e == "auto":
        e = "duckdb" if available() and n_interactions >= cfg.engine_auto_rows else "pandas"
    if e == "duckdb" and not re.fullmatch(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", str(cfg.engine_memory)):
        raise DataError(f"expected a size such as 2GB or 512MB, got {cfg.engine_memory!r}", field="data.engine_memory")
    return e


def _sample_schema(schema: pa.Schema) -> pa.Schema:
    """The split schema with the pandas metadata the pandas engine's files carry (so both read back alike): taken
    from a one-row frame made the way the pandas engine makes its frames."""
    one = _frame(np.array(["u"], dtype=object), np.zeros(1, dtype=np.int64), np.array(["i"], dtype=object),
                 np.ones(1, dtype=np.int8), np.ones(1), np.zeros(1), pa.array([["i"]], type=pa.large_list(pa.string())))
    return pa.Table.from_pandas(one, schema=schema, preserve_index=False).schema


class DuckSamples:
    """The CTR samples of one build in a DuckDB database; the interface ``build.PandasSamples`` also has."""

    def __init__(self, ds: RawDataset, cfg: DataConfig, rule: str, schema: pa.Schema):
        import duckdb

        self.cfg, self.rule, self.ds = cfg, rule, ds
        self.schema = _sample_schema(schema)
        self._tmp = tempfile.TemporaryDirectory(prefix="llmcf-duckdb-")
        tmp = Path(self._tmp.name)
        self.con = duckdb.connect(str(tmp / "build.duckdb"))
        self.con.execute(f"SET memory_limit = '{cfg.engine_memory}'")
        self.con.execute(f"SET temp_directory = '{tmp / 'spill'}'")
        self.con.execute("SET preserve_insertion_order = false")
        try:
            self._load(ds, cfg)
            self._samples(ds, cfg, rule)
            self._splits(ds, cfg)
        except BaseException:
            self.close()
            raise

    # ---- building ----------------------------------------------------------------------------------------------
    def _q(self, sql: str, *params):
        """Run ``sql``: None for a statement, else a relation to fetch from (each result read in full)."""
        return self.con.sql(sql, params=list(params) if params else None)

    def _load(self, ds: RawDataset, cfg: DataConfig) -> None:
        cols = interaction_columns(ds)
        n = len(cols["user_id"])
        src = {"user_id": pa.array(cols["user_id"], type=pa.string(), from_pandas=True),
               "item_id": pa.array(cols["item_id"], type=pa.string(), from_pandas=True),
               "timestamp": pa.array(cols["timestamp"], type=pa.float64()),
               "rating": pa.array(cols.get("rating", np.full(n, np.nan)), type=pa.float64(), from_pandas=True),
               "lab": pa.array(cols.get("label", np.full(n, np.nan)), type=pa.float64(), from_pandas=True),
               "_row": pa.array(np.arange(n, dtype=np.int64))}
        del cols
        self.con.register("src", pa.table(src))
        where = ""
        if cfg.max_users is not None:
            users = self._q("SELECT DISTINCT user_id FROM src").to_arrow_table().column(0).to_numpy(
                zero_copy_only=False)
            keep = select_users(users.astype(object), cfg.max_users, cfg.seed)
            self.con.register("keep", pa.table({"user_id": pa.array(keep, type=pa.string())}))
            where = "WHERE user_id IN (SELECT user_id FROM keep)"
        self._q(f"CREATE TABLE base AS SELECT * FROM src {where}")
        self.con.unregister("src")
        del src

    def _samples(self, ds: RawDataset, cfg: DataConfig, rule: str) -> None:
        L = int(cfg.history_len)
        if L < 0:
            raise DataError(f"expected history_len >= 0, got {L}", field="data.history_len")
        hist = ("[]::VARCHAR[]" if L == 0 else
                f"coalesce(list(item_id ORDER BY \"timestamp\", _row) OVER (w ROWS BETWEEN {L} PRECEDING AND "
                "1 PRECEDING), []::VARCHAR[])")
        self._q(f"""CREATE TABLE p AS SELECT user_id, (row_number() OVER w - 1)::BIGINT AS pos, item_id, rating, lab,
                    "timestamp", {hist} AS history FROM base
                    WINDOW w AS (PARTITION BY user_id ORDER BY "timestamp", _row)""")
        self._q("DROP TABLE base")
        where = ds.source or ds.name
        if rule == "rating":
            bad = self._first_sorted("rating IS NULL OR isnan(rating)")
            if bad:
                raise DataError(f"missing or non-numeric rating (sorted row {bad[0]}, user {bad[1]!r})",
                                file=where, field="rating")
            self.label = f"(rating >= {float(cfg.rating_threshold)!r})::TINYINT"
        elif rule == "column":
            bad = self._first_sorted("lab IS NULL OR lab NOT IN (0.0, 1.0)", "lab")
            if bad:
                found = np.float64(np.nan if bad[2] is None else bad[2])
                raise DataError(f"expected 0/1 labels, found {found!r} (user {bad[1]!r})", file=where, field="label")
            self.label = "lab::TINYINT"
        else:
            self.label = "1::TINYINT"
        self.negatives = rule == "implicit" and cfg.num_negatives > 0
        self._q("CREATE TABLE users AS SELECT user_id, (row_number() OVER (ORDER BY user_id) - 1)::BIGINT AS code, "
                "count AS n FROM (SELECT user_id, count(*) AS count FROM p GROUP BY user_id)")
        if self.negatives:
            self._draw_negatives(cfg)

    def _first_sorted(self, cond: str, extra: str = "NULL"):
        """(sorted row number, user id, extra value) of the first row in (user, pos) order matching ``cond``."""
        r = _first(self._q(f"SELECT user_id, pos, {extra} FROM p WHERE {cond} ORDER BY user_id, pos LIMIT 1"))
        if r is None:
            return None
        before = _first(self._q("SELECT count(*) FROM p WHERE user_id < ?", r[0]))[0]
        return int(before + r[1]), r[0], r[2]

    def _draw_negatives(self, cfg: DataConfig) -> None:
        k = cfg.num_negatives
        self._q("CREATE TABLE cat AS SELECT item_id, (row_number() OVER (ORDER BY item_id) - 1)::BIGINT AS code "
                "FROM (SELECT DISTINCT item_id FROM p)")
        n_items = _first(self._q("SELECT count(*) FROM cat"))[0]
        codes = self._q("SELECT u.code AS u, c.code AS i, p.pos FROM p JOIN users u USING (user_id) "
                        "JOIN cat c USING (item_id) ORDER BY u.code, p.pos").fetchnumpy()
        ucode, icode, pos = (np.asarray(codes[c], dtype=np.int64) for c in ("u", "i", "pos"))
        del codes
        neg = sample_negatives(ucode, icode, ucode, n_items, k, np.random.default_rng([cfg.seed, 1]), _Names(self))
        del icode
        self.con.register("negs_src", pa.table({"u": np.repeat(ucode, k), "pos": np.repeat(pos, k),
                                                "neg": np.tile(np.arange(1, k + 1, dtype=np.int64), len(ucode)),
                                                "icode": neg.ravel()}))
        del ucode, pos, neg
        self._q("CREATE TABLE negs AS SELECT * FROM negs_src")
        self.con.unregister("negs_src")

    def _splits(self, ds: RawDataset, cfg: DataConfig) -> None:
        method = check_method(cfg, ds.real_time, ds.source or ds.name)
        protocol: dict = {"split": method}
        if method in ("loo", "ratio"):
            u = self._q("SELECT code, n FROM users ORDER BY code").fetchnumpy()
            n = np.asarray(u["n"], dtype=np.int64)
            if method == "loo":
                big = n >= 3
                ntr, nv = np.where(big, n - 2, n), big.astype(np.int64)
                protocol["rule"] = LOO_RULE
            else:
                r = _ratios(cfg)
                ntr, nv, _ = ratio_counts(n, r)
                protocol["ratios"] = [float(x) for x in r]
                protocol["rule"] = RATIO_RULE
            self.con.register("cuts_src", pa.table({"code": np.asarray(u["code"], dtype=np.int64),
                                                    "ntr": ntr.astype(np.int64), "nv": nv.astype(np.int64)}))
            self._q("CREATE TABLE cuts AS SELECT * FROM cuts_src")
            self.con.unregister("cuts_src")
            split = "((p.pos >= c.ntr)::TINYINT + (p.pos >= c.ntr + c.nv)::TINYINT)"
            join = "JOIN users u USING (user_id) JOIN cuts c ON c.code = u.code"
        else:
            r = _ratios(cfg)
            ts = self._q('SELECT "timestamp" FROM p').fetchnumpy()["timestamp"]
            q1, q2 = time_cuts(np.asarray(ts, dtype=np.float64), r)
            del ts
            protocol.update(ratios=[float(x) for x in r], cut_timestamps=[q1, q2], rule=TIME_RULE)
            split = f'((p."timestamp" > {q1!r})::TINYINT + (p."timestamp" > {q2!r})::TINYINT)'
            join = "JOIN users u USING (user_id)"
        self.protocol = finish_protocol(protocol, cfg, self.rule)
        self._q(f"""CREATE TABLE ps AS SELECT p.user_id, p.pos, p.item_id, {self.label} AS label, p.rating,
                    p."timestamp", p.history, {split} AS split, u.code AS ucode FROM p {join}""")
        self._q("DROP TABLE p")
        pos_rows = ("SELECT user_id, pos, item_id, label, rating, \"timestamp\", history, split, 0::BIGINT AS neg "
                    "FROM ps")
        if self.negatives:
            self._q(f"""CREATE VIEW s AS {pos_rows} UNION ALL
                        SELECT ps.user_id, ps.pos, c.item_id, 0::TINYINT, NULL::DOUBLE, ps."timestamp", ps.history,
                               ps.split, n.neg FROM negs n JOIN ps ON ps.ucode = n.u AND ps.pos = n.pos
                        JOIN cat c ON c.code = n.icode""")
        else:
            self._q(f"CREATE VIEW s AS {pos_rows}")
        rows = self._q("SELECT split, count(*), count(DISTINCT user_id), count(DISTINCT item_id), "
                       "sum(label::BIGINT), min(label), max(label) FROM s GROUP BY split").fetchall()
        self._stats = {SPLITS[r[0]]: r[1:] for r in rows}
        self.kept = int(_first(self._q("SELECT count(*) FROM ps"))[0])

    # ---- the interface build_run_data uses -----------------------------------------------------------------------
    def summary(self) -> dict[str, tuple[int, int, int]]:
        return {s: (int(v[0]), int(v[4]), int(v[5])) if (v := self._stats.get(s)) else (0, 0, 0) for s in SPLITS}

    def check(self) -> None:
        """Refuse an empty or single-class split (``checks.check_splits``)."""
        check_split_summary(self.summary(), self.too_few, self.cfg, self.ds)

    def too_few(self) -> tuple[int, int]:
        return tuple(int(x) for x in _first(self._q("SELECT count(*) FILTER (WHERE n < 3), count(*) FROM users")))

    def vocab(self, items: pd.DataFrame | None) -> Vocab:
        users = self._q("SELECT DISTINCT user_id FROM ps WHERE split = 0").to_arrow_table().column(0).to_pylist()
        item_ids = self._q("SELECT DISTINCT item_id FROM s WHERE split = 0 UNION "
                           "SELECT DISTINCT unnest(history) FROM ps WHERE split = 0").to_arrow_table()
        item_list = sorted(x for x in item_ids.column(0).to_pylist() if x is not None)
        self._vocab = Vocab.from_ids(sorted(users), item_list, items)
        self.con.register("vu_src", pa.table({"user_id": pa.array(self._vocab.user, type=pa.string())}))
        self.con.register("vi_src", pa.table({"item_id": pa.array(self._vocab.item, type=pa.string())}))
        self._q("CREATE TABLE vu AS SELECT * FROM vu_src")
        self._q("CREATE TABLE vi AS SELECT * FROM vi_src")
        self._q("CREATE TABLE ti AS SELECT DISTINCT item_id FROM s WHERE split = 0")
        return self._vocab

    def write(self, split: str, path: Path) -> None:
        """The split's rows in (user, pos, negative) order, streamed to ``path`` (atomically) in row groups."""
        i = SPLITS.index(split)
        self._q("SET preserve_insertion_order = true")  # else the sorted result may stream out of order
        reader = self._q('SELECT user_id, pos, item_id, label, rating, "timestamp", history FROM s '
                              f"WHERE split = {i} ORDER BY user_id, pos, neg").to_arrow_reader(ROW_GROUP_ROWS)
        with atomic_path(path) as tmp:
            with pq.ParquetWriter(tmp, self.schema) as w:
                pending, rows = [], 0
                for batch in reader:  # batches of any size -> row groups of exactly ROW_GROUP_ROWS (the last less)
                    pending.append(batch)
                    rows += batch.num_rows
                    if rows >= ROW_GROUP_ROWS:
                        pending, rows = self._flush(w, pending, False)
                self._flush(w, pending, True)

    def _flush(self, w: pq.ParquetWriter, batches: list, last: bool) -> tuple[list, int]:
        t = pa.Table.from_batches(batches).combine_chunks() if batches else None
        done = 0
        while t is not None and t.num_rows - done >= (1 if last else ROW_GROUP_ROWS):
            part = t.slice(done, ROW_GROUP_ROWS)
            w.write_table(part.cast(self.schema), row_group_size=ROW_GROUP_ROWS)
            done += part.num_rows
        if t is None or done == t.num_rows:
            return [], 0
        rest = t.slice(done)
        return rest.to_batches(), rest.num_rows

    def split_stats(self, split: str) -> dict:
        rows, users, items, pos, _, _ = self._stats.get(split, (0, 0, 0, 0, 0, 0))
        rows, pos = int(rows), int(pos or 0)
        return {"users": int(users), "items": int(items), "rows": rows, "positives": pos,
                "positive_rate": pos / rows if rows else 0.0}

    def oov_rates(self, split: str, vocab: Vocab) -> dict:
        i = SPLITS.index(split)
        n, u, it = _first(self._q(f"""SELECT count(*), count(*) FILTER (WHERE vu.user_id IS NULL),
                               count(*) FILTER (WHERE vi.item_id IS NULL) FROM s
                               LEFT JOIN vu ON vu.user_id = s.user_id LEFT JOIN vi ON vi.item_id = s.item_id
                               WHERE s.split = {i}"""))
        return {"user": u / n, "item": it / n} if n else {"user": 0.0, "item": 0.0}

    def oov_ids(self, split: str) -> dict:
        """Share of the split's distinct users / items that never occur in train (train users = the user vocab;
        train items = train targets)."""
        i = SPLITS.index(split)
        out = {}
        for f, table in (("user", "vu"), ("item", "ti")):
            n, miss = _first(self._q(f"""SELECT count(*), count(*) FILTER (WHERE t.{f}_id IS NULL) FROM
                                  (SELECT DISTINCT {f}_id FROM s WHERE split = {i}) d
                                  LEFT JOIN {table} t ON t.{f}_id = d.{f}_id"""))
            out[f] = miss / n if n else 0.0
        return out

    def close(self) -> None:
        try:
            self.con.close()
        finally:
            self._tmp.cleanup()


def _first(rel):
    """The first row of a relation, or None."""
    rows = rel.fetchall()
    return rows[0] if rows else None


class _Names:
    """User ids by code, looked up only for an error message."""

    def __init__(self, db: DuckSamples):
        self.db = db

    def __getitem__(self, code: int) -> str:
        return _first(self.db._q("SELECT user_id FROM users WHERE code = ?", int(code)))[0]
