"""The RecGen Yes/No recommendation instruction (the paper's wording, adapted to the dataset's domain).

    The user's <noun> history, oldest first:
    1. title: ...; category: ...
    ...
    Target new <noun>: title: ...

    Based on the user's history, is the user likely to <verb> the target new <noun>? Answer Yes or No.

Answer: "Yes" (label 1) or "No" (label 0). ``<verb>`` is the base form of ``DataConfig.positive_verb``
("likes" → "like", "purchases" → "purchase").
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import pandas as pd

from llmcf.config import DataConfig
from llmcf.errors import DataError
from llmcf.llm.prompt_style import DEFAULT_STYLE, check_style, compact_texts, rec_system

YES, NO = "Yes", "No"


def base_form(verb: str) -> str:
    """Third-person verb phrase → base form, applied to the first word ("rates highly" → "rate highly")."""
    words = verb.strip().split()
    if not words:
        return verb
    w = words[0]
    if w == "does" and len(words) > 1:  # "does not like" → "not like"
        return " ".join(words[1:])
    if w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith(("ches", "shes", "sses", "xes", "zzes")):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith("ss"):
        w = w[:-1]
    return " ".join([w, *words[1:]])


def item_texts(items: pd.DataFrame, file: str = "items.parquet", blank: str = "title",
               style: str = DEFAULT_STYLE) -> dict[str, str]:
    """item_id → text from the items table (the one reader of item texts for the LLM prompts).

    blank: what an item with an empty ``text`` shows — ``title`` (RecGen prompts: its title, else "") or
    ``placeholder`` (CoT prompts: ``item <id> (no description)``, so a prompt never shows an empty line; duplicate
    item ids are then an error). style: ``llm.prompt_style`` — ``full`` is the ``text`` column, ``compact`` the
    shorter line of ``llmcf.llm.prompt_style.compact_texts``."""
    for col in ("item_id", "text"):
        if col not in items.columns:
            raise DataError(f"missing column '{col}'", file=file, field=col)
    if blank == "placeholder" and items["item_id"].duplicated().any():
        dup = items.loc[items["item_id"].duplicated(), "item_id"].iloc[0]
        raise DataError(f"item_id {dup!r} appears more than once", file=file, field="item_id")
    if check_style(style) == "compact":
        lines = compact_texts(items)
        return {i: t or (f"item {i} (no description)" if blank == "placeholder" else "") for i, t in lines.items()}
    if blank == "placeholder":
        return {iid: text.strip() or f"item {iid} (no description)"
                for iid, text in zip(items["item_id"].astype(str), items["text"].fillna("").astype(str))}
    titles = items["title"] if "title" in items.columns else pd.Series([""] * len(items))
    return {str(i): (str(t) if t else str(ti or "")) for i, t, ti in zip(items["item_id"], items["text"], titles)}


def format_history(history: Iterable[str], texts: Mapping[str, str], max_items: int) -> str:
    """Numbered list of the last ``max_items`` history items (oldest first); unknown ids show as the id."""
    hist = list(history)[-max_items:] if max_items > 0 else []
    if not hist:
        return "(no earlier items)"
    return "\n".join(f"{k}. {texts.get(str(i)) or f'item {i}'}" for k, i in enumerate(hist, 1))


def rec_question(data_cfg: DataConfig) -> str:
    noun = data_cfg.item_noun
    return (f"Based on the user's history, is the user likely to {base_form(data_cfg.positive_verb)} "
            f"the target new {noun}? Answer Yes or No.")


def rec_prompt(history: Sequence[str], target: str, texts: Mapping[str, str], data_cfg: DataConfig,
               history_items: int = 10, style: str = DEFAULT_STYLE) -> list[dict]:
    """One chat prompt asking whether the user will like/purchase ``target``: a single user message under
    ``full``, a one-line system turn before it under ``compact`` (``texts`` from ``item_texts(..., style=style)``)."""
    noun = data_cfg.item_noun
    content = (f"The user's {noun} history, oldest first:\n{format_history(history, texts, history_items)}\n\n"
               f"Target new {noun}: {texts.get(str(target)) or f'item {target}'}\n\n{rec_question(data_cfg)}")
    system = rec_system(style)
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]


def rec_answer(label: int) -> str:
    return YES if int(label) == 1 else NO


def rec_prompts_for(df: pd.DataFrame, texts: Mapping[str, str], data_cfg: DataConfig,
                    history_items: int = 10, style: str = DEFAULT_STYLE) -> list[list[dict]]:
    """Prompts for every row of a samples table (columns ``history``, ``item_id``)."""
    return [rec_prompt(list(h) if h is not None else [], t, texts, data_cfg, history_items, style)
            for h, t in zip(df["history"], df["item_id"])]
