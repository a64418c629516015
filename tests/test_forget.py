"""Exact forgetting (``llmcf forget``, ``partition.shards``): after forgetting a user, every artifact of the run equals
(bit for bit for weights and vectors, row for row for tables) what a fresh partitioned run on the dataset without
that user writes with the same seeds; only the user's shard is retrained; no file of the run holds the user's id;
serving stops returning the user's in-context examples at once."""
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from llmcf.cli import main
from llmcf.data.partition import shard_of

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
os.environ.setdefault("HF_HUB_OFFLINE", "1")



def write_toy(folder: Path, n_users=16, n_items=14, per_user=8, drop=(), seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u in range(n_users):
        start = int(rng.integers(0, n_items))
        ratings = rng.choice([2, 4, 5], size=per_user)
        name = f"usr{u:03d}x"
        if name in drop:
            continue
        for t in range(per_user):
            lines.append(f"{name}\ti{(start + t) % n_items}\t{ratings[t]}\t{t}")
    (folder / f"{folder.name}.inter").write_text("\n".join(lines) + "\n")
    items = ["item_id:token\ttitle:token_seq"] + [f"i{j}\tthing {j}" for j in range(n_items)]
    (folder / f"{folder.name}.item").write_text("\n".join(items) + "\n")


def preset(root: Path, dataset: Path, model: Path, **extra) -> Path:
    cfg = {
        "data": {"dataset": str(dataset), "label": "rating", "history_len": 4},
        "models": ["DIN"], "variants": ["base", "full"], "seq_models": [],
        "partition": {"shards": 2},
        "train": {"seeds": 1, "max_epochs": 1, "batch_size": 16, "threads": 1},
        "llm": {"backend": "hf", "model": str(model), "batch_size": 4, "threads": 1},
        "recgen": {"max_steps": 1, "batch_size": 2, "num_rec": 6, "eval_rows": 4, "cutoff_len": 96,
                   "self_distill_max_new_tokens": 2, "heldout_general": 2, "history_items": 3},
        "cot": {"fraction": None, "count": 4, "candidates": 1, "max_new_tokens": 8, "history_items": 3,
                "shard_size": 4, "min_chars": 1},
        "embed": {"encoder": "minilm", "cache_dir": str(root / "embcache")},
        "ict": {"dim": 8, "layers": 1},
        **extra,
    }
    path = root / f"{dataset.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def files_of(run: Path) -> dict[str, Path]:
    return {str(p.relative_to(run)): p for p in sorted(run.rglob("*")) if p.is_file()}


def same_content(a: Path, b: Path) -> bool:
    """Tables row for row (Parquet), arrays and weights bit for bit (.npy, .safetensors), other files by bytes."""
    if a.suffix == ".parquet":
        return pd.read_parquet(a).equals(pd.read_parquet(b))
    if a.suffix == ".npy":
        x, y = np.load(a, allow_pickle=False), np.load(b, allow_pickle=False)
        return x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
    if a.suffix == ".safetensors":
        from safetensors.numpy import load_file

        x, y = load_file(str(a)), load_file(str(b))
        return x.keys() == y.keys() and all(x[k].tobytes() == y[k].tobytes() for k in x)
    if a.suffix == ".json":
        x, y = (json.dumps(without_timings(json.loads(p.read_text())), sort_keys=True) for p in (a, b))
        return x == y  # compared as text: NaN metrics are equal
    return a.read_bytes() == b.read_bytes()


# files that differ between any two runs by design: the stage records (timestamps), config copies (the dataset path),
# reports (timings), forget/ (the run's own salt and audit); JSON files are compared without their timing fields
VOLATILE = ("stages/", "config.yaml", "report/", "forget/")
TIMING = ("second", "time", "_per_s", "tok_s", "rss", "finished", "loaded", "started", "date", "created", "gen_id",
          "peak", "fingerprint", "config_hash")
"""JSON fields that differ between two runs by design: timings, memory, creation ids, and hashes of paths/mtimes."""


def without_timings(obj):
    """``obj`` without TIMING fields, the two runs' (and datasets') folder names made equal."""
    if isinstance(obj, dict):
        return {k: without_timings(v) for k, v in obj.items() if not any(t in k.lower() for t in TIMING)}
    if isinstance(obj, list):
        return [without_timings(v) for v in obj]
    if isinstance(obj, str):
        return obj.replace("/fresh", "/run").replace("toyless", "toy")
    return obj


def comparable(rel: str) -> bool:
    return not any(v in rel for v in VOLATILE)


def contains_user(path: Path, user: str) -> bool:
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
        for col in df.columns:
            if df[col].astype(str).str.contains(user, regex=False).any():
                return True
    return user.encode() in path.read_bytes()


def test_forget_equals_a_fresh_run_without_the_user(tmp_path, capsys):
    from test_llm_backends import make_tiny_model_dir

    from llmcf.forget import forget
    from llmcf.serve.ensemble import EnsembleScorer

    model = make_tiny_model_dir(tmp_path / "tiny_llama")
    write_toy(tmp_path / "toy")
    run, fresh = tmp_path / "run", tmp_path / "fresh"
    assert main(["run", "--config", str(preset(tmp_path, tmp_path / "toy", model)), "--out", str(run)]) == 0
    # forget a user who has CoT rows in their shard's bank (so that serving could return them)
    GONE = sorted(pd.read_parquet(run / "shards" / "0" / "retrieval" / "bank.parquet")["user_id"])[0]
    write_toy(tmp_path / "toyless", drop=(GONE,))
    k = int(shard_of([GONE], 2, 0)[0])
    assert k == 0
    other = 1 - k
    before = {rel: p.stat().st_mtime_ns for rel, p in files_of(run / "shards" / str(other)).items()}

    # the server has the run loaded: the user's own rows are retrievable
    ens = EnsembleScorer(run, "DIN+llmcf", 0)
    bank = ens.members[k].bank_frame
    mine = bank[bank["user_id"] == GONE]
    q_hist, q_item = list(mine["history"].iloc[0]), str(mine["item_id"].iloc[0])

    def their_rows(scorer) -> bool:
        m = scorer.members[k]
        rows = m.retriever.query([None], np.array([0]), [q_hist], [q_item])
        return bool((m.bank_frame["user_id"].to_numpy()[rows[rows >= 0]] == GONE).any())

    assert their_rows(ens)

    # a forget interrupted after its shard was cleared ...
    def boom(step):
        if step == "cleared":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        forget(run, [GONE], on_step=boom)
    someone_else = next(u for u in ("usr015x", "usr014x") if u != GONE)
    assert main(["forget", "--run", str(run), "--user", someone_else]) == 1  # another forget waits for this one
    assert "unfinished forget" in capsys.readouterr().err

    # ... is resumed through the serving endpoint: the user's rows are never returned once it answers
    from fastapi.testclient import TestClient

    from llmcf.serve.app import create_app

    app = create_app(ens, admin_token="secret")
    with TestClient(app) as client:
        assert client.post("/v1/admin/forget", json={"users": [GONE]}).status_code == 401
        r = client.post("/v1/admin/forget", json={"users": [GONE]}, headers={"Authorization": "Bearer secret"})
        assert r.status_code == 202 and r.json()["bank_rows_blocked"] >= 1
        assert not their_rows(app.state.slot.current)
        for _ in range(600):
            st = client.get("/v1/admin/forget", headers={"Authorization": "Bearer secret"}).json()
            if st["status"] != "running":
                break
            time.sleep(0.5)
        assert st["status"] == "done", st
        served = app.state.slot.current
        assert served is not ens and GONE not in set(served.bank_frame["user_id"])
    assert main(["run", "--config", str(preset(tmp_path, tmp_path / "toyless", model)), "--out", str(fresh)]) == 0

    # only the user's shard was retrained: no artifact of the other shard was rewritten (a rerun of `llmcf run`
    # rewrites only its config copies, summaries and report, from the cached seeds)
    after = {rel: p.stat().st_mtime_ns for rel, p in files_of(run / "shards" / str(other)).items()}
    assert set(after) == set(before)
    rewritten = {r for r in before if before[r] != after[r]}
    assert all(r.endswith(("config.yaml", "summary.json")) or r.startswith("report/") for r in rewritten), rewritten
    assert any(r.endswith("model.safetensors") for r in before)
    audit = [json.loads(x) for x in (run / "forget" / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["shards_retrained"] == [k] and GONE not in json.dumps(audit)

    # every artifact equals the fresh run's
    got, want = files_of(run), files_of(fresh)
    keys = {r for r in want if comparable(r)}
    assert {r for r in got if comparable(r)} == keys
    weights = [r for r in keys if r.endswith((".safetensors", ".npy", ".parquet"))]
    assert any("recgen" in r for r in weights) and any("models/DIN+llmcf" in r for r in weights)
    diff = sorted(r for r in keys if not same_content(got[r], want[r]))
    assert not diff, f"differs from the fresh run: {diff}"
    for tag in ("DIN", "DIN+llmcf"):
        a = json.loads((run / "models" / tag / "summary.json").read_text())["test"]
        b = json.loads((fresh / "models" / tag / "summary.json").read_text())["test"]
        assert a == b

    # no file of the run holds the user's id; the reloaded served bank has none of their rows
    holding = [r for r, p in got.items() if contains_user(p, GONE)]
    assert not holding, holding
    assert GONE not in set(EnsembleScorer(run, "DIN+llmcf", 0).bank_frame["user_id"])


def test_shard_assignment_is_seeded_stable_under_removal_and_roughly_balanced():
    users = [f"u{i}" for i in range(4000)]
    a = shard_of(users, 4, 0)
    assert (shard_of(users[::7], 4, 0) == a[::7]).all()  # a function of the id alone: removal moves nobody
    assert not (shard_of(users, 4, 1) == a).all()
    counts = np.bincount(a, minlength=4)
    assert counts.min() > 900 and counts.max() < 1100


def test_partition_refuses_builds_where_one_user_changes_another_users_rows():
    from llmcf.config import ConfigError, load_config
    from llmcf.data.partition import check_separable

    check_separable(load_config(None, ["partition.shards=4", "data.label=rating"]))
    for bad in (["data.split=time"], ["data.max_users=10"], ["data.label=implicit"], ["seq_models=[SASRec]"]):
        with pytest.raises(ConfigError, match="partition.shards > 1"):
            check_separable(load_config(None, ["partition.shards=4", *bad]))


def test_forgotten_users_stay_out_of_a_rebuild_and_only_their_salted_hash_is_stored(tmp_path):
    from llmcf.data.loaders import load_dataset
    from llmcf.data.partition import add_excluded, excluded_path, without_forgotten

    write_toy(tmp_path / "toy")
    ds = load_dataset(str(tmp_path / "toy"), "auto")
    add_excluded(tmp_path / "run", ["usr003x"])
    assert "usr003x" not in excluded_path(tmp_path / "run").read_text()
    kept = without_forgotten(ds, tmp_path / "run")
    assert set(ds.interactions["user_id"].astype(str)) - set(kept.interactions["user_id"].astype(str)) == {"usr003x"}
    assert len(kept.interactions) == len(ds.interactions) - 8


def test_blocked_bank_rows_are_never_selected():
    import faiss

    from llmcf.config import RetrievalConfig
    from llmcf.retrieval.select import Selector

    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(40, 8)).astype(np.float32)
    users = [f"u{i % 5}" for i in range(40)]
    labels = np.arange(40) % 2
    idx = {}
    for lab in (0, 1):
        idx[lab] = faiss.IndexFlatIP(8)
        idx[lab].add(vecs[labels == lab])
    sel = Selector(users, np.zeros(40, np.int64), labels, idx, RetrievalConfig(k=4))
    q = vecs[:10]
    before = sel.select(q, [None] * 10, np.zeros(10, np.int64), ["x"] * 10)
    assert (np.asarray(users)[before[before >= 0]] == "u0").any()
    assert sel.block_users(["u0"]) == 8
    after = sel.select(q, [None] * 10, np.zeros(10, np.int64), ["x"] * 10)
    assert (after >= 0).sum() == before.size and not (np.asarray(users)[after[after >= 0]] == "u0").any()


def test_forget_bound_matches_the_hash_assignment_and_rules_out_s_over_2_for_ten_users():
    from llmcf.data.partition import expected_shards_hit, forget_speedup_bound

    assert expected_shards_hit(4, 10) == pytest.approx(3.775, abs=1e-3)
    assert expected_shards_hit(8, 10) == pytest.approx(5.895, abs=1e-3)
    assert expected_shards_hit(8, 1) == 1.0
    # the blake2b assignment behaves like the uniform draws the formula assumes
    rng = np.random.default_rng(0)
    ids = [f"u{i}" for i in range(20000)]
    for S in (4, 8):
        a = shard_of(ids, S, 0)
        hits = [len(set(a[rng.choice(len(ids), 10, replace=False)])) for _ in range(2000)]
        assert np.mean(hits) == pytest.approx(expected_shards_hit(S, 10), abs=0.06)
    # one user: S/2 is within reach; ten users: not for any S >= 3, not even with many slices at S = 4 or 8
    assert forget_speedup_bound(4, 1) == 4.0 and forget_speedup_bound(8, 1) == 8.0
    for S in (3, 4, 8, 16, 32):
        assert forget_speedup_bound(S, 10) < S / 2
    assert forget_speedup_bound(4, 10, slices=64) < 2.0 and forget_speedup_bound(8, 10, slices=64) < 4.0
    # slices help (a resumed shard reruns less than all of its training), most for one user: E[1 - U^2] -> 2/3
    assert forget_speedup_bound(8, 1, slices=200) == pytest.approx(8 * 1.5, rel=0.01)
    assert forget_speedup_bound(8, 10, slices=4) > forget_speedup_bound(8, 10)
