"""The same command gives the same bits whatever else the machine is doing.

Two fresh training runs of one config, each in its own process, one of them beside CPU-bound
processes that take both cores, must end with byte-identical weights, optimizer states and
logs (timings aside). The model is large enough that its weight-gradient products are ones
where a kernel choice could be made (hundreds of MFLOP each); a choice made by timing them
would differ between a quiet and a loaded machine."""
import json
import subprocess
import sys
from pathlib import Path

from tests.csl import csl_pairs, write_tsv
from transduce.constants import LOG_FILE, OPTIMIZER_FILE, WEIGHTS_FILE
from transduce.training.checkpoint import list_checkpoints

ROOT = Path(__file__).resolve().parents[2]
TIMINGS = {"tgt_tok_per_s", "seconds"}
BUSY_LOOP = "import time\nend = time.time() + 600\nwhile time.time() < end:\n    pass\n"


def _train(data: Path, out: Path, busy: bool) -> None:
    """One run in a new process; with `busy`, two CPU-bound processes run beside it throughout."""
    hogs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(2 if busy else 0)]
    try:
        settings = ["model.arch=transformer", "model.hidden=256", "model.embed_dim=256", "model.ff_size=1024",
                    "model.encoder_layers=1", "model.decoder_layers=1", "train.batch_tokens=2048",
                    "train.threads=2", "train.save_every=2", "train.log_every=1", "train.eval_every=0",
                    "train.warmup=2", "train.progress=false", "data.max_source_length=150"]
        command = [sys.executable, "-m", "transduce", "train", "--train", str(data), "--steps", "4",
                   "--out", str(out)] + [arg for s in settings for arg in ("--set", s)]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-2000:]
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def _log_without_timings(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / LOG_FILE).read_text(encoding="utf-8").splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in records]


def test_two_runs_one_beside_busy_processes_end_bitwise_equal(tmp_path):
    data = write_tsv(tmp_path / "train.tsv", csl_pairs(400, max_source=150))
    quiet, busy = tmp_path / "quiet", tmp_path / "busy"
    _train(data, quiet, busy=False)
    _train(data, busy, busy=True)
    assert (quiet / WEIGHTS_FILE).read_bytes() == (busy / WEIGHTS_FILE).read_bytes()
    for a, b in zip(list_checkpoints(quiet), list_checkpoints(busy), strict=True):
        for name in (WEIGHTS_FILE, OPTIMIZER_FILE):
            assert (a / name).read_bytes() == (b / name).read_bytes(), f"{a.name}/{name}"
    assert _log_without_timings(quiet) == _log_without_timings(busy)
