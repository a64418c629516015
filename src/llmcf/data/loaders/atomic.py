"""RecBole atomic files: ``<prefix>.inter`` (required), ``<prefix>.item`` and ``<prefix>.user`` (optional).

Tab-separated, line 1 is a ``name:type`` header (types token, token_seq, float, float_seq). Fields may be CSV-quoted
(as written by pandas/csv). Interactions use user_id, item_id and optionally timestamp, rating, label; item text comes
from title | movie_title (+ release_year → "Title (1995)"), brand, and categories | class | genre.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd

from llmcf.data.schema import RawDataset
from llmcf.errors import DataError

from . import validate as V
from .assemble import Part, finish
from .table import Table, read_delimited

TYPES = ("token", "token_seq", "float", "float_seq")
CATEGORY_FIELDS = ("categories", "class", "genre")
TITLE_FIELDS = ("title", "movie_title")


def find(path: Path) -> Path | None:
    """The file prefix of the atomic dataset at ``path`` (a folder, a prefix or one of its files), or None."""
    if path.is_dir():
        found = sorted(path.glob("*.inter"))
        if len(found) > 1:
            raise DataError(f"several .inter files ({', '.join(p.name for p in found)}); expected one, or pass the "
                            f"file prefix (e.g. {found[0].with_suffix('')})", file=str(path))
        return found[0].with_suffix("") if found else None
    if path.suffix in (".inter", ".item", ".user") and path.with_suffix(".inter").is_file():
        return path.with_suffix("")
    if Path(f"{path}.inter").is_file():
        return path
    return None


def load(prefix: Path, *, name: str | None = None, source: str | None = None) -> RawDataset:
    prefix = Path(prefix)
    inter_t, inter_types = _read(Path(f"{prefix}.inter"))
    item_file, user_file = Path(f"{prefix}.item"), Path(f"{prefix}.user")
    items = _items(*_read(item_file)) if item_file.is_file() else None
    users = _users(*_read(user_file)) if user_file.is_file() else None
    inter = _interactions(inter_t, inter_types)
    hint = "rating" if "rating" in inter.frame.columns else "implicit"
    return finish(name or prefix.name, source or f"atomic:{prefix}", inter, items, users, hint)


def _read(path: Path) -> tuple[Table, dict[str, str]]:
    header, t = read_delimited(path, "\t", quoted=True)
    names, types = [], {}
    for cell in header:
        name, colon, typ = cell.strip().partition(":")
        if not colon or typ not in TYPES or not name:
            raise DataError(f"header cell {cell!r}: expected name:type with type one of {', '.join(TYPES)}",
                            file=str(path), line=1, field=cell)
        if name in types:
            raise DataError("field listed twice in the header", file=str(path), line=1, field=name)
        names.append(name)
        types[name] = typ
    t.df.columns = names
    for n, typ in types.items():  # type check every numeric field (empty values allowed here)
        if typ == "float":
            V.floats(t, n, required=False)
        elif typ == "float_seq":
            _float_seq(t, n)
    return t, types


def _float_seq(t: Table, col: str) -> None:
    parts = t.df[col].astype(str).str.split().explode()
    parts = parts[parts.notna() & (parts != "")]
    bad = pd.to_numeric(parts, errors="coerce").isna()
    if bad.any():
        row = int(parts.index[bad.to_numpy()][0])
        raise DataError(f"expected space-separated numbers, found {t.df[col].iloc[row]!r}", file=t.file,
                        line=t.line(row), field=col)


def _interactions(t: Table, types: dict[str, str]) -> Part:
    V.require(t, ["user_id", "item_id"], list(types), "interactions")
    out = {"user_id": V.ids(t, "user_id"), "item_id": V.ids(t, "item_id")}
    for c in ("timestamp", "rating"):
        if c in types:
            out[c] = V.floats(t, c, required=True)
    if "label" in types:
        out["label"] = V.labels(t, "label")
    return Part(pd.DataFrame(out), t)


def _items(t: Table, types: dict[str, str]) -> Part:
    V.require(t, ["item_id"], list(types), "items")
    df = t.df
    n = len(df)
    item_id = V.ids(t, "item_id")
    tf = next((c for c in TITLE_FIELDS if c in types), None)
    title = V.clean_text(df[tf]) if tf else [""] * n
    if "release_year" in types:
        years = V.clean_text(df["release_year"])
        title = [f"{a} ({y})" if a and y else a for a, y in zip(title, years)]
    brand = V.clean_text(df["brand"]) if "brand" in types else [""] * n
    cf = next((c for c in CATEGORY_FIELDS if c in types), None)
    cats = _categories(t, cf, types[cf]) if cf else [[] for _ in range(n)]
    out = pd.DataFrame({"item_id": item_id, "title": title, "brand": brand, "categories": cats})
    if types.get("price") == "float":
        out["price"] = V.floats(t, "price", required=False)
    return Part(out, t)


def _users(t: Table, types: dict[str, str]) -> Part:
    V.require(t, ["user_id"], list(types), "users")
    out = pd.DataFrame({c: V.clean_text(t.df[c]) for c in types})
    out["user_id"] = V.ids(t, "user_id")
    return Part(out[["user_id"] + [c for c in types if c != "user_id"]], t)


def _categories(t: Table, col: str, typ: str) -> list[list[str]]:
    cache: dict[str, list[str]] = {}
    out = []
    for row, raw in enumerate(t.df[col].astype(str)):
        v = raw.strip()
        if v not in cache:
            try:
                cache[v] = parse_categories(v, sequence=typ == "token_seq", quoted_list=col == "categories")
            except ValueError as e:
                raise DataError(f"{e}, found {v[:60]!r}", file=t.file, line=t.line(row), field=col) from None
        out.append(list(cache[v]))
    return out


def parse_categories(v: str, *, sequence: bool = True, quoted_list: bool = True) -> list[str]:
    """Category names from one field.

    ``'Beauty', 'Makeup'`` or ``['Beauty', 'Makeup']`` (quoted names, read with ``ast.literal_eval``, never eval);
    otherwise for the ``categories`` field a comma-separated list, else (RecBole token_seq) space-separated names.
    """
    if not v:
        return []
    if quoted_list and v[0] in "'\"[":
        try:
            parsed = ast.literal_eval(v if v[0] == "[" else f"[{v}]")
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise ValueError("expected a comma-separated list of quoted names such as 'Beauty', 'Makeup'") from None
        if parsed and all(isinstance(x, list) for x in parsed):
            parsed = parsed[0]
        if not isinstance(parsed, list) or not all(isinstance(x, str) for x in parsed):
            raise ValueError("expected a list of quoted names such as 'Beauty', 'Makeup'")
        return [" ".join(x.split()) for x in parsed if x.strip()]
    if quoted_list and "," in v:
        return [x.strip() for x in v.split(",") if x.strip()]
    return v.split() if sequence else [v]
