"""Streaming a corpus larger than memory: resident memory per corpus size, and exact, quick resumption.

For every corpus size N (default 500k, 1M, 2M, 5M pairs) a fresh subprocess, so that peak RSS
is that corpus's own, builds the vocabularies with `TextCodec.build` (word tokens, streamed over
the file twice: source side, target side) and walks one full epoch of `BatchStream` (4096 padded
tokens a batch, pools of 100 batches), every batch collated to tensors, as training reads it.
RSS is sampled every 100k pairs (/proc/self/statm: the whole, and its anonymous part, which is
what holding examples would grow; the file-backed part, mapped libraries, shrinks when another
process on the machine presses on memory). Each size reports its pairs, batches, walk seconds,
peak RSS (`ru_maxrss`), RSS at 10%/50%/100% of the epoch, and the peak anonymous RSS (read
after every batch). Bounded memory means peak RSS does not grow with N:
`rss_growth_mib_per_million_pairs` is the least-squares slope of peak RSS over N (about 0 when
the stream holds one pool at a time; a stream that kept every example would show hundreds of
MiB per million pairs), `anon_rss_growth_mib_per_million_pairs` the same for the anonymous peak.

Resumption, on the largest corpus: the walk stores its position after batch 70 of the first pool
that starts past 70% of the epoch, and the 50 batches that follow (on disk, so the walk holds
nothing; they cross into the next pool). A third process starts a new `BatchStream` from
`StreamPosition.from_dict(position.to_dict())` and compares its first 50 batches with those
(every tensor with `torch.equal`, and the example indices) and its position after them;
`skip_seconds` is the time it took to give its first batch (skipping the pairs before the
position untokenized, then tokenizing one pool), against `uninterrupted_seconds`, the time the
walk took to get there.

With `--train-steps K` every size also runs K real updates of a tiny LSTM through `Trainer`
(its own vocabulary build, `batch_stream()` and `train_step`, 1 thread) in one more subprocess,
with RSS sampled 20 times along the way.

The corpora are generated once, seeded, into WORK (/tmp/stream-bench): two made-up languages of
4000 and 3000 words with Zipf frequencies, sources of 5-40 words, targets of 3-30; the file of
N pairs is the first N lines of the largest one, and an existing file is reused. The 5M-pair
file is 1.7 GB.

Cost on 2 CPU cores (shared with other work, so times vary by up to 2x): generating the 5M file
about 45 s, once; per 1M pairs about 7 s of vocabulary building and 25-50 s of walking (20k-40k
pairs/s: reading, tokenizing, pooling and collating in one Python thread); the resume check
about 10 s. The whole default run took 8.5 minutes generating the corpora and 4.7 reusing them;
the 5M corpus alone (build and walk) 4.8 and 2.7 minutes.

    python benchmarks/stream_memory.py [--sizes 500000,1000000,2000000,5000000] [--work /tmp/stream-bench]
        [--train-steps 0]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

CHUNK = 100_000  # pairs generated per seeded chunk: a file of N pairs is a prefix of every larger one
GENERATOR_VERSION = 1
RESUME_BATCHES = 50
RESUME_POOL_BATCH = 70  # resume inside a pool, 50 batches before the next pool starts
ROOT = Path(__file__).resolve().parent.parent


class EpochDone(Exception):
    """Raised from the stream's end-of-epoch hook, so a walk stops after exactly one epoch."""


# ---------------------------------------------------------------------------- measuring


PAGE_MIB = os.sysconf("SC_PAGE_SIZE") / 2**20


def rss_mib() -> tuple[float, float]:
    """Resident set size now and its anonymous part (resident less file-backed and shared pages),
    from /proc/self/statm. Only the anonymous part is memory the process allocated: without swap
    the kernel cannot take it back, while mapped library pages come and go with the machine's
    memory pressure."""
    with open("/proc/self/statm") as f:
        fields = f.read().split()
    resident, shared = int(fields[1]), int(fields[2])
    return resident * PAGE_MIB, (resident - shared) * PAGE_MIB


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0


# ---------------------------------------------------------------------------- corpora


def made_up_words(rng, count: int) -> list[str]:
    """`count` distinct pronounceable words of 1-4 syllables."""
    onsets = ["", "b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
              "br", "dr", "kl", "st", "tr", "sh", "ch"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ou", "ee"]
    codas = ["", "", "", "n", "r", "s", "l", "k", "t"]
    words: dict[str, None] = {}
    while len(words) < count:
        syllables = int(rng.choice([1, 2, 2, 3, 3, 3, 4]))
        word = "".join(onsets[rng.integers(len(onsets))] + vowels[rng.integers(len(vowels))]
                       + codas[rng.integers(len(codas))] for _ in range(syllables))
        words.setdefault(word, None)
    return list(words)


def generate(path: Path, pairs: int, seed: int) -> None:
    """Write `pairs` lines "source<TAB>target", chunk c drawn from a generator seeded by (seed, c)."""
    import numpy as np

    vocab_rng = np.random.default_rng([seed, 999_999])
    languages = []
    for size in (4000, 3000):  # source, target
        words = made_up_words(vocab_rng, size)
        weights = 1.0 / (np.arange(size) + 2.7) ** 1.05  # Zipf-like
        languages.append((words, np.cumsum(weights) / weights.sum()))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        for chunk, start in enumerate(range(0, pairs, CHUNK)):
            n = min(CHUNK, pairs - start)
            rng = np.random.default_rng([seed, chunk])
            src_len = rng.integers(5, 41, n)
            tgt_len = np.clip(np.rint(src_len * rng.uniform(0.55, 0.9, n)), 3, 30).astype(np.int64)
            sides = []
            for (words, cum), lengths in zip(languages, (src_len, tgt_len)):
                ids = np.minimum(np.searchsorted(cum, rng.random(int(lengths.sum()))), len(words) - 1)
                tokens = [words[i] for i in ids.tolist()]
                ends = np.cumsum(lengths).tolist()
                sides.append([" ".join(tokens[a:b]) for a, b in zip([0] + ends[:-1], ends)])
            out.write("".join(f"{s}\t{t}\n" for s, t in zip(*sides)))
    os.replace(tmp, path)


def prefix_copy(source: Path, path: Path, pairs: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(source, "rb") as src, open(tmp, "wb") as out:
        for _, line in zip(range(pairs), src):
            out.write(line)
    os.replace(tmp, path)


def ensure_corpora(work: Path, sizes: list[int], seed: int) -> tuple[dict[int, Path], float]:
    """The corpus file of every size (reused when its recorded recipe matches); seconds spent making them."""
    work.mkdir(parents=True, exist_ok=True)
    recipe = {"seed": seed, "version": GENERATOR_VERSION, "chunk": CHUNK}
    files, started = {}, time.perf_counter()

    def ready(n: int) -> bool:
        meta = work / f"pairs-{n}.json"
        return (work / f"pairs-{n}.tsv").is_file() and meta.is_file() and json.loads(meta.read_text()) == {
            **recipe, "pairs": n}

    largest = max(sizes)
    for n in sorted(sizes, reverse=True):
        path = work / f"pairs-{n}.tsv"
        if not ready(n):
            if n == largest:
                print(f"generating {path}", file=sys.stderr)
                generate(path, n, seed)
            else:
                prefix_copy(work / f"pairs-{largest}.tsv", path, n)
            (work / f"pairs-{n}.json").write_text(json.dumps({**recipe, "pairs": n}))
        files[n] = path
    return files, time.perf_counter() - started


# ---------------------------------------------------------------------------- children


def data_config(corpus: str, args: argparse.Namespace, **train):
    from transduce.config import Config

    return Config.from_dict({
        "data": {"train": corpus, "dev": None, "tokenizer": "word", "max_vocab": args.max_vocab},
        "train": {"batch_tokens": args.batch_tokens, "pool_batches": args.pool_batches, "seed": args.seed,
                  "threads": 1, "progress": False, "eval_every": 0, "save_every": 0, **train},
    })


def make_stream(cfg, codec, position=None, on_epoch_end=None):
    """The stream exactly as Trainer.batch_stream makes it (same reader, example numbering, seed)."""
    from transduce.data.stream import BatchStream
    from transduce.training.trainer import pair_reader

    def to_examples(pairs, start):
        return codec.examples(pairs, copy=False, start=start)

    tc = cfg.train
    return BatchStream(pair_reader(cfg, "train"), to_examples, tc.batch_tokens, pool_batches=tc.pool_batches,
                       seed=tc.seed, position=position, on_epoch_end=on_epoch_end)


def batch_fields(batch) -> dict:
    return {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}


def save_batch(batch, path: Path) -> None:
    """A batch as safetensors (its tensors) + JSON (the rest): nothing to unpickle when read back."""
    from safetensors.torch import save_file

    fields = batch_fields(batch)
    save_file({k: v.contiguous() for k, v in fields.items() if hasattr(v, "contiguous")}, str(path) + ".safetensors")
    rest = {k: v for k, v in fields.items() if not hasattr(v, "contiguous")}
    Path(str(path) + ".json").write_text(json.dumps(rest), encoding="utf-8")


def load_batch(path: Path) -> dict:
    from safetensors.torch import load_file

    return {**json.loads(Path(str(path) + ".json").read_text(encoding="utf-8")),
            **load_file(str(path) + ".safetensors")}


def child_walk(args: argparse.Namespace) -> dict:
    """Build the codec and walk one epoch; sample RSS; optionally record a resume point and what follows it."""
    import torch

    from transduce.data.codec import TextCodec
    from transduce.training.trainer import pair_reader

    torch.set_num_threads(1)
    rss_start = rss_mib()
    cfg = data_config(args.corpus, args)
    started = time.perf_counter()
    codec = TextCodec.build(cfg.data, pair_reader(cfg, "train"))
    build_s = time.perf_counter() - started
    rss_built = rss_mib()
    resume_dir = Path(args.resume_dir) if args.resume_dir else None
    if resume_dir is not None:
        shutil.rmtree(resume_dir, ignore_errors=True)
        (resume_dir / "codec").mkdir(parents=True)
        codec.save(resume_dir / "codec")

    def stop(epoch: int) -> None:
        raise EpochDone

    stream = make_stream(cfg, codec, on_epoch_end=stop)
    n = args.pairs
    marks = sorted({*range(args.sample_every, n + 1, args.sample_every), n // 10, n // 2})
    samples: list[tuple[int, float, float]] = [(0, *rss_built)]  # (pairs, RSS, anonymous RSS)
    at_fraction: dict[str, tuple[float, float]] = {}
    fractions = [(0.1, "10%"), (0.5, "50%")]
    pairs = batches = tgt_tokens = padded = 0
    peak_anon = rss_built[1]
    resume: dict | None = None
    recorded = 0
    started = time.perf_counter()
    while True:
        try:
            batch = next(stream)
        except EpochDone:
            break
        batches += 1
        pairs += batch.size
        tgt_tokens += batch.num_tgt_tokens
        padded += batch.src.numel() + batch.tgt_out.numel()
        now = rss_mib()  # every batch: about 20 microseconds
        peak_anon = max(peak_anon, now[1])
        while marks and pairs >= marks[0]:
            marks.pop(0)
            samples.append((pairs, *now))
        while fractions and pairs >= fractions[0][0] * n:
            at_fraction[fractions.pop(0)[1]] = samples[-1][1:]
        if resume_dir is not None:
            if resume is not None and recorded < RESUME_BATCHES:
                save_batch(batch, resume_dir / f"batch-{recorded:02d}")
                recorded += 1
                if recorded == RESUME_BATCHES:
                    resume["position_after"] = stream.position.to_dict()
            elif (resume is None and stream.position.pairs >= args.resume_at * n
                  and stream.position.batch == RESUME_POOL_BATCH):
                resume = {"position": stream.position.to_dict(), "batches_before": batches,
                          "uninterrupted_seconds": round(time.perf_counter() - started, 2)}
    walk_s = time.perf_counter() - started
    if samples[-1][0] != pairs:
        samples.append((pairs, *rss_mib()))
    at_fraction["100%"] = samples[-1][1:]
    if resume_dir is not None:
        if resume is None or recorded < RESUME_BATCHES:
            raise SystemExit("the epoch ended before the resume point and the 50 batches after it")
        (resume_dir / "expected.json").write_text(json.dumps(resume))
    return {
        "pairs": pairs, "expected_pairs": n, "batches": batches, "seconds": round(walk_s, 1),
        "pairs_per_s": round(pairs / walk_s), "build_seconds": round(build_s, 1),
        "vocab": [len(codec.src_vocab), len(codec.tgt_vocab)], "tgt_tokens": tgt_tokens,
        "padded_tokens": padded, "peak_rss_mib": round(peak_rss_mib(), 1),
        "rss_mib_at": {k: round(v[0], 1) for k, v in at_fraction.items()},
        "peak_anon_rss_mib": round(peak_anon, 1),
        "anon_rss_mib_at": {k: round(v[1], 1) for k, v in at_fraction.items()},
        "rss_mib_before_build": round(rss_start[0], 1), "rss_mib_after_build": round(rss_built[0], 1),
        "anon_rss_mib_after_build": round(rss_built[1], 1),
        "rss_samples_pairs_rss_anon": [(p, round(r, 1), round(a, 1)) for p, r, a in samples],
    }


def child_resume(args: argparse.Namespace) -> dict:
    """Resume a fresh stream from the recorded position; compare its batches with the recorded ones."""
    import torch

    from transduce.data.codec import TextCodec
    from transduce.data.stream import StreamPosition

    torch.set_num_threads(1)
    resume_dir = Path(args.resume_dir)
    expected = json.loads((resume_dir / "expected.json").read_text())
    cfg = data_config(args.corpus, args)
    codec = TextCodec.load(cfg.data, resume_dir / "codec")
    saved = StreamPosition.from_dict(expected["position"])
    position = StreamPosition.from_dict(saved.to_dict())
    started = time.perf_counter()
    stream = make_stream(cfg, codec, position=position)
    first = next(stream)
    skip_s = time.perf_counter() - started
    mismatches = []
    for i in range(RESUME_BATCHES):
        batch = first if i == 0 else next(stream)
        want = load_batch(resume_dir / f"batch-{i:02d}")
        for name, value in batch_fields(batch).items():
            other = want[name]
            same = (value is None and other is None) if value is None or other is None else (
                torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other)
            if not same:
                mismatches.append(f"batch {i}: {name}")
    position_same = stream.position.to_dict() == expected["position_after"]
    return {
        "exact": not mismatches and position_same, "batches_compared": RESUME_BATCHES,
        "mismatches": mismatches[:10], "position_after_matches": position_same,
        "skip_seconds": round(skip_s, 2), "position": expected["position"],
        "pairs_skipped": expected["position"]["pairs"], "batches_before": expected["batches_before"],
        "uninterrupted_seconds": expected["uninterrupted_seconds"], "peak_rss_mib": round(peak_rss_mib(), 1),
    }


def child_train(args: argparse.Namespace) -> dict:
    """K real updates of a tiny LSTM through Trainer, RSS sampled along the way."""
    from transduce.config import Config
    from transduce.training.trainer import Trainer

    steps = args.train_steps
    base = data_config(args.corpus, args, steps=steps, warmup=max(1, steps // 10), precision="fp32").to_dict()
    base["model"] = {"arch": "lstm", "embed_dim": 32, "hidden": 32, "encoder_layers": 1, "decoder_layers": 1,
                     "dropout": 0.0}
    config = Config.from_dict(base)
    out = Path(args.work) / f"train-{args.pairs}"
    started = time.perf_counter()
    trainer = Trainer(config, out, device="cpu", log=lambda message: None, fresh=True)
    build_s = time.perf_counter() - started
    stream = trainer.batch_stream()
    every = max(1, steps // 20)
    samples = [(0, 0, *(round(x, 1) for x in rss_mib()))]  # (step, pairs, RSS, anonymous RSS)
    pairs = 0
    started = time.perf_counter()
    for step in range(1, steps + 1):
        batch = next(stream)
        pairs += batch.size
        figures = trainer.train_step([batch])
        if step % every == 0 or step == steps:
            samples.append((step, pairs, *(round(x, 1) for x in rss_mib())))
    train_s = time.perf_counter() - started
    return {
        "steps": steps, "pairs_trained": pairs, "seconds": round(train_s, 1),
        "setup_seconds": round(build_s, 1), "final_loss": round(figures["loss"], 4),
        "peak_rss_mib": round(peak_rss_mib(), 1), "peak_anon_rss_mib": max(sample[3] for sample in samples),
        "rss_samples_step_pairs_rss_anon": samples,
        "anon_rss_growth_mib_first_to_last_sample": round(samples[-1][3] - samples[1][3], 1),
    }


# ---------------------------------------------------------------------------- driver


def run_child(kind: str, args: argparse.Namespace, corpus: Path, pairs: int, resume_dir: Path | None = None) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--corpus", str(corpus),
               "--pairs", str(pairs), "--work", args.work, "--max-vocab", str(args.max_vocab),
               "--batch-tokens", str(args.batch_tokens), "--pool-batches", str(args.pool_batches),
               "--seed", str(args.seed), "--sample-every", str(args.sample_every),
               "--resume-at", str(args.resume_at), "--train-steps", str(args.train_steps)]
    if resume_dir is not None:
        command += ["--resume-dir", str(resume_dir)]
    print(f"{kind} {corpus.name} ...", file=sys.stderr)
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="500000,1000000,2000000,5000000", help="corpus sizes in pairs, comma-separated")
    parser.add_argument("--work", default="/tmp/stream-bench", help="where corpora and scratch files go")
    parser.add_argument("--seed", type=int, default=1234, help="corpus generation and stream shuffling seed")
    parser.add_argument("--max-vocab", type=int, default=8000)
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--pool-batches", type=int, default=100)
    parser.add_argument("--sample-every", type=int, default=100_000, help="pairs between RSS samples")
    parser.add_argument("--resume-at", type=float, default=0.7, help="fraction of the epoch where the resume point lies")
    parser.add_argument("--train-steps", type=int, default=0, help="also run K Trainer updates of a tiny model per size")
    parser.add_argument("--child", choices=["walk", "resume", "train"], help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--pairs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--resume-dir", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.child:
        sys.path.insert(0, str(ROOT))
        result = {"walk": child_walk, "resume": child_resume, "train": child_train}[args.child](args)
        print(json.dumps(result))
        return
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    work = Path(args.work)
    files, generation_s = ensure_corpora(work, sizes, args.seed)
    resume_dir = work / "resume"
    started = time.perf_counter()
    results = []
    for n in sizes:
        result = {"n": n, "file_mib": round(files[n].stat().st_size / 2**20, 1),
                  **run_child("walk", args, files[n], n, resume_dir if n == sizes[-1] else None)}
        if args.train_steps:
            result["train"] = run_child("train", args, files[n], n)
        results.append(result)
    resume = run_child("resume", args, files[sizes[-1]], sizes[-1], resume_dir)
    resume["corpus_pairs"] = sizes[-1]
    millions = [r["n"] / 1e6 for r in results]
    report = {
        "benchmark": "stream_memory", "sizes": results,
        "rss_growth_mib_per_million_pairs": round(slope(millions, [r["peak_rss_mib"] for r in results]), 2),
        "anon_rss_growth_mib_per_million_pairs": round(slope(millions, [r["peak_anon_rss_mib"] for r in results]), 2),
        "resume": resume,
        "settings": {"tokenizer": "word", "max_vocab": args.max_vocab, "batch_tokens": args.batch_tokens,
                     "pool_batches": args.pool_batches, "seed": args.seed, "torch_threads": 1},
        "generation_seconds": round(generation_s, 1), "measure_seconds": round(time.perf_counter() - started, 1),
    }
    if args.train_steps:
        report["train_rss_growth_mib_per_million_pairs"] = round(
            slope(millions, [r["train"]["peak_rss_mib"] for r in results]), 2)
        report["train_anon_rss_growth_mib_per_million_pairs"] = round(
            slope(millions, [r["train"]["peak_anon_rss_mib"] for r in results]), 2)
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
