"""Raw MovieLens folders (GroupLens layouts, latin-1 text).

ml-100k: ``u.data`` (user, item, rating, time; tab), ``u.item`` (``|``, 19 genre flags), ``u.user``.
ml-1m / ml-10m: ``ratings.dat``, ``movies.dat`` (genres split on ``|``), ``users.dat`` (``::``-separated).
ml-latest / ml-20m / ml-25m: ``ratings.csv`` and ``movies.csv`` (CSV with header).
Titles keep their year, e.g. "Toy Story (1995)".
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from llmcf.data.schema import RawDataset
from llmcf.errors import DataError

from . import validate as V
from .assemble import Part, finish
from .table import Table, read_delimited

ENC = "latin-1"
GENRES_100K = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
               "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
               "Western"]
INTER = ["user_id", "item_id", "rating", "timestamp"]


@dataclass
class Found:
    folder: Path
    layout: str  # "100k" | "dat" | "csv"


def find(path: Path) -> Found | None:
    folder = path if path.is_dir() else path.parent
    if (folder / "u.data").is_file():
        return Found(folder, "100k")
    if (folder / "ratings.dat").is_file():
        return Found(folder, "dat")
    if (folder / "ratings.csv").is_file() and (folder / "movies.csv").is_file():
        return Found(folder, "csv")
    return None


def load(found: Found) -> RawDataset:
    f = found.folder
    if found.layout == "100k":
        inter = _inter(read_delimited(f / "u.data", "\t", names=INTER, encoding=ENC)[1])
        items = _items_100k(f) if (f / "u.item").is_file() else None
        users = _users(f / "u.user", "|", ["user_id", "age", "gender", "occupation", "zip_code"])
    elif found.layout == "dat":
        inter = _inter(read_delimited(f / "ratings.dat", "::", names=INTER, encoding=ENC)[1])
        items = _items_dat(f / "movies.dat") if (f / "movies.dat").is_file() else None
        users = _users(f / "users.dat", "::", ["user_id", "gender", "age", "occupation", "zip_code"])
    else:
        inter = _inter(_csv(f / "ratings.csv", {"userId": "user_id", "movieId": "item_id", "rating": "rating",
                                                 "timestamp": "timestamp"}))
        items = _items_csv(f / "movies.csv")
        users = None
    return finish(f.name, f"movielens:{f}", inter, items, users, "rating")


def _inter(t: Table) -> Part:
    df = pd.DataFrame({"user_id": V.ids(t, "user_id"), "item_id": V.ids(t, "item_id"),
                       "timestamp": V.floats(t, "timestamp", required=True),
                       "rating": V.floats(t, "rating", required=True)})
    return Part(df, t)


def _csv(path: Path, mapping: dict[str, str]) -> Table:
    header, t = read_delimited(path, ",", quoted=True, encoding="utf-8")
    header = [h.strip() for h in header]
    V.require(t, list(mapping), header, path.name)
    t.df.columns = header
    t.df = t.df.rename(columns=mapping)
    return t


def _items_100k(folder: Path) -> Part:
    genres = GENRES_100K
    if (folder / "u.genre").is_file():
        _, g = read_delimited(folder / "u.genre", "|", names=["name", "index"], encoding=ENC)
        idx = V.floats(g, "index", required=True, field="genre index").astype(int).to_numpy()
        genres = [""] * (int(idx.max()) + 1)
        for name, i in zip(g.df["name"], idx):
            genres[i] = name.strip()
    names = ["item_id", "title", "release_date", "video_release_date", "url"] + genres
    _, t = read_delimited(folder / "u.item", "|", names=names, encoding=ENC)
    flags = np.zeros((len(t.df), len(genres)), dtype=bool)
    for j, g in enumerate(genres):
        col = t.df[g].astype(str).str.strip()
        bad = ~col.isin(["0", "1"]).to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"expected a genre flag 0 or 1, found {t.df[g].iloc[i]!r}", file=t.file,
                            line=t.line(i), field=g)
        flags[:, j] = (col == "1").to_numpy()
    cats = [[genres[j] for j in np.flatnonzero(row)] for row in flags]
    df = pd.DataFrame({"item_id": V.ids(t, "item_id"), "title": V.clean_text(t.df["title"]),
                       "brand": [""] * len(t.df), "categories": cats})
    return Part(df, t)


def _items_dat(path: Path) -> Part:
    _, t = read_delimited(path, "::", names=["item_id", "title", "genres"], encoding=ENC)
    return _movie_items(t)


def _items_csv(path: Path) -> Part:
    return _movie_items(_csv(path, {"movieId": "item_id", "title": "title", "genres": "genres"}))


def _movie_items(t: Table) -> Part:
    cats = [[g.strip() for g in str(v).split("|") if g.strip() and g.strip() != "(no genres listed)"]
            for v in t.df["genres"]]
    df = pd.DataFrame({"item_id": V.ids(t, "item_id"), "title": V.clean_text(t.df["title"]),
                       "brand": [""] * len(t.df), "categories": cats})
    return Part(df, t)


def _users(path: Path, sep: str, names: list[str]) -> Part | None:
    if not path.is_file():
        return None
    _, t = read_delimited(path, sep, names=names, encoding=ENC)
    df = pd.DataFrame({c: V.clean_text(t.df[c]) for c in names})
    df["user_id"] = V.ids(t, "user_id")
    return Part(df, t)
