"""Time estimates for long stages, from a short measured warm-up, and a per-machine record of the rates seen.

:class:`EstimatingBar` is a tqdm bar (the ETA is tqdm's ``<remaining``) that, once its warm-up is measured — the first
``warmup_units`` units or ``warmup_seconds`` of work, whichever comes first, and at least one unit — prints one line on
its own line::

    [cot generate] estimate: ~240 rows at ~2.1 s/row ≈ 8.4 min on this machine (measured on the first 8 rows, ~8.1 min
    to go)

The warm-up (at most a tenth of the stage's units) is the stage's own first units of real work (nothing is run twice); the first units can be slower
(caches, allocator), so the estimate leans high. When the bar closes, the stage's measured rate (seconds per unit) is
saved to ``$LLMCF_CACHE_DIR/rates.json`` (default ``~/.cache/llmcf``; ``LLMCF_CACHE_DIR=`` empty turns it off), keyed
by stage and model, so ``llmcf run --plan`` can estimate a stage before running it on the same machine. That file holds
rates only — no paths, no data — and is never part of a run's results.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tqdm.auto import tqdm

from llmcf.io import atomic_write_json
from llmcf.progress import say


def rates_path() -> Path | None:
    d = os.environ.get("LLMCF_CACHE_DIR")
    if d is None:
        d = str(Path.home() / ".cache" / "llmcf")
    return Path(d) / "rates.json" if d else None


def load_rates() -> dict:
    p = rates_path()
    try:
        return json.loads(p.read_text()) if p and p.exists() else {}
    except (OSError, ValueError):
        return {}


def save_rate(key: str, seconds_per_unit: float, unit: str, units: int) -> None:
    """Remember ``key``'s last measured rate (best effort: a read-only home never fails a stage)."""
    p = rates_path()
    if p is None or units <= 0:
        return
    rates = load_rates()
    rates[key] = {"seconds_per_unit": round(float(seconds_per_unit), 4), "unit": unit, "units": int(units),
                  "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(p, rates)
    except OSError:
        pass


def fmt_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_line(name: str, n: int, unit: str, seconds_per_unit: float, basis: str) -> str:
    return (f"[{name}] estimate: ~{n:,} {unit}s at ~{seconds_per_unit:.3g} s/{unit} ≈ "
            f"{fmt_duration(n * seconds_per_unit)} on this machine ({basis})")


class EstimatingBar(tqdm):
    """tqdm bar that prints a time estimate after its warm-up and records the stage's rate (module docstring).

    Extra keyword arguments: ``rate_key`` (key in rates.json; default the bar's ``desc``), ``warmup_units``
    (default 8, at most a tenth of the units), ``warmup_seconds`` (default 20), ``min_seconds`` (no estimate printed
    for a stage expected to take less, default 30). A disabled bar (e.g. a backend's inner bar when the stage shows its
    own) prints nothing but still records the rate."""

    def __init__(self, *args, rate_key: str | None = None, warmup_units: int = 8, warmup_seconds: float = 20.0,
                 min_seconds: float = 30.0, **kwargs):
        super().__init__(*args, **kwargs)
        self._desc = str(kwargs.get("desc") or rate_key or "stage")
        self._key = rate_key or self._desc
        self._min = min_seconds
        self._warm_units, self._warm_secs = warmup_units, warmup_seconds
        self._t0 = time.perf_counter()
        self._k = 0
        self._said = False
        self._unit = str(kwargs.get("unit") or "it")
        self._start_n = int(kwargs.get("initial") or 0)

    def update(self, n=1):
        out = super().update(n)
        self._k += n
        if not self._said and self.total and self._k >= 1 and not self.disable:
            el = time.perf_counter() - self._t0
            warm = min(self._warm_units, max(1, (int(self.total) - self._start_n) // 10))
            if self._k >= warm or el >= self._warm_secs:
                self._said = True
                todo = int(self.total) - self._start_n
                rest = todo - self._k
                # nothing to forecast when the warm-up was the whole stage or the stage is a few seconds long
                if rest > 0 and todo * el / self._k >= self._min:
                    say(estimate_line(self._desc, todo, self._unit, el / self._k,
                                      f"measured on the first {self._k} {self._unit}s, "
                                      f"~{fmt_duration(rest * el / self._k)} to go"))
        return out

    def close(self):
        if self._k and not getattr(self, "_rate_saved", False):
            self._rate_saved = True
            save_rate(self._key, (time.perf_counter() - self._t0) / self._k, self._unit, self._k)
        super().close()


_jobs: list["JobsEstimate"] = []


def trained(tag: str, seconds: float) -> None:
    """One model seed finished training in ``seconds``: record the rate (for --plan) and tell an active estimate."""
    save_rate(f"train {tag}", seconds, "seed", 1)
    for j in _jobs:
        j.done(tag, seconds)


class JobsEstimate:
    """Estimate for a list of jobs of unequal kinds (e.g. model trainings: base vs LLM-CF variants).

    ``done(kind, seconds)`` after each finished job; after the first one of a run, prints the remaining total using the
    time per kind measured in this run, else the last one recorded on this machine (rates.json), else the first job's
    (said as such). Nothing is printed when less than ``min_seconds`` (30) remain."""

    def __init__(self, name: str, pending: list[str], min_seconds: float = 30.0):
        self.name, self.pending = name, list(pending)
        self.seen: dict[str, list[float]] = {}
        self._said = False
        self._min = min_seconds
        self._rates = load_rates()

    def __enter__(self) -> "JobsEstimate":
        _jobs[:] = [self]  # one run's estimate at a time (drops one left behind by an interrupted run)
        return self

    def __exit__(self, *exc) -> None:
        _jobs.remove(self)

    def done(self, kind: str, seconds: float) -> None:
        if kind in self.pending:
            self.pending.remove(kind)
        self.seen.setdefault(kind, []).append(seconds)
        if self._said or not self.pending:
            return
        self._said = True
        def per(k):
            if k in self.seen:
                return sum(self.seen[k]) / len(self.seen[k])
            r = self._rates.get(f"{self.name} {k}")
            return r["seconds_per_unit"] if r else seconds

        left = sum(per(k) for k in self.pending)
        if left < self._min:
            return
        unseen = sorted({k for k in self.pending if k not in self.seen and f"{self.name} {k}" not in self._rates})
        note = f"; {', '.join(unseen)} not measured yet: assumed like the first" if unseen else ""
        say(f"[{self.name}] estimate: ~{len(self.pending)} more model trainings ≈ {fmt_duration(left)} on this machine "
            f"(first took {fmt_duration(seconds)}{note})")
