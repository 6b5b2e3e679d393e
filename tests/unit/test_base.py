"""The protocols of models/base.py cannot drift: every model, encoder output and decoder state
class provides each member its protocol declares (with the protocol's parameters, in order), and
search, reference scoring and training call nothing on them that the protocols leave out."""
import ast
import inspect
import pathlib
import typing

import pytest
import torch

from transduce.config import ModelConfig
from transduce.constants import BOS
from transduce.data.batching import Example, collate
from transduce.models.base import DecoderState, EncoderState, Seq2Seq, TrainableSeq2Seq
from transduce.models.builder import build_model
from transduce.models.ensemble import Ensemble, EnsembleEncoderOutput, EnsembleState
from transduce.models.rnn import RNNSeq2Seq
from transduce.models.state import EncoderOutput, RNNState, TransformerMemory, TransformerState
from transduce.models.transformer import TransformerSeq2Seq

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "transduce"
CALLERS = ["decoding/greedy.py", "decoding/beam.py", "decoding/sampling.py", "decoding/search.py",
           "evaluation/reference_scoring.py", "training/objective.py"]
IMPLEMENTATIONS = [
    (TrainableSeq2Seq, RNNSeq2Seq), (TrainableSeq2Seq, TransformerSeq2Seq), (Seq2Seq, Ensemble),
    (EncoderState, EncoderOutput), (EncoderState, TransformerMemory), (EncoderState, EnsembleEncoderOutput),
    (DecoderState, RNNState), (DecoderState, TransformerState), (DecoderState, EnsembleState),
]


def members(protocol: type) -> set[str]:
    """The public names a protocol declares (methods, properties, attributes), its bases' included."""
    names: set[str] = set()
    for cls in protocol.__mro__:
        if cls not in (typing.Protocol, typing.Generic, object):
            names |= {n for n in list(vars(cls)) + list(getattr(cls, "__annotations__", {})) if not n.startswith("_")}
    return names


def _parameters(function) -> list[inspect.Parameter]:
    return list(inspect.signature(function).parameters.values())[1:]  # without self


@pytest.mark.parametrize("protocol, cls", IMPLEMENTATIONS, ids=lambda x: x.__name__)
def test_each_class_has_its_protocols_methods_with_their_parameters(protocol, cls):
    for name in members(protocol):
        declared = inspect.getattr_static(protocol, name, None)
        if not inspect.isfunction(declared):
            continue  # an attribute or property: checked on instances below
        assert inspect.isfunction(getattr(cls, name, None)), f"{cls.__name__} lacks {name}()"
        wanted, given = _parameters(declared), _parameters(getattr(cls, name))
        assert [p.name for p in given[:len(wanted)]] == [p.name for p in wanted], f"{cls.__name__}.{name}"
        assert all(p.default is not p.empty for p in given[len(wanted):]), f"{cls.__name__}.{name}: extra required"
        assert all(g.default is not g.empty for w, g in zip(wanted, given) if w.default is not w.empty), \
            f"{cls.__name__}.{name}: a parameter the protocol may leave out is required"


def _tiny(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, embed_dim=8, hidden=8, heads=2, ff_size=16, encoder_layers=1, decoder_layers=1)
    return build_model(cfg, 9, 9).eval()


@torch.no_grad()
def test_models_encoder_outputs_and_states_are_instances_of_their_protocols():
    """Instances also hold the protocols' attributes (dataclass fields, nn.Module's `training`)."""
    batch = collate([Example([4, 5, 6], [4], 0), Example([7], [5], 1)])
    rnn, transformer = _tiny("lstm"), _tiny("transformer")
    for model, trainable in ((rnn, True), (transformer, True), (Ensemble([rnn, transformer]), False)):
        assert isinstance(model, TrainableSeq2Seq) == trainable and isinstance(model, Seq2Seq)
        enc = model.encode(batch.src, batch.src_mask, batch.src_lengths)
        _, state = model.decode_step(torch.full((2,), BOS), enc, model.init_state(enc))
        assert isinstance(enc, EncoderState) and isinstance(enc.repeat_rows(2), EncoderState)
        assert isinstance(state, DecoderState) and isinstance(state.select(torch.tensor([1])), DecoderState)


def _used(tree: ast.AST, receivers: set[str]) -> set[str]:
    """Attributes read from the names `receivers`, or from `self.<receiver>`."""
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        value = node.value
        if isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name) and value.value.id == "self":
            value = ast.Name(value.attr)
        if isinstance(value, ast.Name) and value.id in receivers:
            found.add(node.attr)
    return found


def test_search_scoring_and_training_call_only_what_the_protocols_declare():
    trees = [ast.parse((PACKAGE / path).read_text()) for path in CALLERS]
    on_model = set().union(*(_used(t, {"model"}) for t in trees))
    on_enc = set().union(*(_used(t, {"enc", "first_enc", "new_enc"}) for t in trees))
    on_state = set().union(*(_used(t, {"state", "new_state"}) for t in trees))
    on_state |= {node.attr for t in trees for node in ast.walk(t) if isinstance(node, ast.Attribute)
                 and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Attribute)
                 and node.value.func.attr == "init_state"}  # model.init_state(enc).reserve(...)
    assert {"encode", "init_state", "decode_step", "features"} <= on_model and "reserve" in on_state  # it looks
    assert on_model <= members(TrainableSeq2Seq), on_model - members(TrainableSeq2Seq)
    assert on_enc <= members(EncoderState), on_enc - members(EncoderState)
    assert on_state <= members(DecoderState), on_state - members(DecoderState)
