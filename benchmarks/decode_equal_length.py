"""Decoding speed at equal output lengths: every test sentence is forced to the length another
decoder produced for it (a hypotheses file of space-separated pieces, e.g. CTranslate2's), so
tokens/s compare the same amount of work. Prints JSON.

    python benchmarks/decode_equal_length.py --model DIR --lengths HYP_PIECES.txt [--beam 1|5] [--precision fp32|bf16]

EOS is forbidden before each sentence's length and forced at it (min_length above every cap;
the cap wins). Batches as in `decode_examples`: greedy streams sentences through at most 64
rows, beam search takes sentence batches of 64. No warm-up (as the peers).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from transduce.data.batching import Example, collate, sentence_batches
from transduce.data.readers import read_pairs
from transduce.decoding.beam import beam_search
from transduce.decoding.greedy import greedy_search
from transduce.inference import load

ROOT = Path(__file__).resolve().parent.parent
FORCE = 10**9  # min_length: EOS only at the cap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--lengths", required=True, help="hypotheses, one line of space-separated pieces per sentence")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "multi30k-en-de"))
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    translator = load(args.model, device="cpu", precision=args.precision)
    pairs = list(read_pairs(Path(args.data) / "test.tsv"))
    lengths = [len(line.split()) for line in Path(args.lengths).read_text(encoding="utf-8").splitlines()]
    if len(lengths) != len(pairs):
        sys.exit(f"{args.lengths}: {len(lengths)} lines for {len(pairs)} test sentences")
    examples = [Example(translator.codec.encode_source(p.source), None, i) for i, p in enumerate(pairs)]
    model = translator.model
    started = time.perf_counter()
    produced = 0
    with torch.inference_mode():
        if args.beam == 1:
            order = sorted(examples, key=lambda e: len(e.src), reverse=True)
            groups = [(order, dict(max_rows=args.batch_size))]
        else:
            groups = [(group, dict(beam=args.beam)) for group in sentence_batches(examples, args.batch_size)]
        for group, options in groups:
            batch = collate(group)
            caps = torch.tensor([lengths[e.index] for e in group])
            search = greedy_search if args.beam == 1 else beam_search
            hyps = search(model, batch.src, batch.src_mask, batch.src_lengths, caps, min_length=FORCE, **options)
            produced += sum(len(h.tokens) if args.beam == 1 else len(h[0].tokens) for h in hyps)
    seconds = time.perf_counter() - started
    print(json.dumps({"benchmark": "decode_equal_length", "model": args.model, "beam": args.beam,
                      "precision": args.precision, "sentences": len(pairs), "out_tokens": produced,
                      "target_tokens": sum(lengths), "decode_s": round(seconds, 3),
                      "tok_per_s": round(produced / seconds, 1), "threads": args.threads}))


if __name__ == "__main__":
    main()
