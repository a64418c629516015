"""Amazon review data (McAuley lab): 2014, 2018 and 2023 releases, plain or gzipped JSON lines.

2014: ``reviews_<Cat>[_5].json.gz`` + ``meta_<Cat>.json.gz`` (Python dict literals, read with ast.literal_eval).
2018: ``<Cat>[_5].json.gz`` + ``meta_<Cat>.json.gz`` (JSON).  2023: ``<Cat>.jsonl.gz`` + ``meta_<Cat>.jsonl.gz``
(item = parent_asin, brand = store, timestamps in ms → seconds). A review is a purchase (label_hint "implicit"); its
star rating is kept as ``rating``. Only items that occur in the reviews are read from the meta file; reviewed items
without metadata get empty text. Duplicate meta records of one item: the first is kept (known in these dumps).
"""
from __future__ import annotations

import ast
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from llmcf.data.schema import RawDataset
from llmcf.errors import DataError

from . import validate as V
from .assemble import Part, finish
from .table import Table, iter_lines

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Version:
    reviews: re.Pattern
    meta_ext: tuple[str, ...]
    user: str
    item: str
    rating: str
    time: str
    time_scale: float
    meta_item: str
    brand: str
    cats: str


VERSIONS = {
    "2014": Version(re.compile(r"^reviews_(?P<cat>.+?)(?:_5)?\.json(?:\.gz)?$"), (".json.gz", ".json"),
                    "reviewerID", "asin", "overall", "unixReviewTime", 1.0, "asin", "brand", "categories"),
    "2018": Version(re.compile(r"^(?!meta_|reviews_)(?P<cat>.+?)(?:_5)?\.json(?:\.gz)?$"), (".json.gz", ".json"),
                    "reviewerID", "asin", "overall", "unixReviewTime", 1.0, "asin", "brand", "category"),
    "2023": Version(re.compile(r"^(?!meta_)(?P<cat>.+?)\.jsonl(?:\.gz)?$"), (".jsonl.gz", ".jsonl"),
                    "user_id", "parent_asin", "rating", "timestamp", 1e-3, "parent_asin", "store", "categories"),
}
_PRICE = re.compile(r"^\$?\s*([0-9][0-9,]*(?:\.[0-9]+)?)$")


@dataclass
class Found:
    version: str
    reviews: Path
    meta: Path | None
    category: str


def finder(version: str):
    """find(path) for one release: a folder with one review file, or the review file itself."""
    v = VERSIONS[version]

    def find(path: Path) -> Found | None:
        if path.is_file():
            files = [path] if v.reviews.match(path.name) else []
        else:
            files = sorted(p for p in path.iterdir() if p.is_file() and v.reviews.match(p.name))
        if not files:
            return None
        if len(files) > 1:
            raise DataError(f"several Amazon {version} review files ({', '.join(p.name for p in files)}); expected one,"
                            f" or pass the review file itself", file=str(path))
        cat = v.reviews.match(files[0].name)["cat"]
        metas = [files[0].parent / f"meta_{cat}{ext}" for ext in v.meta_ext]
        return Found(version, files[0], next((m for m in metas if m.is_file()), None), cat)

    return find


def load(found: Found) -> RawDataset:
    v = VERSIONS[found.version]
    inter = _reviews(found.reviews, v)
    if found.meta is None:
        log.warning("no meta_%s file next to %s: items have no text", found.category, found.reviews)
        items = None
    else:
        items = _meta(found.meta, v, set(inter.frame["item_id"]))
    return finish(found.category, f"amazon{found.version}:{found.reviews}", inter, items, None, "implicit",
                  strict_items=False)


MAX_LINE_CHARS = 4 << 20
"""Longest JSON line read (4 Mi characters; real review and product records are under 100 k)."""
MAX_DEPTH = 64
"""Deepest nesting of lists/objects accepted in a record (real records nest 3 levels)."""


def _depth(line: str) -> int:
    """Upper bound of the bracket nesting of ``line`` (brackets inside strings counted too: only ever too high)."""
    depth = best = 0
    for ch in line:
        if ch in "[{(":
            depth += 1
            if depth > best:
                best = depth
        elif ch in "]})":
            depth -= 1
    return best


def _record(path: Path, no: int, line: str, literal: bool) -> dict:
    if len(line) > MAX_LINE_CHARS:
        raise DataError(f"line of {len(line):,} characters; expected one record of at most {MAX_LINE_CHARS:,}",
                        file=str(path), line=no)
    if line.count("[") + line.count("{") > MAX_DEPTH and _depth(line) > MAX_DEPTH:
        raise DataError(f"record nested deeper than {MAX_DEPTH} levels; expected a flat review or product record",
                        file=str(path), line=no)
    try:
        rec = json.loads(line)
    except RecursionError:
        raise DataError("record nested too deeply to read; expected a flat review or product record",
                        file=str(path), line=no) from None
    except ValueError:
        rec = None
        if literal:
            try:
                rec = ast.literal_eval(line)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                pass
        if rec is None:
            raise DataError("expected one JSON object" + (" or Python dict literal" if literal else "") + " per line",
                            file=str(path), line=no) from None
    if not isinstance(rec, dict):
        raise DataError(f"expected an object, found {type(rec).__name__}", file=str(path), line=no)
    return rec


def _reviews(path: Path, v: Version) -> Part:
    keys = [v.user, v.item, v.rating, v.time]
    cols: dict[str, list] = {k: [] for k in keys}
    labels: list = []
    lines: list[int] = []
    for no, line in iter_lines(path):
        rec = _record(path, no, line, literal=False)
        for k in keys:
            if k not in rec:
                raise DataError(f"missing field; expected a review with {', '.join(keys)}", file=str(path), line=no,
                                field=k)
            val = rec[k]
            if not isinstance(val, (str, int, float)) or isinstance(val, bool):
                raise DataError(f"expected a string or a number, found {type(val).__name__}", file=str(path),
                                line=no, field=k)
            cols[k].append(val)
        labels.append(rec.get("label"))
        lines.append(no)
    if not lines:
        raise DataError("empty file: expected at least one review", file=str(path), line=1)
    df = pd.DataFrame({k: pd.Series(c, dtype=object) for k, c in cols.items()})
    has_label = any(x is not None for x in labels)
    if has_label:
        df["label"] = pd.Series(labels, dtype=object)
    t = Table(str(path), df, np.asarray(lines, dtype=np.int64))
    out = pd.DataFrame({"user_id": V.ids(t, v.user), "item_id": V.ids(t, v.item),
                        "timestamp": V.floats(t, v.time, required=True) * v.time_scale,
                        "rating": V.floats(t, v.rating, required=True)})
    if has_label:
        out["label"] = V.labels(t, "label")
    return Part(out, t)


def _meta(path: Path, v: Version, wanted: set[str]) -> Part:
    key = re.compile(r"""["']%s["']\s*:\s*["']([^"']+)["']""" % re.escape(v.meta_item))
    seen: dict[str, int] = {}
    rows: list[tuple] = []
    lines: list[int] = []
    has_price = False
    n_dup = 0
    for no, line in iter_lines(path):
        m = key.search(line)
        if m is not None and m.group(1).strip() not in wanted:
            continue
        rec = _record(path, no, line, literal=True)
        if v.meta_item not in rec:
            raise DataError(f"missing field; expected a product record with '{v.meta_item}'", file=str(path),
                            line=no, field=v.meta_item)
        item = str(rec[v.meta_item]).strip()
        if item not in wanted:
            continue
        if item in seen:
            n_dup += 1
            continue
        seen[item] = no
        has_price |= "price" in rec
        rows.append((item, rec.get("title"), rec.get(v.brand), _cats(rec.get(v.cats), path, no, v.cats),
                     _price(rec.get("price"))))
        lines.append(no)
    if n_dup:
        log.warning("%s: %d duplicate product records ignored (the first of each is kept)", path, n_dup)
    if not rows:
        log.warning("%s describes none of the reviewed items", path)
    item, title, brand, cats, price = (list(x) for x in zip(*rows)) if rows else ([], [], [], [], [])
    df = pd.DataFrame({"item_id": pd.Series(item, dtype=object), "title": V.clean_text(title),
                       "brand": V.clean_text(brand), "categories": pd.Series(cats, dtype=object)})
    if has_price:
        df["price"] = np.asarray(price, dtype=np.float64)
    return Part(df, Table(str(path), df, np.asarray(lines, dtype=np.int64)))


def _cats(value, path: Path, no: int, field: str) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise DataError(f"expected a list of category names, found {type(value).__name__}", file=str(path), line=no,
                        field=field)
    if value and isinstance(value[0], list):  # 2014: a list of category paths; the first is the product's own
        value = value[0]
    return [c for c in V.clean_text(value) if c]


def _price(value) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        m = _PRICE.match(value.strip())
        if m:
            return float(m.group(1).replace(",", ""))
    return float("nan")
