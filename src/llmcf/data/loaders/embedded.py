"""Datasets shipped inside installed wheels (located with importlib, never imported)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from llmcf.data.schema import RawDataset
from llmcf.errors import DataError

from . import atomic

EMBEDDED = {"ml-100k": ("recbole", "dataset_example/ml-100k/ml-100k")}


def embedded_prefix(name: str) -> Path:
    """The atomic-file prefix of an embedded dataset; DataError if its package is not installed."""
    package, rel = EMBEDDED[name]
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        prefix = Path(loc) / rel
        if Path(f"{prefix}.inter").is_file():
            return prefix
    raise DataError(f"the embedded dataset '{name}' comes from the '{package}' wheel, which is not installed (or lacks "
                    f"{rel}.inter); install it with `pip install --no-deps recbole==1.2.1` or pass a data folder",
                    field="data.dataset")


def load_embedded(name: str) -> RawDataset:
    prefix = embedded_prefix(name)
    return atomic.load(prefix, name=name, source=f"recbole:{prefix}")
