"""Why do the hf and llamacpp engines' p(Yes) disagree? Scores the same ml-100k RecGen prompts (test rows) with the hf
backend and with llama.cpp running the shipped Q4_1 GGUF, a Q8_0 and an F16 export of the same (dequantized)
weights; prints each engine's mean/std/AUC and the pairwise Pearson correlation of the logits of p(Yes).

    python benchmarks/compare_engine_scores.py [N_ROWS]     (needs llama-cpp-python; exports to /tmp/l13)
"""
import sys
from pathlib import Path

import numpy as np
import torch
sys.path.insert(0, str(Path(__file__).resolve().parent))
torch.set_num_threads(1)
from bench_generation import build_prompts
from llmcf.llm.models import resolve_model
from llmcf.llm.backends.hf import HFBackend
from llmcf.llm.backends.llamacpp import LlamaCppBackend
from llmcf.llm.gguf_export import export_gguf
n = int(sys.argv[1]) if len(sys.argv) > 1 else 64
_, prompts, y = build_prompts(1, n)
md = resolve_model("smollm2-135m")
OUT = Path("/tmp/l13")
OUT.mkdir(exist_ok=True)
f16 = OUT / "base.f16.gguf"
q8 = OUT / "base.q8_0.gguf"
if not q8.exists(): export_gguf(md, q8, "q8_0")
if not f16.exists(): export_gguf(md, f16, "f16")
res = {}
hf = HFBackend(md, batch_size=8, device="cpu", threads=1, progress=False)
res["hf"] = hf.score_yes_no(prompts); del hf
for name, g in [("q4_1", None), ("q8_0", q8), ("f16", f16)]:
    be = LlamaCppBackend(md, gguf=g, threads=1, progress=False)
    # token check
    from llmcf.llm.backends.hf import render_chat
    t = render_chat(be.tokenizer, prompts[0])
    a = be._tokens(t); b = be.tokenizer(t, add_special_tokens=False)["input_ids"]
    print(name, "tokens equal:", a == b, len(a), len(b))
    res[name] = be.score_yes_no(prompts); del be
from sklearn.metrics import roc_auc_score
for k, v in res.items():
    print(k, "mean p %.4f std %.4f AUC %.3f" % (v.mean(), v.std(), roc_auc_score(y, v)))
lo = lambda p: np.log(p/(1-p))
for a in res:
    for b in res:
        if a < b: print(a, b, "pearson(logit) %.3f" % np.corrcoef(lo(res[a]), lo(res[b]))[0,1], "max|dp| %.4f" % np.abs(res[a]-res[b]).max())
