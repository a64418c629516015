"""Id vocabularies built from the train split only: id = index + 2 (0 = padding, 1 = out-of-vocabulary)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from llmcf.data.samples import flatten_lists
from llmcf.data.schema import OOV
from llmcf.errors import DataError
from llmcf.io import atomic_write_json

VOCAB_FIELDS = ("user", "item", "brand", "category")


def _unique(values) -> list[str]:
    """Sorted distinct strings (nulls dropped)."""
    arr = pa.array(values, type=pa.string(), from_pandas=True) if not isinstance(values, pa.Array) else values
    return sorted(x for x in pc.unique(arr).to_pylist() if x is not None)


@dataclass
class Vocab:
    """Sorted id lists per field. Build with :meth:`from_train`; encode with :meth:`encode` (unknown → 1)."""

    user: list[str]
    item: list[str]
    brand: list[str] = field(default_factory=list)
    category: list[str] = field(default_factory=list)

    def __post_init__(self):
        self._index: dict[str, pa.Array] = {}
        for f in VOCAB_FIELDS:
            values = [str(x) for x in getattr(self, f)]
            if len(set(values)) != len(values):
                dup = pd.Index(values)[pd.Index(values).duplicated()][0]
                raise DataError(f"vocabulary '{f}' lists {dup!r} twice", field=f)
            setattr(self, f, values)
            self._index[f] = pa.array(values, type=pa.string())

    @classmethod
    def from_train(cls, train: pd.DataFrame, items: pd.DataFrame | None = None) -> "Vocab":
        """Users of train rows; items that are train targets or in train histories; brands and categories of
        those items (from the items table; empty strings are not vocabulary)."""
        users = _unique(train["user_id"])
        hist, _ = flatten_lists(train["history"])
        item_list = _unique(np.concatenate([train["item_id"].to_numpy(dtype=object), hist]))
        return cls.from_ids(users, item_list, items)

    @classmethod
    def from_ids(cls, users: list[str], item_list: list[str], items: pd.DataFrame | None = None) -> "Vocab":
        """The vocabulary of these (sorted, distinct) user and item ids, with the brands and categories of those
        items from the items table."""
        brands: list[str] = []
        cats: list[str] = []
        if items is not None and len(items):
            known = items[items["item_id"].astype(str).isin(item_list)]
            if "brand" in known:
                brands = [b for b in _unique(known["brand"].fillna("")) if b]
            if "categories" in known:
                flat, _ = flatten_lists(known["categories"])
                cats = [c for c in _unique(flat) if c]
        return cls(users, item_list, brands, cats)

    def size(self, f: str) -> int:
        """Number of ids of a field, padding and OOV included."""
        return len(self._index[f]) + 2

    @property
    def n_users(self) -> int:
        return self.size("user")

    @property
    def n_items(self) -> int:
        return self.size("item")

    def encode(self, f: str, values) -> np.ndarray:
        """int64 ids of ``values`` (any sequence of strings); unknown → OOV (1)."""
        if f not in self._index:
            raise KeyError(f"unknown vocabulary field {f!r}; expected one of {VOCAB_FIELDS}")
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if not isinstance(values, pa.Array):
            try:
                values = pa.array(values, type=pa.string(), from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                values = pa.array([None if v is None else str(v) for v in values], type=pa.string())
        if len(values) == 0:
            return np.zeros(0, dtype=np.int64)
        idx = pc.index_in(values.cast(pa.string()), value_set=self._index[f])
        return idx.fill_null(OOV - 2).to_numpy(zero_copy_only=False).astype(np.int64) + 2

    def encode_users(self, values) -> np.ndarray:
        return self.encode("user", values)

    def encode_items(self, values) -> np.ndarray:
        return self.encode("item", values)

    def decode(self, f: str, ids) -> list[str | None]:
        """Strings of ids (None for padding / OOV)."""
        lst = getattr(self, f)
        return [lst[i - 2] if 2 <= i < len(lst) + 2 else None for i in np.asarray(ids, dtype=np.int64)]

    def to_dict(self) -> dict[str, list[str]]:
        return {f: list(getattr(self, f)) for f in VOCAB_FIELDS}

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "Vocab":
        path = Path(path)
        try:
            obj = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"cannot read the vocabulary: {e}", file=str(path)) from e
        if not isinstance(obj, dict) or any(not isinstance(obj.get(f, []), list) for f in VOCAB_FIELDS) \
                or "user" not in obj or "item" not in obj:
            raise DataError(f"expected an object with lists {VOCAB_FIELDS}", file=str(path))
        return cls(*[[str(x) for x in obj.get(f, [])] for f in VOCAB_FIELDS])
