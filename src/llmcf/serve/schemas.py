"""Request and response bodies of the HTTP API (pydantic). Ids are strings; integers are accepted and turned into
strings (MovieLens ids are numbers), anything else is a 422 naming the field. Unknown fields are rejected."""
from __future__ import annotations

from typing import Annotated, Union

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, field_validator

Id = Annotated[Union[Annotated[str, StringConstraints(strict=True, min_length=1, max_length=256)], StrictInt],
               Field(description="an id as a string (integers are accepted)")]


def _to_str(v):
    if v is None:
        return None
    if isinstance(v, list):
        return [str(x) for x in v]
    return str(v)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Id | None = Field(None, description="the user (optional; an id unseen in training is allowed)")
    history: list[Id] = Field(default_factory=list, description="the user's recent item ids, oldest first; only "
                                                                "the last data.history_len are used")
    pos: int | None = Field(None, ge=0, le=2 ** 63 - 1, description="position of the request in the user's sequence, for the "
                                                    "retrieval leakage rule; default: after all the user's logged "
                                                    "rows (replay a logged row by passing its pos)")

    @field_validator("user_id", "history", mode="after")
    @classmethod
    def _strings(cls, v):
        return _to_str(v)


class ScoreRequest(_Request):
    candidates: list[Id] = Field(..., min_length=1, description="candidate item ids to score")
    top_k: int | None = Field(None, ge=1, description="also return the k best candidates, best first")

    @field_validator("candidates", mode="after")
    @classmethod
    def _cands(cls, v):
        return _to_str(v)

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"user_id": "42", "history": ["50", "172", "181"], "candidates": ["1", "121", "404"], "top_k": 2}]})


class ExplainRequest(_Request):
    candidate: Id = Field(..., description="the item to explain")

    @field_validator("candidate", mode="after")
    @classmethod
    def _cand(cls, v):
        return _to_str(v)

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"user_id": "42", "history": ["50", "172", "181"], "candidate": "121"}]})


class CandidateScore(BaseModel):
    item_id: str
    score: float = Field(description="predicted probability of a positive label")
    known: bool = Field(description="false: not in the training vocabulary, scored as the out-of-vocabulary item")
    text: bool | None = Field(None, description="the model used a text embedding of the item (null: the model "
                                                "reads no text)")


class HistoryInfo(BaseModel):
    used: int
    unknown: int = Field(description="history items not in the training vocabulary")
    truncated: int = Field(description="older items dropped to fit the model's history length")


class ScoreResponse(BaseModel):
    model: str
    version: str = Field(description="what was loaded when this request was scored (changes on reload)")
    user_known: bool
    history: HistoryInfo
    scores: list[CandidateScore] = Field(description="one per candidate, in request order")
    top: list[CandidateScore] | None = Field(None, description="the top_k best, best first (when asked)")
    notes: list[str] = Field(default_factory=list)


class Example(BaseModel):
    slot: int = Field(description="1-based position of the example in the decoder's input")
    bank_row: int | None
    missing: bool = Field(description="true when the bank had too few rows of this label (masked out)")
    user_id: str | None = None
    pos: int | None = None
    item_id: str | None = None
    title: str | None = None
    label: int | None = None
    decision: str | None = Field(None, description="the label in words")
    cot: str | None = Field(None, description="the chain of thought written offline for this example")
    similarity: float | None = Field(None, description="retrieval score (weighted sum of cosines)")
    attention: float = Field(description="share of the query position's attention on this example's tokens")
    token_attention: dict[str, float] = Field(default_factory=dict,
                                              description="per token: f = features, c = CoT, y = label")
    history: list[str] | None = None


class ExplainResponse(BaseModel):
    model: str
    version: str
    item_id: str
    title: str | None
    score: float
    known: bool
    text: bool
    user_known: bool
    examples: list[Example]
    query_attention: float = Field(description="share of the attention the query position keeps on itself")
    missing_examples: int
    reason: str
    attention: str = Field(description="what the attention numbers are")
    notes: list[str] = Field(default_factory=list)
