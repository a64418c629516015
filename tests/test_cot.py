"""CoT prompts, resumable generation (fake backend) and scoring (real MiniLM encoder, offline)."""
import itertools
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pandas as pd
import pytest
import torch

from llmcf.config import load_config
from llmcf.data.schema import item_text
from llmcf.errors import LLMCFError, RunError
from llmcf.llm.cot_generate import build_pool, read_generation, run_cot_generate
from llmcf.llm.cot_prompts import build_cot_prompt, instruction_lines, label_sentence
from llmcf.llm.cot_score import coherence, run_cot_score, score_candidates, sentence_sentiment
from llmcf.llm.cot.score import DEGENERATE_WARN, degenerate_warning

torch.set_num_threads(1)

GENRES = ["Sci-Fi", "Comedy", "Horror", "Romance", "Animation", "Documentary"]


def make_run(tmp_path, n_users=5, per_user=7):
    """A tiny run directory: 12 movies, n_users users with per_user train rows each."""
    titles = ["Star Voyage", "Galaxy Raiders", "Laugh Factory", "Office Pranks", "Night Terror", "The Cellar",
              "Paris in Spring", "Summer Letters", "Toy Town", "Dragon Kid", "Ocean Deep", "Mountain Life"]
    items = pd.DataFrame({"item_id": [f"i{k}" for k in range(12)], "title": titles, "brand": "",
                          "categories": [[GENRES[k // 2]] for k in range(12)]})
    items["text"] = [item_text(t, "", c) for t, c in zip(items["title"], items["categories"])]
    items.loc[11, "text"] = ""  # one item without text
    rows = []
    rng = np.random.default_rng(0)
    for u in range(n_users):
        seq = rng.permutation(12)[: per_user + 2]
        for p in range(2, per_user + 2):
            rows.append({"user_id": f"u{u}", "pos": p, "item_id": f"i{seq[p]}", "label": int(rng.random() < 0.5),
                         "rating": 3.0, "timestamp": float(p), "history": [f"i{x}" for x in seq[:p]]})
    (tmp_path / "data").mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(tmp_path / "data" / "train.parquet", index=False)
    items.to_parquet(tmp_path / "data" / "items.parquet", index=False)
    return tmp_path


class FakeBackend:
    """Implements GenerationBackend: candidates derived from the prompt; can crash after some calls."""

    def __init__(self, fail_after=None, short_for=()):
        self.calls, self.rows, self.fail_after, self.short_for = 0, 0, fail_after, set(short_for)

    def generate(self, prompts, params):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated Ctrl-C")
        self.calls += 1
        self.rows += len(prompts)
        out = []
        for p in prompts:
            target = [ln for ln in p[-1]["content"].splitlines() if ln.startswith("Target new")][0]
            if target in self.short_for:
                out.append(["ok"] * params.n)
                continue
            out.append([f"Candidate {j} (seed {params.seed}). The user enjoys films like those in the history. "
                        f"{target.split(':', 2)[-1]} fits the profile." for j in range(params.n)])
        return out

    def score_yes_no(self, prompts):
        return np.full(len(prompts), 0.5)


def cfg_for(**cot):
    over = [f"cot.{k}={v}" for k, v in cot.items()] + ["data.item_noun=movie", "llm.batch_size=4"]
    return load_config(None, over)


def test_prompt_holds_history_target_and_true_label():
    cfg = cfg_for()
    hist = ["title: Star Voyage; category: Sci-Fi", "title: Toy Town; category: Animation"]
    target = "title: Night Terror; category: Horror"
    for (label, verb), style in itertools.product(((1, "likes"), (0, "does not like")), ("full", "compact")):
        msgs = build_cot_prompt(hist, target, label, cfg.data, style=style)
        text = "\n".join(m["content"] for m in msgs)
        assert all(h in text for h in hist) and target in text
        assert label_sentence(label, cfg.data) in text
        assert f"The user {verb} the target new movie." in text
        other = label_sentence(1 - label, cfg.data)
        assert other not in text
        assert all(line in text for line in instruction_lines(cfg.data, style))
        assert all(f"({k})" in text for k in range(1, 5))
        if style == "full":
            assert "(4) Diversity" in text and "(1) User profile" in text


def test_pool_is_seeded_sized_and_uses_last_history_items(tmp_path):
    run = make_run(tmp_path)
    train = pd.read_parquet(run / "data" / "train.parquet")
    items = pd.read_parquet(run / "data" / "items.parquet")
    a = build_pool(train, items, cfg_for(count=9, history_items=3, fraction="null"))
    b = build_pool(train, items, cfg_for(count=9, history_items=3, fraction="null"))
    c = build_pool(train, items, cfg_for(count=9, history_items=3, seed=1, fraction="null"))
    assert len(a) == 9 and a["key"].is_unique and a["key"].tolist() == b["key"].tolist()
    assert a["key"].tolist() != c["key"].tolist()
    assert len(build_pool(train, items, cfg_for(fraction=0.2))) == round(0.2 * len(train))
    full = train.assign(key=train.user_id + "|" + train.pos.astype(str) + "|" + train.item_id).set_index("key")
    for r in a.itertuples():
        assert list(r.history) == list(full.loc[r.key, "history"])[-3:]
        assert r.label == full.loc[r.key, "label"]
    everything = build_pool(train, items, load_config(None, ["cot.fraction=1.0", "llm.prompt_style=full"]))["prompt"]
    assert any("item i11 (no description)" in p for p in everything)
    # compact lines are built from the title, which i11 still has
    assert any("Mountain Life | Documentary" in p for p in build_pool(train, items, cfg_for(fraction=1.0))["prompt"])


def test_generation_resumes_after_a_crash_without_duplicates(tmp_path):
    run = make_run(tmp_path)
    cfg = cfg_for(count=18, fraction="null", shard_size=4, candidates=2)  # 5 shards, 1 backend call per shard
    crashing = FakeBackend(fail_after=3)
    with pytest.raises(KeyboardInterrupt):
        run_cot_generate(run, cfg, backend=crashing)
    shards = sorted((run / "cot" / "shards").glob("shard_*.jsonl"))
    assert len(shards) == 3 and crashing.calls == 3
    before = {p.name: p.read_text() for p in shards}
    with pytest.raises(RunError, match="incomplete"):
        read_generation(run)

    again = FakeBackend()
    out = run_cot_generate(run, cfg, backend=again)
    assert out == run / "cot" / "shards"
    assert again.calls == 2 and again.rows == 18 - 12  # only the 2 missing shards
    assert {p.name: p.read_text() for p in shards} == before  # finished shards untouched
    manifest, pool, recs = read_generation(run)
    keys = [r["key"] for r in recs]
    assert keys == pool["key"].tolist() and len(set(keys)) == 18
    assert all(len(r["candidates"]) == 2 for r in recs)
    assert manifest["complete"] and manifest["model"]["kind"] == "base"

    third = FakeBackend()
    run_cot_generate(run, cfg, backend=third)
    assert third.calls == 0


def test_config_change_archives_then_restores_a_generation(tmp_path):
    run = make_run(tmp_path)
    cfg_a = cfg_for(count=8, fraction="null", shard_size=4, candidates=1)
    run_cot_generate(run, cfg_a, backend=FakeBackend())
    gen_a = json.loads((run / "cot" / "manifest.json").read_text())["gen_id"]
    cfg_b = cfg_for(count=8, fraction="null", shard_size=4, candidates=1, temperature=0.9)
    b = FakeBackend()
    run_cot_generate(run, cfg_b, backend=b)
    assert b.calls == 2
    assert (run / "cot" / "previous" / gen_a / "shards" / "shard_00000.jsonl").exists()
    back = FakeBackend()
    run_cot_generate(run, cfg_a, backend=back)
    assert back.calls == 0  # restored, not regenerated
    assert json.loads((run / "cot" / "manifest.json").read_text())["gen_id"] == gen_a


def test_tuned_model_is_used_when_present(tmp_path):
    run = make_run(tmp_path)
    (run / "llm" / "recgen" / "model").mkdir(parents=True)
    (run / "llm" / "recgen" / "model" / "config.json").write_text("{}")
    run_cot_generate(run, cfg_for(count=4, fraction="null"), backend=FakeBackend())
    m = json.loads((run / "cot" / "manifest.json").read_text())["model"]
    assert m["kind"] == "recgen" and m["path"].endswith("recgen/model")
    run_cot_generate(run, load_config(None, ["cot.count=4", "cot.fraction=null", "recgen.skip=true"]),
                     backend=FakeBackend())
    assert json.loads((run / "cot" / "manifest.json").read_text())["model"]["kind"] == "base"


def test_backend_returning_wrong_count_is_an_error(tmp_path):
    class Bad(FakeBackend):
        def generate(self, prompts, params):
            return [["only one"]] * len(prompts)

    with pytest.raises(LLMCFError, match="expected 3 per prompt"):
        run_cot_generate(make_run(tmp_path), cfg_for(count=4, fraction="null"), backend=Bad())


# --- scoring -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    from llmcf.embed import Encoder

    return Encoder("minilm", cache_dir=tmp_path_factory.mktemp("embcache"))


def test_sentence_sentiment_and_coherence_formula():
    assert sentence_sentiment("The user loves great comedies.") == 1.0
    assert sentence_sentiment("The user does not like horror.") == -1.0
    assert sentence_sentiment("The movie was released in 1995.") == 0.0
    steady = "The user enjoys clever comedies. She likes witty dialogue and warm characters."
    flipping = "The user enjoys clever comedies. She hates witty dialogue and awful characters."
    assert coherence(steady) > coherence(flipping)
    loop = "The user likes the movie. " * 8
    assert coherence(loop) < 0.3 < coherence(steady) <= 1.0
    assert coherence("!!! ...") == 0.0


HIST = ["title: Star Voyage; category: Sci-Fi", "title: Galaxy Raiders; category: Sci-Fi",
        "title: Toy Town; category: Animation"]
TARGET = "title: Dragon Kid; category: Animation"


def test_scores_rank_good_over_repetitive_and_zero_echo_and_short(minilm):
    cfg = cfg_for()
    prompt = build_cot_prompt(HIST, TARGET, 1, cfg.data)[1]["content"]
    good = ("User profile: the user enjoys science fiction adventures such as Star Voyage and Galaxy Raiders, and "
            "also animated family films like Toy Town. Target movie: Dragon Kid is an animated adventure, close to "
            "Toy Town in style. Alignment: its imaginative world matches the user's taste for fantasy and "
            "animation. Diversity: it offers a change from space films while staying in a genre the user enjoys. "
            "So the user likes the target new movie.")
    repetitive = "The user likes the movie. " * 12
    echo = prompt
    short = "Fine."
    cands = [good, repetitive, echo, short, " Yes.", "no", "Yes, because the user likes sci-fi films."]
    df = score_candidates(cands, [prompt] * 7, ["\n".join(HIST + [TARGET])] * 7, [1] * 7, cfg, minilm)
    assert df.loc[0, "score"] > df.loc[1, "score"] > 0
    assert df.loc[0, "coherence"] > df.loc[1, "coherence"]
    assert df.loc[0, "relevance"] > df.loc[1, "relevance"]
    by_sentence = score_candidates(cands[:2], [prompt] * 2, [TARGET] * 2, [1] * 2,
                                   cfg_for(completeness="sentences"), minilm)
    assert by_sentence.loc[0, "completeness"] > by_sentence.loc[1, "completeness"]
    assert df.loc[2, "score"] == 0 and df.loc[2, "reject"] == "echo"
    assert df.loc[3, "score"] == 0 and df.loc[3, "reject"] == "too_short"
    assert (df.loc[4:5, "score"] == 0).all() and (df.loc[4:5, "reject"] == "answer_only").all()
    assert df.loc[6, "reject"] == "" and df.loc[6, "score"] > 0  # an answer with a reason is a CoT
    for col in ("coherence", "completeness", "relevance", "consistency"):
        assert ((df[col] >= 0) & (df[col] <= 1)).all()
    # quoting an item title is not an echo; repeating the instructions is
    instr = "\n".join(instruction_lines(cfg.data))
    df2 = score_candidates([good + " " + instr], [prompt], [TARGET], [1], cfg, minilm)
    assert df2.loc[0, "reject"] == "echo" and df.loc[0, "reject"] == ""


def test_consistency_prefers_the_matching_label_sentence(minilm):
    cfg = cfg_for()
    neg = ("The user mostly watches science fiction and has shown no interest in horror. Night Terror is a horror "
           "film, far from that profile, so the user does not like the target new movie.")
    pos = ("The user loves horror films such as The Cellar. Night Terror is another horror film, a close match, so "
           "the user likes the target new movie.")
    df = score_candidates([neg, neg, pos, pos], ["p"] * 4, ["x"] * 4, [0, 1, 1, 0], cfg, minilm)
    assert df.loc[0, "consistency"] > df.loc[1, "consistency"]
    assert df.loc[2, "consistency"] > df.loc[3, "consistency"]


def test_run_cot_score_keeps_best_per_row_and_drops_zero_rows(tmp_path, minilm):
    run = make_run(tmp_path)
    cfg = cfg_for(count=10, fraction="null", shard_size=4, candidates=3)
    pool = build_pool(pd.read_parquet(run / "data" / "train.parquet"), pd.read_parquet(run / "data" / "items.parquet"),
                      cfg)
    first_target = [ln for ln in pool["prompt"][0].splitlines() if ln.startswith("Target new")][0]
    run_cot_generate(run, cfg, backend=FakeBackend(short_for={first_target}))
    out = run_cot_score(run, cfg, encoder=minilm)
    sel = pd.read_parquet(out)
    allc = pd.read_parquet(run / "cot" / "all_scores.parquet")
    assert len(allc) == 30 and set(allc.columns) >= {"coherence", "completeness", "relevance", "consistency", "score"}
    dropped = set(pool["key"][pool["prompt"].str.contains(first_target, regex=False)])
    assert dropped and dropped.isdisjoint(sel["key"]) and len(sel) == 10 - len(dropped)
    assert sel["key"].tolist() == [k for k in pool["key"] if k not in dropped]  # pool order
    best = allc.groupby("key")["score"].max()
    assert np.allclose(sel["score"].to_numpy(), best.loc[sel["key"]].to_numpy())
    assert (sel["n_candidates"] == 3).all() and (sel["score"] > 0).all()
    assert list(sel.columns[:6]) == ["key", "user_id", "pos", "item_id", "label", "cot"]
    meta = json.loads((run / "cot" / "score_meta.json").read_text())
    assert meta["kept"] == len(sel) and meta["rejected"]["too_short"] == 3 * len(dropped)
    assert (meta["warning"] is None) == (len(dropped) / 10 < DEGENERATE_WARN)


def test_degenerate_bank_warning_names_the_cause():
    assert degenerate_warning(100, 19, {"too_short": 40}, {"kind": "base"}) is None
    w = degenerate_warning(100, 42, {"answer_only": 80, "too_short": 10}, {"kind": "recgen"})
    assert "42/100 rows (42%)" in w and "forgetting" in w and "recgen.general_ratio" in w
    w = degenerate_warning(100, 42, {"answer_only": 80}, {"kind": "base", "name": "smollm2-135m"})
    assert "forgetting" not in w and "cot.max_new_tokens" in w
    assert "temperature" in degenerate_warning(10, 5, {"echo": 9, "too_short": 1}, None)
    assert degenerate_warning(0, 0, {}, None) is None
