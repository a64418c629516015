"""llm.prompt_style: the compact item lines, CoT and RecGen prompts, what they keep, and what they rerun."""
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd
import pytest

from llmcf import fingerprint
from llmcf.config import load_config
from llmcf.errors import LLMCFError
from llmcf.llm.cot.generate import build_pool, run_cot_generate
from llmcf.llm.cot.prompts import SYSTEM, SYSTEM_COMPACT, build_cot_prompt, instruction_lines, label_sentence
from llmcf.llm.cot.score import score_candidates
from llmcf.llm.prompt_style import DEFAULT_STYLE, REC_SYSTEM_COMPACT, check_style, compact_texts
from llmcf.llm.recgen.prompts import item_texts, rec_prompt
from test_cot import FakeBackend, make_run, minilm  # noqa: F401 (fixture)


def beauty_items(n=12):
    """n products; every one in 'Beauty', the first also in its title's brand."""
    return pd.DataFrame({
        "item_id": [f"p{k}" for k in range(n)],
        "title": ["Acme Silk Shampoo"] + [f"Product {k}" for k in range(1, n - 1)] + [""],
        "brand": ["Acme"] + ["Glow"] * (n - 2) + [""],
        "categories": [["Beauty", "Hair Care"]] + [["Beauty", "Skin Care"]] * (n - 2) + [["Beauty"]],
        "text": ["title: Acme Silk Shampoo; brand: Acme; category: Beauty, Hair Care"]
                + [f"title: Product {k}; brand: Glow; category: Beauty, Skin Care" for k in range(1, n - 1)]
                + ["a product with no title"],
    })


def test_compact_lines_drop_labels_repeated_brand_and_common_categories():
    lines = compact_texts(beauty_items())
    assert lines["p0"] == "Acme Silk Shampoo | Hair Care"  # brand already in the title; 'Beauty' on every item
    assert lines["p1"] == "Product 1 | Glow | Skin Care"
    assert lines["p11"] == "a product with no title"  # no title: the text as it is
    # with fewer than 10 items nothing counts as common
    few = compact_texts(beauty_items().head(4))
    assert few["p1"] == "Product 1 | Glow | Beauty, Skin Care"


def test_compact_item_texts_placeholder_and_duplicates():
    items = beauty_items()
    items.loc[11, "text"] = ""
    texts = item_texts(items, blank="placeholder", style="compact")
    assert texts["p11"] == "item p11 (no description)"
    assert item_texts(items, style="compact")["p11"] == ""
    dup = pd.concat([items, items.head(1)], ignore_index=True)
    with pytest.raises(Exception, match="more than once"):
        item_texts(dup, blank="placeholder", style="compact")
    with pytest.raises(LLMCFError, match="llm.prompt_style"):
        check_style("short")


def test_compact_cot_prompt_keeps_content_and_is_shorter():
    cfg = load_config(None, ["data.item_noun=movie"])
    hist, target = ["Star Voyage | Sci-Fi", "Toy Town | Animation"], "Night Terror | Horror"
    full = build_cot_prompt(hist, target, 1, cfg.data, style="full")
    short = build_cot_prompt(hist, target, 1, cfg.data, style="compact")
    assert full[0]["content"] == SYSTEM and short[0]["content"] == SYSTEM_COMPACT
    text = short[1]["content"]
    assert all(h in text for h in hist) and target in text and label_sentence(1, cfg.data) in text
    assert label_sentence(0, cfg.data) not in text
    assert all(f"({k})" in text for k in range(1, 5)) and "variety" in text
    assert len(text) + len(short[0]["content"]) < 0.8 * (len(full[1]["content"]) + len(full[0]["content"]))


def test_rec_prompt_styles():
    cfg = load_config(None, ["data.item_noun=movie"])
    texts = {"a": "A | Drama", "b": "B | Comedy"}
    full = rec_prompt(["a"], "b", texts, cfg.data, style="full")
    short = rec_prompt(["a"], "b", texts, cfg.data, style="compact")
    assert [m["role"] for m in full] == ["user"]
    assert short[0] == {"role": "system", "content": REC_SYSTEM_COMPACT} and short[1] == full[0]


def test_compact_pool_and_generation(tmp_path):
    run = make_run(tmp_path)
    train, items = (pd.read_parquet(run / "data" / f) for f in ("train.parquet", "items.parquet"))
    over = ["cot.count=6", "cot.fraction=null", "data.item_noun=movie", "llm.batch_size=4"]
    full, short = (load_config(None, over + [f"llm.prompt_style={s}"]) for s in ("full", "compact"))
    pf, pc = build_pool(train, items, full), build_pool(train, items, short)
    assert pf["key"].tolist() == pc["key"].tolist()
    assert pf["input_text"].tolist() == pc["input_text"].tolist()  # the relevance reference keeps the full text
    assert all("title: " in p for p in pf["prompt"]) and not any("title: " in p for p in pc["prompt"])
    assert all(len(c) < len(f) for c, f in zip(pc["prompt"], pf["prompt"]))

    seen = []

    class Recording(FakeBackend):
        def generate(self, prompts, params):
            seen.extend(prompts)
            return super().generate(prompts, params)

    run_cot_generate(run, full, backend=FakeBackend())
    gen_full = json.loads((run / "cot" / "manifest.json").read_text())["gen_id"]
    run_cot_generate(run, short, backend=Recording())
    assert len(seen) == 6 and all(p[0]["content"] == SYSTEM_COMPACT for p in seen)
    assert json.loads((run / "cot" / "manifest.json").read_text())["gen_id"] != gen_full
    assert (run / "cot" / "previous" / gen_full).exists()


def test_style_enters_the_stage_stamps_only_when_compact():
    base = load_config(None, [])
    assert base.llm.prompt_style == DEFAULT_STYLE == "compact"
    full = load_config(None, ["llm.prompt_style=full"])
    for stage in ("recgen", "cot_generate"):
        assert fingerprint.stage_hash(base, stage, "") != fingerprint.stage_hash(full, stage, "")
    # full is left out of the hash: stamps recorded before the field existed still match under full
    assert "prompt_style" not in fingerprint.section_payload(full, "llm")["llm"]
    assert fingerprint.section_payload(base, "llm")["llm"]["prompt_style"] == "compact"
    assert fingerprint.stage_hash(base, "embed", "") == fingerprint.stage_hash(full, "embed", "")


def test_echo_check_follows_the_style(minilm):
    cfg = load_config(None, ["data.item_noun=movie", "llm.prompt_style=compact"])
    hist, target = ["Star Voyage | Sci-Fi"], "Dragon Kid | Animation"
    prompt = build_cot_prompt(hist, target, 1, cfg.data, style="compact")[1]["content"]
    good = ("The user enjoys science fiction such as Star Voyage. Dragon Kid is an animated adventure with a "
            "similar sense of wonder, so it matches their taste while offering some variety. The user likes it.")
    instr = " ".join(instruction_lines(cfg.data, "compact"))
    df = score_candidates([good, good + " " + instr], [prompt] * 2, ["\n".join(hist + [target])] * 2, [1, 1], cfg,
                          minilm)
    assert df["reject"].tolist() == ["", "echo"]
