"""Messages that never end up glued to a progress bar.

A tqdm bar redraws its line with ``\\r`` and leaves the cursor at the end of it, so a plain ``print`` of an error or a
warning lands on the bar's line (and in a log file it is one long line with the bar). Everything the stages say while a
bar may be live goes through :func:`say`:

- on a terminal, the live bars are cleared, the message is written on its own line, and the bars are redrawn below
  (``tqdm.external_write_mode``);
- on a file or pipe (a log), a newline is written first when a bar was drawn on the line, so the message starts a line.

:func:`error` is for the fatal message at exit: it first *closes* every live bar (freezing its last state on its own
line), then writes the message. :func:`install` routes Python ``logging`` records and ``warnings.warn`` through
:func:`say` (the CLI calls it once at start).
"""
from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import TextIO


def _live_bars() -> list:
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return []
    return [b for b in list(getattr(tqdm, "_instances", [])) if not getattr(b, "disable", False)]


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def say(msg: str, stream: TextIO | None = None) -> None:
    """Write ``msg`` (plus a newline) on its own line of ``stream`` (default stderr), around any live bars."""
    stream = stream if stream is not None else sys.stderr
    bars = _live_bars()
    if not bars:
        stream.write(msg + "\n")
        stream.flush()
        return
    from tqdm import tqdm

    with tqdm.external_write_mode(file=stream):
        # external_write_mode cleared the bars with "\r<spaces>\r"; a terminal is back at column 0, a log file is not
        lead = "" if _isatty(stream) else "\n"
        stream.write(lead + msg + "\n")
        stream.flush()


def warn(msg: str, stream: TextIO | None = None) -> None:
    """A warning on its own line: ``llmcf: warning: msg``."""
    say(f"llmcf: warning: {msg}", stream)


def close_bars() -> None:
    """Close every live bar so its last state stays on a line of its own (used before exiting with an error)."""
    for b in reversed(_live_bars()):
        try:
            b.leave = True
            b.close()
        except Exception:  # noqa: BLE001 - a broken bar must not hide the error message
            pass


def error(msg: str, stream: TextIO | None = None) -> None:
    """The fatal message: bars closed first, then ``llmcf: error: msg`` on its own line."""
    stream = stream if stream is not None else sys.stderr
    close_bars()
    stream.write(f"llmcf: error: {msg}\n")
    stream.flush()


class BarSafeHandler(logging.Handler):
    """A logging handler that writes records with :func:`say`."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            say(self.format(record))
        except Exception:  # noqa: BLE001
            self.handleError(record)


_installed = False


def install(level: int = logging.WARNING) -> None:
    """Route ``llmcf.*`` log records and Python warnings through :func:`say` (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    handler = BarSafeHandler()
    handler.setFormatter(_LowerLevelFormatter())
    log = logging.getLogger("llmcf")
    log.addHandler(handler)
    if not log.level or log.level > level:
        log.setLevel(level)
    log.propagate = False

    def showwarning(message, category, filename, lineno, file=None, line=None):  # noqa: ARG001
        where = f"{os.path.basename(str(filename))}:{lineno}"  # often a library's warning, not ours: say whose
        say(f"warning: {category.__name__} ({where}): {message}", file)

    warnings.showwarning = showwarning


class _LowerLevelFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"llmcf: {record.levelname.lower()}: {record.getMessage()}"
