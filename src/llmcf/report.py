"""`llmcf report`: result tables (Markdown, HTML) and plots (PNG) of every model trained in a run directory."""
from __future__ import annotations

import html
import json
from pathlib import Path

from llmcf.config import model_tag
from llmcf.io import atomic_path, atomic_write_text
from llmcf.rundir import RunDir
from llmcf.train.metrics import fmt_mean_std  # noqa: F401  (also public here)


def load_summaries(run_dir: Path) -> list[dict]:
    out = []
    for p in sorted(RunDir(run_dir).models.glob("*/summary.json")):
        out.append(json.loads(p.read_text()))
    return out


def is_seq(s: dict) -> bool:
    return s.get("task") == "sequential"


def _variant(s: dict) -> str:
    """base | llmcf | llmcf-<variant>: the tag (``config.model_tag``) without its backbone part."""
    base = model_tag(s["model"], task="sequential" if is_seq(s) else "ctr")
    return "base" if s["tag"] == base else s["tag"][len(base) + 1:]


def _ordered(summaries: list[dict]) -> list[dict]:
    return sorted(summaries, key=lambda s: (s["model"].lower(), _variant(s) != "base", s["tag"]))


def results_table(summaries: list[dict]) -> str:
    """Markdown table of the CTR models: one row per trained variant, grouped by backbone (base first)."""
    rows = ["| model | variant | test AUC | test LogLoss | test gAUC | valid AUC | seeds | s/epoch |",
            "|---|---|---|---|---|---|---|---|"]
    for s in _ordered([s for s in summaries if not is_seq(s)]):
        variant = _variant(s)
        t = s["test"]
        rows.append(f"| {s['model']} | {variant} | {fmt_mean_std(t['auc'])} | {fmt_mean_std(t['logloss'])} | {fmt_mean_std(t['gauc'])} | "
                    f"{fmt_mean_std(s['valid']['auc'])} | {len(s['seeds'])} | {s['seconds_per_epoch']['mean']:.1f} |")
    return "\n".join(rows)


SEQ_METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")


def seq_table(summaries: list[dict]) -> str:
    """Markdown table of the sequential models (full ranking), or "" when there are none."""
    seq = _ordered([s for s in summaries if is_seq(s)])
    if not seq:
        return ""
    head = " | ".join(f"test {m.replace('recall', 'Recall').replace('ndcg', 'NDCG')}" for m in SEQ_METRICS)
    rows = [f"| model | variant | {head} | seeds | s/epoch |", "|---|---|" + "---|" * len(SEQ_METRICS) + "---|---|"]
    for s in seq:
        vals = " | ".join(fmt_mean_std(s["test"][m]) if m in s["test"] else "–" for m in SEQ_METRICS)
        rows.append(f"| {s['model']} | {_variant(s)} | {vals} | {len(s['seeds'])} | "
                    f"{s['seconds_per_epoch']['mean']:.1f} |")
    return "\n".join(rows)


def split_text(split: dict) -> str:
    """One readable line for the split/label protocol recorded in data/stats.json (full record stays in the JSON)."""
    kind = split.get("split")
    if kind == "ratio":
        r = split.get("ratios") or []
        how = "per-user chronological ratio split " + "/".join(f"{100 * x:g}" for x in r) + " (train/valid/test)"
    elif kind == "loo":
        how = "per-user chronological leave-one-out (last -> test, second-to-last -> valid)"
    elif kind == "time":
        from llmcf.data.protocol import split_line

        how = split_line(split)
    elif kind:
        how = f"{kind} split"
    else:
        return "split: unknown (no data/stats.json)"
    if split.get("label") == "rating":
        lab = f"label = rating >= {split.get('rating_threshold'):g}"
    elif split.get("negatives"):
        lab = f"implicit positives + {split['negatives']} sampled negative(s) each ({split.get('negative_sampling')})"
    else:
        lab = f"label: {split.get('label')}"
    users = f"; {split['max_users']} users (reduced)" if split.get("max_users") else ""
    return f"split: {how}; {lab}; history = last {split.get('history_len')} items before the row{users}"


def protocol_text(summaries: list[dict]) -> str:
    seq = [s for s in summaries if is_seq(s)]
    summaries = [s for s in summaries if not is_seq(s)]
    if not summaries:
        return f"- sequential: {seq[0]['protocol'].get('ranking')}" if seq else ""
    p = summaries[0]["protocol"]
    parts = [split_text(p.get("split") or {}), f"early stopping: {p.get('early_stopping')}",
             f"batch {p.get('batch_size')}, lr {p.get('lr')}, weight decay {p.get('weight_decay')}"]
    llm = next((s["protocol"] for s in summaries if s["protocol"].get("retrieval")), None)
    if llm:
        r = llm["retrieval"]
        parts.append(f"retrieval: K={r['k']}, balanced={r['balanced']}, leakage rule {r['leakage']}, "
                     f"weights history {r['history_weight']} / target {r['target_weight']}; "
                     f"ICT weight decay {llm.get('ict_weight_decay', 'not recorded')}")
    if seq:
        parts.append(f"sequential: {seq[0]['protocol'].get('ranking')}")
    return "\n".join(f"- {x}" for x in parts)


def run_details(run_dir: Path, summaries: list[dict]) -> str:
    """The rest of the protocol, from the run directory: split details and OOV shares (data/stats.json), the RecGen
    p(Yes) AUC with what RecGen trained on (llm/recgen/eval_*.json), and each model's own peak memory."""
    from llmcf.data.protocol import protocol_lines
    from llmcf.llm.recgen.summary import trained_on_line

    run_dir = Path(run_dir)
    lines = []
    stats_path = run_dir / "data" / "stats.json"
    if stats_path.exists():
        stats = json.loads(stats_path.read_text())
        keep = ("time:", "OOV")  # split, label, negatives and history are in the split line above
        lines += [f"data {ln.split(':', 1)[0].strip()}: {ln.split(':', 1)[1].strip()}" for ln in protocol_lines(stats)
                  if ln.startswith(keep)]
        sp = stats.get("splits", {})
        if sp:
            lines.append("rows train/valid/test: " + " / ".join(f"{sp[s]['rows']:,}" for s in ("train", "valid", "test")
                                                                 if s in sp))
    trained = None
    for tag in ("base", "tuned"):
        p = run_dir / "llm" / "recgen" / f"eval_{tag}.json"
        if not p.exists():
            continue
        ev = json.loads(p.read_text())
        rec = ev.get("rec", {})
        if rec.get("auc") is not None:
            lines.append(f"RecGen {tag} LLM p(Yes) AUC {rec['auc']:.4f}, LogLoss {rec['logloss']:.4f} "
                         f"on {rec.get('n')} test rows")
        trained = ev.get("trained_on") or trained
    if trained:
        lines.append(trained_on_line(trained))
    mem = [s for s in summaries if s.get("peak_rss_mb") is not None]
    if mem:
        lines.append("peak memory per model (RSS during its own training; + what it added): " + ", ".join(
            f"{s['tag']} {s['peak_rss_mb']:.0f} MB" + (f" (+{s['peak_delta_mb']:.0f})"
                                                       if s.get("peak_delta_mb") is not None else "")
            for s in _ordered(mem)))
    return "\n".join(f"- {x}" for x in lines)


def _plots(run_dir: Path, summaries: list[dict], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    summaries = [s for s in summaries if not is_seq(s)]
    if not summaries:
        return files
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(summaries)), 3.5))
    tags = [s["tag"] for s in summaries]
    means = [s["test"]["auc"]["mean"] for s in summaries]
    stds = [s["test"]["auc"]["std"] for s in summaries]
    ax.bar(range(len(tags)), means, yerr=stds, capsize=4, color="#4C72B0")
    ax.set_xticks(range(len(tags)), tags, rotation=30, ha="right")
    lo = min(m - s for m, s in zip(means, stds))
    hi = max(m + s for m, s in zip(means, stds))
    ax.set_ylim(lo - 0.02, hi + 0.01)
    ax.set_ylabel("test AUC (mean ± std over seeds)")
    fig.tight_layout()
    with atomic_path(out / "auc.png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    files.append("auc.png")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for s in summaries:
        rp = Path(run_dir) / "models" / s["tag"] / f"seed_{s['seeds'][0]}" / "result.json"
        if rp.exists():
            curve = json.loads(rp.read_text())["curve"]
            ax.plot([c["epoch"] for c in curve], [c["valid_auc"] for c in curve], marker="o", label=s["tag"])
    ax.set_xlabel("epoch")
    ax.set_ylabel("valid AUC (first seed)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out / "curves.png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    files.append("curves.png")
    return files


def _slices_and_studies(run_dir: Path, summaries: list[dict], out: Path) -> tuple[list[str], list[str]]:
    """Markdown sections (slices by user/item training rows; tuning studies) and their plot files."""
    from llmcf.slices import run_slices, slices_markdown, write_slices_json
    from llmcf.tune import load_tune_summaries, tune_markdown, tune_plots

    md: list[str] = []
    sl = run_slices(run_dir, summaries)
    if sl["models"]:
        write_slices_json(out / "slices.json", sl)
        md += ["## Slices (test; mean over seeds)", slices_markdown(sl), ""]
    studies = load_tune_summaries(run_dir)
    if studies:
        md += ["## Tuning studies (llmcf tune)", tune_markdown(studies), ""]
    return md, tune_plots(studies, out) if studies else []


def write_report(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    summaries = load_summaries(run_dir)
    table = results_table(summaries)
    if seq_table(summaries):
        table += "\n\nSequential (full ranking over all items):\n\n" + seq_table(summaries)
    proto = "\n".join(x for x in (protocol_text(summaries), run_details(run_dir, summaries)) if x)
    plots = _plots(run_dir, summaries, out)
    extra, extra_plots = _slices_and_studies(run_dir, summaries, out)
    md = [f"# llmcf results: {run_dir.name}", "", table, "", "## Protocol", proto, "", *extra]
    md += [f"![{p}]({p})" for p in plots + extra_plots]
    plots = plots + extra_plots
    table = "\n\n".join([table, *extra])
    atomic_write_text(out / "results.md", "\n".join(md) + "\n")
    body = "".join(f"<p><img src='{html.escape(p)}'></p>" for p in plots)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>llmcf {html.escape(run_dir.name)}</title>"
            f"</head><body><h1>llmcf results: {html.escape(run_dir.name)}</h1><pre>{html.escape(table)}</pre>"
            f"<h2>Protocol</h2><pre>{html.escape(proto)}</pre>{body}</body></html>")
    atomic_write_text(out / "index.html", page)
    return out / "index.html"


def print_table(run_dir: Path) -> None:
    summaries = load_summaries(run_dir)
    print(results_table(summaries))
    if seq_table(summaries):
        print("\nsequential (full ranking over all items):\n" + seq_table(summaries))
    print("\nprotocol:\n" + "\n".join(x for x in (protocol_text(summaries), run_details(run_dir, summaries)) if x))
