"""The retrieval baseline a generative chat model must beat: answer each test message with the
reply that followed the most similar training message (TF-IDF over character unigrams and
bigrams, cosine similarity). Prints the reply scores (BLEU-1/2, distinct-1/2) as JSON.

    python recipes/kdconv-chat/nearest_neighbour.py [--data ../shared/data/kdconv-zh] [--out replies.txt]
"""
from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path

import torch

from transduce.data.readers import read_pairs
from transduce.evaluation.dialogue import dialogue_scores


def features(text: str) -> list[str]:
    chars = [c for c in text if not c.isspace()]
    return chars + [a + b for a, b in zip(chars, chars[1:])]


def tfidf_matrix(texts: list[str], index: dict[str, int], idf: torch.Tensor) -> torch.Tensor:
    """(len(texts), len(index)) sparse rows, L2-normalised; unknown features are dropped."""
    rows, cols, values = [], [], []
    for row, text in enumerate(texts):
        counts = Counter(f for f in features(text) if f in index)
        weights = {index[f]: (1 + math.log(n)) * float(idf[index[f]]) for f, n in counts.items()}
        norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
        for col, w in weights.items():
            rows.append(row)
            cols.append(col)
            values.append(w / norm)
    return torch.sparse_coo_tensor(torch.tensor([rows, cols], dtype=torch.long), torch.tensor(values),
                                   (len(texts), len(index)), check_invariants=False).coalesce()


def nearest_replies(train_messages: list[str], train_replies: list[str], queries: list[str],
                    query_groups: list[str] | None = None, train_groups: list[str] | None = None) -> list[str]:
    """The reply to the most similar training message of each query; with groups (conversations),
    never one from the query's own group."""
    documents = Counter(f for text in train_messages for f in set(features(text)))
    index = {f: i for i, f in enumerate(sorted(documents))}
    idf = torch.tensor([math.log((1 + len(train_messages)) / (1 + documents[f])) + 1 for f in sorted(documents)])
    train = tfidf_matrix(train_messages, index, idf).to_dense()  # (N, F) as a dense block: N x F floats
    if query_groups is not None:
        ids = {name: i for i, name in enumerate(sorted(set(train_groups) | set(query_groups)))}
        train_ids = torch.tensor([ids[name] for name in train_groups])
    replies = []
    for start in range(0, len(queries), 512):
        block = tfidf_matrix(queries[start:start + 512], index, idf)
        scores = torch.sparse.mm(block, train.T)  # (512, N) cosine similarities
        if query_groups is not None:
            own = torch.tensor([ids[name] for name in query_groups[start:start + 512]])
            scores[own[:, None] == train_ids[None, :]] = -1.0
        best = scores.argmax(dim=1)  # (512,) most similar training message
        replies += [train_replies[i] for i in best.tolist()]
    return replies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared" / "data" / "kdconv-zh"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", help="write the chosen replies here, one per line")
    args = parser.parse_args()
    data = Path(args.data)
    train = list(read_pairs(data / "train.tsv"))
    test = list(read_pairs(data / f"{args.split}.tsv"))
    replies = nearest_replies([p.source for p in train], [p.target for p in train], [p.source for p in test])
    if args.out:
        Path(args.out).write_text("".join(r + "\n" for r in replies), encoding="utf-8")
    report = {"baseline": "nearest-neighbour reply (TF-IDF, character 1-2-grams)", "split": args.split,
              "pairs": len(test), **dialogue_scores(replies, [p.target for p in test])}
    print(json.dumps(report, ensure_ascii=False))


if __name__ == "__main__":
    main()
