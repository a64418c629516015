"""Bit-for-bit reproducibility on one machine (issue 19): the same config and seeds, run twice in two fresh run
directories, give identical artifacts (RecGen adapter, CoT generations and selection, embeddings, retrieval ids,
trained weights) and identical metrics. JSON metadata with timestamps or timings is left out of the comparison."""
import json

import pytest

from llmcf import publish
from llmcf.cli import main
from test_pipeline import tiny_preset  # noqa: F401  (module fixture: toy data, random tiny Llama, real MiniLM)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
VOLATILE = {"manifest.json", "meta.json", "stats.json", "score_meta.json", "state.json", "train_info.json",
            "recgen_train.json"}


def artifacts(run) -> dict[str, str]:
    out = {}
    for stage in publish.STAGE_OUTPUTS:
        out.update({k: v for k, v in publish.output_digests(run, stage).items() if k.split("/")[-1] not in VOLATILE})
    for w in sorted(run.glob("models/*/seed_*/model.safetensors")):
        out[w.relative_to(run).as_posix()] = publish.file_digest(w)["sha256"]
    return out


def metrics(run) -> dict:
    """valid/test metrics and the per-epoch curve (less its timings) of every trained seed."""
    out = {}
    for r in sorted(run.glob("models/*/seed_*/result.json")):
        res = json.loads(r.read_text())
        out[r.relative_to(run).as_posix()] = {
            "valid": res["valid"], "test": res["test"],
            "curve": [{k: v for k, v in e.items() if "second" not in k} for e in res.get("curve", [])]}
    return out


def test_same_config_and_seeds_give_identical_artifacts_and_metrics(tiny_preset, tmp_path, capsys):  # noqa: F811
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["run", "--config", str(tiny_preset), "--out", str(a)]) == 0
    assert main(["run", "--config", str(tiny_preset), "--out", str(b)]) == 0
    got_a, got_b = artifacts(a), artifacts(b)
    for needed in ("llm/recgen/model", "cot/shards/", "cot/selected.parquet", "embed/cot.npy",
                   "retrieval/train_ctx.npy", "models/DIN+llmcf/seed_0/model.safetensors"):
        assert any(k.startswith(needed) for k in got_a), needed
    assert got_a == got_b, sorted(k for k in got_a if got_a.get(k) != got_b.get(k))
    assert len(metrics(a)) == 4
    assert json.dumps(metrics(a)) == json.dumps(metrics(b))  # as text: NaN (one-row groups' GAUC) equals NaN
