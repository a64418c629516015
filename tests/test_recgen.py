"""RecGen: prompts, general data, the SFT mix, answer-only masking, training (LoRA/full, resume), eval, MMLU."""
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from llmcf.config import Config, DataConfig  # noqa: E402
from llmcf.errors import DataError  # noqa: E402
from llmcf.llm.rec_prompts import base_form, rec_prompt  # noqa: E402
from llmcf.llm.recgen_data import (IGNORE, SFTExample, build_sft_mix, general_examples,  # noqa: E402
                                   read_general_jsonl, tokenize_example)

SHARED_MMLU = Path(__file__).resolve().parents[2] / "shared" / "data" / "mmlu"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from test_llm_backends import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny_llama_recgen"))


@pytest.fixture(scope="module")
def tok(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_dir))


def write_run(run_dir: Path, n_train=40, n_test=30, seed=0) -> Path:
    """A tiny run directory with the schema of ``llmcf data build``."""
    rng = np.random.default_rng(seed)
    items = pd.DataFrame({"item_id": [f"i{k}" for k in range(12)], "title": [f"Film {k}" for k in range(12)],
                          "brand": [""] * 12, "categories": [["drama"] if k % 2 else ["comedy"] for k in range(12)]})
    items["text"] = [f"title: Film {k}; category: {c[0]}" for k, c in zip(range(12), items["categories"])]
    (run_dir / "data").mkdir(parents=True, exist_ok=True)
    items.to_parquet(run_dir / "data" / "items.parquet", index=False)
    for split, n in (("train", n_train), ("test", n_test)):
        df = pd.DataFrame({"user_id": [f"u{k % 5}" for k in range(n)], "pos": np.arange(n, dtype=np.int64),
                           "item_id": [f"i{int(x)}" for x in rng.integers(0, 12, n)],
                           "label": (np.arange(n) % 2).astype(np.int8), "rating": np.nan,
                           "timestamp": np.arange(n, dtype=float),
                           "history": [[f"i{int(x)}" for x in rng.integers(0, 12, 3)] for _ in range(n)]})
        df.to_parquet(run_dir / "data" / f"{split}.parquet", index=False)
    return run_dir


def write_general(path: Path, n=30) -> Path:
    rows = [{"instruction": f"Question number {k}?", "input": "ctx" if k % 3 == 0 else "", "output": f"Answer {k}."}
            for k in range(n)]
    rows.append({"instruction": "multi", "input": "", "output": "x", "history": [["hi", "hello"]]})
    rows.append({"instruction": "empty answer", "input": "", "output": ""})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------------------- prompts
def test_base_form_of_domain_verbs():
    assert [base_form(v) for v in ("likes", "purchases", "watches", "buys", "enjoys", "rates highly", "tries")] == \
           ["like", "purchase", "watch", "buy", "enjoy", "rate highly", "try"]


def test_rec_prompt_wording_history_and_target():
    texts = {f"i{k}": f"title: T{k}" for k in range(20)}
    dc = DataConfig(item_noun="movie", positive_verb="likes")
    msg = rec_prompt([f"i{k}" for k in range(15)], "i19", texts, dc, history_items=4, style="full")
    assert len(msg) == 1 and msg[0]["role"] == "user"
    compact = rec_prompt([f"i{k}" for k in range(15)], "i19", texts, dc, history_items=4)
    assert [m["role"] for m in compact] == ["system", "user"] and compact[1] == msg[0]
    c = msg[0]["content"]
    assert c.endswith("is the user likely to like the target new movie? Answer Yes or No.")
    assert "1. title: T11\n2. title: T12\n3. title: T13\n4. title: T14" in c and "T10" not in c
    assert "Target new movie: title: T19" in c
    c2 = rec_prompt([], "zz", texts, DataConfig(item_noun="product", positive_verb="purchases"), 4)[-1]["content"]
    assert "(no earlier items)" in c2 and "item zz" in c2 and "likely to purchase the target new product?" in c2


# ---------------------------------------------------------------------------- general data and the mix
def test_general_jsonl_skips_multi_turn_and_empty_and_reports(tmp_path):
    rows, counts = read_general_jsonl(write_general(tmp_path / "g.jsonl"))
    assert counts == {"read": 32, "kept": 30, "skipped_multi_turn": 1, "skipped_empty": 1}
    assert rows[0].messages[0]["content"] == "Question number 0?\n\nctx" and rows[0].answer == "Answer 0."
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{not json}\n')
    with pytest.raises(DataError, match=r"bad.jsonl, line 2: not valid JSON"):
        read_general_jsonl(bad)
    bad.write_text('{"instruction": 3, "output": "b"}\n')
    with pytest.raises(DataError, match="line 1, field 'instruction'"):
        read_general_jsonl(bad)


def test_sft_mix_counts_ratio_heldout_and_seed(tmp_path):
    run = write_run(tmp_path / "run")
    cfg = Config()
    cfg.recgen.num_rec, cfg.recgen.general_ratio, cfg.recgen.heldout_general = 20, 0.2, 4
    cfg.recgen.general_data = str(write_general(tmp_path / "g.jsonl"))
    mix, info = build_sft_mix(run, cfg)
    rec = [e for e in mix if e.kind == "rec"]
    gen = [e for e in mix if e.kind == "general"]
    assert len(rec) == 20 and len(gen) == 5 == info["general"]  # 20 * 0.2 / 0.8
    assert {e.answer for e in rec} == {"Yes", "No"}
    _, held, ginfo = general_examples(run, cfg)
    assert ginfo["heldout"] == len(held) == 4
    assert not {e.answer for e in held} & {e.answer for e in gen}  # held-out rows are never trained on
    mix2, _ = build_sft_mix(run, cfg)
    assert [(e.answer, e.messages) for e in mix2] == [(e.answer, e.messages) for e in mix]
    cfg.recgen.seed = 1
    assert [e.messages for e in build_sft_mix(run, cfg)[0]] != [e.messages for e in mix]


def test_labels_mask_exactly_the_prompt_tokens(tok):
    from llmcf.llm.hf_backend import render_chat

    ex = SFTExample([{"role": "user", "content": "Is the user likely to like it? Answer Yes or No."}], "Yes", "rec")
    enc = tokenize_example(tok, ex, cutoff_len=512)
    n_prompt = len(tok(render_chat(tok, ex.messages, True), add_special_tokens=False)["input_ids"])
    labels, ids = enc["labels"], enc["input_ids"]
    assert len(labels) == len(ids) == n_prompt + 2
    assert labels[:n_prompt] == [IGNORE] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:] == [tok.encode("Yes", add_special_tokens=False)[0], tok.eos_token_id]
    long = SFTExample(ex.messages, "word " * 200, "general")
    cut = tokenize_example(tok, long, cutoff_len=n_prompt + 10)
    assert len(cut["input_ids"]) == n_prompt + 10 and cut["labels"][:n_prompt] == [IGNORE] * n_prompt
    assert tokenize_example(tok, ex, cutoff_len=n_prompt) is None


# ---------------------------------------------------------------------------- training
def small_cfg(tiny_dir, method="lora", steps=30, lr=3e-2):
    cfg = Config()
    rc = cfg.recgen
    rc.method, rc.max_steps, rc.lr, rc.batch_size, rc.grad_accum = method, steps, lr, 4, 1
    rc.warmup_ratio, rc.lora_r, rc.lora_alpha, rc.lora_dropout, rc.cutoff_len = 0.1, 8, 16, 0.0, 256
    cfg.llm.model, cfg.llm.device, cfg.llm.batch_size = str(tiny_dir), "cpu", 8
    cfg.llm.backend = "hf"  # a random tiny model has no GGUF template for the llamacpp engine
    return cfg


def load_tiny(tiny_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(str(tiny_dir))


@pytest.mark.parametrize("method", ["lora", "full"])
def test_training_reduces_the_answer_loss(tiny_dir, tok, method):
    from llmcf.llm.recgen_train import prepare_model, train_loop

    cfg = small_cfg(tiny_dir, method, steps=25, lr=3e-2 if method == "lora" else 3e-3)
    exs = [SFTExample([{"role": "user", "content": f"Item {k}: like it? Answer Yes or No."}],
                      "Yes" if k % 2 else "No", "rec") for k in range(8)]
    enc = [tokenize_example(tok, e, 256) for e in exs]
    model = prepare_model(load_tiny(tiny_dir), method, 8, 16, 0.0)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    assert (n_train < 0.2 * n_all) if method == "lora" else (n_train == n_all)
    curve = train_loop(model, tok, enc, cfg.recgen, 25, progress=False)
    assert len(curve) == 25 and curve[-1]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert np.mean([c["loss"] for c in curve[-3:]]) < 0.75 * curve[0]["loss"]


def test_training_resumes_from_checkpoint_identically(tiny_dir, tok, tmp_path, monkeypatch):
    import llmcf.llm.recgen_train as rt

    cfg = small_cfg(tiny_dir, "lora", steps=4)
    cfg.recgen.save_every = 2
    exs = [SFTExample([{"role": "user", "content": f"q{k}"}], "Yes" if k % 2 else "No", "rec") for k in range(6)]
    enc = [tokenize_example(tok, e, 256) for e in exs]

    def trained(ckpt):
        m = rt.prepare_model(load_tiny(tiny_dir), "lora", 8, 16, 0.0)
        curve = rt.train_loop(m, tok, enc, cfg.recgen, 4, ckpt_dir=ckpt, fingerprint="fp", progress=False)
        return m, curve

    ref, ref_curve = trained(None)
    real_save = rt.save_checkpoint

    def crash_after_save(*a, **k):
        real_save(*a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(rt, "save_checkpoint", crash_after_save)
    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        trained(ckpt)
    assert json.loads((ckpt / "state.json").read_text())["step"] == 2
    monkeypatch.setattr(rt, "save_checkpoint", real_save)
    resumed, curve = trained(ckpt)
    assert [c["step"] for c in curve] == [1, 2, 3, 4]
    assert [c["loss"] for c in curve] == pytest.approx([c["loss"] for c in ref_curve], abs=1e-4)
    a = {n: p for n, p in ref.named_parameters() if p.requires_grad}
    for n, p in resumed.named_parameters():
        if p.requires_grad:
            assert torch.allclose(p, a[n], atol=1e-5), n


def test_lr_schedule_warms_up_then_decays_to_zero():
    from llmcf.llm.recgen_train import lr_factor

    f = [lr_factor(s, 20, 4) for s in range(20)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0] and all(a >= b for a, b in zip(f[3:], f[4:]))
    assert lr_factor(20, 20, 4) == pytest.approx(0.0)


def write_mmlu(root: Path, subject="toy", n_test=6) -> Path:
    for split, n in (("dev", 5), ("test", n_test)):
        (root / split).mkdir(parents=True, exist_ok=True)
        lines = [f'"Q{k}, with a comma?",w{k},x{k},y{k},z{k},{"ABCD"[k % 4]}' for k in range(n)]
        (root / split / f"{subject}_{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def test_run_recgen_train_then_eval_end_to_end(tiny_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from llmcf.llm.recgen_eval import run_recgen_eval
    from llmcf.llm.recgen_train import run_recgen_train

    run = write_run(tmp_path / "run")
    cfg = small_cfg(tiny_dir, "lora", steps=3)
    cfg.recgen.num_rec, cfg.recgen.general_ratio, cfg.recgen.heldout_general = 12, 0.25, 3
    cfg.recgen.general_data = str(write_general(tmp_path / "g.jsonl"))
    cfg.recgen.eval_rows, cfg.recgen.mmlu_dir, cfg.recgen.mmlu_subjects = 20, str(write_mmlu(tmp_path / "mmlu")), ["toy"]
    out = run_recgen_train(run, cfg)
    assert out == run / "llm" / "recgen" / "model"
    info = json.loads((out / "recgen_train.json").read_text())
    assert info["steps"] == 3 == len(info["curve"]) and info["data"]["rec"] == 12 and info["data"]["general"] == 4
    model = AutoModelForCausalLM.from_pretrained(str(out))  # a plain model: LoRA merged
    assert not any("lora" in n for n, _ in model.named_parameters())
    base = AutoModelForCausalLM.from_pretrained(str(tiny_dir))
    assert not torch.allclose(model.model.layers[0].self_attn.q_proj.weight, base.model.layers[0].self_attn.q_proj.weight)
    assert not (run / "llm" / "recgen" / "ckpt").exists()
    mtime = (out / "recgen_train.json").stat().st_mtime
    assert run_recgen_train(run, cfg) == out and (out / "recgen_train.json").stat().st_mtime == mtime  # up to date

    res = run_recgen_eval(run, cfg, tag="tuned")
    saved = json.loads((run / "llm" / "recgen" / "eval_tuned.json").read_text())
    assert saved["rec"]["n"] == 20 and 0 <= saved["rec"]["auc"] <= 1 and saved["rec"]["logloss"] > 0
    assert saved["mmlu"]["n"] == 6 and 0 <= saved["mmlu"]["accuracy"] <= 1
    assert saved["general"]["n"] == 3 and math.isfinite(saved["general"]["perplexity"])
    assert res["rec"] == saved["rec"]
    t = saved["trained_on"]  # what the evaluated model was tuned on, copied from train_info.json
    assert t == info["trained_on"] and t["rec"] == 12 and t["general_asked"] == 4 and t["general"] == 4
    assert t["steps"] == 3 and t["row_visits"] == 3 * cfg.recgen.batch_size * cfg.recgen.grad_accum


# ---------------------------------------------------------------------------- MMLU
def test_mmlu_prompts_and_letter_scoring(tmp_path, tok):
    from llmcf.llm.mmlu import build_prompts, evaluate_mmlu, letter_token_ids, load_questions

    root = write_mmlu(tmp_path, n_test=8)
    texts, gold = build_prompts(root, "toy", shots=5)
    assert len(texts) == 8 and gold[:4] == ["A", "B", "C", "D"]
    assert texts[0].startswith("The following are multiple choice questions (with answers) about toy.\n\n")
    assert texts[0].count("Answer:") == 6 and texts[0].endswith("Q0, with a comma?\nA. w0\nB. x0\nC. y0\nD. z0\nAnswer:")
    groups = letter_token_ids(tok)

    class Oracle:  # puts its mass on the letter ``shift`` places after the gold one
        tokenizer = tok

        def __init__(self, shift):
            self.shift = shift

        def next_token_logits(self, texts_, ids, desc=""):
            out = np.zeros((len(texts_), len(ids)))
            for r, g in enumerate(gold):
                want = groups["ABCD".index(g) + self.shift - 4 * (("ABCD".index(g) + self.shift) > 3)]
                out[r, [ids.index(i) for i in want]] = 10.0
            return out

    assert evaluate_mmlu(Oracle(0), root, ["toy"])["accuracy"] == 1.0
    assert evaluate_mmlu(Oracle(1), root, ["toy"])["accuracy"] == 0.0
    (root / "test" / "toy_test.csv").write_text("q,a,b,c,d,E\n")
    with pytest.raises(DataError, match="toy_test.csv, line 1, field 'answer'"):
        load_questions(root, "toy", "test")


@pytest.mark.shared_data
def test_shared_mmlu_folder_parses():
    from llmcf.llm.mmlu import build_prompts

    if not SHARED_MMLU.exists():
        pytest.skip("../shared/data/mmlu is absent")
    subjects = sorted(p.name[: -len("_test.csv")] for p in (SHARED_MMLU / "test").glob("*_test.csv"))
    assert len(subjects) == 57
    texts, gold = build_prompts(SHARED_MMLU, "anatomy", 5)
    assert len(texts) == len(gold) > 100 and set(gold) == set("ABCD")


def test_self_distilled_general_data_is_generated_once_and_cached(tiny_dir, tmp_path, monkeypatch):
    import llmcf.llm.hf_backend as hb
    from llmcf.llm.general_prompts import GENERAL_PROMPTS

    run = write_run(tmp_path / "run")
    cfg = small_cfg(tiny_dir)
    cfg.recgen.general_data, cfg.recgen.self_distill_max_new_tokens, cfg.recgen.heldout_general = None, 4, 100
    train, held, info = general_examples(run, cfg)
    assert info["source"] == "self-distilled" and len(train) + len(held) == info["kept"] <= len(GENERAL_PROMPTS)
    assert len(held) == info["kept"] // 5  # at most a fifth is held out
    assert {e.messages[0]["content"] for e in train + held} <= set(GENERAL_PROMPTS)
    assert (run / "llm" / "recgen" / "self_distill.jsonl").exists()

    def no_generation(*a, **k):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(hb, "HFBackend", no_generation)
    train2, held2, _ = general_examples(run, cfg)
    assert [e.answer for e in train2] == [e.answer for e in train]


def test_micro_batches_give_the_same_update_and_leave_hashes_alone(tiny_dir, tok):
    """Splitting a batch into forward/backward passes of fewer rows changes memory only: same loss curve and weights,
    and neither the model fingerprint nor the `llmcf run` stage hash moves."""
    from llmcf.llm.recgen_train import prepare_model, train_loop
    from llmcf.pipeline import stage_hash

    exs = [SFTExample([{"role": "user", "content": f"Item {k} {'long ' * (k % 4)}: like it?"}],
                      "Yes" if k % 2 else "No", "rec") for k in range(8)]
    enc = [tokenize_example(tok, e, 256) for e in exs]
    runs = []
    for micro in (None, 3, 1):
        cfg = small_cfg(tiny_dir, "lora", steps=3, lr=3e-2)
        cfg.recgen.micro_batch = micro
        model = prepare_model(load_tiny(tiny_dir), "lora", 8, 16, 0.0)
        curve = train_loop(model, tok, enc, cfg.recgen, 3, progress=False)
        runs.append(([c["loss"] for c in curve], {n: p.detach().clone() for n, p in model.named_parameters()
                                                  if p.requires_grad}))
        assert stage_hash(cfg, "recgen", "") == stage_hash(small_cfg(tiny_dir, "lora", steps=3, lr=3e-2), "recgen", "")
    (ref_loss, ref_w), others = runs[0], runs[1:]
    assert ref_w and len({len(x["input_ids"]) for x in enc}) > 1  # rows of different lengths: padding differs per pass
    for loss, w in others:
        assert loss == pytest.approx(ref_loss, abs=1e-5)
        for n, p in w.items():
            assert (p - ref_w[n]).abs().max() < 1e-3, (n, float((p - ref_w[n]).abs().max()))


def test_lora_on_the_top_layers_only(tiny_dir):
    """recgen.lora_layers=N adapts only the top N decoder layers (no LoRA weight below them, so no gradient flows
    there); out of range is a clear error; at its default it leaves the RecGen fingerprint unchanged."""
    from llmcf.errors import LLMCFError
    from llmcf.fingerprint import recgen_fingerprint
    from llmcf.llm.recgen_train import prepare_model

    model = load_tiny(tiny_dir)
    n = model.config.num_hidden_layers
    top = prepare_model(model, "lora", 8, 16, 0.0, layers=1)
    adapted = {int(name.split(".layers.")[1].split(".")[0]) for name, p in top.named_parameters()
               if p.requires_grad}
    assert adapted == {n - 1}
    every = prepare_model(load_tiny(tiny_dir), "lora", 8, 16, 0.0)
    assert {int(name.split(".layers.")[1].split(".")[0]) for name, p in every.named_parameters()
            if p.requires_grad} == set(range(n))
    with pytest.raises(LLMCFError, match="lora_layers"):
        prepare_model(load_tiny(tiny_dir), "lora", 8, 16, 0.0, layers=n + 1)
    rc = vars(Config().recgen)
    assert "lora_layers" not in recgen_fingerprint(dict(rc), "m", "d", "float32")
    assert "lora_layers" in recgen_fingerprint({**rc, "lora_layers": 2}, "m", "d", "float32")


def test_bf16_autocast_trains_in_bfloat16_with_float32_weights(tiny_dir, tok):
    """recgen.amp: the forward matmuls run in bfloat16 (the dtype of every Linear's output), the trainable weights
    stay float32, the loss still falls; at its default it leaves the RecGen fingerprint unchanged."""
    from llmcf.fingerprint import recgen_fingerprint
    from llmcf.llm.recgen_train import prepare_model, train_loop

    exs = [SFTExample([{"role": "user", "content": f"Item {k}: like it? Answer Yes or No."}],
                      "Yes" if k % 2 else "No", "rec") for k in range(8)]
    enc = [tokenize_example(tok, e, 256) for e in exs]
    curves = {}
    for amp in (False, True):
        cfg = small_cfg(tiny_dir, "lora", steps=20, lr=3e-2)
        cfg.recgen.amp = amp
        model = prepare_model(load_tiny(tiny_dir), "lora", 8, 16, 0.0)
        seen = set()
        for m in model.modules():
            if type(m) is torch.nn.Linear:
                m.register_forward_hook(lambda mod, args, out: seen.add(out.dtype))
        curves[amp] = [c["loss"] for c in train_loop(model, tok, enc, cfg.recgen, 20, progress=False)]
        assert seen == {torch.bfloat16 if amp else torch.float32}
        assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    assert np.mean(curves[True][-3:]) < 0.75 * curves[True][0]
    assert curves[True] != curves[False]  # another computation, not the fp32 one relabelled
    rc = vars(Config().recgen)
    assert "amp" not in json.loads(recgen_fingerprint(dict(rc), "m", "d", "float32"))["recgen"]
    assert json.loads(recgen_fingerprint({**rc, "amp": True}, "m", "d", "float32"))["recgen"]["amp"] is True
