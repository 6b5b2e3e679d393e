"""Shared settings of the benchmark scripts: the fixed protocol of the peer comparison.

The protocol (`../shared/peers/README.md`): one joint SentencePiece unigram model over train
source+target, one shared vocabulary, all embeddings tied; LSTM 2-layer bidirectional
encoder 256 / 2-layer decoder 256, Luong general attention with input feeding; Transformer 3+3
layers, d_model 256, 4 heads, feed-forward 1024, pre-norm, sinusoidal positions; batches of
2048 padded tokens; Adam (0.9, 0.98), warm-up then inverse square root, label smoothing 0.1,
clip 1.0; 2 threads.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path

from transduce.config import Config

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "multi30k-en-de"


def parse_args(description: str, extra=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--arch", default="lstm", choices=["lstm", "gru", "transformer"])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder with train.tsv, dev.tsv, test.tsv")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default="/tmp/transduce-bench", help="where models are written")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                        help="training precision (bf16: mixed precision, bfloat16 products)")
    if extra:
        extra(parser)
    return parser.parse_args()


def spm_vocab_size(data: Path) -> int:
    """The data folder may name its SentencePiece size (the peers' synthetic set does); else 8000."""
    marker = data / "spm_vocab_size"
    return int(marker.read_text().strip()) if marker.exists() else 8000


TRANSFORMER = {"arch": "transformer", "embed_dim": 256, "hidden": 256, "encoder_layers": 3, "decoder_layers": 3,
               "heads": 4, "ff_size": 1024, "norm": "pre", "positions": "sinusoidal", "dropout": 0.1,
               "attention_dropout": 0.1, "share_embeddings": True, "tie_output": True}


def protocol_config(arch: str, data: Path, threads: int, updates: int = 300, precision: str = "fp32") -> Config:
    config = _rnn_protocol_config(arch if arch != "transformer" else "lstm", data, threads, updates, precision)
    if arch == "transformer":
        config = Config.from_dict({**config.to_dict(), "model": TRANSFORMER})
    return config


def _rnn_protocol_config(arch: str, data: Path, threads: int, updates: int, precision: str) -> Config:
    return Config.from_dict({
        "data": {"train": str(data / "train.tsv"), "dev": None, "tokenizer": "spm",
                 "spm_vocab_size": spm_vocab_size(data), "joint_tokenizer": True, "shared_vocab": True,
                 "max_source_length": 1000, "max_target_length": 1000},
        "model": {"arch": arch, "embed_dim": 256, "hidden": 256, "encoder_layers": 2, "decoder_layers": 2,
                  "bidirectional": True, "attention": "general", "input_feeding": True, "dropout": 0.1,
                  "share_embeddings": True, "tie_output": True},
        "train": {"steps": updates, "batch_tokens": 2048, "lr": 1e-3, "warmup": max(1, updates // 10),
                  "label_smoothing": 0.1, "clip_norm": 1.0, "seed": 1234, "log_every": 25, "eval_every": 0,
                  "save_every": 0, "threads": threads, "progress": False, "precision": precision},
        "decode": {"beam": 5, "max_length": 200, "batch_size": 64},
    })


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit(result: dict) -> None:
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
