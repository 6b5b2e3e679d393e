"""Text ↔ ids for both sides: the tokenizers and vocabularies of one model, built and saved together.

Training builds a `TextCodec` from the training pairs; the model folder keeps it
(`src_vocab.json`, `tgt_vocab.json`, tokenizer models); inference loads it back, so the very
same text processing runs at training and at serving time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from transduce.config import DataConfig
from transduce.constants import (
    PAD,
    SRC_TOKENIZER_PREFIX,
    SRC_VOCAB_FILE,
    TGT_TOKENIZER_PREFIX,
    TGT_VOCAB_FILE,
    UNK,
)
from transduce.data.batching import Example
from transduce.data.readers import Pair
from transduce.data.tokenizers import Tokenizer, load_tokenizer, train_tokenizer
from transduce.data.vocab import Vocab


class TextCodec:
    """Tokenizer + vocabulary for source and target."""

    def __init__(self, cfg: DataConfig, src_tok: Tokenizer, tgt_tok: Tokenizer, src_vocab: Vocab, tgt_vocab: Vocab):
        self.cfg = cfg
        self.src_tok, self.tgt_tok = src_tok, tgt_tok
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab

    # ---- building -----------------------------------------------------------------------
    @classmethod
    def build(cls, cfg: DataConfig, pairs: Callable[[], Iterable[Pair]]) -> "TextCodec":
        """Learn tokenizers (SentencePiece only) and vocabularies from the training pairs.

        `pairs` is called once per pass, so the corpus is streamed, never held whole.
        """
        spm_args = dict(vocab_size=cfg.spm_vocab_size, model_type=cfg.spm_model_type,
                        character_coverage=cfg.spm_character_coverage)
        if cfg.tokenizer == "spm" and cfg.joint_tokenizer:
            src_tok = tgt_tok = train_tokenizer("spm", _both_sides(pairs()), **spm_args)
        else:
            src_tok = train_tokenizer(cfg.tokenizer, (p.source for p in pairs()), **spm_args)
            tgt_tok = train_tokenizer(cfg.tokenizer, (p.target for p in pairs()), **spm_args)
        build = dict(min_freq=cfg.min_freq, max_size=cfg.max_vocab)
        if cfg.shared_vocab:
            src_vocab = tgt_vocab = Vocab.build(_tokenized_both(pairs(), src_tok, tgt_tok), **build)
        else:
            src_vocab = Vocab.build((src_tok.tokenize(p.source) for p in pairs()), **build)
            tgt_vocab = Vocab.build((tgt_tok.tokenize(p.target) for p in pairs()), **build)
        return cls(cfg, src_tok, tgt_tok, src_vocab, tgt_vocab)

    def save(self, directory: str | Path) -> None:
        self.src_vocab.save(Path(directory, SRC_VOCAB_FILE))
        self.tgt_vocab.save(Path(directory, TGT_VOCAB_FILE))
        self.src_tok.save(directory, SRC_TOKENIZER_PREFIX)
        self.tgt_tok.save(directory, TGT_TOKENIZER_PREFIX)

    @classmethod
    def load(cls, cfg: DataConfig, directory: str | Path) -> "TextCodec":
        kind = cfg.tokenizer
        return cls(
            cfg,
            load_tokenizer(directory, SRC_TOKENIZER_PREFIX, kind),
            load_tokenizer(directory, TGT_TOKENIZER_PREFIX, kind),
            Vocab.load(Path(directory, SRC_VOCAB_FILE)),
            Vocab.load(Path(directory, TGT_VOCAB_FILE)),
        )

    # ---- use ----------------------------------------------------------------------------
    def encode_source(self, text: str) -> list[int]:
        return self.src_vocab.encode(self.src_tok.tokenize(text))[: self.cfg.max_source_length]

    def encode_target(self, text: str) -> list[int]:
        return self.tgt_vocab.encode(self.tgt_tok.tokenize(text))[: self.cfg.max_target_length]

    def decode_target(self, ids: Iterable[int], oov: list[str] | None = None) -> str:
        """Target ids -> text; ids from len(tgt_vocab) on are the example's copied `oov` words."""
        return self.tgt_tok.detokenize(self.tgt_vocab.decode(ids, extra=oov))

    def target_tokens(self, ids: Iterable[int], oov: list[str] | None = None) -> list[str]:
        return self.tgt_vocab.decode(ids, extra=oov)

    def source_tokens(self, text: str) -> list[str]:
        return self.src_tok.tokenize(text)[: self.cfg.max_source_length]

    def example(self, source: str, target: str | None = None, index: int = 0, copy: bool = False) -> Example:
        """One text pair (or a source alone) as ids. With `copy`, also the extended ids a
        pointer-generator needs: source tokens outside the target vocabulary get ids
        V, V+1, ... in order of appearance (listed in `oov`), and target tokens found there
        point to them."""
        src_tokens = self.source_tokens(source)
        src = self.src_vocab.encode(src_tokens)
        tgt_tokens = self.tgt_tok.tokenize(target)[: self.cfg.max_target_length] if target is not None else None
        tgt = self.tgt_vocab.encode(tgt_tokens) if tgt_tokens is not None else None
        if not copy:
            return Example(src, tgt, index)
        V, oov = len(self.tgt_vocab), {}
        src_ext = []
        for token in src_tokens:
            known = self.tgt_vocab.token_to_id(token)
            src_ext.append(known if known != UNK else V + oov.setdefault(token, len(oov)))
        tgt_ext = None
        if tgt_tokens is not None:
            tgt_ext = [i if i != UNK or tok not in oov else V + oov[tok] for tok, i in zip(tgt_tokens, tgt)]
        return Example(src, tgt, index, src_ext=src_ext, tgt_ext=tgt_ext, oov=list(oov))

    def examples(self, pairs: Iterable[Pair], copy: bool = False, start: int = 0) -> Iterator[Example]:
        """Stream pairs as id examples, numbered in reading order from `start` (with copy ids when `copy`)."""
        for index, pair in enumerate(pairs, start):
            yield self.example(pair.source, pair.target, index, copy)

    def source_to_target_ids(self) -> torch.Tensor:
        """For each source id, the target id of the same token string, -1 where the target
        vocabulary lacks it (PAD maps to -1): the source prior and copying read sources through it."""
        return torch.tensor([self.tgt_vocab.token_to_id(tok) if i != PAD and tok in self.tgt_vocab else -1
                             for i, tok in enumerate(self.src_vocab.tokens)], dtype=torch.long)


def _both_sides(pairs: Iterable[Pair]) -> Iterator[str]:
    for pair in pairs:
        yield pair.source
        yield pair.target


def _tokenized_both(pairs: Iterable[Pair], src_tok: Tokenizer, tgt_tok: Tokenizer) -> Iterator[list[str]]:
    for pair in pairs:
        yield src_tok.tokenize(pair.source)
        yield tgt_tok.tokenize(pair.target)
