"""Vectorised column checks and conversions; each failure names the file, the first bad line and the field."""
from __future__ import annotations

import numpy as np
import pandas as pd

from llmcf.errors import DataError

from .table import Table


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _show(v) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def require(t: Table, columns: list[str], present: list[str], what: str, *, line: int | None = 1) -> None:
    """Raise if one of ``columns`` is missing from ``present`` (the header of ``t``)."""
    for c in columns:
        if c not in present:
            raise DataError(f"missing required column for {what}; expected the fields {columns}, found {present}",
                            file=t.file, line=line, field=c)


CONTROL = r"[\x00-\x1f\x7f-\x9f]"
"""Characters an id may not hold (C0/C1 controls, DEL: NUL, tabs, bare carriage returns, escape codes...)."""


def ids(t: Table, col: str, field: str | None = None) -> pd.Series:
    """Non-empty id strings (surrounding whitespace stripped) without control characters."""
    s = t.df[col].astype(object).where(t.df[col].notna(), "").astype(str).str.strip()
    bad = (s == "").to_numpy()
    if bad.any():
        i = _first(bad)
        raise DataError("empty id; expected a non-empty value", file=t.file, line=t.line(i), field=field or col)
    ctrl = s.str.contains(CONTROL, regex=True).to_numpy()
    if ctrl.any():
        i = _first(ctrl)
        ch = next(c for c in s.iloc[i] if c < " " or "\x7f" <= c <= "\x9f")
        raise DataError(f"control character U+{ord(ch):04X} in the id {_show(s.iloc[i])}; expected printable text",
                        file=t.file, line=t.line(i), field=field or col)
    return s


def floats(t: Table, col: str, *, required: bool, field: str | None = None, what: str = "a number") -> pd.Series:
    """Column as float64. Empty values are NaN unless ``required``; anything else that does not parse is an error."""
    raw = t.df[col]
    num = pd.to_numeric(raw, errors="coerce")
    if num.dtype == object:
        num = num.astype("float64")
    num = num.astype("float64")
    text = raw.astype(object).where(raw.notna(), "").astype(str).str.strip()
    empty = (text == "").to_numpy()
    bad = num.isna().to_numpy() & ~empty
    if required:
        bad |= empty
    bad |= np.isinf(num.to_numpy())
    if bad.any():
        i = _first(bad)
        raise DataError(f"expected {what}, found {_show(raw.iloc[i])}", file=t.file, line=t.line(i),
                        field=field or col)
    return num


def labels(t: Table, col: str, field: str | None = None) -> pd.Series:
    """A 0/1 label column as int8."""
    num = floats(t, col, required=True, field=field, what="a label 0 or 1")
    bad = ~num.isin([0.0, 1.0]).to_numpy()
    if bad.any():
        i = _first(bad)
        raise DataError(f"expected a label 0 or 1, found {_show(t.df[col].iloc[i])}", file=t.file,
                        line=t.line(i), field=field or col)
    return num.astype("int8")


def unique(t: Table, values: pd.Series, field: str, what: str) -> None:
    """Raise on the second occurrence of a value (naming both lines)."""
    dup = values.duplicated(keep="first").to_numpy()
    if dup.any():
        i = _first(dup)
        v = values.iloc[i]
        j = int(np.flatnonzero((values == v).to_numpy())[0])
        raise DataError(f"duplicate {what} {_show(v)} (first listed on line {t.line(j)}); expected each {what} once",
                        file=t.file, line=t.line(i), field=field)


def known(t: Table, values: pd.Series, catalogue: pd.Series, field: str, table_file: str) -> None:
    """Raise if ``values`` name ids absent from ``catalogue`` (how many, and the first with its line)."""
    missing = ~values.isin(catalogue).to_numpy()
    if missing.any():
        i = _first(missing)
        n_rows = int(missing.sum())
        n_ids = int(values[missing].nunique())
        raise DataError(f"{n_rows} interactions name {n_ids} items absent from the item table {table_file}; the first "
                        f"is {_show(values.iloc[i])}; expected every item to be listed there",
                        file=t.file, line=t.line(i), field=field)


def clean_text(values) -> list[str]:
    """Strings with surrounding whitespace stripped and inner whitespace runs (tabs, newlines) collapsed."""
    out = []
    for v in values:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            out.append("")
        else:
            out.append(" ".join(str(v).split()))
    return out
