"""`transduce quickstart PAIRS`: from a pairs file to a served model in one command.

Splits off dev and test sets (deterministically: a pair's side is decided by a hash of its
text), picks the tokenizer from the text (characters for Chinese/Japanese, SentencePiece
otherwise) and a model and budget from the corpus size, trains with early stopping on the dev
set, scores the test set, shows a few outputs, then serves the page to try the model on
127.0.0.1. Each step says what it chose and why; every choice can be overridden with a flag
or `--set section.key=value`.
"""
from __future__ import annotations

import hashlib
import json
import math
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from transduce.config import Config
from transduce.data.readers import Pair, read_pairs

SPLITS = ("train", "dev", "test")


@dataclass
class Plan:
    """What quickstart will do, and why."""

    pairs: int
    dev: int
    test: int
    tokenizer: str
    tokenizer_reason: str
    arch: str
    arch_reason: str
    steps: int
    steps_reason: str
    max_length: int  # output tokens, from the longest targets seen


def split_of(pair: Pair, dev_share: float, test_share: float) -> str:
    """dev, test or train for a pair, from a hash of its text: the same file always splits the same
    way, whatever its order, and duplicate pairs always land on the same side."""
    digest = hashlib.sha1(f"{pair.source}\t{pair.target}".encode("utf-8")).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    if position < test_share:
        return "test"
    if position < test_share + dev_share:
        return "dev"
    return "train"


def shares(total: int, dev: int, test: int) -> tuple[float, float]:
    """The dev and test shares giving about `dev` and `test` pairs, leaving at least 80% to train."""
    dev_share = min(dev / max(total, 1), 0.1)
    test_share = min(test / max(total, 1), 0.1)
    return dev_share, test_share


def write_splits(pairs: Callable[[], Iterable[Pair]], folder: Path, dev_share: float, test_share: float) -> dict:
    """TSV files train/dev/test in `folder` (tabs and newlines inside texts become spaces)."""
    folder.mkdir(parents=True, exist_ok=True)
    counts = dict.fromkeys(SPLITS, 0)
    handles = {s: open(folder / f"{s}.tsv", "w", encoding="utf-8") for s in SPLITS}
    try:
        for pair in pairs():
            side = split_of(pair, dev_share, test_share)
            handles[side].write(f"{_one_line(pair.source)}\t{_one_line(pair.target)}\n")
            counts[side] += 1
    finally:
        for handle in handles.values():
            handle.close()
    return counts


def _one_line(text: str) -> str:
    return " ".join(text.replace("\t", " ").splitlines())


def cjk_share(texts: Iterable[str]) -> float:
    """Share of Chinese/Japanese characters (Han, kana) among the non-space characters."""
    cjk = total = 0
    for text in texts:
        for ch in text:
            if ch.isspace():
                continue
            total += 1
            name = unicodedata.name(ch, "")
            if name.startswith(("CJK UNIFIED", "CJK COMPATIBILITY IDEOGRAPH", "HIRAGANA", "KATAKANA")):
                cjk += 1
    return cjk / total if total else 0.0


def plan(total: int, sample: list[Pair], dev: int, test: int, *,
         tokenizer: str | None = None, arch: str | None = None, steps: int | None = None) -> Plan:
    """Choose tokenizer, model and budget from the corpus (the sample: its first pairs)."""
    share = cjk_share(p.source + p.target for p in sample)
    if tokenizer:
        tok, tok_reason = tokenizer, "as asked"
    elif share > 0.3:
        tok, tok_reason = "char", f"{share:.0%} of the characters are Chinese/Japanese: no spaces between words"
    else:
        tok, tok_reason = "spm", f"{1 - share:.0%} of the characters are alphabetic or other: subwords (SentencePiece)"
    if arch:
        model, model_reason = arch, "as asked"
    elif total < 100_000:
        model, model_reason = "lstm", f"{total:,} pairs: an attention LSTM learns more from a small corpus"
    else:
        model, model_reason = "transformer", f"{total:,} pairs: enough data for a Transformer"
    if steps:
        budget, budget_reason = steps, "as asked"
    else:
        budget = int(min(30_000, max(1_500, 80 * math.sqrt(total))))
        budget_reason = "growing with the square root of the corpus; stopped early when dev BLEU has not " \
                        "improved for 5 evaluations"
    lengths = sorted(len(p.target) if tok == "char" else 2 * len(p.target.split()) for p in sample)
    max_length = int(min(200, max(16, 1.5 * lengths[min(len(lengths) - 1, int(0.99 * len(lengths)))])))
    return Plan(total, dev, test, tok, tok_reason, model, model_reason, budget, budget_reason, max_length)


def quickstart_config(data: Path, chosen: Plan) -> Config:
    """A sensible model for the plan: small enough for a CPU, with early stopping on dev BLEU."""
    char = chosen.tokenizer == "char"
    model = {"arch": chosen.arch, "embed_dim": 256, "hidden": 256, "dropout": 0.3}
    if chosen.arch == "transformer":
        model.update(encoder_layers=3, decoder_layers=3, heads=4, ff_size=1024, dropout=0.1)
    else:
        model.update(encoder_layers=1, decoder_layers=1)
    eval_every = max(100, chosen.steps // 15)
    return Config.from_dict({
        "data": {"train": str(data / "train.tsv"), "dev": str(data / "dev.tsv"), "tokenizer": chosen.tokenizer,
                 "shared_vocab": True, "min_freq": 2 if char else 1, "spm_vocab_size": 8000,
                 "max_source_length": 200 if char else 150, "max_target_length": chosen.max_length},
        "model": {**model, "share_embeddings": True, "tie_output": True},
        "train": {"steps": chosen.steps, "batch_tokens": 3000, "lr": 3e-3 if chosen.arch != "transformer" else 1e-3,
                  "warmup": min(400, chosen.steps // 10), "eval_every": eval_every, "save_every": eval_every,
                  "eval_metric": "bleu", "patience": 5, "dev_max_sentences": 100},
        "decode": {"beam": 5, "max_length": chosen.max_length},
    })


def run_quickstart(pairs_file: str | Path, out_dir: str | Path, *, dev: int = 500, test: int = 500,
                   tokenizer: str | None = None, arch: str | None = None, steps: int | None = None,
                   overrides: list[str] | None = None, progress: bool = True, serve: bool = True,
                   port: int = 8000, examples: int = 5, say: Callable[[str], None] = print) -> dict:
    """Split, choose, train, evaluate, show, serve. Returns the test report."""
    from transduce.evaluation.report import evaluate
    from transduce.inference import load
    from transduce.training.trainer import train

    out_dir = Path(out_dir)

    def pairs() -> Iterable[Pair]:
        return read_pairs(pairs_file)

    total, sample = 0, []
    for pair in pairs():
        total += 1
        if len(sample) < 2000:
            sample.append(pair)
    if total < 50:
        raise ValueError(f"{pairs_file}: {total} pairs; quickstart needs at least 50 to train and test anything")
    dev_share, test_share = shares(total, dev, test)
    counts = write_splits(pairs, out_dir / "data", dev_share, test_share)
    say(f"data: {total:,} pairs in {pairs_file} -> train {counts['train']:,} / dev {counts['dev']:,} / "
        f"test {counts['test']:,} in {out_dir / 'data'} (split by a hash of each pair: the same every time)")
    chosen = plan(total, sample, counts["dev"], counts["test"], tokenizer=tokenizer, arch=arch, steps=steps)
    say(f"tokenizer: {chosen.tokenizer} ({chosen.tokenizer_reason}; --tokenizer to change)")
    say(f"model: {chosen.arch} ({chosen.arch_reason}; --arch to change)")
    say(f"training: up to {chosen.steps:,} updates ({chosen.steps_reason}; --steps to change); outputs of up to "
        f"{chosen.max_length} tokens (1.5 x the longest targets)")
    config = quickstart_config(out_dir / "data", chosen).override(list(overrides or []))
    config = config.override([f"train.progress={str(progress).lower()}"])
    model_dir = out_dir / "model"
    train(config, model_dir, log=say)
    translator = load(model_dir)
    test_pairs = list(read_pairs(out_dir / "data" / "test.tsv"))
    report, outputs = evaluate(translator, test_pairs)
    (out_dir / "test_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    say(f"test ({len(test_pairs)} pairs): BLEU {report['bleu']}, chrF {report['chrf']}, "
        f"ROUGE-L {report['rougeL']}, exact match {report['exact_match']} (all in {out_dir / 'test_report.json'})")
    for pair, output in list(zip(test_pairs, outputs))[:examples]:
        say(f"  source   : {pair.source[:100]}")
        say(f"  reference: {pair.target[:100]}")
        say(f"  model    : {output[:100]}")
    if serve:
        _serve(model_dir, port, say)
    return report


def _serve(model_dir: Path, port: int, say: Callable[[str], None]) -> None:
    import uvicorn

    from transduce.config import ServeConfig
    from transduce.inference import Translator
    from transduce.serving.app import create_app

    settings = ServeConfig(port=port)
    say(f"serving the model: open http://127.0.0.1:{port}/ to try it (Ctrl-C stops; "
        f"later: transduce serve --model {model_dir})")
    uvicorn.run(create_app(model_dir, settings, load=lambda: Translator.from_dir(model_dir)),
                host=settings.host, port=port, log_level="warning")
