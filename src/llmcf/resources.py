"""Peak memory of one piece of work (one model's training), not of the whole process.

``ru_maxrss`` is the process's high-water mark since it started: after the first model of a run every later model
reports the same number. :class:`PeakMemory` measures one block instead:

- **RSS sampled by a background thread** (``/proc/self/statm`` every ``interval`` seconds, default 20 ms) from the
  block's start to its end: ``rss_start_mb``, ``rss_peak_mb`` (the highest sample, or the start/end reading if higher)
  and ``peak_delta_mb`` = peak − start, the memory the block itself added on top of what the process already held.
- on CUDA, ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (the allocator's own statistic).

Why not the alternatives: ``tracemalloc`` does not see torch's tensor memory (allocated outside Python's allocator)
and slows Python code several-fold; a child process per model would give an exact ``ru_maxrss`` but costs a second
interpreter, a torch import and a reload of the run's arrays per model. Freed memory the C allocator kept (after the
LLM stages of ``llmcf run``: ~2.5 GB) would otherwise sit in ``rss_start_mb`` and be reused by the model, hiding its
growth, so the block starts with ``release_free_memory`` (``gc.collect`` + glibc ``malloc_trim``). Known limits: a
spike shorter than the interval can be missed; memory still referenced (the run's arrays, a loaded encoder) stays in
``rss_start_mb``; without glibc the trim is skipped; without ``/proc`` (macOS, Windows) the process peak is reported,
marked as such.
"""
from __future__ import annotations

import os
import resource
import threading
import time
from pathlib import Path

_STATM = Path("/proc/self/statm")
_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2 ** 20 if hasattr(os, "sysconf") else 4096 / 2 ** 20


def release_free_memory() -> None:
    """Collect garbage and hand the C heap's free pages back to the OS (glibc ``malloc_trim``; a no-op elsewhere), so
    that memory an earlier stage freed (e.g. the LLM's) is not counted in the next block's starting RSS."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rss_mb() -> float | None:
    """Current resident set size in MB (Linux), or None."""
    try:
        return int(_STATM.read_text().split()[1]) * _PAGE_MB
    except (OSError, IndexError, ValueError):
        return None


def process_peak_mb() -> float:
    """The process's peak RSS so far (``ru_maxrss``; kB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class PeakMemory:
    """``with PeakMemory() as m: ...`` then ``m.record()`` → the dict described in the module docstring."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.start = self.peak = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cuda = False

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            r = rss_mb()
            if r is not None and r > self.peak:
                self.peak = r

    def __enter__(self) -> "PeakMemory":
        try:
            import torch

            self._cuda = torch.cuda.is_available()
            if self._cuda:
                torch.cuda.reset_peak_memory_stats()
        except ImportError:  # pragma: no cover
            pass
        release_free_memory()
        self.start = rss_mb()
        if self.start is not None:
            self.peak = self.start
            self._thread = threading.Thread(target=self._sample, name="llmcf-peak-rss", daemon=True)
            self._thread.start()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            end = rss_mb()
            if end is not None and end > self.peak:
                self.peak = end

    def record(self) -> dict:
        if self.start is None:
            return {"method": "process peak RSS (ru_maxrss; no /proc here, not per model)",
                    "rss_peak_mb": round(process_peak_mb(), 1)}
        out = {"method": f"RSS sampled every {self.interval * 1000:g} ms during this model's training",
               "rss_start_mb": round(self.start, 1), "rss_peak_mb": round(self.peak, 1),
               "peak_delta_mb": round(self.peak - self.start, 1)}
        if self._cuda:
            import torch

            out["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
        return out


def summary_memory(records: list[dict]) -> dict:
    """Over one model's seeds: the largest per-model peak RSS and the largest RSS the training added (None when the
    records predate per-model measurement)."""
    deltas = [r["memory"]["peak_delta_mb"] for r in records if "peak_delta_mb" in r.get("memory", {})]
    return {"peak_rss_mb": max(r["peak_rss_mb"] for r in records),
            "peak_delta_mb": max(deltas) if deltas else None}
