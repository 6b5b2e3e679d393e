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
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _recipe_module(name: str):
    """A sibling script of this recipe, as a module."""
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/kdconv-zh")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    context_pairs = _recipe_module("context_pairs")
    records = {split: context_pairs.matched_records(data, split) for split in ("train", "dev", "test")}
    train, every = records["train"], [r for split_records in records.values() for r in split_records]
    # one retrieval for every split; a dev or test conversation is never among the training ones
    replies = iter(_recipe_module("nearest_neighbour").nearest_replies(
        [r["context"][-1] for r in train], [r["response"] for r in train], [r["context"][-1] for r in every],
        [r["conversation"] for r in every], [r["conversation"] for r in train]))
    for split, split_records in records.items():
        rows = [f"{r['context'][-1]}{context_pairs.SEPARATOR}{next(replies)}\t{r['response']}\n"
                for r in split_records]
        (out / f"{split}.tsv").write_text("".join(rows), encoding="utf-8")
        print(f"{out / split}.tsv: {len(rows)} pairs")


if __name__ == "__main__":
    main()
