"""Teacher forcing through `decode_step`, one target position at a time: what every
"incremental decoding equals the full pass" test compares against."""
import torch


def decode_stepwise(model, batch, src_ext=None):
    """-> log-probs (B, T, V) of feeding batch.tgt_in token by token, and each step's attention."""
    with torch.no_grad():
        enc = model.encode(batch.src, batch.src_mask, batch.src_lengths, src_ext)
        state = model.init_state(enc)
        steps, attention = [], []
        for t in range(batch.tgt_in.size(1)):
            lp, state = model.decode_step(batch.tgt_in[:, t], enc, state)
            steps.append(lp)
            attention.append(state.attention)
        return torch.stack(steps, 1), attention
