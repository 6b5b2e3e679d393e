"""Kill real training runs with SIGKILL at random moments, resume them, and check that each ends
bitwise equal to an uninterrupted run of the same config.

One reference run trains to the end. Then each trial starts the same command in a fresh
folder, kills it (SIGKILL, no chance to clean up) at a moment aimed at one of three phases in
turn: during training steps, during a dev evaluation (its "dev" progress bar is on screen),
or while a checkpoint is being written (its temporary folder exists). The phase the process
was really in is read from what it left behind (a temporary checkpoint folder, an evaluation
bar with no figures after it) and reported. The same command is then run
again until it finishes (it resumes from the newest sound checkpoint by itself), and the final
weights, optimizer state, generator states, best weights and the log's figures are compared
with the reference, byte for byte. The reference is its own process, started before any trial
and sharing nothing with them; every other trial (killed run and resumed run alike) has a
CPU-bound process running beside it, so a choice that depended on how busy the machine was
would show as a difference.

    python benchmarks/fault_resume.py                 # 20 kills, prints JSON
    python benchmarks/fault_resume.py --kills 3 --quick

Data: the CSL title pairs embedded in the package (Chinese characters); a 2.5M-parameter
attention LSTM so that checkpoint writes take long enough to be hit.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "transduce" / "assets" / "csl-title"
PHASES = ("step", "evaluation", "checkpoint write")
TIMING_FIELDS = ("tgt_tok_per_s", "seconds")


def write_config(folder: Path, quick: bool) -> Path:
    hidden = 64 if quick else 256
    config = {
        "data": {"train": str(ASSETS / "train.tsv.gz"), "dev": str(ASSETS / "dev.tsv.gz"), "tokenizer": "char",
                 "max_source_length": 120, "max_target_length": 40},
        "model": {"embed_dim": hidden, "hidden": hidden, "encoder_layers": 1, "decoder_layers": 1, "dropout": 0.2},
        "train": {"steps": 24 if quick else 60, "batch_tokens": 1200 if quick else 2000, "pool_batches": 8,
                  "save_every": 4 if quick else 6, "eval_every": 8 if quick else 15, "log_every": 2,
                  "keep_checkpoints": 2, "warmup": 10, "dev_max_sentences": 12 if quick else 40,
                  "threads": 1, "patience": 0},
        "decode": {"max_length": 30},
    }
    path = folder / "config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def command(config: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "transduce", "train", str(config), "--out", str(out)]


def run_to_end(config: Path, out: Path, stderr: Path) -> float:
    start = time.perf_counter()
    with open(stderr, "ab") as sink:
        proc = subprocess.run(command(config, out), stdout=subprocess.DEVNULL, stderr=sink)
    if proc.returncode != 0:
        raise RuntimeError(f"{out}: training exited with {proc.returncode}; see {stderr}")
    return time.perf_counter() - start


class CpuHog:
    """A busy-looping process beside a trial, for as long as the `with` block lasts (or nothing)."""

    def __init__(self, active: bool) -> None:
        self.active, self.proc = active, None

    def __enter__(self) -> "CpuHog":
        if self.active:
            self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


def checkpoint_being_written(out: Path) -> bool:
    root = out / "checkpoints"
    try:
        return any(e.name.startswith(".") and e.name.endswith(".tmp") for e in os.scandir(root))
    except FileNotFoundError:
        return False


def evaluating(stderr: Path) -> bool:
    """The dev bar has started and the figures of that evaluation have not been printed yet."""
    text = stderr.read_text(encoding="utf-8", errors="replace")
    return text.rfind("dev:") > text.rfind("dev_loss=")


def observe(out: Path, stderr: Path) -> str:
    if checkpoint_being_written(out):
        return "checkpoint write"
    if evaluating(stderr):
        return "evaluation"
    text = stderr.read_text(encoding="utf-8", errors="replace")
    return "step" if "train:" in text else "start-up"


def kill_at(target: str, proc: subprocess.Popen, out: Path, stderr: Path, rng: random.Random,
            duration: float) -> str | None:
    """Wait for a moment in the `target` phase (or a random moment for steps), observe, SIGKILL.
    Returns the observed phase, or None when the run ended first."""
    deadline = time.perf_counter() + duration * 3
    if target == "step":
        wake = time.perf_counter() + rng.uniform(0.25, 0.9) * duration
        while time.perf_counter() < wake and proc.poll() is None:
            time.sleep(0.002)
    elif target == "evaluation":
        wanted = rng.randint(1, 3)
        while proc.poll() is None and time.perf_counter() < deadline:
            text = stderr.read_text(encoding="utf-8", errors="replace")
            if text.count("dev_loss=") >= wanted - 1 and evaluating(stderr):
                time.sleep(rng.uniform(0.0, 0.05))
                break
            time.sleep(0.002)
    else:
        wake = time.perf_counter() + rng.uniform(0.2, 0.8) * duration
        while proc.poll() is None and time.perf_counter() < deadline:
            if time.perf_counter() >= wake and checkpoint_being_written(out):
                break
            time.sleep(0.0005)
    if proc.poll() is not None:
        return None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return observe(out, stderr)  # post mortem: what the dead process left says where it was


def figures(log: Path) -> list[dict]:
    rows = []
    for line in log.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        for key in TIMING_FIELDS:
            record.pop(key, None)
        rows.append(record)
    return rows


def differences(reference: Path, run: Path) -> list[str]:
    """Files of the final state that differ from the reference's (empty when bitwise equal)."""
    last = sorted((reference / "checkpoints").glob("step-*"))[-1].name
    compared = [Path("model.safetensors")]
    for folder in (Path("checkpoints") / last, Path("checkpoints") / "best"):
        compared += [folder / p.name for p in sorted((reference / folder).iterdir())]
    found = [str(p) for p in compared
             if not (run / p).is_file() or (run / p).read_bytes() != (reference / p).read_bytes()]
    if figures(reference / "log.jsonl") != figures(run / "log.jsonl"):
        found.append("log.jsonl")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a smaller model and run (for the test suite)")
    parser.add_argument("--work", default="/tmp/transduce-fault", help="scratch folder (emptied first)")
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    config = write_config(work, args.quick)
    rng = random.Random(args.seed)

    duration = run_to_end(config, work / "reference", work / "reference.stderr")
    trials = []
    for index in range(args.kills):
        target = PHASES[index % len(PHASES)]
        out, stderr = work / f"trial-{index:02d}", work / f"trial-{index:02d}.stderr"
        stderr.write_bytes(b"")
        loaded = index % 2 == 1
        with CpuHog(loaded), open(stderr, "ab") as sink:
            proc = subprocess.Popen(command(config, out), stdout=subprocess.DEVNULL, stderr=sink)
            phase = kill_at(target, proc, out, stderr, rng, duration * (2 if loaded else 1))
            run_to_end(config, out, stderr)
        diff = differences(work / "reference", out)
        trials.append({"trial": index, "aimed_at": target, "killed_during": phase or "not killed (run ended)",
                       "cpu_hog_beside": loaded, "bitwise_equal": not diff, "differs": diff})
        shutil.rmtree(out, ignore_errors=True)
    killed = [t for t in trials if t["killed_during"] in PHASES + ("start-up",)]
    report = {
        "kills": len(killed),
        "resumed_bitwise_equal": sum(t["bitwise_equal"] for t in killed),
        "all_equal": all(t["bitwise_equal"] for t in trials),
        "resumed_bitwise_equal_beside_cpu_hog": sum(t["bitwise_equal"] for t in killed if t["cpu_hog_beside"]),
        "kills_beside_cpu_hog": sum(t["cpu_hog_beside"] for t in killed),
        "killed_during": {p: sum(t["killed_during"] == p for t in killed) for p in PHASES + ("start-up",)},
        "reference_seconds": round(duration, 2),
        "trials": trials,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
