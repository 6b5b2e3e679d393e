"""Decoding speed of a Transformer, ours against its CTranslate2 export (float32 and int8), as JSON.

Exports the model to a temporary folder (float32, and int8 weights), then decodes the sources of
a test TSV greedily and with beam 5 (batches of 64 sentences, at most 200 tokens, length
normalisation) with `inference.Translator` and with `CTranslate2Translator`, both on the CPU with
the same number of threads (torch.set_num_threads / CTranslate2's intra_threads) and both going
from text to text through the same tokenizer, each system in a process of its own (two OpenMP
runtimes in one process slow each other down). Each system first decodes one batch untimed;
tokens/s counts generated tokens (end token excluded). Reports how many outputs of CTranslate2
equal ours (greedy: all of them for float32 weights), and BLEU against the references.

    python benchmarks/export_speed.py --model DIR --data TEST.tsv [--threads 2]
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402

from transduce.data.readers import read_pairs  # noqa: E402
from transduce.evaluation.report import score_outputs  # noqa: E402
from transduce.export.ctranslate2 import CTranslate2Translator, export_ctranslate2  # noqa: E402
from transduce.inference import Translator  # noqa: E402

SEARCHES = {"greedy": 1, "beam5": 5}
SYSTEMS = {"ours_fp32": "ours", "ct2_float32": "float32", "ct2_int8": "int8"}  # name: CTranslate2 weight type
OPTIONS = dict(max_length=200, max_length_ratio=None, batch_size=64, length_penalty="avg")


def load(name: str, model: str, tmp: Path, threads: int):
    """Our Translator, or the model exported to `tmp` and loaded by CTranslate2."""
    if SYSTEMS[name] == "ours":
        return Translator.from_dir(model, device="cpu")
    quantization = SYSTEMS[name]
    folder = export_ctranslate2(model, tmp / name, quantization=None if quantization == "float32" else quantization)
    return CTranslate2Translator(folder, compute_type=quantization, intra_threads=threads)


def timed(translator, texts: list[str], beam: int, references: list[str]) -> tuple[dict, list[str]]:
    translator.translate_nbest(texts[:OPTIONS["batch_size"]], beam=beam, **OPTIONS)  # warm-up, untimed
    started = time.perf_counter()
    rows = translator.translate_nbest(texts, beam=beam, **OPTIONS)
    seconds = time.perf_counter() - started
    outputs = [row[0].text for row in rows]
    tokens = sum(len(row[0].tokens) for row in rows)
    figures = {"decode_s": round(seconds, 3), "out_tokens": tokens, "tok_per_s": round(tokens / seconds, 1),
               "sent_per_s": round(len(texts) / seconds, 1)}
    if references:
        figures["bleu"] = score_outputs(outputs, references)["bleu"]
    return figures, outputs


def measure(name: str, model: str, tmp: str, threads: int, texts: list[str], references: list[str]) -> dict:
    """All searches of one system, in the calling (child) process: {search: (figures, outputs)}."""
    torch.set_num_threads(threads)
    translator = load(name, model, Path(tmp), threads)
    return {search: timed(translator, texts, beam, references) for search, beam in SEARCHES.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="Transformer model folder")
    parser.add_argument("--data", required=True, help="test pairs (.tsv); the sources are decoded")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="decode only the first N sentences")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pairs = list(read_pairs(args.data))[: args.limit]
    texts, references = [p.source for p in pairs], [p.target or "" for p in pairs]
    references = references if all(references) else []
    result = {"benchmark": "export_speed", "model": str(args.model), "data": str(args.data),
              "sentences": len(texts), "threads": args.threads, "max_length": OPTIONS["max_length"],
              "batch_size": OPTIONS["batch_size"]}
    outputs_of: dict[tuple[str, str], list[str]] = {}
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        for name in SYSTEMS:
            with spawn.Pool(1) as pool:
                measured = pool.apply(measure, (name, args.model, tmp, args.threads, texts, references))
            for search, (figures, outputs) in measured.items():
                result.setdefault(name, {})[search] = figures
                outputs_of[name, search] = outputs
    for name in [n for n in SYSTEMS if n != "ours_fp32"]:
        for search in SEARCHES:  # beam searches differ in details (when to stop, CTranslate2's patience)
            same = sum(a == b for a, b in zip(outputs_of["ours_fp32", search], outputs_of[name, search]))
            result[name][f"{search}_equal_sentences"] = same
            result[name][search]["speedup_vs_ours"] = round(
                result[name][search]["tok_per_s"] / result["ours_fp32"][search]["tok_per_s"], 2)
        result[name]["greedy_equal_to_ours"] = result[name]["greedy_equal_sentences"] == len(texts)
    emit(result)


if __name__ == "__main__":
    main()
