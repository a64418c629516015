"""The label-conditioned chain-of-thought prompt (DESIGN.md §1.2) and the reference sentences used to score CoTs.

The prompt shows the user's last ``cot.history_items`` item texts, the target item text and the *true* decision, and
asks the model to explain that decision through four points: (1) the user's profile, (2) the target item and related
items, (3) the alignment between the two, (4) the user's wish for diversity. Wording is driven by
``DataConfig.item_noun / positive_verb / negative_verb`` so the same code serves movies and products.
"""
from __future__ import annotations

from llmcf.config import DataConfig
from llmcf.llm.backends.base import Prompt
from llmcf.llm.prompt_style import DEFAULT_STYLE, check_style

SYSTEM = ("You are a recommendation analyst. You explain, step by step and in plain language, why a user made a "
          "decision about an item, using only the information you are given.")
SYSTEM_COMPACT = "You explain, step by step, why a user made a decision about an item."


def system_prompt(style: str = DEFAULT_STYLE) -> str:
    """The CoT prompt's system turn for ``llm.prompt_style``."""
    return SYSTEM_COMPACT if check_style(style) == "compact" else SYSTEM


def _plural(noun: str) -> str:
    return noun if noun.endswith("s") else noun + "s"


def label_sentence(label: int, data: DataConfig) -> str:
    """The true decision, e.g. ``The user likes the target new movie.`` (also the consistency reference)."""
    verb = data.positive_verb if int(label) == 1 else data.negative_verb
    return f"The user {verb} the target new {data.item_noun}."


def instruction_lines(data: DataConfig, style: str = DEFAULT_STYLE) -> list[str]:
    """The reasoning request: the fixed part of the prompt (a CoT that repeats it is an echo)."""
    noun, nouns = data.item_noun, _plural(data.item_noun)
    if check_style(style) == "compact":
        return [f"Explain why, in four steps: (1) the user's tastes, from the past {nouns}; (2) the target {noun} and "
                f"the related past {nouns}; (3) how well the two match; (4) whether the user wants variety. "
                "End with the decision."]
    return [
        "Explain, step by step, why the user made this decision. Reason through these four points:",
        f"(1) User profile: describe the tastes and interests that the user's past {nouns} reveal.",
        f"(2) Target {noun}: describe the target {noun} and which {nouns} in the history are related to it.",
        f"(3) Alignment: explain how well the user's profile matches the target {noun}.",
        f"(4) Diversity: consider whether the user wishes for variety, something different from the past {nouns}.",
        "Write a few sentences for each point and end with the decision.",
    ]


def aspect_sentences(data: DataConfig) -> list[str]:
    """One reference sentence per reasoning point: a CoT's completeness is its mean cosine to these."""
    noun, nouns = data.item_noun, _plural(data.item_noun)
    return [
        f"The user's profile: the tastes, interests and preferences revealed by the {nouns} in the user's history.",
        f"A description of the target {noun}, its features, and the related {nouns} the user chose before.",
        f"How well the user's preferences align with the characteristics of the target {noun}.",
        f"The user's wish for diversity: whether they want to try {nouns} different from their past choices.",
    ]


def input_text(history_texts: list[str], target_text: str) -> str:
    """The content the CoT should be about (history + target): the relevance reference."""
    return "\n".join([*history_texts, target_text])


def user_message(history_texts: list[str], target_text: str, label: int, data: DataConfig,
                 style: str = DEFAULT_STYLE) -> str:
    nouns = _plural(data.item_noun)
    lines = [f"The user's past {nouns}, oldest first:"]
    if history_texts:
        lines += [f"{i}. {t}" for i, t in enumerate(history_texts, 1)]
    else:
        lines.append("(none: this is the user's first interaction)")
    lines += ["", f"Target new {data.item_noun}: {target_text}",
              f"User's decision: {label_sentence(label, data)}", ""]
    lines += instruction_lines(data, style)
    return "\n".join(lines)


def build_cot_prompt(history_texts: list[str], target_text: str, label: int, data: DataConfig,
                     style: str = DEFAULT_STYLE) -> Prompt:
    """The chat prompt for one train row (a system turn and a user turn); ``history_texts``/``target_text`` are
    item lines of the same style (``item_texts(..., style=style)``)."""
    return [{"role": "system", "content": system_prompt(style)},
            {"role": "user", "content": user_message(history_texts, target_text, label, data, style)}]
