"""Turn text into tokens and back, behind one small protocol.

The rest of the toolkit only calls `tokenize`, `detokenize` and `save`, so the choice
between characters, whitespace words, code tokens and a trained SentencePiece model is a config value,
not a code path. Special tokens (<pad>, <unk>, <s>, </s>) belong to `Vocab`; no tokenizer
ever produces them.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Iterable, Protocol, runtime_checkable

import sentencepiece

from transduce.constants import TOKENIZER_KINDS

PathLike = str | os.PathLike

SPM_MODEL_TYPES = ("unigram", "bpe")


@runtime_checkable
class Tokenizer(Protocol):
    """What the pipeline needs from a tokenizer: text ↔ tokens, and saving with the model."""

    kind: str

    def tokenize(self, text: str) -> list[str]: ...

    def detokenize(self, tokens: list[str]) -> str: ...

    def save(self, directory: PathLike, prefix: str) -> None: ...


class CharTokenizer:
    """Every character is a token, spaces included, so detokenize(tokenize(x)) == x exactly."""

    kind = "char"

    def tokenize(self, text: str) -> list[str]:
        return list(text)

    def detokenize(self, tokens: list[str]) -> str:
        return "".join(tokens)

    def save(self, directory: PathLike, prefix: str) -> None:
        """Nothing to save: the tokenizer has no learned state."""


class WordTokenizer:
    """Tokens are whitespace-separated words; for data that is already tokenized."""

    kind = "word"

    def tokenize(self, text: str) -> list[str]:
        return text.split()

    def detokenize(self, tokens: list[str]) -> str:
        return " ".join(tokens)

    def save(self, directory: PathLike, prefix: str) -> None:
        """Nothing to save: the tokenizer has no learned state."""


class CodeTokenizer:
    """Identifiers and numbers whole, every other character alone, and a space token where text had spaces.

    For source code and the text that asks for it: `df.sort_values('a')` and "sort `df` by 'a'"
    share the tokens `df` and `a`, which a copying model can carry from one to the other, and
    the space tokens make detokenize(tokenize(x)) give x back with each run of whitespace read
    as one space (leading and trailing whitespace dropped).
    """

    kind = "code"
    space = "\u2581"
    _token = re.compile(r"\w+|[^\w\s]")

    def tokenize(self, text: str) -> list[str]:
        tokens: list[str] = []
        end = None
        for match in self._token.finditer(text):
            if end is not None and match.start() > end:
                tokens.append(self.space)
            tokens.append(match.group())
            end = match.end()
        return tokens

    def detokenize(self, tokens: list[str]) -> str:
        return "".join(" " if token == self.space else token for token in tokens).strip()

    def save(self, directory: PathLike, prefix: str) -> None:
        """Nothing to save: the tokenizer has no learned state."""


class SentencePieceTokenizer:
    """Subword pieces from a SentencePiece model, kept as bytes so it saves with the model."""

    kind = "spm"

    def __init__(self, model_proto: bytes):
        self.model_proto = bytes(model_proto)
        self.processor = sentencepiece.SentencePieceProcessor()
        self.processor.LoadFromSerializedProto(self.model_proto)

    @classmethod
    def train(cls, texts: Iterable[str], *, vocab_size: int, model_type: str = "unigram",
              character_coverage: float = 1.0, seed: int = 1,
              max_sentences: int = 1_000_000) -> SentencePieceTokenizer:
        """Train in memory on `texts` (sampling at most `max_sentences` of them).

        `vocab_size` is an upper bound: a small corpus yields fewer pieces instead of failing.
        Only <unk> exists inside the model (SentencePiece requires it); BOS/EOS/PAD are off, so
        the pieces never contain the special tokens that `Vocab` adds.
        """
        if model_type not in SPM_MODEL_TYPES:
            raise ValueError(f"model_type must be one of {SPM_MODEL_TYPES}, got {model_type!r}")
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be at least 2, got {vocab_size}")
        writer = io.BytesIO()
        sentencepiece.set_random_generator_seed(seed)
        try:
            sentencepiece.SentencePieceTrainer.train(
                sentence_iterator=(text for text in texts if text.strip()),
                model_writer=writer,
                vocab_size=vocab_size,
                model_type=model_type,
                character_coverage=character_coverage,
                hard_vocab_limit=False,
                input_sentence_size=max_sentences,
                shuffle_input_sentence=True,
                unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
                num_threads=max(1, min(os.cpu_count() or 1, 16)),
                minloglevel=2,
            )
        except RuntimeError as err:
            raise ValueError(f"SentencePiece training failed: {err}") from None
        return cls(writer.getvalue())

    @classmethod
    def load(cls, directory: PathLike, prefix: str) -> SentencePieceTokenizer:
        return cls(Path(directory, f"{prefix}.model").read_bytes())

    def tokenize(self, text: str) -> list[str]:
        return self.processor.EncodeAsPieces(text)

    def detokenize(self, tokens: list[str]) -> str:
        return self.processor.DecodePieces(list(tokens))

    def save(self, directory: PathLike, prefix: str) -> None:
        """Write ``<prefix>.model`` atomically (temporary file, then rename)."""
        path = Path(directory, f"{prefix}.model")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(self.model_proto)
        os.replace(tmp, path)


_STATELESS = {"char": CharTokenizer, "word": WordTokenizer, "code": CodeTokenizer}  # nothing learned, nothing saved


def load_tokenizer(directory: PathLike, prefix: str, kind: str) -> Tokenizer:
    """Rebuild the tokenizer saved with a model; char, word and code have nothing to load."""
    if kind in _STATELESS:
        return _STATELESS[kind]()
    if kind == "spm":
        return SentencePieceTokenizer.load(directory, prefix)
    raise _unknown_kind(kind)


def train_tokenizer(kind: str, texts: Iterable[str], *, vocab_size: int = 8000,
                    model_type: str = "unigram", character_coverage: float = 1.0) -> Tokenizer:
    """Make a tokenizer for `kind`; only "spm" learns from `texts`, the others ignore them."""
    if kind in _STATELESS:
        return _STATELESS[kind]()
    if kind == "spm":
        return SentencePieceTokenizer.train(texts, vocab_size=vocab_size, model_type=model_type,
                                            character_coverage=character_coverage)
    raise _unknown_kind(kind)


def _unknown_kind(kind: str) -> ValueError:
    return ValueError(f"unknown tokenizer kind {kind!r}; expected one of {', '.join(TOKENIZER_KINDS)}")
