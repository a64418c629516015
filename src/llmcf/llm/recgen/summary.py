"""What RecGen actually trained on: rec rows, general rows asked for / available / used, and why they differ.

Written into ``llm/recgen/train_info.json`` (``trained_on``), copied into ``eval_tuned.json`` and shown in the report,
so a reader of the p(Yes) AUC knows how much data stood behind it. Numbers:

- ``rec_asked`` = ``recgen.num_rec``; ``rec`` = rows drawn from the train split (fewer when the split is smaller);
- ``general_asked`` = ``num_rec · r / (1 − r)`` for ``r = recgen.general_ratio``; ``general_available`` = the
  general pool after the held-out rows for the perplexity check; ``general`` = min of the two;
- ``dropped_too_long`` per kind (longer than ``recgen.cutoff_len``);
- ``seen``: distinct examples of each kind that the step schedule reached at least once (``recgen.max_steps`` can
  stop before one pass over the mix), and ``passes`` = row visits / examples.
"""
from __future__ import annotations

import numpy as np


def trained_on(info: dict, kinds: list[str], schedule: list[np.ndarray], num_rec: int, steps: int) -> dict:
    """The summary dict; ``kinds``: kind of each encoded example, ``schedule``: the micro-batches of every step."""
    src = info.get("general_source") or {}
    asked = int(info.get("general_wanted", 0))
    available = max(0, int(src.get("kept", 0)) - int(src.get("heldout", 0))) if src else 0
    general = int(info.get("general", 0))
    visits = np.concatenate(schedule) if schedule else np.zeros(0, dtype=np.int64)
    seen = np.unique(visits)
    kinds_arr = np.asarray(kinds)
    encoded = {k: int((kinds_arr == k).sum()) for k in ("rec", "general")}
    dropped = {"rec": int(info.get("rec", 0)) - encoded["rec"], "general": general - encoded["general"]}
    out = {"rec_asked": int(num_rec), "rec": int(info.get("rec", 0)),
           "rec_positive_share": round(float(info.get("rec_positive_share", 0.0)), 4),
           "general_asked": asked, "general_available": available, "general": general,
           "general_source": src.get("source"), "dropped_too_long": dropped,
           "steps": int(steps), "row_visits": int(len(visits)),
           "seen": {k: int((kinds_arr[seen] == k).sum()) if len(seen) else 0 for k in ("rec", "general")},
           "passes": round(len(visits) / max(1, len(kinds)), 2)}
    reasons = []
    if out["rec"] < num_rec:
        reasons.append(f"the train split has only {out['rec']} rows (recgen.num_rec={num_rec})")
    if general < asked:
        reasons.append(f"general: {asked} asked, {available} available ({src.get('kept', 0)} usable rows from "
                       f"{src.get('source')}, {src.get('heldout', 0)} held out for the perplexity check)")
    for k, n in dropped.items():
        if n:
            reasons.append(f"{n} {k} rows longer than recgen.cutoff_len dropped")
    for k in ("rec", "general"):
        if out["seen"][k] < encoded[k]:
            reasons.append(f"{steps} steps reached {out['seen'][k]} of {encoded[k]} {k} rows (recgen.max_steps or "
                           "epochs stop before one pass)")
    out["why"] = reasons
    return out


def trained_on_line(t: dict) -> str:
    """One line: '2000 rec rows, general 133 asked / 34 used (...); 12 steps saw 96 rec + 4 general rows'."""
    if not t:
        return "RecGen training data: not recorded"
    line = (f"RecGen trained on {t['rec']} rec rows (asked {t['rec_asked']}) and {t['general']} general rows "
            f"(asked {t['general_asked']}, source {t['general_source'] or '-'}); {t['steps']} steps, "
            f"{t['row_visits']} row visits, reaching {t['seen']['rec']} rec + {t['seen']['general']} general rows")
    return line + (" — " + "; ".join(t["why"]) if t.get("why") else "")
