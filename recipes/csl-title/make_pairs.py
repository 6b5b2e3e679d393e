"""Training sets for the CSL title variants that use more than the 1,998 computer-science pairs.

`--in-domain`: the training pairs plus dev lines 301-1,000 (700 pairs from all fields of
science, like the test set); dev lines 1-300 stay the validation set, the same 300 abstracts
every other variant validates on. Test is untouched.

`--pretrain`: pairs for a first run to fine-tune from: tang-poem-title's 53k poems -> titles,
the training pairs, and denoising pairs made from the 8,000 titles of CSL's official training
split (`orig/cls_ctg_train.tsv.gz`, titles without abstracts): the title cut into 2-4 pieces,
shuffled, 15% of its characters dropped -> the title, so the decoder learns to write titles of
every field of science, not only computer science.

Back-translation: the in-domain pairs reversed (title -> abstract, `reverse-*.tsv`) train a model
that writes an abstract for each of those 8,000 official titles (`official-titles.txt`); given
its outputs, `--back-translations` writes `back-translated-train.tsv`: the synthetic abstracts ->
the real titles, beside the in-domain pairs repeated three times (about half of the pairs real).

    python recipes/csl-title/make_pairs.py --out runs/csl-data
    python recipes/csl-title/make_pairs.py --out runs/csl-data --back-translations runs/csl-data/back-translated.txt
"""
from __future__ import annotations

import argparse
import gzip
import random
from pathlib import Path

VALIDATION = 300  # dev lines kept for validation (the first ones, as `train.dev_max_sentences: 300` reads)
REAL_COPIES = 3  # the in-domain pairs' weight beside the back-translated ones


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def shuffled_fragments(title: str, rng: random.Random, drop: float = 0.15) -> str:
    """The title in 2-4 pieces in another order, with about `drop` of its characters gone."""
    pieces = min(len(title), rng.randint(2, 4))
    cuts = sorted(rng.sample(range(1, len(title)), pieces - 1)) if pieces > 1 else []
    parts = [title[a:b] for a, b in zip([0, *cuts], [*cuts, len(title)])]
    rng.shuffle(parts)
    kept = [c for c in "".join(parts) if rng.random() >= drop]
    return "".join(kept) or title


def official_titles(csl: Path) -> list[str]:
    with gzip.open(csl / "orig" / "cls_ctg_train.tsv.gz", "rt", encoding="utf-8") as handle:
        rows = [line.rstrip("\n").split("\t") for line in handle]
    return [row[1].strip() for row in rows if len(row) == 3 and len(row[1].strip()) >= 4]


def reversed_pairs(rows: list[str]) -> list[str]:
    """source<TAB>target -> target<TAB>source."""
    return ["\t".join(reversed(row.split("\t"))) for row in rows]


def back_translated(abstracts: Path, titles: Path, in_domain: list[str], rng: random.Random) -> list[str]:
    """The synthetic abstracts beside their real titles, mixed with the in-domain pairs."""
    written, wanted = read_lines(abstracts), read_lines(titles)
    if len(written) != len(wanted):
        raise SystemExit(f"{abstracts}: {len(written)} lines, but {titles} has {len(wanted)} titles")
    for number, abstract in enumerate(written, 1):
        if not abstract.strip():
            raise SystemExit(f"{abstracts}:{number}: empty abstract")
    rows = in_domain * REAL_COPIES + [f"{a.replace(chr(9), ' ')}\t{t}" for a, t in zip(written, wanted)]
    rng.shuffle(rows)
    return rows


def write(path: Path, rows: list[str]) -> None:
    path.write_text("".join(row + "\n" for row in rows), encoding="utf-8")
    print(f"{path}: {len(rows)} pairs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csl", default="../shared/data/csl-title")
    parser.add_argument("--tang", default="../shared/data/tang-poem-title")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--back-translations", help="abstracts written for official-titles.txt, one a line")
    args = parser.parse_args()
    csl, tang, out = Path(args.csl), Path(args.tang), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, dev = read_lines(csl / "train.tsv"), read_lines(csl / "dev.tsv")
    in_domain = train + dev[VALIDATION:]
    rng = random.Random(args.seed)
    if args.back_translations:
        rows = back_translated(Path(args.back_translations), out / "official-titles.txt", in_domain, rng)
        write(out / "back-translated-train.tsv", rows)
        return
    write(out / "in-domain-train.tsv", in_domain)
    write(out / "validation.tsv", dev[:VALIDATION])
    write(out / "reverse-train.tsv", reversed_pairs(in_domain))
    write(out / "reverse-validation.tsv", reversed_pairs(dev[:VALIDATION]))
    titles = official_titles(csl)
    (out / "official-titles.txt").write_text("".join(t + "\n" for t in titles), encoding="utf-8")
    print(f"{out / 'official-titles.txt'}: {len(titles)} titles")
    denoising = [f"{shuffled_fragments(t, rng)}\t{t}" for t in titles]
    pretrain = read_lines(tang / "train.tsv") + train + denoising
    rng.shuffle(pretrain)
    write(out / "pretrain.tsv", pretrain)


if __name__ == "__main__":
    main()
