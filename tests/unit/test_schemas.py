"""The server's request schema is made from DecodeConfig's declarations: the same option names,
help and limits (tightened by the server's own caps), nothing more, and no option left out
unless it says why."""
import pytest
from pydantic import ValidationError

from transduce.config import DecodeConfig, options_of
from transduce.serving.schemas import TranslateRequest

REQUEST_ONLY = {"texts", "nbest", "attention"}
SCHEMA = TranslateRequest.model_json_schema()


def _decode_schema(name: str) -> dict:
    """The JSON schema of an optional field, without its `null` alternative."""
    field = SCHEMA["properties"][name]
    (value,) = [a for a in field["anyOf"] if a.get("type") != "null"]
    return {**value, "description": field.get("description"), "default": field.get("default")}


def test_the_request_holds_exactly_the_served_decode_options():
    served = {d.name for d in options_of(DecodeConfig) if d.api}
    assert set(SCHEMA["properties"]) == served | REQUEST_ONLY
    assert set(TranslateRequest(texts=["a"]).decode_options()) == served
    assert SCHEMA["additionalProperties"] is False
    assert "batch_size" not in SCHEMA["properties"]  # the server makes its own batches


@pytest.mark.parametrize("declared", [d for d in options_of(DecodeConfig) if d.api], ids=lambda d: d.name)
def test_each_request_option_has_the_declared_help_type_and_limits(declared):
    field = _decode_schema(declared.name)
    assert field["description"] == declared.help
    assert field["default"] is None  # absent = the model's own setting
    if declared.choices is not None:
        assert field["enum"] == list(declared.choices)
    else:
        assert field["type"] == {int: "integer", float: "number", bool: "boolean"}[declared.kind]
    assert field.get("exclusiveMinimum") == declared.gt
    assert field.get("minimum") == declared.ge
    assert field.get("maximum") == declared.request_le


@pytest.mark.parametrize("declared", [d for d in options_of(DecodeConfig) if d.api], ids=lambda d: d.name)
def test_request_limits_refuse_what_lies_outside_them(declared):
    outside = [v for v in (declared.gt, None if declared.ge is None else declared.ge - 1,
                           None if declared.request_le is None else declared.request_le + 1) if v is not None]
    for value in outside:
        with pytest.raises(ValidationError, match=declared.name):
            TranslateRequest(texts=["a"], **{declared.name: value})
    if declared.api_le is not None:  # a value the config accepts but the server caps
        DecodeConfig(**{declared.name: declared.kind(declared.api_le + 1)})


def test_options_outside_the_request_are_refused():
    for extra in ({"batch_size": 4}, {"beem": 3}, {"model": "/etc/passwd"}):
        with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
            TranslateRequest(texts=["a"], **extra)


def test_float_options_refuse_nan_and_infinity():
    for declared in options_of(DecodeConfig):
        if declared.kind is float and declared.api:
            for value in (float("nan"), float("inf")):
                with pytest.raises(ValidationError, match=declared.name):
                    TranslateRequest(texts=["a"], **{declared.name: value})


def test_decode_options_are_what_the_request_set():
    request = TranslateRequest(texts=["a"], beam=3, length_penalty="gnmt", sample=False, nbest=2)
    options = request.decode_options()
    assert (options["beam"], options["length_penalty"], options["sample"]) == (3, "gnmt", False)
    assert all(v is None for k, v in options.items() if k not in ("beam", "length_penalty", "sample"))
