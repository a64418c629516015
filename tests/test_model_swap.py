"""A retrain that dies midway never breaks the model already trained: each seed is written into a staging directory
(weights, its config, result last) and swapped in complete; a swap cut between its two renames is repaired."""
from __future__ import annotations

import json
import shutil

import pytest

from llmcf.cli import main
from llmcf.serve import Scorer
from llmcf.train.seeds import OLD, STAGING, recover_seed_dirs

H = "user_id:token\titem_id:token\trating:float\ttimestamp:float"


@pytest.fixture()
def trained(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    lines = [H] + [f"u{u}\ti{(u * 3 + t) % 12}\t{5 if (u + t) % 3 else 1}\t{t}" for u in range(12) for t in range(8)]
    (d / "x.inter").write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    assert main(["data", "build", "--out", str(out), "--dataset", str(d)]) == 0
    assert main(["train", "--run", str(out), "--model", "DIN", "--seeds", "1", "--quiet",
                 "--set", "train.max_epochs=1"]) == 0
    return out


def _score(run) -> float:
    return float(Scorer.load(run, "DIN").score(["i1", "i2"], ["i3", "i4"], user="u1").scores[0])


def test_killed_retrain_keeps_the_old_model_loading(trained, monkeypatch, capsys):
    before = _score(trained)
    seed_dir = trained / "models" / "DIN" / "seed_0"
    files = {p.name: p.read_bytes() for p in seed_dir.iterdir()}
    tag_cfg = (trained / "models" / "DIN" / "config.yaml").read_bytes()

    def killed(*a, **k):
        raise KeyboardInterrupt  # what a SIGINT mid-training does; SIGKILL leaves even less behind

    monkeypatch.setattr("llmcf.train.ctr_task.CTRTask.fit", killed)
    retrain = ["train", "--run", str(trained), "--model", "DIN", "--seeds", "1", "--quiet",
               "--set", "train.max_epochs=1", "--set", "model.embed_dim=8"]  # other weight shapes
    assert main(retrain) == 130
    assert {p.name: p.read_bytes() for p in seed_dir.iterdir()} == files
    assert (trained / "models" / "DIN" / "config.yaml").read_bytes() == tag_cfg
    assert _score(trained) == before  # the old version still loads and scores the same

    monkeypatch.undo()
    assert main(retrain) == 0
    s = Scorer.load(trained, "DIN")
    assert s.cfg.model.embed_dim == 8 and not s.warnings
    assert not list((trained / "models" / "DIN").glob(".*"))


@pytest.mark.parametrize("staging_complete", [True, False])
def test_a_swap_cut_between_its_renames_is_repaired(trained, staging_complete):
    tag = trained / "models" / "DIN"
    final, old, staging = tag / "seed_0", tag / f"{OLD}seed_0", tag / f"{STAGING}seed_0"
    shutil.copytree(final, staging)
    rec = json.loads((staging / "result.json").read_text())
    rec["marker"] = "new"
    (staging / "result.json").write_text(json.dumps(rec))
    if not staging_complete:
        (staging / "result.json").unlink()
    final.rename(old)  # the kill lands here: seed_0 is gone, old and staging both exist

    recover_seed_dirs(tag)
    assert final.is_dir() and not old.exists() and not staging.exists()
    assert (json.loads((final / "result.json").read_text()).get("marker") == "new") == staging_complete
    _score(trained)  # loads
