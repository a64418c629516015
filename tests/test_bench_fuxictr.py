"""benchmarks/bench_fuxictr.py's export of a run directory to FuxiCTR's model input (no fuxictr needed)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from llmcf.config import load_config
from llmcf.data.build import build_run_data
from llmcf.data.schema import RawDataset, item_text
from llmcf.data.vocab import Vocab

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_fuxictr.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_fuxictr_under_test", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _toy() -> RawDataset:
    rng = np.random.default_rng(5)
    rows = [(f"u{u}", f"i{it}", float(t)) for u in range(12)
            for t, it in enumerate(rng.choice(30, size=int(rng.integers(4, 12)), replace=False))]
    ids = [f"i{j}" for j in range(30)]
    brands = ["" if j % 4 == 0 else f"b{j % 3}" for j in range(30)]  # every 4th item has no brand
    cats = [[f"c{j % 5}"] + ([f"c{(j + 2) % 5}"] if j % 2 else []) for j in range(30)]  # odd items: 2 genres
    items = pd.DataFrame({"item_id": ids, "title": ids, "brand": brands, "categories": cats,
                          "text": [item_text(t, b, c) for t, b, c in zip(ids, brands, cats)]})
    return RawDataset("toy", pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]), items,
                      real_time=True, source="toy")


def test_export_writes_fuxictr_columns_with_our_ids(tmp_path):
    raw = _toy()
    cfg = load_config(None, ["data.split=loo", "data.label=implicit", "data.history_len=4"])
    build_run_data(raw, cfg.data, tmp_path / "run", show_progress=False)
    bench = _bench()
    info = bench.export_fuxictr(tmp_path / "run", tmp_path / "fx")
    assert "fuxictr" not in sys.modules  # the export is ours alone

    fmap = json.loads((tmp_path / "fx" / "feature_map.json").read_text())
    feats = {k: v for f in fmap["features"] for k, v in f.items()}
    assert fmap["labels"] == ["label"] and fmap["dataset_id"] == "llmcf"
    assert set(bench.FEATURES_FM) <= set(feats) and set(bench.FEATURES_DIN) <= set(feats)
    vocab = Vocab.load(tmp_path / "run" / "data" / "vocab.json")
    assert feats["user_id"] == {"source": "user", "type": "categorical", "padding_idx": 0,
                                "vocab_size": vocab.n_users}
    assert feats["item_id"]["vocab_size"] == vocab.n_items and feats["brand"]["vocab_size"] == vocab.size("brand")
    assert feats["hist_items"]["type"] == "sequence" and feats["hist_items"]["max_len"] == 4
    assert feats["hist_items"]["share_embedding"] == "item_id"
    assert feats["hist_genre"]["share_embedding"] == "genre" and feats["hist_genres"]["share_embedding"] == "genres"
    assert fmap["input_length"] == sum(v["max_len"] if v["type"] == "sequence" else 1 for v in feats.values())

    brand_of = dict(zip(raw.items.item_id, raw.items.brand))
    cats_of = dict(zip(raw.items.item_id, raw.items.categories))
    for split in ("train", "valid", "test"):
        rows = pd.read_parquet(tmp_path / "run" / "data" / f"{split}.parquet")
        arr = np.load(tmp_path / "fx" / f"{split}.npz")
        assert info["rows"][split] == len(rows)
        assert {k: len(arr[k]) for k in arr.files} == {k: len(rows) for k in arr.files}
        for name, spec in feats.items():  # fixed widths, as FuxiCTR's loader stacks the columns
            assert arr[name].shape == ((len(rows), spec["max_len"]) if spec["type"] == "sequence" else (len(rows),))
        np.testing.assert_array_equal(arr["label"], rows["label"].to_numpy(np.float32))
        np.testing.assert_array_equal(arr["user_id"], vocab.encode_users(rows["user_id"]))
        np.testing.assert_array_equal(arr["item_id"], vocab.encode_items(rows["item_id"]))
        for i in range(len(rows)):
            item, hist = rows.item_id.iloc[i], list(rows.history.iloc[i])[-4:]
            want_brand = vocab.encode("brand", [brand_of[item]])[0] if brand_of[item] else 0
            assert arr["brand"][i] == want_brand
            want_cats = vocab.encode("category", cats_of[item])
            assert sorted(arr["genres"][i][arr["genres"][i] != 0]) == sorted(want_cats)
            assert arr["genre"][i] == want_cats[0]
            # history: left-padded with 0, most recent last, the same ids as our batches
            h = arr["hist_items"][i]
            assert (h[:4 - len(hist)] == 0).all()
            np.testing.assert_array_equal(h[4 - len(hist):], vocab.encode_items(hist))
            firsts = [vocab.encode("category", cats_of[x])[0] for x in hist]
            np.testing.assert_array_equal(arr["hist_genre"][i][4 - len(hist):], firsts)
            every = [c for x in hist for c in vocab.encode("category", cats_of[x])]
            got = arr["hist_genres"][i]
            assert sorted(got[got != 0]) == sorted(every) and (got[len(every):] == 0).all()
    assert (np.load(tmp_path / "fx" / "train.npz")["brand"] == 0).any()  # brandless items stay padding
