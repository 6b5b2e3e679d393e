"""`transduce demo`: train a small title model on the embedded data, decode its test set, show the scores.

The embedded data is CSL (Chinese scientific abstracts → their titles, Apache-2.0), read
character by character: the headline use of the toolkit, small enough to learn something
recognisable in a few minutes on two CPU cores.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from transduce.assets import default_data_dir
from transduce.config import Config
from transduce.data.readers import read_pairs
from transduce.evaluation.report import evaluate
from transduce.inference import load
from transduce.training.trainer import train

DEMO_STEPS = 2000


def demo_config(data_dir: Path, steps: int, progress: bool) -> Config:
    """A one-layer attention LSTM over characters, one shared vocabulary and embedding (titles copy
    characters from the abstract); the first 120 characters of an abstract usually name its topic."""
    return Config.from_dict({
        "data": {"train": str(data_dir / "train.tsv.gz"), "dev": str(data_dir / "dev.tsv.gz"),
                 "tokenizer": "char", "shared_vocab": True, "min_freq": 2,
                 "max_source_length": 120, "max_target_length": 48},
        "model": {"arch": "lstm", "embed_dim": 256, "hidden": 256, "encoder_layers": 1, "decoder_layers": 1,
                  "attention": "general", "dropout": 0.3, "share_embeddings": True, "tie_output": True},
        "train": {"steps": steps, "batch_tokens": 3000, "lr": 3e-3, "warmup": 100, "eval_every": 500,
                  "save_every": 500, "log_every": 25, "dev_max_sentences": 100, "progress": progress},
        "decode": {"beam": 5, "max_length": 48, "batch_size": 64},
    })


def run_demo(out_dir: str | Path, *, steps: int | None = None, progress: bool = True, examples: int = 8) -> dict:
    data_dir = default_data_dir()
    say = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    config = demo_config(data_dir, steps or DEMO_STEPS, progress)
    say(f"demo: training an attention LSTM on {data_dir / 'train.tsv.gz'} "
        f"(CSL abstracts -> titles, characters) for {config.train.steps} updates")
    started = time.perf_counter()
    train(config, out_dir, log=say)
    trained = time.perf_counter() - started
    say(f"demo: trained in {trained:.0f} s; decoding the test set (beam {config.decode.beam})")
    translator = load(out_dir)
    pairs = list(read_pairs(data_dir / "test.tsv.gz"))
    report, outputs = evaluate(translator, pairs)
    report["train_seconds"] = round(trained, 1)
    for pair, output in list(zip(pairs, outputs))[:examples]:
        print(f"abstract : {pair.source[:80]}…")
        print(f"reference: {pair.target}")
        print(f"model    : {output}\n")
    print(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"\nmodel folder: {out_dir}  (try: transduce translate --model {out_dir} < abstracts.txt)")
    return report
