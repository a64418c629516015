"""5-shot MMLU accuracy from the standard CSV layout (``dev/<subject>_dev.csv``, ``test/<subject>_test.csv``).

Each CSV row is ``question,A,B,C,D,answer`` (no header, answer a letter). The prompt is the classic one (Hendrycks et
al.): a subject header, k solved dev questions, then the test question ending in "Answer:"; the model's choice is the
letter with the highest next-token probability, summing the " A" and "A" spellings of each letter.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmcf.errors import DataError

LETTERS = ("A", "B", "C", "D")


@dataclass
class Question:
    question: str
    choices: tuple[str, str, str, str]
    answer: str


def load_questions(mmlu_dir: str | Path, subject: str, split: str) -> list[Question]:
    path = Path(mmlu_dir) / split / f"{subject}_{split}.csv"
    if not path.exists():
        raise DataError(f"no such MMLU file (expected {split}/<subject>_{split}.csv)", file=str(path),
                        field="recgen.mmlu_subjects")
    out = []
    with open(path, newline="", encoding="utf-8") as fh:
        for lineno, row in enumerate(csv.reader(fh), 1):
            if not row:
                continue
            if len(row) != 6:
                raise DataError(f"expected 6 columns (question,A,B,C,D,answer), got {len(row)}", file=str(path),
                                line=lineno)
            ans = row[5].strip().upper()
            if ans not in LETTERS:
                raise DataError(f"answer must be one of A/B/C/D, got {row[5]!r}", file=str(path), line=lineno,
                                field="answer")
            out.append(Question(row[0], (row[1], row[2], row[3], row[4]), ans))
    return out


def format_question(q: Question, with_answer: bool) -> str:
    body = q.question.strip() + "\n" + "\n".join(f"{L}. {c}" for L, c in zip(LETTERS, q.choices)) + "\nAnswer:"
    return body + (f" {q.answer}\n\n" if with_answer else "")


def build_prompts(mmlu_dir: str | Path, subject: str, shots: int = 5,
                  max_questions: int | None = None) -> tuple[list[str], list[str]]:
    """(prompt texts, gold letters) for one subject."""
    dev = load_questions(mmlu_dir, subject, "dev")[:shots]
    test = load_questions(mmlu_dir, subject, "test")
    if max_questions is not None:
        test = test[:max_questions]
    header = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
    prefix = header + "".join(format_question(q, True) for q in dev)
    return [prefix + format_question(q, False) for q in test], [q.answer for q in test]


def letter_token_ids(tokenizer) -> list[list[int]]:
    """For each letter, the first-token ids of its spellings " A" and "A" (deduplicated)."""
    res = []
    for L in LETTERS:
        ids = {tokenizer.encode(s, add_special_tokens=False)[0] for s in (f" {L}", L)}
        res.append(sorted(ids))
    return res


def evaluate_mmlu(backend, mmlu_dir: str | Path, subjects: list[str], shots: int = 5,
                  max_questions: int | None = None) -> dict:
    """{"subjects": {name: {"accuracy", "n"}}, "accuracy": micro average, "macro_accuracy", "n"} (hf backend)."""
    groups = letter_token_ids(backend.tokenizer)
    flat = [i for g in groups for i in g]
    per: dict = {}
    correct_all = n_all = 0
    for subject in subjects:
        texts, gold = build_prompts(mmlu_dir, subject, shots, max_questions)
        if not texts:
            continue
        logits = backend.next_token_logits(texts, flat, desc=f"mmlu {subject}")
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        scores, k = [], 0
        for g in groups:
            scores.append(probs[:, k:k + len(g)].sum(axis=1))
            k += len(g)
        pred = np.asarray(LETTERS)[np.argmax(np.stack(scores, axis=1), axis=1)]
        correct = int((pred == np.asarray(gold)).sum())
        per[subject] = {"accuracy": correct / len(gold), "n": len(gold)}
        correct_all += correct
        n_all += len(gold)
    return {"subjects": per, "n": n_all, "accuracy": correct_all / n_all if n_all else None,
            "macro_accuracy": float(np.mean([v["accuracy"] for v in per.values()])) if per else None,
            "shots": shots}
