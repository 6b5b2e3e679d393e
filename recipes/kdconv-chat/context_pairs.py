"""Pairs whose source is the conversation so far, not only the last message.

KdConv's `*.context.jsonl` gives, for every reply, the messages before it (up to five). The
source written here holds the last K of them, newest first, joined by " ∥ ", so that cutting a
long source at `data.max_source_length` drops the oldest message, never the one being answered.
Checks that each line matches the same line of the message -> reply TSV.

    python recipes/kdconv-chat/context_pairs.py --turns 3 --out runs/kdconv-context
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

SEPARATOR = " ∥ "


def context_source(messages: list[str], turns: int) -> str:
    return SEPARATOR.join(reversed(messages[-turns:]))


def matched_records(data: Path, split: str) -> list[dict]:
    """The records of `{split}.context.jsonl`, each checked against the same line of `{split}.tsv`
    (its last context message is the pair's message, its response the pair's reply)."""
    pairs = (data / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
    lines = (data / f"{split}.context.jsonl").read_text(encoding="utf-8").splitlines()
    if len(pairs) != len(lines):
        raise SystemExit(f"{data / split}.context.jsonl: {len(lines)} lines but {split}.tsv has {len(pairs)}")
    records = []
    for number, (pair, line) in enumerate(zip(pairs, lines), start=1):
        record = json.loads(line)
        message, reply = pair.split("\t")
        if record["context"][-1] != message or record["response"] != reply:
            raise SystemExit(f"{data / split}.context.jsonl:{number}: does not match line {number} of {split}.tsv")
        records.append(record)
    return records


def write_split(data: Path, split: str, out: Path, turns: int) -> int:
    rows = [f"{context_source(r['context'], turns)}\t{r['response']}\n" for r in matched_records(data, split)]
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{split}.tsv").write_text("".join(rows), encoding="utf-8")
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/kdconv-zh")
    parser.add_argument("--turns", type=int, default=3, help="messages of context, newest first")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    for split in ("train", "dev", "test"):
        count = write_split(Path(args.data), split, Path(args.out), args.turns)
        print(f"{Path(args.out) / split}.tsv: {count} pairs")


if __name__ == "__main__":
    main()
