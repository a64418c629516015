"""`llmcf run` end to end on a tiny preset (random 2-layer Llama, real MiniLM): every stage runs, a second run skips
everything, and a CoT config change reruns exactly the stages downstream of it."""
import json

import pytest
import yaml

from llmcf.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory):
    from test_cli import _write_atomic
    from test_llm_backends import make_tiny_model_dir

    root = tmp_path_factory.mktemp("pipeline")
    _write_atomic(root / "toy", n_users=24, n_items=20, per_user=8)
    model = make_tiny_model_dir(root / "tiny_llama")
    preset = {
        "data": {"dataset": str(root / "toy"), "label": "rating", "history_len": 5},
        "models": ["DIN"], "variants": ["base", "full"], "seq_models": ["GRU4Rec"],
        "train": {"seeds": 1, "max_epochs": 1, "batch_size": 32},
        "seq": {"history_len": 5, "hidden": 8, "max_epochs": 1, "num_negatives": 5},
        "llm": {"backend": "hf", "model": str(model), "batch_size": 4},  # a random tiny model: no GGUF template
        "recgen": {"max_steps": 1, "batch_size": 2, "num_rec": 8, "eval_rows": 8, "cutoff_len": 128,
                   "self_distill_max_new_tokens": 4, "heldout_general": 2, "history_items": 3},
        "cot": {"fraction": None, "count": 6, "candidates": 2, "max_new_tokens": 12, "history_items": 3,
                "shard_size": 4, "min_chars": 1},
        "embed": {"encoder": "minilm", "cache_dir": str(root / "embcache")},
        "ict": {"dim": 8, "layers": 1},
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(preset))
    return path


def stamps(run):
    return {p.stem: json.loads(p.read_text())["finished"] + str(p.stat().st_mtime_ns) for p in (run / "stages").glob("*.json")}


def result_mtimes(run):
    return {p.parent.parent.name: p.stat().st_mtime_ns for p in (run / "models").glob("*/seed_0/result.json")}


def test_run_caches_and_reruns_only_downstream_stages(tiny_preset, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["run", "--config", str(tiny_preset), "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert set(stamps(run)) == {"data", "recgen", "cot_generate", "cot_score", "embed", "retrieve"}
    assert set(result_mtimes(run)) == {"DIN", "DIN+llmcf", "seq-GRU4Rec", "seq-GRU4Rec+llmcf"}
    assert "| DIN | base |" in out and "| DIN | llmcf |" in out and "| GRU4Rec | llmcf |" in out
    assert (run / "report" / "index.html").exists() and (run / "llm" / "recgen" / "eval_tuned.json").exists()
    first_stamps, first_results = stamps(run), result_mtimes(run)

    assert main(["run", "--config", str(tiny_preset), "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert out.count("unchanged since last run: skipped") == 6
    assert stamps(run) == first_stamps and result_mtimes(run) == first_results

    # a CoT change reruns CoT and everything that reads it, and retrains only the LLM-CF models
    assert main(["run", "--config", str(tiny_preset), "--out", str(run), "--set", "cot.max_new_tokens=10"]) == 0
    now, results = stamps(run), result_mtimes(run)
    assert {s for s in now if now[s] != first_stamps[s]} == {"cot_generate", "cot_score", "embed", "retrieve"}
    assert {m for m in results if results[m] != first_results[m]} == {"DIN+llmcf", "seq-GRU4Rec+llmcf"}
