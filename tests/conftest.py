"""Shared test settings and fixtures: offline hubs, one torch thread, a tiny feature schema."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["LLMCF_CACHE_DIR"] = ""  # no per-machine rate cache in the home directory (tests of it set their own)

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _float32_everywhere():
    """``llm.dtype: auto`` is bfloat16 on hardware with native bf16 and float32 elsewhere: the suite runs as on a
    machine without it, so exact-value tests mean the same on every machine (tests of ``auto`` patch it back)."""
    from llmcf.llm.backends import hf

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hf, "native_bf16", lambda device: False)
        yield


@pytest.fixture
def tiny_schema():
    """A FeatureSchema of 20 users, 40 items (brands, one or two categories each) and history length 4."""
    from llmcf.data.schema import FeatureSchema

    rng = np.random.default_rng(0)
    cats = np.zeros((40, 2), np.int64)
    cats[2:, 0] = rng.integers(2, 6, 38)
    brand = np.zeros(40, np.int64)
    brand[2:] = rng.integers(2, 5, 38)
    return FeatureSchema(n_users=20, n_items=40, n_brands=5, n_cats=6, hist_len=4, item_brand=brand, item_cats=cats)
