"""The evaluation protocol of a built data set, said out loud: what `llmcf data build` prints and warns about.

Reads only the stats dict that ``build_run_data`` writes to ``data/stats.json`` (``protocol``, ``splits``,
``oov_rate``, ``oov_ids``, ``real_time``), so the same lines can be printed again later from a run directory.

Warnings (data that look built for another protocol than the one applied):

- a 0/1 ``label`` column with timestamps comparable across users, split per user (``loo``/``ratio``): CTR logs of this
  kind are usually evaluated on a global time cut → suggest ``--set data.split=time``;
- timestamps that are each user's order (0..n-1 or 1..n per user): a global time split is impossible, the per-user
  split is the only honest choice (stated, and ``split: time`` is refused with an error by the split itself);
- a time split whose test users are mostly unseen in training (``OOV_WARN`` share of test rows or more): the numbers
  measure cold-start behaviour more than collaborative filtering.
"""
from __future__ import annotations

import time

OOV_WARN = 0.2
"""Share of test rows with an out-of-vocabulary user at or above which a time split gets a cold-start warning."""


def _when(t: float) -> str:
    """A cut timestamp as a date when it looks like Unix seconds (years 1995-2100), else as the number."""
    if 8e8 <= t <= 4.2e9:
        return f"{t:.0f} ({time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(t))} UTC)"
    return f"{t:g}"


def split_line(p: dict) -> str:
    """The split rule with its parameters."""
    kind = p.get("split")
    if kind == "loo":
        return "per-user chronological leave-one-out: last position -> test, second-to-last -> valid, rest -> train " \
               "(users with < 3 positions: all train)"
    if kind == "ratio":
        r = "/".join(f"{100 * x:g}" for x in p.get("ratios") or [])
        return f"per-user chronological ratio split {r} (train/valid/test), by position within each user"
    if kind == "time":
        r = "/".join(f"{100 * x:g}" for x in p.get("ratios") or [])
        q1, q2 = (p.get("cut_timestamps") or [None, None])[:2]
        cuts = f"; cut times: train <= {_when(q1)} < valid <= {_when(q2)} < test" if q1 is not None else ""
        return f"global time split {r} (quantiles of interaction times){cuts}"
    return f"split {kind}"


def label_line(p: dict) -> str:
    rule = p.get("label")
    if rule == "rating":
        return f"label = 1 if rating >= {p.get('rating_threshold'):g}, else 0"
    if rule == "implicit":
        return f"implicit feedback: every interaction is a positive, plus {p.get('negatives')} sampled negative(s) " \
               f"each ({p.get('negative_sampling')})"
    if rule == "column":
        return "label = the data's own 0/1 label column, used as is; no negatives sampled"
    return f"label rule {rule}"


def protocol_lines(stats: dict) -> list[str]:
    """Readable lines for the protocol ``stats`` records (as printed by ``llmcf data build``)."""
    p = stats.get("protocol") or {}
    users = f", {p['max_users']} users kept (seeded sample, data.max_users)" if p.get("max_users") else ""
    lines = [f"split:     {split_line(p)}",
             f"label:     {label_line(p)}",
             f"negatives: {p.get('negatives', 0)} per positive" + (" (sampled)" if p.get("negatives") else ""),
             f"history:   last {p.get('history_len')} items strictly before the row, oldest first{users}",
             "time:      " + ("timestamps comparable across users" if stats.get("real_time", True) else
                              "timestamps are each user's order (0..n-1 / 1..n), not times")]
    rows, ids = stats.get("oov_rate") or {}, stats.get("oov_ids") or {}
    for s in ("valid", "test"):
        if s in rows:
            r, i = rows[s], ids.get(s, {})
            extra = (f" ({100 * i['user']:.1f}% of its distinct users, {100 * i['item']:.1f}% of its distinct items)"
                     if i else "")
            lines.append(f"OOV {s}:{' ' * (6 - len(s))}{100 * r['user']:.1f}% of rows have a user unseen in train, "
                         f"{100 * r['item']:.1f}% an item unseen in train{extra}")
    return lines


def protocol_warnings(stats: dict) -> list[str]:
    """Warnings for data that look built for another protocol (module docstring)."""
    p = stats.get("protocol") or {}
    out = []
    real_time = stats.get("real_time", True)
    if p.get("label") == "column" and real_time and p.get("split") in ("loo", "ratio"):
        out.append("this data set has a 0/1 label column and timestamps comparable across users, the shape of a CTR "
                   f"log usually evaluated on a global time cut, but the split applied is per user ({p.get('split')}); "
                   "if it was built for a time split, rebuild with --set data.split=time")
    if not real_time:
        out.append("timestamps are per-user orders, not times: a global time split (data.split=time) is not "
                   f"possible; the per-user {p.get('split')} split keeps each user's order")
    test_oov = (stats.get("oov_rate") or {}).get("test", {}).get("user", 0.0)
    if p.get("split") == "time" and test_oov >= OOV_WARN:
        out.append(f"{100 * test_oov:.0f}% of test rows come from users never seen in training (time split): "
                   "id embeddings cannot help them; read the results as largely cold-start")
    return out


def print_protocol(stats: dict) -> None:
    """Print the protocol lines (stdout) and the warnings (stderr, each on its own line)."""
    from llmcf.progress import warn

    print("[data] protocol applied:")
    for line in protocol_lines(stats):
        print(f"  {line}")
    for w in protocol_warnings(stats):
        warn(w)
