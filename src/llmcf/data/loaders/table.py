"""Delimited text files → a table of strings that remembers each row's line number (for error messages)."""
from __future__ import annotations

import csv
import gzip
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from llmcf.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class Table:
    """Rows read from ``file``: ``df`` (one column per field) and ``lines`` (1-based line of each row)."""

    file: str
    df: pd.DataFrame
    lines: np.ndarray

    def line(self, row: int) -> int:
        return int(self.lines[row])


def open_text(path: Path, encoding: str = "utf-8") -> str:
    """The whole file as text (gunzipped if it ends with .gz). ``utf-8`` falls back to latin-1 on undecodable bytes."""
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise DataError(f"expected a gzip file ({e})", file=str(path)) from None
    if encoding.lower().replace("-", "") in ("utf8", "utf8sig"):
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError:
            log.warning("%s is not UTF-8; reading it as latin-1", path)
            return data.decode("latin-1")
    return data.decode(encoding)


def iter_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its end) for the non-blank lines of a text or .gz file."""
    for i, line in enumerate(_lines(open_text(path, encoding)), 1):
        if line.strip():
            yield i, line


def read_delimited(path: Path, sep: str, *, names: Sequence[str] | None = None, quoted: bool = False,
                   encoding: str = "utf-8") -> tuple[list[str], Table]:
    """Read a delimited file, one record per line.

    ``names`` given: the file has no header. Otherwise line 1 is the header and its cells are returned as read.
    ``quoted``: a field may be CSV-quoted (``"a<sep>b"``, ``""`` for a quote) on lines that contain a quote.
    Rows shorter than the header are padded with empty fields; longer rows are an error. Blank lines are skipped.
    """
    fast = _read_bytes_fast(path, sep, names, quoted, encoding)
    if fast is not None:
        return fast
    numbered = [(i, line) for i, line in enumerate(_lines(open_text(path, encoding)), 1) if line.strip()]
    if names is None:
        if not numbered:
            raise DataError("empty file: expected a header line and at least one data row", file=str(path), line=1)
        header = _split(numbered[0][1], sep, quoted, path, numbered[0][0])
        if len(header) == 1:
            _wrong_separator(path, sep, 2, numbered[0], 1, header=True)
        numbered = numbered[1:]
    else:
        header = list(names)
    if not numbered:
        raise DataError("empty file: expected at least one data row", file=str(path), line=1)
    width = len(header)
    numbers = np.fromiter((i for i, _ in numbered), dtype=np.int64, count=len(numbered))
    if len(sep) == 1 and sep not in "\"\n\r" and not (quoted and any('"' in line for _, line in numbered)):
        df = _fast(numbered, sep, width)
        if df is not None:
            return header, _table(path, df, names, numbers)
    if quoted and len(sep) == 1:
        rows = [_split(line, sep, True, path, no) if '"' in line else line.split(sep) for no, line in numbered]
    else:
        rows = [line.split(sep) for _, line in numbered]
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    if (lengths > width).any():
        k = int(np.flatnonzero(lengths > width)[0])
        raise DataError(f"expected {width} fields separated by {sep!r}, found {lengths[k]}", file=str(path),
                        line=int(numbers[k]))
    short = np.flatnonzero(lengths < width)
    lone = short[lengths[short] == 1] if width > 1 else short[:0]
    if len(lone):  # a line without the separator at all: is it another one?
        _wrong_separator(path, sep, width, numbered[int(lone[0])], 1)
    for k in short:  # short rows: missing trailing fields are empty
        rows[k] = rows[k] + [""] * (width - int(lengths[k]))
    cols = list(zip(*rows))
    df = pd.DataFrame({i: np.asarray(c, dtype=object) for i, c in enumerate(cols)})
    return header, _table(path, df, names, numbers)


_BLANK_LINE = re.compile(rb"(?:^|\n)[ \t\x0b\x0c\x1c-\x1f]*(?:\n|$)")  # str.isspace() in ASCII


def _read_bytes_fast(path: Path, sep: str, names: Sequence[str] | None, quoted: bool,
                     encoding: str) -> tuple[list[str], Table] | None:
    """The common case without the per-line Python lists (~3x less memory): a UTF-8 file with a one-character
    separator, no blank line, no carriage return and (when ``quoted``) no quote, every row as wide as the header, parsed
    by pandas' C parser straight from the bytes; line numbers are then implied. None: anything else (the general path
    reads it, with its padding, fallbacks and line-numbered errors)."""
    if len(sep) != 1 or sep in "\"\n\r" or encoding.lower().replace("-", "") not in ("utf8", "utf8sig") \
            or not path.is_file():
        return None
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError):
            return None
    body = data[:-1] if data.endswith(b"\n") else data
    if not body.strip() or b"\r" in data or (quoted and b'"' in data) or _BLANK_LINE.search(body):
        return None
    first_end = data.find(b"\n")
    first = data if first_end < 0 else data[:first_end]
    try:
        first_text = first.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    header = first_text.split(sep) if names is None else list(names)
    width = len(header)
    if names is None:
        if width == 1 or first_end < 0:
            return None
        data = data[first_end + 1:]
    try:
        df = pd.read_csv(io.BytesIO(data), sep=sep, header=None, index_col=False, dtype=str, quoting=csv.QUOTE_NONE,
                         keep_default_na=False, na_filter=False, skip_blank_lines=False, engine="c",
                         encoding="utf-8-sig" if names is not None else "utf-8")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, UnicodeDecodeError):
        return None
    del data
    if df.shape[1] != width or df.isna().to_numpy().any():  # a short row: the general path pads it
        return None
    start = 2 if names is None else 1
    numbers = np.arange(start, start + len(df), dtype=np.int64)
    return header, _table(path, df, names, numbers)


def _table(path: Path, df: pd.DataFrame, names: Sequence[str] | None, numbers: np.ndarray) -> Table:
    """Columns are ``names`` for headerless files, else 0..width-1 (the caller names them from the header)."""
    df.columns = list(names) if names is not None else list(range(df.shape[1]))
    return Table(str(path), df, numbers)


def _fast(numbered: list[tuple[int, str]], sep: str, width: int) -> pd.DataFrame | None:
    """pandas' C parser on the non-blank lines; None when a row is longer than the first one or than ``width`` (the
    slow path then pads short rows and names the line of a long one)."""
    try:
        df = pd.read_csv(io.StringIO("\n".join(line for _, line in numbered)), sep=sep, header=None, index_col=False,
                         dtype=str, quoting=csv.QUOTE_NONE, keep_default_na=False, na_filter=False,
                         skip_blank_lines=False, engine="c")
    except (pd.errors.ParserError, ValueError):
        return None
    if len(df) != len(numbered) or df.shape[1] != width:
        return None
    return df


def _lines(text: str) -> list[str]:
    lines = text.split("\n")
    if "\r" in text:
        lines = [line.rstrip("\r") for line in lines]
    return lines


SEPARATORS = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "'|'", "::": "'::'", " ": "space"}


def _sep_name(sep: str) -> str:
    return SEPARATORS.get(sep, repr(sep))


def _wrong_separator(path: Path, sep: str, width: int, numbered_line: tuple[int, str], found: int, *,
                     header: bool = False) -> None:
    """Raise when a short row would split into enough fields on another common separator; else return (the
    caller pads it). A row that no separator explains is left alone."""
    no, line = numbered_line
    for other in SEPARATORS:
        if other != sep and other != " " and len(line.split(other)) >= width:
            what = "a header of name:type cells" if header else f"{width} fields"
            raise DataError(f"expected {what} separated by {_sep_name(sep)}, found {found}; this line looks "
                            f"{_sep_name(other)}-separated", file=str(path), line=no)


def _split(line: str, sep: str, quoted: bool, path: Path | None = None, no: int | None = None) -> list[str]:
    if quoted and '"' in line and len(sep) == 1:
        if "\r" in line:
            raise DataError("bare carriage return (\\r) inside a line; expected one record per line with no carriage "
                            "return except a line-ending \\r\\n", file=str(path), line=no)
        try:
            return next(csv.reader([line], delimiter=sep, quotechar='"', doublequote=True, strict=False))
        except csv.Error as e:
            raise DataError(f"malformed quoted field ({e}); expected CSV quoting with \"\" for a quote",
                            file=str(path), line=no) from None
    return line.split(sep)
