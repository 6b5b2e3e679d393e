"""GPU training and decoding speed on the GPU protocol of `../shared/peers/gpu_hf_marian.py`, run
with transduce's own training step and decoding engine, so that the figures compare with Hugging
Face MarianMT's ("GPU anchor" in `../shared/peers/RESULTS.md`).

Workload (the protocol's): Transformer 6+6 layers, d_model 512, 8 heads, feed-forward 2048,
vocabulary 8000, shared and tied embeddings, dropout 0.1; random sentences whose source and
target lengths are drawn uniformly from 20..60 (seed 0, the same draws as the peer script),
packed up to TOKENS padded target tokens per batch; bf16 mixed precision (--fp32: float32);
STEPS timed updates after WARMUP; then 1,024 random sources of 40 tokens decoded in batches of
128, greedy and beam 5, exactly 60 new tokens each.

How it maps onto transduce: each update is `Trainer.train_step` (fused output projection and
label-smoothed loss, clip 1.0, fused Adam at lr 5e-4 with the project's warm-up schedule). A
drawn target of L tokens is trained as its first L-1 tokens + EOS, so the decoder reads and
scores as many positions as Marian's. Decoding is `decode_examples` with min_length =
max_length = 60 (the forced EOS step after the 60th token runs but is not counted), on
bfloat16 weights as `transduce.load(..., precision="bf16")` decodes (float32 with --fp32).
--compile compiles the teacher-forced network with dynamic shapes (batch shapes change at every
update); the fused loss, the optimizer and decoding stay eager, and so does the decoder's
self-attention (its causal flag depends on the target width, which breaks the graph there).

The FLOP count is the peer script's: 6 x non-embedding parameters x tokens (encoder on source,
decoder on target) plus the tied output projection on targets.

    python benchmarks/gpu_train_speed.py [--tokens 16384] [--steps 100] [--warmup 10] [--fp32] [--compile]
    python benchmarks/gpu_train_speed.py --device cpu --small   # a tiny model in seconds: checks the script

Prints one JSON object with the peer script's keys; without CUDA, the GPU-only figures are null.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402

from transduce.config import Config, DecodeConfig  # noqa: E402
from transduce.data.batching import Batch, Example, collate  # noqa: E402
from transduce.decoding.search import decode_examples  # noqa: E402
from transduce.models.builder import count_parameters  # noqa: E402
from transduce.training.trainer import Trainer  # noqa: E402


@dataclass(frozen=True)
class Workload:
    """The protocol's sizes; SMALL shrinks them so that the script can be checked on a CPU in seconds."""

    layers: int = 6
    dim: int = 512
    heads: int = 8
    ff_size: int = 2048
    vocab: int = 8000
    tokens: int = 16384
    steps: int = 100
    warmup: int = 10
    sources: int = 1024
    source_length: int = 40
    decode_batch: int = 128
    new_tokens: int = 60


PROTOCOL = Workload()
SMALL = Workload(layers=1, dim=32, heads=4, ff_size=64, vocab=128, tokens=512, steps=3, warmup=1, sources=32,
                 decode_batch=16, new_tokens=8)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, help="padded target tokens per batch (default 16384)")
    parser.add_argument("--steps", type=int, help="timed updates (default 100)")
    parser.add_argument("--warmup", type=int, help="untimed updates first (default 10)")
    parser.add_argument("--fp32", action="store_true", help="float32 instead of bf16 mixed precision")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network's training forward")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--small", action="store_true", help="a 1+1 layer d32 model, few small batches")
    return parser.parse_args()


def workload(args: argparse.Namespace) -> Workload:
    base = SMALL if args.small else PROTOCOL
    given = {key: getattr(args, key) for key in ("tokens", "steps", "warmup") if getattr(args, key) is not None}
    return replace(base, **given)


def protocol_draws(n_batches: int, tokens: int, vocab: int, gen: torch.Generator) -> list:
    """(src, tgt, lengths) drawn exactly as the peer script's `batches()`, so both see the same data."""
    out = []
    for _ in range(n_batches):
        lens: list[int] = []
        while True:
            t = int(torch.randint(20, 61, (1,), generator=gen))
            if (len(lens) + 1) * max(lens + [t]) > tokens:
                break
            lens.append(t)
        width = max(lens)
        src = torch.randint(4, vocab, (len(lens), width), generator=gen)
        tgt = torch.randint(4, vocab, (len(lens), width), generator=gen)
        out.append((src, tgt, lens))
    return out


def to_batch(src: torch.Tensor, tgt: torch.Tensor, lens: list[int]) -> Batch:
    """A transduce batch of the same shape: target row = L-1 drawn tokens + EOS (L scored positions)."""
    return collate([Example(src[i, :n].tolist(), tgt[i, : n - 1].tolist(), i) for i, n in enumerate(lens)])


def write_vocabulary(path: Path, vocab: int) -> None:
    """A word-level training file whose shared vocabulary has exactly `vocab` entries (4 specials):
    the Trainer builds its codec and model from it; the timed batches are the synthetic ones."""
    words = [f"w{i}" for i in range(vocab - 4)]
    lines = (" ".join(words[i:i + 100]) for i in range(0, len(words), 100))
    path.write_text("".join(f"{line}\t{line}\n" for line in lines), encoding="utf-8")


def protocol_config(work: Workload, train_file: Path, args: argparse.Namespace) -> Config:
    """The protocol's network as a transduce config; the training settings not named by the protocol
    are the project's defaults (label smoothing 0.1, Adam betas 0.9/0.98, pre-norm, sinusoidal positions)."""
    return Config.from_dict({
        "data": {"train": str(train_file), "tokenizer": "word", "shared_vocab": True},
        "model": {"arch": "transformer", "embed_dim": work.dim, "hidden": work.dim, "encoder_layers": work.layers,
                  "decoder_layers": work.layers, "heads": work.heads, "ff_size": work.ff_size, "dropout": 0.1,
                  "attention_dropout": 0.1, "share_embeddings": True, "tie_output": True},
        "train": {"steps": work.warmup + work.steps, "batch_tokens": work.tokens, "lr": 5e-4,
                  "warmup": max(work.warmup, 1), "clip_norm": 1.0, "seed": 0, "eval_every": 0, "save_every": 0,
                  "dev_bleu": False, "progress": False, "threads": args.threads,
                  "precision": "fp32" if args.fp32 else "bf16"},
    })


def compile_features(model: torch.nn.Module) -> None:
    """The teacher-forced network (encoder + decoder) compiled; the fused loss and Adam stay as they are.
    Shapes change with every batch, hence dynamic shapes rather than one graph per shape."""
    model.features = torch.compile(model.features, dynamic=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_flops(n_params: int, n_emb: int, lens: list[int]) -> float:
    """The peer script's count: 6 x non-embedding params x tokens (half the params see the source,
    half the target), plus 6 x the tied output projection on target tokens."""
    tokens = sum(lens)
    return 6 * (n_params - n_emb) / 2 * (tokens + tokens) + 6 * n_emb * tokens


def train(trainer: Trainer, draws: list, warmup: int) -> tuple[int, float, float, float]:
    """Warm-up updates, then the timed ones: (target tokens, FLOPs, seconds, last loss)."""
    model, device = trainer.model, trainer.device
    n_params, n_emb = count_parameters(model), model.output_projection().weight.numel()
    batches = [to_batch(*d) for d in draws]
    figures: dict = {}
    for batch in batches[:warmup]:
        figures = trainer.train_step([batch])
    sync(device)
    started = time.perf_counter()
    tokens, flops = 0, 0.0
    for batch, (_, _, lens) in zip(batches[warmup:], draws[warmup:]):
        figures = trainer.train_step([batch])
        tokens += sum(lens)
        flops += step_flops(n_params, n_emb, lens)
    sync(device)
    return tokens, flops, time.perf_counter() - started, figures.get("loss", float("nan"))


def matmul_peak(dtype: torch.dtype, device: torch.device) -> float | None:
    """The peer script's measured peak: 8192^3 products in `dtype`; None off CUDA."""
    if device.type != "cuda":
        return None
    a = torch.randn(8192, 8192, device=device, dtype=dtype)
    b = torch.randn(8192, 8192, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    started = time.perf_counter()
    for _ in range(10):
        a @ b
    sync(device)
    return 10 * 2 * 8192**3 / (time.perf_counter() - started)


def decode_speed(model: torch.nn.Module, examples: list[Example], work: Workload, beam: int,
                 device: torch.device) -> float:
    """Generated tokens per second with exactly `new_tokens` per sentence (EOS not counted)."""
    cfg = DecodeConfig(beam=beam, max_length=work.new_tokens, min_length=work.new_tokens,
                       batch_size=work.decode_batch)
    sync(device)
    started = time.perf_counter()
    hyps = decode_examples(model, examples, cfg, device=device)
    sync(device)
    seconds = time.perf_counter() - started
    tokens = sum(len(h[0].tokens) for h in hyps)
    if tokens != len(examples) * work.new_tokens:
        raise RuntimeError(f"expected {work.new_tokens} tokens per sentence, got {tokens} in all")
    return tokens / seconds


def significant(x: float, digits: int = 4) -> float:
    """Rounded to a few significant digits (a tiny CPU run must not round to zero)."""
    return float(f"{x:.{digits}g}")


def main() -> None:
    args = parse_args()
    work = workload(args)
    dtype = torch.float32 if args.fp32 else torch.bfloat16
    gen = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="transduce-gpu-bench-") as tmp:
        train_file = Path(tmp) / "vocab.tsv"
        write_vocabulary(train_file, work.vocab)
        trainer = Trainer(protocol_config(work, train_file, args), Path(tmp) / "run", device=args.device,
                          log=lambda message: None)
    model, device = trainer.model, trainer.device
    if len(trainer.codec.tgt_vocab) != work.vocab:
        raise RuntimeError(f"vocabulary of {len(trainer.codec.tgt_vocab)}, not {work.vocab}")
    if args.compile:
        compile_features(model)
    draws = protocol_draws(work.warmup + work.steps, work.tokens, work.vocab, gen)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    tokens, flops, seconds, loss = train(trainer, draws, work.warmup)
    peak = matmul_peak(dtype, device)
    result = {
        "toolkit": "transduce", "transduce": importlib.metadata.version("transduce"), "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(device) if cuda else None, "device": str(device),
        "dtype": "fp32" if args.fp32 else "bf16", "compile": args.compile, "small": args.small,
        "params": count_parameters(model), "batch_tokens": work.tokens,
        "train_tgt_tok_per_s": round(tokens / seconds), "train_steps_timed": work.steps,
        "model_tflops_per_s": significant(flops / seconds / 1e12),
        "matmul_peak_tflops_per_s": round(peak / 1e12, 1) if peak else None,
        "mfu_vs_measured_peak": round(flops / seconds / peak, 3) if peak else None,
        "peak_mem_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if cuda else None,
        "last_loss": round(loss, 4),
    }
    del trainer  # the optimizer's moments are not needed for decoding
    model.to(dtype=dtype)  # transduce decodes on a copy of the weights in the chosen precision
    sources = torch.randint(4, work.vocab, (work.sources, work.source_length), generator=gen)
    examples = [Example(row.tolist(), None, i) for i, row in enumerate(sources)]
    result["decode_weights"] = result["dtype"]
    result["greedy_tok_per_s"] = round(decode_speed(model, examples, work, 1, device))
    result["beam5_tok_per_s"] = round(decode_speed(model, examples, work, 5, device))
    emit(result)


if __name__ == "__main__":
    main()
