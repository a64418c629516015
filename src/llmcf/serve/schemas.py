"""Request and response bodies of the HTTP API (pydantic), strict: no value is coerced from another JSON type.

Ids are strings of 1-256 characters; integers of magnitude up to 2^53 - 1 are accepted too (MovieLens ids are numbers) and
turned into strings, so every form stays within the length limit. ``pos`` and ``top_k`` are JSON integers (``false``,
``"2"`` are 422s; ``2.0`` is 2, as in JSON Schema). Unknown fields are rejected. Every error body is declared: ``ErrorBody`` (400, 401, 403,
409, 413, 429, 503) and ``ValidationErrorBody`` (422)."""
from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator

MAX_ID_CHARS = 256
MAX_INT = 2 ** 53 - 1
"""Largest integer magnitude accepted: JSON's interoperable range (exact in a double, so in every client)."""


def _json_int(v):
    """A JSON integer, as JSON Schema defines it: an int, or a number with no fractional part (``2.0``); never a
    bool or a string."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError("expected a JSON integer (not a string or a boolean)")
    if isinstance(v, float):
        if not v.is_integer():
            raise ValueError("expected a JSON integer, found a fraction")
        return int(v)
    return v


def json_int(ge: int, le: int = MAX_INT):
    """An integer field in [ge, le] that takes only JSON integers (see ``_json_int``)."""
    return Annotated[int, Field(ge=ge, le=le), BeforeValidator(_json_int)]


Id = Annotated[Union[Annotated[str, StringConstraints(strict=True, min_length=1, max_length=MAX_ID_CHARS)],
                     json_int(-MAX_INT)],
               Field(union_mode="left_to_right",
                     description=f"an id: a string of 1-{MAX_ID_CHARS} characters (an integer of at most 2^53-1 in "
                                 "magnitude is accepted and read as its decimal string)")]
Count = json_int(1)


def _to_str(v):
    if v is None:
        return None
    if isinstance(v, list):
        return [str(x) for x in v]
    return str(v)


class ErrorBody(BaseModel):
    """The body of every non-422 error."""

    detail: str = Field(description="what was wrong and what was expected")


class FieldError(BaseModel):
    loc: list[Union[str, int]] = Field(description="where in the request: e.g. ['body', 'candidates', 0]")
    msg: str
    type: str


class ValidationErrorBody(BaseModel):
    """The body of a 422: a one-line summary and the error of each field."""

    detail: str
    errors: list[FieldError]


class PublicInfo(BaseModel):
    """``/v1/info`` without a valid admin token: what a client needs, no paths, no versions of the software."""

    model_config = ConfigDict(extra="allow")

    model: str
    backbone: str
    llmcf: bool
    version: str
    history_len: int
    limits: dict[str, Any]
    authenticated: bool = Field(description="true: the admin view (also run path, software versions, warnings)")


class ForgetRequest(BaseModel):
    """``POST /v1/admin/forget``: the users whose data is removed (``llmcf forget``)."""

    model_config = ConfigDict(extra="forbid")

    users: list[Id] = Field(min_length=1, max_length=1000, description="user ids to forget")

    @field_validator("users", mode="after")
    @classmethod
    def _strings(cls, v):
        return _to_str(v)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Id | None = Field(None, description="the user (optional; an id unseen in training is allowed)")
    history: list[Id] = Field(default_factory=list, description="the user's recent item ids, oldest first; only "
                                                                "the last data.history_len are used")
    pos: json_int(0) | None = Field(None, description="position of the request in the user's sequence, for the "
                                                    "retrieval leakage rule; default: after all the user's logged "
                                                    "rows (replay a logged row by passing its pos)")

    @field_validator("user_id", "history", mode="after")
    @classmethod
    def _strings(cls, v):
        return _to_str(v)


class ScoreRequest(_Request):
    candidates: list[Id] = Field(..., min_length=1, description="candidate item ids to score")
    top_k: Count | None = Field(None, description="also return the k best candidates, best first")

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
