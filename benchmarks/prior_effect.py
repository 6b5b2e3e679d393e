"""What the source-vocabulary prior (and copying) does to a title model: the same data, seed and
budget with each variant; dev curves from the logs, then test ROUGE-L / BLEU / chrF. Prints JSON.

    python benchmarks/prior_effect.py [--data ../shared/data/csl-title] [--steps 2000] [--variants plain,prior,copy]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from transduce.config import Config
from transduce.constants import LOG_FILE
from transduce.data.readers import read_pairs
from transduce.evaluation.report import evaluate
from transduce.inference import load
from transduce.training.trainer import train

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {"plain": {}, "prior": {"source_prior": True}, "copy": {"copy": True},
            "prior+copy": {"source_prior": True, "copy": True},
            "untied": {"tie_output": False}, "untied+prior": {"tie_output": False, "source_prior": True}}


def title_config(data: Path, steps: int, seed: int, extra: dict) -> Config:
    """The demo's character-level attention LSTM (one shared vocabulary and embedding)."""
    return Config.from_dict({
        "data": {"train": str(data / "train.tsv"), "dev": str(data / "dev.tsv"), "tokenizer": "char",
                 "shared_vocab": True, "min_freq": 2, "max_source_length": 120, "max_target_length": 48},
        "model": {"arch": "lstm", "embed_dim": 256, "hidden": 256, "encoder_layers": 1, "decoder_layers": 1,
                  "attention": "general", "dropout": 0.3, "share_embeddings": True, "tie_output": True, **extra},
        "train": {"steps": steps, "batch_tokens": 3000, "lr": 3e-3, "warmup": 100, "eval_every": 250,
                  "save_every": steps, "log_every": 25, "dev_max_sentences": 200, "progress": False,
                  "seed": seed, "threads": 2},
        "decode": {"beam": 5, "max_length": 48, "batch_size": 64},
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "csl-title"))
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--variants", default="plain,prior")
    parser.add_argument("--work", default="/tmp/transduce-prior")
    args = parser.parse_args()
    data = Path(args.data)
    for name in args.variants.split(","):
        out = Path(args.work) / name
        config = title_config(data, args.steps, args.seed, VARIANTS[name])
        started = time.perf_counter()
        train(config, out, log=lambda m: print(m, file=sys.stderr))
        seconds = time.perf_counter() - started
        records = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]
        curve = [{k: r[k] for k in ("step", "dev_loss", "dev_bleu", "dev_rougeL")} for r in records if "dev_loss" in r]
        report, _ = evaluate(load(out, device="cpu"), read_pairs(data / "test.tsv"))
        print(json.dumps({"benchmark": "prior_effect", "variant": name, "data": data.name, "steps": args.steps,
                          "seed": args.seed, "train_seconds": round(seconds, 1), "dev_curve": curve,
                          "test": {k: report[k] for k in ("bleu", "chrf", "rouge1", "rouge2", "rougeL", "perplexity")}}),
              flush=True)


if __name__ == "__main__":
    main()
