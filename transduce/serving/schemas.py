"""Request and response bodies of the HTTP API (pydantic): the OpenAPI schema at /docs comes from
these. An option the API does not know is an error (422), never silently ignored."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TranslateRequest(BaseModel):
    """Texts to translate and the decoding options that replace the model's saved ones for this request."""

    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(min_length=1, description="source texts, one per item")
    beam: int | None = Field(None, ge=1, le=32, description="beam size (1 = greedy)")
    nbest: int = Field(1, ge=1, le=16, description="outputs per text, best first")
    sample: bool | None = Field(None, description="draw tokens instead of searching")
    temperature: float | None = Field(None, gt=0, le=100)
    top_k: int | None = Field(None, ge=0, le=1_000_000, description="sample among the k most probable (0 = all)")
    top_p: float | None = Field(None, gt=0, le=1, description="sample among the tokens holding this mass")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="sampling seed")
    max_length: int | None = Field(None, ge=1, le=1024, description="most tokens to generate")
    min_length: int | None = Field(None, ge=0, le=1024, description="tokens before the end is allowed")
    length_penalty: Literal["avg", "gnmt", "none"] | None = None
    length_alpha: float | None = Field(None, ge=0, le=10)
    no_repeat_ngram: int | None = Field(None, ge=0, le=16)
    suppress_unk: bool | None = None
    attention: bool = Field(False, description="also return attention weights (output x source tokens)")

    def decode_options(self) -> dict:
        """The DecodeConfig fields this request sets (None = the model's own setting)."""
        return self.model_dump(exclude={"texts", "nbest", "attention"})


class Output(BaseModel):
    text: str
    score: float | None = Field(description="log-probability (normalised as the length penalty says)")
    tokens: list[str]
    attention: list[list[float]] | None = Field(
        None, description="one row per output token and one for the end: weights over source_tokens")


class Result(BaseModel):
    source_tokens: list[str]
    outputs: list[Output]


class TranslateResponse(BaseModel):
    results: list[Result]
    elapsed_ms: float


class Health(BaseModel):
    status: Literal["loading", "ok", "error"]
    model: str | None = None
    error: str | None = None
    api_key_required: bool = False


class ErrorBody(BaseModel):
    error: str
