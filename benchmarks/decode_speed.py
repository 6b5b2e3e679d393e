"""Decoding speed on the peers' protocol: beam 5 and greedy tokens/s on the test set, as JSON.

Decodes test.tsv (batches of 64 sentences, at most 200 tokens, beam 5 with length
normalisation, and greedy) with the model left by train_speed.py (trained first if missing).
Times pure decoding, model loading excluded; counts generated tokens without EOS. The
figures compared with the peers are those of the first pass (no warm-up, as theirs);
`*_warm_tok_per_s` times a second pass over the same set, as a long-running service sees it.

    python benchmarks/decode_speed.py [--arch lstm] [--data DIR] [--model DIR]
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, parse_args, peak_rss_mib  # noqa: E402

from transduce.data.batching import Example  # noqa: E402
from transduce.data.readers import read_pairs  # noqa: E402
from transduce.decoding.search import decode_examples  # noqa: E402
from transduce.evaluation.report import score_outputs  # noqa: E402
from transduce.inference import load  # noqa: E402


def ensure_model(args) -> Path:
    model = Path(args.model) if args.model else Path(args.work) / f"{Path(args.data).name}-{args.arch}-{args.precision}"
    if not (model / "model.safetensors").exists():
        subprocess.run([sys.executable, str(Path(__file__).with_name("train_speed.py")), "--arch", args.arch,
                        "--data", args.data, "--work", args.work, "--threads", str(args.threads),
                        "--precision", args.precision],
                       check=True, stdout=subprocess.DEVNULL)
    return model


def main() -> None:
    args = parse_args(__doc__, lambda p: p.add_argument("--model", help="model folder (default: train one)"))
    model_dir = ensure_model(args)
    torch.set_num_threads(args.threads)
    pairs = list(read_pairs(Path(args.data) / "test.tsv"))
    result = {"benchmark": "decode_speed", "arch": args.arch, "data": Path(args.data).name,
              "sentences": len(pairs), "threads": args.threads}
    for precision in ("fp32", "bf16"):
        translator = load(model_dir, device="cpu", precision=precision)
        examples = [Example(translator.codec.encode_source(p.source), None, i) for i, p in enumerate(pairs)]
        figures = result if precision == "fp32" else result.setdefault("bf16_weights", {})
        for name, beam in (("beam5", 5), ("greedy", 1)):
            cfg = translator.decode_options(beam=beam, max_length=200, batch_size=64, max_length_ratio=None)
            started = time.perf_counter()
            hyps = decode_examples(translator.model, examples, cfg, device="cpu")
            seconds = time.perf_counter() - started
            tokens = sum(len(h[0].tokens) for h in hyps)
            started = time.perf_counter()  # a second pass: kernels for every batch shape already built
            decode_examples(translator.model, examples, cfg, device="cpu")
            figures[f"{name}_warm_tok_per_s"] = round(tokens / (time.perf_counter() - started), 1)
            outputs = [translator.codec.decode_target(h[0].tokens) for h in hyps]
            scores = score_outputs(outputs, [p.target for p in pairs])
            figures[f"{name}_tok_per_s"] = round(tokens / seconds, 1)
            figures[name] = {"decode_s": round(seconds, 3), "out_tokens": tokens,
                             "sent_per_s": round(len(pairs) / seconds, 1), "tok_per_s": round(tokens / seconds, 1),
                             "bleu": scores["bleu"], "chrf": scores["chrf"]}
        if precision == "fp32":
            result["peak_rss_mib"] = round(peak_rss_mib(), 1)  # the float32 model's decoding peak
    emit(result)


if __name__ == "__main__":
    main()
