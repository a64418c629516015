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
    assert warm and all(bench.VARIANTS[n]["sets"].get("ict.warm_start") is True
                        and bench.VARIANTS[n]["sets"].get("ict.fusion") == "residual" for n in warm)
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
