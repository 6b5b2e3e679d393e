"""Training speed and memory on the peers' protocol: target tokens/s and peak RSS, as JSON.

Tokens/s are read from the training log every 25 updates; the first interval (start-up,
warm-up) is left out and the rest summed, as the peers' figures are. Also leaves the trained
model in WORK/<data>-<arch>/ for decode_speed.py.

    python benchmarks/train_speed.py [--arch lstm] [--data DIR] [--updates 300]
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, parse_args, peak_rss_mib, protocol_config  # noqa: E402

from transduce.models.builder import count_parameters  # noqa: E402
from transduce.training.trainer import Trainer  # noqa: E402


def main() -> None:
    args = parse_args(__doc__, lambda p: p.add_argument("--updates", type=int, default=300))
    data = Path(args.data)
    out = Path(args.work) / f"{data.name}-{args.arch}-{args.precision}"
    config = protocol_config(args.arch, data, args.threads, args.updates, args.precision)
    if out.exists():  # a fresh run: one left here would be resumed (and have nothing left to time)
        shutil.rmtree(out)
    started = time.perf_counter()
    trainer = Trainer(config, out, log=lambda m: None)
    trainer.fit()
    wall = time.perf_counter() - started
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    timed = [r for r in records if "tgt_tokens" in r][1:]  # the first interval is start-up
    tokens = sum(r["tgt_tokens"] for r in timed)
    seconds = sum(r["seconds"] for r in timed)
    emit({
        "benchmark": "train_speed", "arch": args.arch, "data": data.name, "updates": args.updates,
        "precision": args.precision,
        "params": count_parameters(trainer.model), "train_tgt_tok_per_s": round(tokens / seconds, 1),
        "timed_tokens": tokens, "timed_seconds": round(seconds, 2), "tgt_tok_per_update": round(tokens / (len(timed) * 25), 1),
        "final_loss": records[-1]["loss"], "train_wall_s_total": round(wall, 1), "peak_rss_mib": round(peak_rss_mib(), 1),
        "threads": args.threads, "model_dir": str(out),
    })


if __name__ == "__main__":
    main()
