"""Format registry, auto-detection and the public ``load_dataset``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, NamedTuple

from llmcf.data.schema import RawDataset
from llmcf.errors import DataError

from . import amazon, atomic, movielens
from .embedded import EMBEDDED, load_embedded


class Format(NamedTuple):
    find: Callable[[Path], Any]
    """path → what ``load`` needs, or None when the path does not hold this format."""
    load: Callable[[Any], RawDataset]
    expects: str


FORMATS: dict[str, Format] = {
    "atomic": Format(atomic.find, atomic.load, "RecBole atomic files <name>.inter [.item .user]"),
    "movielens": Format(movielens.find, movielens.load,
                        "u.data [u.item u.user] (ml-100k), ratings.dat [movies.dat users.dat] (ml-1m) or "
                        "ratings.csv + movies.csv (ml-latest)"),
    "amazon2014": Format(amazon.finder("2014"), amazon.load, "reviews_<Cat>[_5].json[.gz] [meta_<Cat>.json[.gz]]"),
    "amazon2023": Format(amazon.finder("2023"), amazon.load, "<Cat>.jsonl[.gz] [meta_<Cat>.jsonl[.gz]]"),
    "amazon2018": Format(amazon.finder("2018"), amazon.load, "<Cat>[_5].json[.gz] [meta_<Cat>.json[.gz]]"),
}
"""Detection order for ``fmt="auto"`` (the 2018 file pattern is the loosest, so it comes last)."""


def _expected() -> str:
    return "; ".join(f"{k}: {f.expects}" for k, f in FORMATS.items())


def detect(path: Path) -> tuple[str, Any]:
    """(format name, located files) for the first format whose files are at ``path``."""
    for name, f in FORMATS.items():
        found = f.find(path)
        if found is not None:
            return name, found
    raise DataError(f"no known data format found; expected one of — {_expected()}", file=str(path))


def load_dataset(spec: str, fmt: str = "auto") -> RawDataset:
    """Load a dataset: an embedded name ("ml-100k") or a folder / atomic-file prefix / data file path.

    ``fmt``: auto | atomic | movielens | amazon2014 | amazon2018 | amazon2023.
    Raises DataError (naming file, line and field) on missing or malformed input.
    """
    if fmt != "auto" and fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; expected auto or one of {', '.join(sorted(FORMATS))}",
                        field="data.format")
    path = Path(str(spec)).expanduser()
    if str(spec) in EMBEDDED and not path.exists():
        if fmt not in ("auto", "atomic"):
            raise DataError(f"the embedded dataset {spec!r} is in atomic format, not {fmt}", field="data.format")
        return load_embedded(str(spec))
    if not path.exists() and not Path(f"{path}.inter").is_file():
        raise DataError("no such file or folder; expected a data folder, an atomic-file prefix, a data file or one "
                        f"of the embedded names {', '.join(EMBEDDED)}", file=str(path))
    if fmt == "auto":
        fmt, found = detect(path)
    else:
        found = FORMATS[fmt].find(path)
        if found is None:
            raise DataError(f"no {fmt} data found; expected {FORMATS[fmt].expects}", file=str(path))
    return FORMATS[fmt].load(found)
