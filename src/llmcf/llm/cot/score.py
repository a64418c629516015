"""CoT selection: score every candidate, keep the best per row (DESIGN.md §1.2).

    score = 0.25·coherence + 0.25·completeness + 0.25·relevance + 0.25·consistency, each term in [0, 1]

coherence    = (1 − variation) · (1 − repetition), where
               variation  = mean |s_i − s_{i+1}| / 2 over consecutive sentences, s_i ∈ [−1, 1] the lexicon sentiment
                            of sentence i (``sentence_sentiment``); 0 for a single sentence;
               repetition = ½·(1 − distinct/total content words) + ½·(1 − distinct/total word trigrams);
               a text without any content word has repetition 1 (coherence 0).
completeness = mean over the four aspect sentences of clip(cos(candidate, aspect), 0, 1)  (``cot.completeness:
               text``, the paper's); with ``sentences``, per aspect the best clip(cos(sentence, aspect), 0, 1) over the
               candidate's sentences: it rewards covering each point, not sounding like the aspect list as a whole
relevance    = clip(cos(candidate, input text = history item texts + target item text), 0, 1)
consistency  = clip(cos(candidate, the row's label sentence), 0, 1)
(cosines with the configured sentence encoder, ``embed.encoder``.)

A candidate scores 0 when it is only an answer word ("Yes", "no.": reason ``answer_only``; what a RecGen-tuned model
that forgot how to explain writes), shorter than ``cot.min_chars`` characters (stripped; ``too_short``) or an *echo*:
at least ``cot.echo_threshold`` of its word 8-grams occur verbatim in the prompt, or at least that share of the
instruction's 8-grams occur in it (it repeats the request). Rows whose best score is 0 are dropped; when that is at
least ``DEGENERATE_WARN`` of the rows, the score prints (and score_meta.json records) a warning naming the likely
cause.

Outputs in ``run_dir/cot/``: selected.parquet (one row per kept pool row, in pool order), all_scores.parquet (every
candidate, its four terms and the reason of a zero), score_meta.json (counts and means).
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from llmcf.config import Config
from llmcf.errors import LLMCFError
from llmcf.io import atomic_write_json, write_parquet
from llmcf.llm.cot.generate import read_generation
from llmcf.llm.cot.prompts import aspect_sentences, instruction_lines, label_sentence, system_prompt
from llmcf.rundir import RunDir

# A small general-purpose opinion lexicon of our own, with words common in recommendation explanations.
POSITIVE = frozenset("""
good great excellent outstanding superb fine nice love loves loved loving enjoy enjoys enjoyed enjoyable like likes
liked favorite favourite favorites fan fans fond appreciate appreciates appreciated appealing appeal appeals
interesting interested fascinating pleasant delightful fun funny wonderful amazing awesome best better positive
happy glad satisfied satisfying perfect beautiful brilliant strong recommend recommended popular engaging exciting
thrilling charming impressive compelling suitable matches consistent aligns aligned attractive attracted
entertaining memorable rich effective reliable gentle smooth fresh worth valuable eager keen passionate
""".split())
NEGATIVE = frozenset("""
bad poor terrible awful horrible hate hates hated dislike dislikes disliked boring bored dull worst worse negative
unhappy disappointed disappointing disappointment weak mediocre annoying uninteresting unappealing lacking lacks
fails failed failure mismatch mismatched unlikely avoid avoids avoided tired unsatisfied unpleasant broken problem
problems irrelevant confusing confused repetitive predictable shallow harsh overpriced cheap waste wasted
uncomfortable unsuitable inconsistent reluctant indifferent
""".split())
NEGATORS = frozenset("not no never nor hardly barely without doesn't don't didn't isn't wasn't aren't won't "
                     "cannot can't couldn't wouldn't shouldn't".split())
STOPWORDS = frozenset("""
the a an and or but if then than that this these those there their they them he she his her its it's it is are was
were be been being to of in on at by for with from as into about also which who whom what when where why how all any
both each few more most other some such only own same so too very can will just should would could may might must
has have had having do does did doing not no nor our we you your i me my user user's
""".split())

_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[a-z0-9']+")
ECHO_N = 8


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENT_SPLIT.split(text) if words(s)]


def sentence_sentiment(sentence: str) -> float:
    """(positive − negative) / (positive + negative) hits in [−1, 1]; a negator up to 3 words before flips a hit."""
    toks = words(sentence)
    pos = neg = 0
    for i, w in enumerate(toks):
        polarity = 1 if w in POSITIVE else -1 if w in NEGATIVE else 0
        if polarity == 0:
            continue
        if any(t in NEGATORS for t in toks[max(0, i - 3):i]):
            polarity = -polarity
        pos, neg = pos + (polarity > 0), neg + (polarity < 0)
    return 0.0 if pos + neg == 0 else (pos - neg) / (pos + neg)


def _distinct_loss(seq: list) -> float:
    return 1.0 - len(set(seq)) / len(seq) if seq else 0.0


def coherence(text: str) -> float:
    """(1 − sentiment variation) · (1 − repetition), in [0, 1] (see the module docstring)."""
    sents = sentences(text)
    s = [sentence_sentiment(x) for x in sents]
    variation = float(np.mean([abs(a - b) / 2 for a, b in zip(s, s[1:])])) if len(s) > 1 else 0.0
    toks = words(text)
    content = [w for w in toks if len(w) >= 3 and w not in STOPWORDS]
    if not content:
        return 0.0
    trigrams = list(zip(toks, toks[1:], toks[2:]))
    repetition = 0.5 * _distinct_loss(content) + 0.5 * _distinct_loss(trigrams)
    return float(np.clip((1.0 - variation) * (1.0 - repetition), 0.0, 1.0))


def ngrams(toks: list[str], n: int = ECHO_N) -> set[tuple[str, ...]]:
    return {tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)}


ANSWER_WORDS = frozenset({"yes", "no"})
DEGENERATE_WARN = 0.2


def answer_only(candidate: str) -> bool:
    """The candidate is a bare answer word (case, surrounding punctuation and spaces ignored)."""
    return re.sub(r"[^a-z]+", " ", candidate.lower()).strip() in ANSWER_WORDS


def degenerate_warning(rows: int, dropped: int, rejected: dict[str, int], model: dict | None) -> str | None:
    """A sentence for the user when ``dropped`` of ``rows`` pool rows lost every candidate (share >=
    ``DEGENERATE_WARN``), naming the commonest reason and what to change; None otherwise."""
    if rows == 0 or dropped / rows < DEGENERATE_WARN:
        return None
    top = max(rejected, key=rejected.get) if rejected else "unknown"
    msg = f"{dropped}/{rows} rows ({dropped / rows:.0%}) have no usable CoT (most candidates rejected as {top})"
    if top == "answer_only" and (model or {}).get("kind") == "recgen":
        return (msg + ": the RecGen-tuned model answers Yes/No instead of explaining (forgetting). Tune it with "
                "general data mixed in (recgen.general_ratio > 0, recgen.general_data) or generate with the base "
                "model (recgen.skip: true)")
    if top in ("answer_only", "too_short"):
        return msg + ": raise cot.max_new_tokens, or check the model follows the CoT instruction"
    return msg + ": the model repeats the prompt; try cot.temperature > 0 or more cot.candidates"


def echo_share(candidate: str, prompt: str, instruction: str) -> float:
    """max(share of the candidate's 8-grams found in the prompt, share of the instruction's 8-grams in the candidate)."""
    ct = words(candidate)
    cand = [tuple(ct[i:i + ECHO_N]) for i in range(len(ct) - ECHO_N + 1)]
    if not cand:
        return 0.0
    in_prompt = ngrams(words(prompt))
    share = sum(g in in_prompt for g in cand) / len(cand)
    instr = ngrams(words(instruction))
    if instr:
        share = max(share, len(instr & set(cand)) / len(instr))
    return share


def _cos_clip(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.clip(np.sum(a * b, axis=-1), 0.0, 1.0)


def _sentence_completeness(cands: list[str], aspects: np.ndarray, encoder) -> np.ndarray:
    """Per aspect, the best cosine over the candidate's sentences; averaged over the aspects."""
    sents = [sentences(c) for c in cands]
    flat = [s for ss in sents for s in ss]
    vecs = encoder.encode(flat, desc="embed sentences") if flat else np.zeros((0, aspects.shape[1]), np.float32)
    out, at = np.zeros(len(cands)), 0
    for i, ss in enumerate(sents):
        if ss:
            out[i] = np.clip(vecs[at:at + len(ss)] @ aspects.T, 0.0, 1.0).max(axis=0).mean()
        at += len(ss)
    return out


def score_candidates(cands: list[str], prompts: list[str], inputs: list[str], labels: list[int], cfg: Config,
                     encoder) -> pd.DataFrame:
    """The four terms, the score and the zero reason for each candidate (parallel lists, one entry per candidate)."""
    style = cfg.llm.prompt_style
    instruction, system = "\n".join(instruction_lines(cfg.data, style)), system_prompt(style)
    refs = encoder.encode(aspect_sentences(cfg.data) + [label_sentence(0, cfg.data), label_sentence(1, cfg.data)])
    aspects, label_vecs = refs[:4], refs[4:]
    uniq_inputs = sorted(set(inputs))
    in_pos = {t: i for i, t in enumerate(uniq_inputs)}
    in_vecs = encoder.encode(uniq_inputs, desc="embed inputs")
    c_vecs = encoder.encode([c.strip() for c in cands], desc="embed candidates")
    lab = np.asarray(labels, dtype=int)
    if cfg.cot.completeness == "text":
        completeness = np.clip(c_vecs @ aspects.T, 0.0, 1.0).mean(axis=1)
    elif cfg.cot.completeness == "sentences":
        completeness = _sentence_completeness(cands, aspects, encoder)
    else:
        raise LLMCFError(f"cot.completeness must be 'text' or 'sentences', got {cfg.cot.completeness!r}")
    relevance = _cos_clip(c_vecs, in_vecs[[in_pos[t] for t in inputs]])
    consistency = _cos_clip(c_vecs, label_vecs[lab])
    coh = np.array([coherence(c) for c in cands], dtype=np.float64)
    echo = np.array([echo_share(c, system + "\n" + p, instruction) for c, p in zip(cands, prompts)])
    reason = np.where(np.array([answer_only(c) for c in cands], dtype=bool), "answer_only",
                      np.where(np.array([len(c.strip()) < cfg.cot.min_chars for c in cands], dtype=bool), "too_short",
                               np.where(echo >= cfg.cot.echo_threshold, "echo", "")))
    score = 0.25 * (coh + completeness + relevance + consistency)
    score = np.where(reason == "", score, 0.0)
    return pd.DataFrame({"score": score, "coherence": coh, "completeness": completeness.astype(np.float64),
                         "relevance": relevance.astype(np.float64), "consistency": consistency.astype(np.float64),
                         "echo_share": echo, "reject": reason})


def run_cot_score(run_dir: Path, cfg: Config, encoder=None) -> Path:
    """Score every candidate, keep the best per row; returns ``run_dir/cot/selected.parquet``."""
    from llmcf.embed import make_encoder

    run_dir = Path(run_dir)
    cot_dir = RunDir(run_dir).cot
    t0 = time.perf_counter()
    manifest, pool, recs = read_generation(run_dir)
    enc = encoder or make_encoder(run_dir, cfg)
    by_key = pool.set_index("key")
    flat = [(r, j, c) for r in recs for j, c in enumerate(r["candidates"])]
    prompts = by_key.loc[[r["key"] for r, _, _ in flat], "prompt"].tolist()
    inputs = by_key.loc[[r["key"] for r, _, _ in flat], "input_text"].tolist()
    terms = score_candidates([str(c) for _, _, c in flat], prompts, inputs, [int(r["label"]) for r, _, _ in flat],
                             cfg, enc)
    allc = pd.DataFrame({
        "key": [r["key"] for r, _, _ in flat], "user_id": [str(r["user_id"]) for r, _, _ in flat],
        "pos": np.array([r["pos"] for r, _, _ in flat], dtype=np.int64),
        "item_id": [str(r["item_id"]) for r, _, _ in flat],
        "label": np.array([r["label"] for r, _, _ in flat], dtype=np.int8),
        "candidate": np.array([j for _, j, _ in flat], dtype=np.int64), "text": [str(c) for _, _, c in flat],
    })
    allc = pd.concat([allc, terms], axis=1)
    write_parquet(allc, cot_dir / "all_scores.parquet")

    order = {k: i for i, k in enumerate(pool["key"])}
    best = allc.loc[allc.groupby("key", sort=False)["score"].idxmax()]
    n_cands = allc.groupby("key")["candidate"].size()
    kept = best[best["score"] > 0].copy()
    kept["n_candidates"] = kept["key"].map(n_cands).astype(np.int64)
    kept = kept.sort_values("key", key=lambda s: s.map(order)).reset_index(drop=True)
    selected = kept.assign(cot=kept["text"].str.strip())[
        ["key", "user_id", "pos", "item_id", "label", "cot", "score", "coherence", "completeness", "relevance",
         "consistency", "n_candidates"]]
    out = cot_dir / "selected.parquet"
    write_parquet(selected, out)
    means = {t: round(float(selected[t].mean()), 4) if len(selected) else None
             for t in ("score", "coherence", "completeness", "relevance", "consistency")}
    meta = {"gen_id": manifest["gen_id"], "model": manifest.get("model"), "encoder": getattr(enc, "model_id", None),
            "rows": len(pool), "candidates": len(allc), "kept": len(selected), "dropped": len(pool) - len(selected),
            "rejected": {k: int(v) for k, v in allc["reject"].value_counts().items() if k},
            "kept_positive_rate": round(float(selected["label"].mean()), 4) if len(selected) else None,
            "means_of_kept": means, "seconds": round(time.perf_counter() - t0, 1),
            "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    meta["warning"] = degenerate_warning(meta["rows"], meta["dropped"], meta["rejected"], meta["model"])
    atomic_write_json(cot_dir / "score_meta.json", meta)
    print(f"[cot] kept {len(selected)}/{len(pool)} rows (mean score {means['score']}); "
          f"zeroed candidates: {meta['rejected'] or 'none'} -> {out}")
    if meta["warning"]:
        print(f"[cot] warning: {meta['warning']}", flush=True)
    return out
