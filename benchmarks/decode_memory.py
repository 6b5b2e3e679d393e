"""Decoding memory on the peers' protocol: peak resident memory of one process that loads a model
and decodes the test set, one process per search (as the peers' figures are one command each).
Prints JSON.

Each search runs in a fresh process (batches of 64 sentences, at most 200 tokens, float32;
beam 5 with length normalisation, or greedy); the figures are its peak RSS, the RSS once the
model is loaded (what PyTorch, the libraries and the weights take before any decoding), and
what decoding added on top.

    python benchmarks/decode_memory.py --model DIR [--data DIR] [--beams 5 1]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "multi30k-en-de"


def rss_mib() -> float:
    """Current resident memory of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def decode_once(model_dir: str, data: str, beam: int, threads: int) -> dict:
    """Runs in the child process: load, decode the test set with one search, report memory."""
    import torch

    from transduce.data.batching import Example
    from transduce.data.readers import read_pairs
    from transduce.decoding.search import decode_examples
    from transduce.inference import load

    torch.set_num_threads(threads)
    translator = load(model_dir, device="cpu")
    pairs = list(read_pairs(Path(data) / "test.tsv"))
    examples = [Example(translator.codec.encode_source(p.source), None, i) for i, p in enumerate(pairs)]
    loaded = rss_mib()
    cfg = translator.decode_options(beam=beam, max_length=200, batch_size=64, max_length_ratio=None)
    started = time.perf_counter()
    hyps = decode_examples(translator.model, examples, cfg, device="cpu")
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"search": "greedy" if beam == 1 else f"beam{beam}", "peak_rss_mib": round(peak, 1),
            "loaded_rss_mib": round(loaded, 1), "decoding_mib": round(peak - loaded, 1),
            "out_tokens": sum(len(h[0].tokens) for h in hyps), "decode_s": round(seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder with test.tsv")
    parser.add_argument("--beams", type=int, nargs="+", default=[5, 1])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)  # the beam this process decodes with
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(decode_once(args.model, args.data, args.child, args.threads)))
        return
    result = {"benchmark": "decode_memory", "model": args.model, "data": Path(args.data).name}
    for beam in args.beams:
        child = subprocess.run([sys.executable, __file__, "--model", args.model, "--data", args.data,
                                "--threads", str(args.threads), "--child", str(beam)],
                               check=True, capture_output=True, text=True)
        figures = json.loads(child.stdout.strip().splitlines()[-1])
        result[figures.pop("search")] = figures
    print(json.dumps(result))


if __name__ == "__main__":
    main()
