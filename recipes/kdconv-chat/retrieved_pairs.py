"""Pairs whose source is the message and the reply retrieval would give (retrieve and refine).

The nearest-neighbour baseline's reply (`nearest_neighbour.py`: the reply to the most similar
training message) is written after the message, joined by " ∥ ", so a model with copying can
take names, facts and phrasing from a real human reply instead of falling back on generic ones.
For the training pairs, messages of the same conversation are never retrieved: at test time every
retrieved reply comes from another conversation, and training must see the same.

    python recipes/kdconv-chat/retrieved_pairs.py --out runs/kdconv-retrieved
"""
from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

from transduce.data.readers import read_pairs

SEPARATOR = " ∥ "
HERE = Path(__file__).resolve().parent


def _nearest_neighbour():
    spec = importlib.util.spec_from_file_location("nearest_neighbour", HERE / "nearest_neighbour.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def conversations(data: Path, split: str, pairs: list[tuple[str, str]]) -> list[str]:
    """The conversation of each pair, from `{split}.context.jsonl` (checked against the TSV)."""
    lines = (data / f"{split}.context.jsonl").read_text(encoding="utf-8").splitlines()
    if len(lines) != len(pairs):
        raise SystemExit(f"{data / split}.context.jsonl: {len(lines)} lines but {split}.tsv has {len(pairs)}")
    names = []
    for number, (line, (message, reply)) in enumerate(zip(lines, pairs), start=1):
        record = json.loads(line)
        if record["context"][-1] != message or record["response"] != reply:
            raise SystemExit(f"{data / split}.context.jsonl:{number}: does not match line {number} of {split}.tsv")
        names.append(record["conversation"])
    return names


def read(data: Path, split: str) -> list[tuple[str, str]]:
    return [(pair.source, pair.target) for pair in read_pairs(data / f"{split}.tsv")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/kdconv-zh")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    splits = {split: read(data, split) for split in ("train", "dev", "test")}
    groups = {split: conversations(data, split, pairs) for split, pairs in splits.items()}
    train = splits["train"]
    # one retrieval for every split; a dev or test conversation is never among the training ones
    queries = [message for pairs in splits.values() for message, _ in pairs]
    replies = iter(_nearest_neighbour().nearest_replies([m for m, _ in train], [r for _, r in train], queries,
                                                        sum(groups.values(), []), groups["train"]))
    for split, pairs in splits.items():
        rows = [f"{message}{SEPARATOR}{next(replies)}\t{reply}\n" for message, reply in pairs]
        (out / f"{split}.tsv").write_text("".join(rows), encoding="utf-8")
        print(f"{out / split}.tsv: {len(rows)} pairs")


if __name__ == "__main__":
    main()
