"""benchmarks/bench_variants.py: a warm-started variant reads the ``base`` variant's trained backbone."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_variants.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_variants_under_test", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_warm_variants_start_from_the_base_backbone_and_say_so_when_it_is_missing(tmp_path):
    bench = _bench()
    warm = [n for n, spec in bench.VARIANTS.items() if spec.get("warm")]
    ict_warm = [n for n in warm if bench.VARIANTS[n]["ict"]]
    assert ict_warm and all(bench.VARIANTS[n]["sets"].get("ict.warm_start") is True
                            and bench.VARIANTS[n]["sets"].get("ict.fusion") == "residual" for n in ict_warm)
    # the probe's controls start from the base model too: residual baselines (boost is always residual)
    for n in set(warm) - set(ict_warm):
        sets = bench.VARIANTS[n]["sets"]
        assert sets["baseline.name"] == "boost" or sets.get("baseline.residual") is True, n
    run, d = tmp_path / "run", tmp_path / "run" / "variants" / "nocot-safe-warm"
    base = run / "variants" / "base" / "models" / "DCN"
    (base / "seed_0").mkdir(parents=True)
    (base / "seed_0" / "model.safetensors").write_bytes(b"w0")
    d.mkdir(parents=True)
    with pytest.raises(SystemExit, match=r"seeds \[1\]"):
        bench.link_base_model(run, d, "DCN", seeds=2)
    assert not (d / "models" / "DCN").exists()
    bench.link_base_model(run, d, "DCN", seeds=1)
    link = d / "models" / "DCN"
    assert link.is_symlink() and not Path(link.readlink()).is_absolute()
    assert (link / "seed_0" / "model.safetensors").read_bytes() == b"w0"
    bench.link_base_model(run, d, "DCN", seeds=1)  # a second seed pass keeps the link
    assert (link / "seed_0" / "model.safetensors").read_bytes() == b"w0"


def test_warm_variants_are_also_compared_seed_by_seed():
    bench = _bench()
    base = {"variant": "base", "per_seed": {"seed": [0, 1, 2], "test_auc": [0.80, 0.81, 0.79],
                                            "valid_auc": [0.7, 0.7, 0.7], "test_logloss": [0.5, 0.5, 0.5]}}
    warm = {"variant": "nocot-frozen", "per_seed": {"seed": [1, 0], "test_auc": [0.813, 0.802],
                                                    "valid_auc": [0.71, 0.7], "test_logloss": [0.49, 0.5]}}
    p = bench.paired(warm, base)
    assert p["diffs"] == pytest.approx([0.003, 0.002]) and p["mean"] == pytest.approx(0.0025)
    assert p["se"] == pytest.approx((0.0005 ** 2 * 2) ** 0.5 / 2 ** 0.5)
    assert bench.paired({"variant": "x", "per_seed": {"seed": [0], "test_auc": [0.8]}}, base) is None
    assert bench.paired({"variant": "old record"}, base) is None
    row = {"test": {"auc": {"mean": 0.8, "std": 0.01, "n": 2}, "logloss": {"mean": 0.5, "std": 0.0, "n": 2}},
           "valid": {"auc": {"mean": 0.7, "std": 0.0, "n": 2}}, "bank_rows": 240, "best_epochs": [1, 2],
           "seconds_per_epoch": {"mean": 1.0}, "wall_seconds_last_seed": 1, "cpu_seconds_last_seed": 1,
           "seeds": [0, 1], "slices": {"user": [], "item": []}, "edges": {"user": [], "item": []}}
    rec = {"name": "t", "command": "c", "machine": "m", "started": "s", "protocol": "p", "seeds": 2,
           "variants": ["base", "nocot-frozen"], "rows": [{**row, **base}, {**row, **warm}]}
    text = bench.markdown(rec)
    assert "| nocot-frozen | +0.0030, +0.0020 | +0.0025 ± 0.0007 | > 2 SE" in text


def test_warm_set_values_train_the_warm_variants_in_their_own_folders():
    bench = _bench()
    sets = {"train.min_epochs": 6}
    assert bench.warm_folder("nocot-frozen", sets) == "nocot-frozen@train.min_epochs=6"
    assert bench.warm_folder("textemb-frozen", sets) == "textemb-frozen@train.min_epochs=6"
    assert bench.warm_folder("base", sets) is None and bench.warm_folder("nocot-bank", sets) is None
    assert bench.warm_folder("nocot-frozen", {}) is None  # the default protocol keeps the variant's own folder


def test_paired_differences_that_vanish_at_four_decimals_are_never_beyond_2_se():
    bench = _bench()
    base = {"per_seed": {"seed": [0, 1, 2], "test_auc": [0.8, 0.81, 0.82]}}
    same = {"per_seed": {"seed": [0, 1, 2], "test_auc": [0.8 + 1e-9, 0.81 + 1e-9, 0.82 + 1e-9]}}
    t = bench.paired(same, base)
    assert t["se"] < 1e-12 and bench.beyond(t["mean"], t["se"]) == "< 2 SE"
    lift = {"per_seed": {"seed": [0, 1, 2], "test_auc": [0.803, 0.8131, 0.8229]}}
    t = bench.paired(lift, base)
    assert abs(t["mean"] - 0.003) < 1e-9 and bench.beyond(t["mean"], t["se"]) == "> 2 SE"
    assert bench.beyond(-0.003, 0.002) == "< 2 SE" and bench.beyond(-0.003, 0.001) == "> 2 SE"


def test_a_variant_folder_embeds_through_the_study_runs_cache(tmp_path, monkeypatch):
    """Item texts the study's run has embedded are read back from its cache, not encoded again per variant."""
    import llmcf.embed
    from llmcf.config import load_config
    from llmcf.rundir import RunDir

    bench = _bench()
    seen = []
    monkeypatch.setattr(llmcf.embed, "run_embed", lambda d, cfg: seen.append((d, cfg.embed.cache_dir)))
    run, dest = tmp_path / "run", tmp_path / "run" / "variants" / "v"
    cfg = load_config("demo", [])
    bench.embed_variant(cfg, run, dest)  # no cache in the run yet: the variant's own default
    RunDir(run).embed_cache.mkdir(parents=True)
    bench.embed_variant(cfg, run, dest)
    assert seen == [(dest, None), (dest, str(RunDir(run).embed_cache))] and cfg.embed.cache_dir is None
