"""benchmarks/bench_baselines.py --teacher: an already tuned RecGen model linked as the run's, never overwritten."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _bench():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("bench_baselines_under_test", BENCHMARKS / "bench_baselines.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(BENCHMARKS))


def _teacher(root: Path, split: bytes) -> Path:
    model = root / "llm" / "recgen" / "model"
    model.mkdir(parents=True)
    (model / "recgen_train.json").write_text('{"steps": 600, "data": {"rec": 4800, "general_share": 0.0}}')
    (root / "data").mkdir()
    (root / "data" / "train.parquet").write_bytes(split)
    return model


def test_teacher_is_linked_only_when_it_is_a_tuned_model_of_the_same_split(tmp_path):
    bench = _bench()
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    (run / "data" / "train.parquet").write_bytes(b"split A")
    with pytest.raises(SystemExit, match="recgen_train.json"):
        bench.link_teacher(run, tmp_path)
    other = _teacher(tmp_path / "other", b"split B")
    with pytest.raises(SystemExit, match="another split"):
        bench.link_teacher(run, other)
    good = _teacher(tmp_path / "good", b"split A")
    bench.link_teacher(run, good)
    link = run / "llm" / "recgen" / "model"
    assert link.is_symlink() and not Path(link.readlink()).is_absolute() and link.resolve() == good.resolve()
    bench.link_teacher(run, good)  # the same teacher again: kept
    with pytest.raises(SystemExit, match="already holds another model"):
        bench.link_teacher(run, _teacher(tmp_path / "third", b"split A"))
    assert link.resolve() == good.resolve()

    class A:
        teacher, recgen_steps, recgen_rows = good, 12, 96
    assert "600 steps on 4800 rec rows" in bench.teacher_text(A)
    A.teacher = None
    assert bench.teacher_text(A).startswith("RecGen LoRA 12 steps on 96 rec rows")


def test_regenerating_baselines_md_keeps_the_hand_written_sections(tmp_path, monkeypatch):
    import json

    bench = _bench()
    monkeypatch.setattr(bench, "RESULTS_DIR", tmp_path)
    res = {"name": "toy", "command": "a + b", "machine": "m", "date": "d", "protocol": "p", "teacher": "t",
           "models": [], "rows": [], "notes": ["note one"]}
    (tmp_path / "baselines-toy.json").write_text(json.dumps(res))
    (tmp_path / "baselines.md").write_text("# Baselines\n\n## toy\n\nstale table\n\n## Beauty, by hand\n\n| a |\n\n"
                                           "kept text\n\n## Another by hand\n\nmore\n")
    text = bench.write_markdown().read_text()
    assert "stale table" not in text and "Command: `a + b`" in text and "note one" in text
    assert text.index("## toy") < text.index("## Beauty, by hand") < text.index("## Another by hand")
    assert "| a |\n\nkept text" in text and text.count("## Beauty, by hand") == 1
    again = bench.write_markdown().read_text()  # idempotent: nothing doubles on a second write
    assert again == text


def test_llmcf_rows_are_quoted_only_under_the_same_protocol(tmp_path, monkeypatch):
    import json

    bench = _bench()
    monkeypatch.setattr(bench, "RESULTS_DIR", tmp_path)
    proto = {"split": {"split": "loo"}, "early_stopping": "valid AUC, patience 2, max 20 epochs", "batch_size": 128,
             "lr": 0.01, "weight_decay": 1e-4}
    rows = [{"model": "DIN", "variant": "full", "protocol": proto},
            {"model": "DCN", "variant": "full", "protocol": {**proto, "early_stopping": "valid AUC, patience 2, max 4 epochs"}},
            {"model": "DIN", "variant": "base", "protocol": proto},
            {"model": "xDeepFM", "variant": "full", "protocol": proto}]
    (tmp_path / "llmcf-d.json").write_text(json.dumps({"ctr": {"rows": rows, "date": "then"}}))
    got, info = bench.llmcf_rows("d", {"DIN", "DCN"}, proto)
    assert [(r["model"], r["variant"]) for r in got] == [("DIN", "full")] and info["date"] == "then"
    assert bench.llmcf_rows("d", {"DIN"}, {**proto, "lr": 0.001})[0] == []
    assert bench.llmcf_rows("missing", {"DIN"}, proto) == ([], {})


def test_cpu_seconds_per_epoch_come_from_the_seeds_curves(tmp_path):
    import json

    bench = _bench()
    for seed, cpu in ((0, [10.0, 20.0]), (1, [30.0])):
        (tmp_path / f"seed_{seed}").mkdir()
        curve = [{"epoch": k + 1, "seconds": 99.0, "cpu_seconds": c} for k, c in enumerate(cpu)]
        (tmp_path / f"seed_{seed}" / "result.json").write_text(json.dumps({"curve": curve}))
    assert bench.cpu_per_epoch(tmp_path, [0, 1]) == 22.5  # (15 + 30) / 2
    (tmp_path / "seed_2").mkdir()
    (tmp_path / "seed_2" / "result.json").write_text(json.dumps({"curve": [{"epoch": 1, "seconds": 5.0}]}))
    assert bench.cpu_per_epoch(tmp_path, [0, 2]) is None
    row = {"seconds_per_epoch": {"mean": 40.04}, "cpu_seconds_per_epoch": 22.5}
    assert bench.spe(row) == "40.0 (22.5 CPU)" and bench.spe({"seconds_per_epoch": 3.0}) == "3.0"
