"""Reply scores (BLEU-1/2, distinct-1/2) of a file of replies against the pairs they answer.

    transduce evaluate --model runs/kdconv-gru --data ../shared/data/kdconv-zh/test.tsv --hypotheses replies.txt
    python recipes/kdconv-chat/score_replies.py replies.txt ../shared/data/kdconv-zh/test.tsv
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from transduce.data.readers import read_pairs
from transduce.evaluation.dialogue import dialogue_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("replies", help="one reply per line, in the order of the pairs")
    parser.add_argument("pairs", help="the pairs (.tsv) whose targets are the human replies")
    args = parser.parse_args()
    replies = Path(args.replies).read_text(encoding="utf-8").splitlines()
    references = [p.target for p in read_pairs(args.pairs)]
    if len(replies) != len(references):
        raise SystemExit(f"{args.replies}: {len(replies)} replies for {len(references)} pairs")
    print(json.dumps({"replies": args.replies, "pairs": len(references), **dialogue_scores(replies, references)}))


if __name__ == "__main__":
    main()
