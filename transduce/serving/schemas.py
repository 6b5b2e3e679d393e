"""Request and response bodies of the HTTP API (pydantic): the OpenAPI schema at /docs comes from
these. An option the API does not know is an error (422), never silently ignored.

A request's decoding options are made from DecodeConfig's declarations (`config.options_of`):
the same names, help and limits, tightened by the server's own caps; a new decoding option
reaches the API without an edit here.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from transduce.config import DecodeConfig, Option, options_of


class _RequestOnly(BaseModel):
    """The fields of a request that are not decoding options."""

    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(min_length=1, description="source texts, one per item")
    nbest: int = Field(1, ge=1, le=16, description="outputs per text, best first")
    attention: bool = Field(False, description="also return attention weights (output x source tokens)")

    def decode_options(self) -> dict:
        """The DecodeConfig fields this request sets (None = the model's own setting)."""
        return self.model_dump(exclude=set(_RequestOnly.model_fields))


def _request_field(declared: Option) -> tuple[Any, Any]:
    """A decoding option as an optional request field (None = the model's setting), with its limits."""
    kind = Literal[declared.choices] if declared.choices is not None else declared.kind
    finite = {"allow_inf_nan": False} if declared.kind is float else {}
    return kind | None, Field(None, gt=declared.gt, ge=declared.ge, le=declared.request_le,
                              description=declared.help, **finite)


TranslateRequest = create_model(
    "TranslateRequest", __base__=_RequestOnly, __module__=__name__,
    __doc__="Texts to translate and the decoding options that replace the model's saved ones for this request.",
    **{declared.name: _request_field(declared) for declared in options_of(DecodeConfig) if declared.api},
)


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
