"""What the benchmark scripts record about the machine they ran on (CPU model, RAM), read from /proc when present."""
from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ram_suffix() -> str:
    """", 24 GB RAM" (total memory) or "" when unknown."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
        kb = int(next(ln for ln in lines if ln.startswith("MemTotal")).split()[1])
        return f", {kb / 1024 ** 2:.0f} GB RAM"
    except (OSError, StopIteration, ValueError):
        return ""


REPO = Path(__file__).resolve().parents[1]


def portable(obj):
    """``obj`` (a str, or JSON-like lists/dicts of them) with absolute paths inside the repository or next to it
    written relative to the repository root (``runs/x``, ``../shared/data/ml-100k``): recorded results never name
    the machine's own folders."""
    if isinstance(obj, str):
        return obj.replace(str(REPO) + "/", "").replace(str(REPO.parent) + "/", "../")
    if isinstance(obj, dict):
        return {k: portable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(portable(v) for v in obj)
    return obj
