"""RunData (llmcf train): arrays from the Arrow fast path, pandas frames only on demand."""
from __future__ import annotations

import numpy as np
import pandas as pd

from llmcf.config import load_config
from llmcf.data.build import build_run_data
from llmcf.data.features import encode
from llmcf.data.schema import RawDataset, item_text
from llmcf.data.vocab import Vocab
from llmcf.train.stage import RunData


def _toy(n_users=25, n_items=40) -> RawDataset:
    rng = np.random.default_rng(3)
    rows = [(f"u{u}", f"i{it}", float(t)) for u in range(n_users)
            for t, it in enumerate(rng.choice(n_items, size=int(rng.integers(3, 15)), replace=False))]
    ids = [f"i{j}" for j in range(n_items)]
    items = pd.DataFrame({"item_id": ids, "title": ids, "brand": [f"b{j % 3}" for j in range(n_items)],
                          "categories": [[f"c{j % 5}"] for j in range(n_items)],
                          "text": [item_text(t, f"b{j % 3}", [f"c{j % 5}"]) for j, t in enumerate(ids)]})
    return RawDataset("toy", pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]), items,
                      real_time=True, source="toy")


def test_rundata_arrays_match_pandas_encoding_and_frames_are_lazy(tmp_path):
    cfg = load_config(None, ["data.split=loo", "data.label=implicit", "data.history_len=6"])
    build_run_data(_toy(), cfg.data, tmp_path, show_progress=False)
    run = RunData(tmp_path, cfg)
    assert run._frames is None  # nothing read through pandas yet
    vocab = Vocab.load(tmp_path / "data" / "vocab.json")
    for split in ("train", "valid", "test"):
        direct = encode(pd.read_parquet(tmp_path / "data" / f"{split}.parquet"), vocab, 6)
        assert set(direct) == set(run.arrays[split])
        for k, v in direct.items():
            assert run.arrays[split][k].dtype == v.dtype and np.array_equal(run.arrays[split][k], v), (split, k)
        assert len(run.frames[split]) == len(direct["label"])
    assert run.arrays["train"]["hist"].shape[1] == 6
    assert run.frames is run.frames  # read once, then cached
