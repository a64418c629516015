"""How the LLM prompts word an item and what fixed text they carry (``llm.prompt_style``).

``full`` is the wording every run recorded before 2026-12-04 used: an item line is the items table's ``text``
(``title: Toy Story (1995); category: Animation, Children's, Comedy``). ``compact`` says the same in fewer tokens:

- an item line is ``Toy Story (1995) | Animation, Children's, Comedy``: no field labels, the brand only when the
  title does not already name it, and no category that nearly every item carries (``Beauty`` on Amazon Beauty tells
  the model nothing about one item);
- the CoT prompt's system turn and four-point instruction are shorter (same four points, same decision);
- the RecGen prompt gets a one-line system turn instead of the chat template's default one.

Prompt content stays the paper's: the history, the target, (for CoTs) the true decision and the four points.
Token counts and speed of both styles: benchmarks/results/prompts.md.
"""
from __future__ import annotations

import pandas as pd

from llmcf.errors import LLMCFError

STYLES = ("full", "compact")
DEFAULT_STYLE = "compact"
"""``LLMConfig.prompt_style``'s default, and the default of the prompt builders' ``style`` argument."""

COMMON_CATEGORY_SHARE = 0.9
"""compact: a category on at least this share of the items (with at least 10 items) is left out of item lines."""


def check_style(style: str) -> str:
    if style not in STYLES:
        raise LLMCFError(f"llm.prompt_style: '{style}' is not one of {', '.join(STYLES)}")
    return style


def _categories(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [c.strip() for c in value.split(",") if c.strip()]
    try:
        return [str(c).strip() for c in list(value) if str(c).strip()]
    except TypeError:
        return []


def common_categories(items: pd.DataFrame) -> set[str]:
    """Categories carried by at least ``COMMON_CATEGORY_SHARE`` of the items (none for fewer than 10 items)."""
    if "categories" not in items.columns or len(items) < 10:
        return set()
    counts: dict[str, int] = {}
    for cats in items["categories"]:
        for c in set(_categories(cats)):
            counts[c] = counts.get(c, 0) + 1
    return {c for c, n in counts.items() if n >= COMMON_CATEGORY_SHARE * len(items)}


def compact_line(title: str, brand: str, categories: list[str], text: str, drop: set[str]) -> str:
    """``title | brand | categories`` (missing parts left out); the item's ``text`` when it has no title."""
    title, brand = (title or "").strip(), (brand or "").strip()
    if not title:
        return (text or "").strip()
    parts = [title]
    if brand and brand.lower() not in title.lower():
        parts.append(brand)
    cats = [c for c in categories if c not in drop]
    if cats:
        parts.append(", ".join(cats))
    return " | ".join(parts)


def compact_texts(items: pd.DataFrame) -> dict[str, str]:
    """item_id → compact item line for every row of an items table (columns item_id, text; title, brand,
    categories when present)."""
    drop = common_categories(items)
    n = len(items)
    col = lambda name: items[name] if name in items.columns else pd.Series([None] * n, index=items.index)  # noqa: E731
    return {str(i): compact_line(str(t) if t is not None else "", str(b) if b is not None else "", _categories(c),
                                 str(x) if x is not None else "", drop)
            for i, t, b, c, x in zip(items["item_id"], col("title"), col("brand"), col("categories"), col("text"))}


REC_SYSTEM_COMPACT = "You predict a user's next choice."
"""compact: RecGen's system turn (without one, chat templates such as SmolLM2's insert a longer default)."""


def rec_system(style: str) -> str | None:
    """The RecGen prompt's system turn: None (the chat template's default) under ``full``."""
    return REC_SYSTEM_COMPACT if check_style(style) == "compact" else None
