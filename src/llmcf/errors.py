"""Errors users see: each names the file, line or field and what was expected."""
from __future__ import annotations


class LLMCFError(Exception):
    """Base class for errors reported to the user without a traceback by the CLI."""


class DataError(LLMCFError):
    """Bad input data."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None, field: str | None = None):
        where = []
        if file is not None:
            where.append(str(file))
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field '{field}'")
        self.file, self.line, self.field = file, line, field
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class RunError(LLMCFError):
    """A stage was asked to run but an input artifact is missing or stale."""
