"""Embeddings: the same seed gives the same weights (initialisation order is fixed), PAD rows are
zero, sharing and tying share storage."""
import pytest
import torch

from transduce.config import ModelConfig
from transduce.constants import PAD
from transduce.models.builder import build_model
from transduce.models.embeddings import make_embeddings, make_output


@pytest.mark.parametrize("arch", ["lstm", "transformer"])
def test_same_seed_same_weights(arch):
    cfg = ModelConfig(arch=arch, embed_dim=16, hidden=16, heads=2, ff_size=32, share_embeddings=False)
    weights = []
    for _ in range(3):
        torch.manual_seed(5)
        weights.append(build_model(cfg, 30, 20).state_dict())
    for other in weights[1:]:
        assert all(torch.equal(a, b) for a, b in zip(weights[0].values(), other.values()))


def test_pad_rows_zero_and_sharing():
    cfg = ModelConfig(embed_dim=8, hidden=8, share_embeddings=True, tie_output=True)
    src, tgt = make_embeddings(cfg, 12, 12)
    assert src is tgt and float(src.weight.detach()[PAD].abs().sum()) == 0.0
    assert make_output(cfg, tgt, 12).weight is tgt.weight
    with pytest.raises(ValueError, match="shared vocabulary"):
        make_embeddings(cfg, 12, 13)
