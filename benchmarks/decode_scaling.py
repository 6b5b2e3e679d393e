"""Is decoding O(n)? Cost per generated token at forced output lengths, as JSON.

Each length L decodes the same sources with EOS forbidden before L and required at L, so
every sentence produces exactly L tokens; an incremental decoder costs the same per token
whatever L is (`max_over_min` near 1), one that re-reads the prefix grows linearly.
`per_token_ms` is the decoder's cost per token: the time of encoding the batch (measured on
its own) is taken out, since it is paid once per sentence whatever L is;
`per_token_ms_with_encoder` keeps it in.

    python benchmarks/decode_scaling.py [--arch lstm] [--data DIR] [--model DIR] [--beam 1]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, parse_args  # noqa: E402
from decode_speed import ensure_model  # noqa: E402

from transduce.data.batching import Example, collate  # noqa: E402
from transduce.data.readers import read_pairs  # noqa: E402
from transduce.decoding.search import decode_examples  # noqa: E402
from transduce.inference import load  # noqa: E402

LENGTHS = (25, 50, 100, 200, 400)


def extra(parser) -> None:
    parser.add_argument("--model", help="model folder (default: train one)")
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)


def main() -> None:
    args = parse_args(__doc__, extra)
    model_dir = ensure_model(args)
    torch.set_num_threads(args.threads)
    translator = load(model_dir, device="cpu")
    pairs = list(read_pairs(Path(args.data) / "test.tsv"))[: args.sentences]
    examples = [Example(translator.codec.encode_source(p.source), None, i) for i, p in enumerate(pairs)]
    batch = collate(examples)
    with torch.inference_mode():
        encode_s = min(_timed(lambda: translator.model.encode(batch.src, batch.src_mask, batch.src_lengths))
                       for _ in range(args.repeats + 2))
    per_token, with_encoder = {}, {}
    for length in LENGTHS:
        cfg = translator.decode_options(beam=args.beam, min_length=length, max_length=length,
                                        max_length_ratio=None, batch_size=len(examples))
        best = float("inf")
        for _ in range(args.repeats):
            started = time.perf_counter()
            hyps = decode_examples(translator.model, examples, cfg, device="cpu")
            best = min(best, time.perf_counter() - started)
        tokens = sum(len(h[0].tokens) for h in hyps)
        assert tokens == length * len(examples), (tokens, length)
        per_token[str(length)] = round(1000 * (best - encode_s) / tokens, 5)
        with_encoder[str(length)] = round(1000 * best / tokens, 5)
    values = list(per_token.values())
    emit({"benchmark": "decode_scaling", "arch": args.arch, "beam": args.beam, "sentences": len(examples),
          "per_token_ms": per_token, "max_over_min": round(max(values) / min(values), 3),
          "encode_ms": round(1000 * encode_s, 3), "per_token_ms_with_encoder": with_encoder,
          "max_over_min_with_encoder": round(max(with_encoder.values()) / min(with_encoder.values()), 3),
          "threads": args.threads})


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
