"""Loaders: raw data on disk → ``RawDataset``.

``load_dataset("ml-100k")`` reads MovieLens-100k from the installed recbole wheel; any other spec is a path to a
folder (or an atomic-file prefix, or one data file) in one of the formats of ``FORMATS``; ``fmt="auto"`` detects it.
"""
from __future__ import annotations

from .detect import FORMATS, detect, load_dataset

__all__ = ["FORMATS", "detect", "load_dataset"]
