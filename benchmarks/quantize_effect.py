"""What int8 quantization does to a model: folder size, CPU decoding speed and test quality, float32
against int8 (the model quantized into a temporary folder by `quantize_model_dir`). Prints JSON.

Speed: tokens generated per second (EOS excluded) decoding the test sources, greedy and beam 5,
batches of 64 sentences, `--threads` threads; model loading and one warm-up batch excluded. The
variants are timed in turn, `--repeats` times each, and the best pass is kept (on a shared
machine the other passes measure the neighbours). Quality: `evaluation.report.evaluate` (as
`transduce evaluate`) with the model's own decoding settings, plus the greedy outputs' scores.

    python benchmarks/quantize_effect.py --model DIR --data TEST.tsv [--threads 2] [--repeats 5] [--keep-float W,...]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from transduce.data.readers import read_pairs
from transduce.decoding.search import decode_examples
from transduce.evaluation.report import evaluate, score_outputs
from transduce.export.quantize import quantize_model_dir
from transduce.inference import load

QUALITY_KEYS = ("bleu", "chrf", "rouge1", "rouge2", "rougeL", "exact_match", "perplexity")


def folder_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())


def decode_pass(translator, examples, beam: int, batch_size: int) -> tuple[float, list]:
    cfg = translator.decode_options(beam=beam, batch_size=batch_size)
    started = time.perf_counter()
    hyps = decode_examples(translator.model, examples, cfg, device=translator.device)
    return time.perf_counter() - started, hyps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a float32 model folder")
    parser.add_argument("--data", required=True, help="test pairs (TSV, optionally .gz)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--keep-float", default="", help="comma-separated weights to leave float32 "
                        "(e.g. output.weight), to find which layers lose quality")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model_dir = Path(args.model)
    pairs = list(read_pairs(args.data))
    sources, references = [p.source for p in pairs], [p.target for p in pairs]

    with tempfile.TemporaryDirectory(prefix="transduce-int8-") as tmp:
        int8_dir = Path(tmp) / "int8"
        started = time.perf_counter()
        keep_float = [name for name in args.keep_float.split(",") if name]
        summary = quantize_model_dir(model_dir, int8_dir, keep_float=keep_float)
        quantize_s = time.perf_counter() - started
        translators = {"fp32": load(model_dir, device="cpu"), "int8": load(int8_dir)}
        result = {
            "benchmark": "quantize_effect", "model": str(model_dir), "arch": translators["fp32"].config.model.arch,
            "data": str(args.data), "sentences": len(pairs), "threads": args.threads,
            "quantized_engine": torch.backends.quantized.engine, "quantize_s": round(quantize_s, 2), "kept_float": keep_float,
            "size": {"fp32_weights_bytes": summary["float_bytes"], "int8_weights_bytes": summary["int8_bytes"],
                     "weights_ratio": summary["ratio"], "fp32_folder_bytes": folder_bytes(model_dir),
                     "int8_folder_bytes": folder_bytes(int8_dir), "quantized_tensors": summary["quantized_tensors"]},
        }
        examples = {name: [t.codec.example(s, None, i) for i, s in enumerate(sources)]
                    for name, t in translators.items()}
        figures = {name: {} for name in translators}
        outputs = {}
        for search, beam in (("greedy", 1), ("beam5", 5)):
            for name, translator in translators.items():  # warm-up: kernels for the first shapes
                decode_pass(translator, examples[name][: args.batch_size], beam, args.batch_size)
            best = {name: float("inf") for name in translators}
            for _ in range(args.repeats):
                for name, translator in translators.items():  # interleaved: both see the same neighbours
                    seconds, hyps = decode_pass(translator, examples[name], beam, args.batch_size)
                    best[name] = min(best[name], seconds)
                    tokens = sum(len(h[0].tokens) for h in hyps)
                    outputs[name, search] = [translator.codec.decode_target(h[0].tokens) for h in hyps]
                    figures[name][f"{search}_tokens"] = tokens
            for name in translators:
                figures[name][f"{search}_s"] = round(best[name], 3)
                figures[name][f"{search}_tok_per_s"] = round(figures[name][f"{search}_tokens"] / best[name], 1)
        for name, translator in translators.items():
            report, _ = evaluate(translator, pairs)
            figures[name]["quality"] = {k: report[k] for k in QUALITY_KEYS}
            figures[name]["quality"]["decode"] = f"beam {report['decode']['beam']}"
            greedy = score_outputs(outputs[name, "greedy"], references)
            figures[name]["greedy_quality"] = {k: greedy[k] for k in ("bleu", "chrf", "rougeL")}
        result.update(figures)
        result["int8_vs_fp32"] = {
            "greedy_speedup": round(figures["int8"]["greedy_tok_per_s"] / figures["fp32"]["greedy_tok_per_s"], 2),
            "beam5_speedup": round(figures["int8"]["beam5_tok_per_s"] / figures["fp32"]["beam5_tok_per_s"], 2),
            **{f"{k}_delta": round(figures["int8"]["quality"][k] - figures["fp32"]["quality"][k], 3)
               for k in ("bleu", "chrf", "rougeL")},
            "greedy_bleu_delta": round(figures["int8"]["greedy_quality"]["bleu"]
                                       - figures["fp32"]["greedy_quality"]["bleu"], 2),
            "same_greedy_outputs": sum(a == b for a, b in zip(outputs["fp32", "greedy"], outputs["int8", "greedy"])),
            "same_beam5_outputs": sum(a == b for a, b in zip(outputs["fp32", "beam5"], outputs["int8", "beam5"])),
        }
    json.dump(result, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
