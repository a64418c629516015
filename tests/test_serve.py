"""Online serving: Scorer + HTTP API on a tiny real run (data build, fabricated CoT bank, retrieval, 1-epoch DIN and
DIN+LLM-CF). Checks that the service gives the batch evaluation's numbers, explanations, unknown ids, 4xx for bad
requests, and model swaps without dropped requests."""
from __future__ import annotations

import json
import shutil
import threading
import time

import numpy as np
import pandas as pd
import hypothesis
import pytest
import torch
from fastapi.testclient import TestClient

from llmcf.config import Config, ServeConfig
from llmcf.data.schema import RawDataset, item_text
from llmcf.serve import ONLINE_POS, Scorer
from llmcf.serve.app import TOKEN_ENV, create_app
from llmcf.train.metrics import ctr_metrics

torch.set_num_threads(1)

N_USERS, N_ITEMS, SEQ, D = 30, 40, 12, 8
NO_TEXT = "i3"  # an item of the vocabulary without a text embedding
CONTRACT_EXAMPLES = 25  # schemathesis examples per operation and mode (seeded: the same requests every run)


def _dataset(rng) -> RawDataset:
    rows = []
    for u in range(N_USERS):
        taste = rng.random() < 0.5
        items = rng.choice(N_ITEMS, size=SEQ, replace=False)
        for t, j in enumerate(items):
            liked = (j % 2 == 0) == taste
            rating = float(rng.choice([4, 5]) if liked ^ (rng.random() < 0.2) else rng.choice([1, 2]))
            rows.append((f"u{u}", f"i{j}", rating, float(t)))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    ids = [f"i{j}" for j in range(N_ITEMS)]
    items = pd.DataFrame({"item_id": ids, "title": [f"Movie {j}" for j in range(N_ITEMS)],
                          "brand": [f"b{j % 4}" for j in range(N_ITEMS)],
                          "categories": [[f"c{j % 3}", f"c{j % 5}"] for j in range(N_ITEMS)]})
    items["text"] = [item_text(t, b, c) for t, b, c in zip(items.title, items.brand, items.categories)]
    return RawDataset(name="toy", interactions=inter, items=items, label_hint="rating")


def _config() -> Config:
    cfg = Config()
    cfg.data.label, cfg.data.split, cfg.data.history_len = "rating", "ratio", 5
    cfg.model.embed_dim, cfg.model.mlp = 8, [16]
    cfg.train.max_epochs, cfg.train.seeds, cfg.train.batch_size, cfg.train.lr = 1, 1, 32, 0.01
    cfg.ict.dim, cfg.ict.layers, cfg.ict.heads, cfg.ict.field_dim = 8, 1, 2, 4
    cfg.retrieval.query_batch = 64
    return cfg


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run directory with data, a CoT bank (fake CoT texts and random unit embeddings), retrieval, and trained
    DIN and DIN+llmcf (1 epoch each)."""
    from llmcf.data.build import build_run_data
    from llmcf.pipeline import cfg_variant
    from llmcf.retrieval.stage import run_retrieve
    from llmcf.train.stage import RunData, run_train

    root = tmp_path_factory.mktemp("serve") / "run"
    rng = np.random.default_rng(0)
    cfg = _config()
    build_run_data(_dataset(rng), cfg.data, root, show_progress=False)
    train = pd.read_parquet(root / "data" / "train.parquet")
    sel = train.sample(frac=0.5, random_state=0).reset_index(drop=True)
    sel["cot"] = [f"CoT {i}: user {u} {'likes' if y else 'dislikes'} {it}" for i, (u, it, y)
                  in enumerate(zip(sel.user_id, sel.item_id, sel.label))]
    sel["score"] = 0.5
    (root / "cot").mkdir()
    sel[["user_id", "pos", "item_id", "label", "cot", "score"]].to_parquet(root / "cot" / "selected.parquet")
    (root / "embed").mkdir()
    ids = [f"i{j}" for j in range(N_ITEMS) if f"i{j}" != NO_TEXT]
    vec = rng.normal(size=(len(ids) + len(sel), D)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    np.save(root / "embed" / "items.npy", vec[:len(ids)])
    (root / "embed" / "item_ids.json").write_text(json.dumps(ids))
    np.save(root / "embed" / "cot.npy", vec[len(ids):])
    run_retrieve(root, cfg, progress=False)
    data = RunData(root, cfg)
    for variant in ("base", "full"):
        run_train(root, cfg_variant(cfg, variant), "DIN", run=data, progress=False)
    return root


@pytest.fixture(scope="module")
def scorers(run):
    return {tag: Scorer.load(run, tag) for tag in ("DIN", "DIN+llmcf")}


@pytest.fixture(scope="module")
def client(scorers):
    with TestClient(create_app(scorers["DIN+llmcf"], ServeConfig(max_candidates=50, max_history=30,
                                                                   max_body_bytes=20_000), admin_token="")) as c:
        yield c


def _test_rows(run) -> pd.DataFrame:
    return pd.read_parquet(run / "data" / "test.parquet")


# ---- same numbers online and offline ------------------------------------------------------------------------------
@pytest.mark.parametrize("tag", ["DIN", "DIN+llmcf"])
def test_service_gives_the_batch_evaluation_scores(run, scorers, tag):
    from llmcf.data.features import encode
    from llmcf.train.batches import ArrayBatches
    from llmcf.train.trainer import predict

    s = scorers[tag]
    test = _test_rows(run)
    # the batch evaluation's path: encoded split file + precomputed in-context ids + ContextBank
    ctx = (np.load(run / "retrieval" / "test_ctx.npy"), s.context) if s.ict else None
    offline = predict(s.model, ArrayBatches(encode(test, s.vocab, s.hist_len), 16, ctx=ctx))
    # online, one HTTP request per test row, replaying the row's position
    app = create_app(s, ServeConfig())
    with TestClient(app) as c:
        online = []
        for r in test.itertuples():
            resp = c.post("/v1/score", json={"user_id": r.user_id, "history": list(r.history),
                                             "candidates": [r.item_id], "pos": int(r.pos)})
            assert resp.status_code == 200, resp.text
            online.append(resp.json()["scores"][0]["score"])
    np.testing.assert_allclose(online, offline, rtol=0, atol=1e-5)
    # ... and the test AUC recorded by training is recovered from the service's scores
    recorded = json.loads((run / "models" / tag / "seed_0" / "result.json").read_text())["test"]
    got = ctr_metrics(test["label"].to_numpy(np.float32), np.asarray(online), None)
    assert got["auc"] == pytest.approx(recorded["auc"], abs=1e-6)
    assert got["logloss"] == pytest.approx(recorded["logloss"], abs=1e-5)
    # the Python API batch path agrees as well
    rows = s.score_rows(test.user_id.tolist(), [list(h) for h in test.history], test.item_id.tolist(),
                        test.pos.to_numpy())
    np.testing.assert_allclose(rows, offline, atol=1e-5)


def test_explain_returns_the_offline_examples_of_a_logged_row(run, scorers, client):
    test = _test_rows(run)
    ctx = np.load(run / "retrieval" / "test_ctx.npy")
    sel = pd.read_parquet(run / "cot" / "selected.parquet")
    for i in (0, 7):
        r = test.iloc[i]
        resp = client.post("/v1/explain", json={"user_id": r.user_id, "history": list(r.history),
                                                "candidate": r.item_id, "pos": int(r.pos)})
        assert resp.status_code == 200, resp.text
        out = resp.json()
        assert [e["bank_row"] for e in out["examples"]] == [int(x) if x >= 0 else None for x in ctx[i]]
        for e in out["examples"]:
            b = sel.iloc[e["bank_row"]]
            assert e["cot"] == b.cot and e["label"] == b.label and e["user_id"] == b.user_id
            assert e["decision"] == ("likes" if b.label else "does not like")
            assert set(e["token_attention"]) == {"f", "c", "y"}
            assert e["attention"] == pytest.approx(sum(e["token_attention"].values()))
            assert -1.0 <= e["similarity"] <= 1.0 + 1e-6
        total = sum(e["attention"] for e in out["examples"]) + out["query_attention"]
        assert total == pytest.approx(1.0, abs=1e-5)
        top = max(out["examples"], key=lambda e: e["attention"])
        assert f"user {top['user_id']}" in out["reason"] and top["cot"][:20] in out["reason"]
        score = client.post("/v1/score", json={"user_id": r.user_id, "history": list(r.history),
                                               "candidates": [r.item_id], "pos": int(r.pos)}).json()
        assert out["score"] == pytest.approx(score["scores"][0]["score"], abs=1e-6)


def test_online_position_allows_the_users_own_past_rows(run, scorers):
    """Default pos = after all logged rows: a user's own bank row is a legal example; at its own pos it is not."""
    s = scorers["DIN+llmcf"]
    bank = pd.read_parquet(run / "retrieval" / "bank.parquet")
    row = 0
    b = bank.iloc[row]
    online = s.explain(b.item_id, list(b.history), user=b.user_id)
    assert row in [e["bank_row"] for e in online["examples"]]  # identical keys: similarity 1, the best match
    best = max((e for e in online["examples"] if e["bank_row"] == row), key=lambda e: e["similarity"])
    assert best["similarity"] == pytest.approx(1.0, abs=1e-5)
    replay = s.explain(b.item_id, list(b.history), user=b.user_id, pos=int(b.pos))
    rows = [e["bank_row"] for e in replay["examples"]]
    assert row not in rows
    later = bank[(bank.user_id == b.user_id) & (bank.pos >= b.pos)].index
    assert not set(rows) & set(later)  # the leakage rule at the replayed position
    assert ONLINE_POS > bank.pos.max()


def test_config_rewritten_after_training_is_flagged(run, scorers, tmp_path):
    import shutil

    from llmcf.config import load_config, save_config

    assert all(not s.warnings for s in scorers.values())  # base and LLM-CF: config matches the trained seed
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    seed_cfg = copy / "models" / "DIN" / "seed_0" / "config.yaml"  # what the scorer reads: the seed's own config
    cfg = load_config(seed_cfg)
    cfg.train.seeds = 7  # which seeds run: not a change to the model
    save_config(cfg, seed_cfg)
    assert not Scorer.load(copy, "DIN").warnings
    cfg.train.lr = 0.123
    save_config(cfg, copy / "models" / "DIN" / "config.yaml")  # the tag's config is not what the seed loads
    assert not Scorer.load(copy, "DIN").warnings
    save_config(cfg, seed_cfg)
    assert any("rewritten" in w for w in Scorer.load(copy, "DIN").warnings)


def test_explain_needs_an_llmcf_model(scorers):
    with TestClient(create_app(scorers["DIN"], ServeConfig())) as c:
        resp = c.post("/v1/explain", json={"candidate": "i1"})
    assert resp.status_code == 400 and "no in-context module" in resp.json()["detail"]


# ---- unknown ids, top k -------------------------------------------------------------------------------------------
def test_unknown_ids_map_to_oov_and_say_so(scorers, client):
    body = {"user_id": "stranger", "history": ["i1", "nope-h", "i2"],
            "candidates": ["i0", "brand-new", NO_TEXT, 7], "top_k": 2}
    resp = client.post("/v1/score", json=body)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    by_id = {c["item_id"]: c for c in out["scores"]}
    assert [c["item_id"] for c in out["scores"]] == ["i0", "brand-new", NO_TEXT, "7"]
    assert by_id["i0"]["known"] and by_id["i0"]["text"]
    assert not by_id["brand-new"]["known"] and by_id["brand-new"]["text"] is False
    assert by_id[NO_TEXT]["known"] and by_id[NO_TEXT]["text"] is False
    assert not out["user_known"] and out["history"] == {"used": 3, "unknown": 1, "truncated": 0}
    notes = " ".join(out["notes"])
    assert "'brand-new'" in notes and "out-of-vocabulary" in notes and "no text embedding" in notes
    assert "stranger" in notes
    assert all(0.0 < c["score"] < 1.0 for c in out["scores"])
    ranked = sorted(out["scores"], key=lambda c: -c["score"])
    assert [c["item_id"] for c in out["top"]] == [c["item_id"] for c in ranked[:2]]
    # no user at all and no history are fine too
    resp = client.post("/v1/score", json={"candidates": ["i0", "i1"]})
    assert resp.status_code == 200 and not resp.json()["user_known"]
    # a backbone alone scores every unknown item as the same OOV item
    res = scorers["DIN"].score(["zz1", "zz2", "i0"], ["i1", "i2"], user="u1")
    assert res.scores[0] == pytest.approx(res.scores[1], abs=1e-7) and res.text is None


def test_long_history_keeps_the_last_items(scorers):
    s = scorers["DIN+llmcf"]
    hist = [f"i{j}" for j in range(12)]
    long, short = s.score(["i20"], hist, user="u1"), s.score(["i20"], hist[-s.hist_len:], user="u1")
    assert long.history_truncated == 12 - s.hist_len and long.history_used == s.hist_len
    assert long.scores[0] == pytest.approx(short.scores[0], abs=1e-7)


# ---- malformed and oversized requests -----------------------------------------------------------------------------
@pytest.mark.parametrize("path, body, status, fragment", [
    ("/v1/score", {}, 422, "candidates"),
    ("/v1/score", {"candidates": []}, 422, "candidates"),
    ("/v1/score", {"candidates": "i1"}, 422, "candidates"),
    ("/v1/score", {"candidates": [["i1"]]}, 422, "candidates"),
    ("/v1/score", {"candidates": [True]}, 422, "candidates"),
    ("/v1/score", {"candidates": [""]}, 422, "candidates"),
    ("/v1/score", {"candidates": ["i1"], "top_k": 0}, 422, "top_k"),
    ("/v1/score", {"candidates": ["i1"], "top_k": "x"}, 422, "top_k"),
    ("/v1/score", {"candidates": ["i1"], "pos": -1}, 422, "pos"),
    ("/v1/score", {"candidates": ["i1"], "pos": 2 ** 64}, 422, "pos"),
    ("/v1/score", {"candidates": ["i1"], "top_k": 10 ** 30}, 422, "top_k"),
    ("/v1/score", {"candidates": ["i1"], "top_k": 2 ** 40}, 200, ""),
    ("/v1/score", {"candidates": ["i1"], "top_k": "2"}, 422, "top_k"),
    ("/v1/score", {"candidates": ["i1"], "top_k": True}, 422, "top_k"),
    ("/v1/score", {"candidates": ["i1"], "top_k": 2.5}, 422, "top_k"),
    ("/v1/score", {"candidates": ["i1"], "top_k": 2.0}, 200, ""),  # JSON Schema: 2.0 is an integer
    ("/v1/score", {"candidates": ["i1"], "pos": False}, 422, "pos"),
    ("/v1/score", {"candidates": ["i1"], "pos": "3"}, 422, "pos"),
    ("/v1/score", {"candidates": ["i1"], "pos": 3.5}, 422, "pos"),
    ("/v1/score", {"candidates": [12]}, 200, ""),
    ("/v1/score", {"candidates": [10 ** 300]}, 422, "candidates"),
    ("/v1/score", {"candidates": ["i1"], "user_id": 10 ** 300}, 422, "user_id"),
    ("/v1/score", {"candidates": ["i1"], "history": [2 ** 63]}, 422, "history"),
    ("/v1/score", {"candidates": ["i1"], "user_id": False}, 422, "user_id"),
    ("/v1/score", {"candidates": ["i1"], "user_id": 1.5}, 422, "user_id"),
    ("/v1/score", {"candidates": ["i1"], "history": "i1"}, 422, "history"),
    ("/v1/score", {"candidates": ["i1"], "user_id": {"a": 1}}, 422, "user_id"),
    ("/v1/score", {"candidates": ["i1"], "colour": "red"}, 422, "colour"),
    ("/v1/score", {"candidates": ["x" * 300]}, 422, "candidates"),
    ("/v1/score", {"candidates": [f"i{j}" for j in range(51)]}, 413, "max_candidates"),
    ("/v1/score", {"candidates": ["i1"], "history": ["i1"] * 31}, 413, "max_history"),
    ("/v1/explain", {"candidates": ["i1"]}, 422, "candidate"),
    ("/v1/explain", {"candidate": "i1", "history": ["i1"] * 31}, 413, "max_history"),
])
def test_bad_requests_get_a_4xx_with_a_message(client, path, body, status, fragment):
    resp = client.post(path, json=body)
    assert resp.status_code == status, resp.text
    if status != 200:
        assert isinstance(resp.json()["detail"], str) and fragment in resp.json()["detail"]


def test_unparseable_and_huge_bodies(client):
    resp = client.post("/v1/score", content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 422 and "invalid request" in resp.json()["detail"]
    resp = client.post("/v1/score", content=b"[1, 2]", headers={"content-type": "application/json"})
    assert resp.status_code == 422
    resp = client.post("/v1/score", content=b"candidates=i1", headers={"content-type": "text/plain"})
    assert resp.status_code == 422
    big = json.dumps({"candidates": ["i1"] * 10_000}).encode()
    resp = client.post("/v1/score", content=big, headers={"content-type": "application/json"})
    assert resp.status_code == 413 and "max_body_bytes" in resp.json()["detail"]

    def chunks():  # no content-length: the limit is enforced while reading
        for _ in range(100):
            yield b" " * 1000

    resp = client.post("/v1/score", content=chunks(), headers={"content-type": "application/json"})
    assert resp.status_code == 413
    assert client.get("/v1/score").status_code == 405


def test_health_info_and_docs(run, client):
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["model"] == "DIN+llmcf"
    info = client.get("/v1/info").json()
    bank = pd.read_parquet(run / "retrieval" / "bank.parquet")
    assert info["bank"]["rows"] == len(bank) and info["bank"]["k"] == 4 and info["bank"]["cot_texts"]
    assert info["model"] == "DIN+llmcf" and info["backbone"] == "DIN" and info["seed"] == 0
    assert info["dataset"] == "toy" and info["vocabulary"]["users"] == N_USERS
    assert info["limits"]["max_candidates"] == 50 and info["reload"]["http"] is False
    assert info["authenticated"] is False
    assert "/v1/score" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200


def test_info_shows_paths_and_versions_only_to_the_admin(run, scorers):
    with TestClient(create_app(scorers["DIN+llmcf"], ServeConfig(), admin_token="tok")) as c:
        public = c.get("/v1/info")
        assert public.status_code == 200
        assert not {"run_dir", "versions", "warnings", "last_reload_error"} & set(public.json())
        assert str(run) not in public.text and "torch" not in public.text
        assert c.get("/v1/info", headers={"Authorization": "Bearer wrong"}).status_code == 403
        assert c.get("/v1/info", headers={"Authorization": "tok"}).status_code == 401
        full = c.get("/v1/info", headers={"Authorization": "Bearer tok"}).json()
        assert full["authenticated"] is True and full["run_dir"] == str(run)
        assert {"llmcf", "torch", "faiss", "python", "fastapi", "uvicorn"} <= set(full["versions"])


def test_openapi_declares_every_status_with_its_body(client):
    spec = client.get("/openapi.json").json()
    want = {("/v1/score", "post"): {"200", "400", "413", "422"},
            ("/v1/explain", "post"): {"200", "400", "413", "422"},
            ("/v1/info", "get"): {"200", "401", "403", "429", "503", "422"},
            ("/v1/admin/reload", "post"): {"200", "401", "403", "409", "413", "422", "429", "503"}}
    for (path, method), codes in want.items():
        responses = spec["paths"][path][method]["responses"]
        assert set(responses) == codes, (path, sorted(responses))
        for code in codes - {"200"}:
            ref = responses[code]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/ValidationErrorBody" if code == "422" else "/ErrorBody"), (path, code, ref)
    comps = spec["components"]["schemas"]
    assert "HTTPValidationError" not in comps
    assert set(comps["ValidationErrorBody"]["required"]) == {"detail", "errors"}
    body = client.post("/v1/score", json={"candidates": [True]}).json()
    assert set(body) == {"detail", "errors"} and set(body["errors"][0]) == {"loc", "msg", "type"}


# ---- refresh ------------------------------------------------------------------------------------------------------
def _perturb_weights(run, tag="DIN+llmcf", seed=0):
    from safetensors.torch import load_file, save_file

    from llmcf.io import atomic_path

    path = run / "models" / tag / f"seed_{seed}" / "model.safetensors"
    state = load_file(str(path))
    key = [k for k in state if k.endswith("bias")][-1]  # the output layer's bias: every score moves
    state[key] = state[key] + 1.0
    time.sleep(0.01)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))


def test_reload_needs_the_token(scorers, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with TestClient(create_app(scorers["DIN"], ServeConfig())) as c:
        r = c.post("/v1/admin/reload")
        assert r.status_code == 503 and TOKEN_ENV in r.json()["detail"]
    monkeypatch.setenv(TOKEN_ENV, "s3cret")
    with TestClient(create_app(scorers["DIN"], ServeConfig())) as c:
        for header in (None, "s3cret", "Bearer", "Bearer ", "Basic s3cret", "Bearer s3 cret"):
            r = c.post("/v1/admin/reload", headers={} if header is None else {"Authorization": header})
            assert r.status_code == 401, header
            assert r.headers["www-authenticate"].startswith('Bearer realm="llmcf"'), header
            assert ("invalid_request" in r.headers["www-authenticate"]) == (header is not None), header
        r = c.post("/v1/admin/reload", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 403 and 'error="invalid_token"' in r.headers["www-authenticate"]
        r = c.post("/v1/admin/reload", headers={"Authorization": "bearer s3cret"})  # the scheme is case-insensitive
        assert r.status_code == 200 and r.json()["changed"] is False


def test_wrong_admin_tokens_are_rate_limited(scorers):
    with TestClient(create_app(scorers["DIN"], ServeConfig(admin_max_failures=3, admin_failure_window=0.5),
                               admin_token="s3cret")) as c:
        good, bad = {"Authorization": "Bearer s3cret"}, {"Authorization": "Bearer guess"}
        assert [c.post("/v1/admin/reload", headers=bad).status_code for _ in range(3)] == [403] * 3
        r = c.post("/v1/admin/reload", headers=good)  # locked out: even the right token waits
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert c.post("/v1/admin/reload").status_code == 429
        time.sleep(0.6)
        assert c.post("/v1/admin/reload", headers=good).status_code == 200


def test_reload_under_requests_swaps_without_dropping_any(run, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(run, root)
    old_scorer = Scorer.load(root, "DIN+llmcf")
    body = {"user_id": "u1", "history": ["i1", "i2", "i5"], "candidates": [f"i{j}" for j in range(20)]}
    expected = {old_scorer.version: old_scorer.score(body["candidates"], body["history"], user="u1").scores}
    app = create_app(old_scorer, ServeConfig(), admin_token="tok")
    results, errors, stop = [], [], threading.Event()
    with TestClient(app) as c:
        def hammer():
            while not stop.is_set():
                r = c.post("/v1/score", json=body)
                if r.status_code != 200:
                    errors.append(r.status_code)
                else:
                    out = r.json()
                    results.append((out["version"], [x["score"] for x in out["scores"]]))

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        _perturb_weights(root)
        r = c.post("/v1/admin/reload", headers={"Authorization": "Bearer tok"})
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join()
        assert r.status_code == 200 and r.json()["changed"], r.text
        new = app.state.slot.current
        assert new.version == r.json()["version"] != old_scorer.version
        expected[new.version] = new.score(body["candidates"], body["history"], user="u1").scores
        assert c.get("/v1/info").json()["reloads"] == 1
    assert not errors
    versions = {v for v, _ in results}
    assert versions == set(expected)  # requests were answered before and after the swap
    for v, scores in results:  # each by one whole model, never a mix
        np.testing.assert_allclose(scores, expected[v], atol=1e-6)
    assert not np.allclose(*expected.values())


def test_reload_swaps_in_a_refreshed_bank(run, tmp_path):
    """The offline stage writes a new, smaller CoT bank and index; a reload serves examples from it."""
    from llmcf.retrieval.stage import run_retrieve

    root = tmp_path / "run"
    shutil.copytree(run, root)
    app = create_app(Scorer.load(root, "DIN+llmcf"), ServeConfig(), admin_token="tok")
    body = {"user_id": "u1", "history": ["i1", "i2"], "candidate": "i4"}
    with TestClient(app) as c:
        before = c.get("/v1/info").json()["bank"]["rows"]
        sel = pd.read_parquet(root / "cot" / "selected.parquet")
        keep = 20
        sel.iloc[:keep].to_parquet(root / "cot" / "selected.parquet")
        np.save(root / "embed" / "cot.npy", np.load(root / "embed" / "cot.npy")[:keep])
        run_retrieve(root, _config(), progress=False)
        assert c.post("/v1/explain", json=body).status_code == 200  # still the old bank until the swap
        r = c.post("/v1/admin/reload", headers={"Authorization": "Bearer tok"})
        assert r.status_code == 200 and r.json()["bank_rows"] == keep < before
        assert c.get("/v1/info").json()["bank"]["rows"] == keep
        out = c.post("/v1/explain", json=body).json()
        rows = [e["bank_row"] for e in out["examples"] if not e["missing"]]
        assert rows and max(rows) < keep
        assert all(e["cot"] == sel.cot.iloc[e["bank_row"]] for e in out["examples"] if not e["missing"])


def test_failed_reload_keeps_serving(run, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(run, root)
    app = create_app(Scorer.load(root, "DIN"), ServeConfig(), admin_token="tok")
    (root / "models" / "DIN" / "seed_0" / "model.safetensors").write_bytes(b"garbage")
    with TestClient(app) as c:
        r = c.post("/v1/admin/reload", headers={"Authorization": "Bearer tok"})
        assert r.status_code == 409 and "still serving" in r.json()["detail"]
        assert c.post("/v1/score", json={"candidates": ["i1"]}).status_code == 200
        assert c.get("/v1/info", headers={"Authorization": "Bearer tok"}).json()["last_reload_error"]


def test_file_watch_swaps_in_new_weights(run, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(run, root)
    app = create_app(Scorer.load(root, "DIN+llmcf"), ServeConfig(watch_seconds=0.05))
    with TestClient(app) as c:
        v0 = c.get("/healthz").json()["version"]
        _perturb_weights(root)
        deadline = time.time() + 10
        while c.get("/healthz").json()["version"] == v0 and time.time() < deadline:
            time.sleep(0.05)
        assert c.get("/healthz").json()["version"] != v0


# ---- CLI ----------------------------------------------------------------------------------------------------------
def test_cli_serve_resolves_the_model_tag(run, monkeypatch):
    from llmcf import cli

    calls = []
    monkeypatch.setattr("llmcf.serve.app.serve", lambda run_dir, cfg, tag, **kw: calls.append((tag, kw)))
    assert cli.main(["serve", "--run", str(run), "--model", "DIN", "--ict", "--port", "9"]) == 0
    assert cli.main(["serve", "--run", str(run), "--model", "DIN+llmcf", "--seed", "0"]) == 0
    assert cli.main(["serve", "--run", str(run), "--model", "DIN", "--ict", "--variant", "no_cot"]) == 0
    assert [c[0] for c in calls] == ["DIN+llmcf", "DIN+llmcf", "DIN+llmcf-no_cot"]
    assert calls[0][1]["port"] == 9 and calls[1][1]["seed"] == 0


def test_missing_model_is_a_clear_error(run):
    from llmcf.errors import RunError

    with pytest.raises(RunError, match="trained models here: DIN, DIN\\+llmcf"):
        Scorer.load(run, "DCN")
    with pytest.raises(RunError, match="no trained seed 5"):
        Scorer.load(run, "DIN", seed=5)


def test_explain_with_a_zero_history_weight(run, tmp_path):
    """retrieval.history_weight: 0 (target-only keys): explain's similarity comes from the same key composer as the
    index (it used to build a longer bank key than the query key and crash)."""
    from llmcf.retrieval.stage import run_retrieve

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg = _config()
    cfg.retrieval.history_weight, cfg.retrieval.target_weight = 0.0, 1.0
    run_retrieve(copy, cfg, progress=False)
    s = Scorer.load(copy, "DIN+llmcf")
    assert s.retriever.cfg.history_weight == 0.0
    ids = json.loads((copy / "embed" / "item_ids.json").read_text())
    vec = dict(zip(ids, np.load(copy / "embed" / "items.npy")))
    r = _test_rows(run).iloc[0]
    out = s.explain(r.item_id, list(r.history), user=r.user_id)
    present = [e for e in out["examples"] if not e["missing"]]
    assert present
    for e in present:  # target-only score: cos(query target, example target)
        want = float(vec[r.item_id] @ vec[e["item_id"]]) if r.item_id in vec and e["item_id"] in vec else 0.0
        assert e["similarity"] == pytest.approx(want, abs=1e-5)


def test_serve_rejects_settings_it_would_ignore(run, capsys):
    from llmcf.cli import main

    assert main(["serve", "--run", str(run), "--model", "DIN", "--set", "retrieval.k=8"]) != 0
    err = capsys.readouterr().err
    assert "llmcf: error:" in err and "retrieval.k" in err and "serve.*" in err


# ---- the published contract, tested by schemathesis (seeded, in-process, no network) -------------------------------
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_api_matches_its_openapi_document(scorers, mode):
    """Schema-generated requests, valid (positive) and invalid (negative), against the ASGI app in-process: no 5xx,
    every status declared, every body matching its declared model, content types and headers as declared
    (schemathesis' default checks). Seeded (derandomize): the same requests every run."""
    import schemathesis
    from schemathesis.generation import GenerationMode

    app = create_app(scorers["DIN+llmcf"], ServeConfig(max_candidates=50, max_history=30, max_body_bytes=20_000),
                     admin_token="tok")
    # an invalid request may also be refused as too large (413: an over-long id list passes max_body_bytes first);
    # every other status schemathesis expects for rejected data is kept
    from schemathesis.config import SchemathesisConfig

    rejected = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
    config = SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": rejected}}})
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    ops = [r.ok() for r in schema.get_all_operations()]
    if mode == "negative":  # an operation without any input has no invalid request
        ops = [o for o in ops if o.path != "/healthz"]
    assert {(o.method.upper(), o.path) for o in ops} >= {("POST", "/v1/score"), ("POST", "/v1/explain"),
                                                         ("GET", "/v1/info"), ("POST", "/v1/admin/reload")}
    calls = []
    for op in ops:
        @hypothesis.settings(max_examples=CONTRACT_EXAMPLES, derandomize=True, deadline=None, database=None,
                             suppress_health_check=list(hypothesis.HealthCheck), phases=[hypothesis.Phase.generate])
        @hypothesis.given(op.as_strategy(generation_mode=GenerationMode(mode)))
        def check(case):
            resp = case.call_and_validate()
            calls.append(resp.status_code)

        try:
            check()
        except hypothesis.errors.Unsatisfiable:  # e.g. a lone string header: every value is a valid one
            assert mode == "negative" and op.path not in ("/v1/score", "/v1/explain"), op.path
    assert len(calls) >= 2 * CONTRACT_EXAMPLES and max(calls) < 500
