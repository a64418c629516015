"""Report: tables for CTR and sequential summaries, plots and the HTML page."""
import json

from llmcf.report import results_table, seq_table, write_report


def ms(mean, std=0.001, n=2):
    return {"mean": mean, "std": std, "n": n}


def ctr_summary(model, tag, auc):
    return {"model": model, "tag": tag, "seeds": [0, 1],
            "protocol": {"split": {"split": "ratio"}, "early_stopping": "valid AUC, patience 2", "batch_size": 128,
                         "lr": 0.01, "weight_decay": 1e-4, "retrieval": None},
            "test": {"auc": ms(auc), "logloss": ms(0.5), "gauc": ms(auc - 0.05)},
            "valid": {"auc": ms(auc + 0.01), "logloss": ms(0.5)}, "seconds_per_epoch": ms(3.0), "peak_rss_mb": 100}


def seq_summary(model, tag, ndcg):
    return {"model": model, "tag": tag, "task": "sequential", "seeds": [0],
            "protocol": {"ranking": "full ranking over 50 items, history kept"},
            "test": {m: ms(ndcg) for m in ("recall@10", "ndcg@10", "recall@20", "ndcg@20")},
            "valid": {"ndcg@10": ms(ndcg)}, "seconds_per_epoch": ms(1.0), "peak_rss_mb": 100}


def write(run, s):
    d = run / "models" / s["tag"]
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps(s))
    (d / f"seed_{s['seeds'][0]}").mkdir()
    curve = [{"epoch": 1, "valid_auc": 0.7}, {"epoch": 2, "valid_auc": 0.75}]
    (d / f"seed_{s['seeds'][0]}" / "result.json").write_text(json.dumps({"curve": curve}))


def test_tables_separate_tasks_and_put_base_first():
    sums = [ctr_summary("DIN", "DIN+llmcf", 0.79), ctr_summary("DIN", "DIN", 0.78),
            seq_summary("SASRec", "seq-SASRec+llmcf", 0.06), seq_summary("SASRec", "seq-SASRec", 0.05)]
    ctr = results_table(sums).splitlines()
    assert len(ctr) == 4 and "| DIN | base | 0.7800" in ctr[2] and "| DIN | llmcf | 0.7900" in ctr[3]
    seq = seq_table(sums).splitlines()
    assert len(seq) == 4 and "| SASRec | base | 0.0500" in seq[2] and "| SASRec | llmcf |" in seq[3]
    assert seq_table(sums[:2]) == ""


def test_write_report_has_plots_table_and_protocol(tmp_path):
    for s in (ctr_summary("DIN", "DIN", 0.78), ctr_summary("DIN", "DIN+llmcf-no_cot", 0.77),
              seq_summary("GRU4Rec", "seq-GRU4Rec", 0.04)):
        write(tmp_path, s)
    page = write_report(tmp_path)
    out = tmp_path / "report"
    assert page == out / "index.html"
    for png in ("auc.png", "curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "results.md").read_text()
    assert "| DIN | llmcf-no_cot | 0.7700" in md and "| GRU4Rec | base |" in md
    assert "patience 2" in md and "full ranking over 50 items" in md


def test_split_text_is_readable():
    from llmcf.report import split_text

    ratio = {"split": "ratio", "ratios": [0.8, 0.1, 0.1], "label": "rating", "rating_threshold": 4.0,
             "history_len": 20, "max_users": 400}
    assert split_text(ratio) == ("split: per-user chronological ratio split 80/10/10 (train/valid/test); "
                                 "label = rating >= 4; history = last 20 items before the row; 400 users (reduced)")
    loo = {"split": "loo", "label": "implicit", "negatives": 1, "negative_sampling": "uniform", "history_len": 20}
    assert "leave-one-out" in split_text(loo) and "1 sampled negative(s)" in split_text(loo)
