"""``Explainer``: why an LLM-CF model scored a (user, candidate) pair as it did — the retrieved in-context examples
with their CoT texts, labels and retrieval similarity, and the share of the decoder's last-position attention (last
layer, mean over heads) each example's tokens received. Results are typed (``Explanation``, ``ExplainedExample``);
both also read like dicts (``out["examples"]``, ``e["bank_row"]``) and ``to_dict()`` gives the JSON form."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Sequence



class _Fields:
    """Dict-style read access to a dataclass's fields."""

    def __getitem__(self, key: str):
        if key not in {f.name for f in fields(self)}:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default=None):
        return getattr(self, key, default)

    def keys(self):
        return [f.name for f in fields(self)]

    def __contains__(self, key: str) -> bool:
        return key in self.keys()


@dataclass
class ExplainedExample(_Fields):
    slot: int
    bank_row: int | None
    missing: bool
    attention: float
    user_id: str | None = None
    pos: int | None = None
    item_id: str | None = None
    title: str | None = None
    label: int | None = None
    decision: str | None = None
    cot: str | None = None
    similarity: float | None = None
    token_attention: dict[str, float] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.missing:  # a missing slot says only that
            return {k: d[k] for k in ("slot", "bank_row", "missing", "attention")}
        return d


@dataclass
class Explanation(_Fields):
    item_id: str
    title: str | None
    score: float
    known: bool
    text: bool
    user_known: bool
    examples: list[ExplainedExample]
    query_attention: float
    missing_examples: int
    reason: str
    notes: list[str]
    tokens: list[str]
    heads: int

    def to_dict(self, internals: bool = True) -> dict:
        """JSON form; ``internals=False`` leaves out the token names and head count (not in the HTTP response)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["examples"] = [e.to_dict() for e in self.examples]
        if not internals:
            d.pop("tokens")
            d.pop("heads")
        return d


class Explainer:
    """Explanations of one loaded LLM-CF ``Scorer`` (built by ``Scorer.explain``)."""

    def __init__(self, scorer):
        self.s = scorer
        t = scorer.items.set_index(scorer.items["item_id"].astype(str)) if scorer.items is not None else None
        self._titles = t["title"].astype(str).to_dict() if t is not None and "title" in t.columns else {}

    def explain(self, candidate: str, history: Sequence[str] = (), user: str | None = None,
                pos: int | None = None) -> Explanation:
        s = self.s
        item = str(candidate)
        out = s.score_with_attention(item, history, user, pos)
        res, att_all = out["result"], out["attention"]
        ctx = res.ctx
        att = att_all[0].mean(0)  # [T] over the tokens, mean over heads
        names = s.model.ict.token_names(ctx.shape[1])
        rows = ctx[0]
        present = rows[rows >= 0]
        sims = dict(zip(present.tolist(), s.retriever.similarity(out["history"], item, present).tolist()))
        frame = s.retriever.bank.frame
        cfg = s.cfg.data
        examples = []
        for slot, row in enumerate(rows.tolist()):
            toks = {n[0]: float(att[t]) for t, n in enumerate(names) if n[1:] == str(slot + 1)}
            if row < 0:
                examples.append(ExplainedExample(slot=slot + 1, bank_row=None, missing=True, attention=0.0))
                continue
            b = frame.iloc[row]
            label = int(b["label"])
            examples.append(ExplainedExample(
                slot=slot + 1, bank_row=int(row), missing=False, attention=float(sum(toks.values())),
                user_id=str(b["user_id"]), pos=int(b["pos"]), item_id=str(b["item_id"]),
                title=self.title(str(b["item_id"])), label=label,
                decision=cfg.positive_verb if label == 1 else cfg.negative_verb, cot=s.cot_texts[row],
                similarity=float(sims[row]), token_attention=toks,
                history=[str(h) for h in b["history"]][-s.hist_len:]))
        return Explanation(item_id=item, title=self.title(item), score=float(res.scores[0]), known=bool(res.known[0]),
                           text=bool(res.text[0]), user_known=res.user_known, examples=examples,
                           query_attention=float(att[-1]), missing_examples=int((rows < 0).sum()),
                           reason=reason(examples), notes=res.notes, tokens=names, heads=int(att_all.shape[1]))

    def title(self, item_id: str) -> str | None:
        return self._titles.get(item_id) or None


def reason(examples: list[ExplainedExample]) -> str:
    """One sentence: the most attended example, its decision and the start of its reasoning."""
    present = [e for e in examples if not e.missing]
    if not present:
        return "no in-context example could be retrieved: the score comes from the backbone and the query alone"
    top = max(present, key=lambda e: e.attention)
    what = top.title or top.item_id
    text = f"Most attended example ({top.attention:.0%} of the query's attention): user {top.user_id} " \
           f"{top.decision} {what!r}"
    if top.cot:
        cot = " ".join(top.cot.split())
        text += f". Its reasoning: {cot[:400]}{'…' if len(cot) > 400 else ''}"
    return text


