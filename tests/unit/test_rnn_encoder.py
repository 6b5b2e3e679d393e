"""The unpacked layer-wise encoder computes what torch's packed bidirectional RNN computes."""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from transduce.models.rnn_encoder import RNNEncoder, reverse_within_length


def test_reverse_within_length():
    index = reverse_within_length(torch.tensor([3, 1, 4]), 4)
    assert index.tolist() == [[2, 1, 0, 3], [0, 1, 2, 3], [3, 2, 1, 0]]


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
def test_matches_packed_reference(kind, layers):
    torch.manual_seed(0)
    E, H = 6, 8
    encoder = RNNEncoder(kind, E, H, layers, bidirectional=True, dropout=0.0).eval()
    reference = (nn.LSTM if kind == "lstm" else nn.GRU)(E, H // 2, num_layers=layers, bidirectional=True,
                                                        batch_first=True).eval()
    with torch.no_grad():  # copy our per-direction weights into the reference's layout
        for i in range(layers):
            for suffix, rnn in (("", encoder.forward_rnns[i]), ("_reverse", encoder.backward_rnns[i])):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(reference, f"{name}_l{i}{suffix}").copy_(getattr(rnn, f"{name}_l0"))
    lengths = torch.tensor([5, 2, 4])
    x = torch.randn(3, 5, E)
    x[1, 2:] = 0.0
    x[2, 4:] = 0.0
    with torch.no_grad():
        memory, finals = encoder(x, lengths)
        packed, final = reference(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
        expected, _ = pad_packed_sequence(packed, batch_first=True, total_length=5)
    mask = (torch.arange(5).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(2)
    torch.testing.assert_close(memory * mask, expected, atol=1e-6, rtol=1e-5)
    h_n = final[0] if kind == "lstm" else final  # (layers * 2, B, H/2)
    for i in range(layers):
        torch.testing.assert_close(finals[i], torch.cat([h_n[2 * i], h_n[2 * i + 1]], dim=1), atol=1e-6, rtol=1e-5)


def test_unidirectional_final_state_is_at_each_length():
    torch.manual_seed(1)
    encoder = RNNEncoder("lstm", 4, 6, 1, bidirectional=False, dropout=0.0).eval()
    x = torch.randn(2, 5, 4)
    lengths = torch.tensor([5, 3])
    with torch.no_grad():
        memory, finals = encoder(x, lengths)
        alone, _ = encoder(x[1:, :3], lengths[1:])
    torch.testing.assert_close(finals[0][1], memory[1, 2])
    torch.testing.assert_close(alone[0], memory[1, :3], atol=1e-6, rtol=1e-5)
