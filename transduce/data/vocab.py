"""Map tokens to integer ids and back.

The four special tokens always hold ids 0-3 (PAD, UNK, BOS, EOS from `constants`), so
models and search can use those ids without asking the vocabulary. Building is
deterministic (frequency, then token string), so the same data gives the same ids.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Iterable

from transduce.constants import BOS, EOS, PAD, SPECIAL_TOKENS, UNK

PathLike = str | os.PathLike


class Vocab:
    """An ordered token list whose first four entries are the special tokens."""

    def __init__(self, tokens: list[str]):
        # Specials first, then the given tokens in order; a repeated token keeps its first id.
        self.tokens: list[str] = list(dict.fromkeys([*SPECIAL_TOKENS, *tokens]))
        self._ids = {tok: i for i, tok in enumerate(self.tokens)}

    @classmethod
    def build(cls, token_lists: Iterable[list[str]], *, min_freq: int = 1,
              max_size: int | None = None) -> Vocab:
        """Count tokens and keep the most frequent; `max_size` includes the 4 specials."""
        if min_freq < 1:
            raise ValueError(f"min_freq must be at least 1, got {min_freq}")
        if max_size is not None and max_size < len(SPECIAL_TOKENS):
            raise ValueError(f"max_size must be at least {len(SPECIAL_TOKENS)} "
                             f"(the special tokens), got {max_size}")
        counts: Counter[str] = Counter()
        for tokens in token_lists:
            counts.update(tokens)
        for special in SPECIAL_TOKENS:
            counts.pop(special, None)
        kept = sorted((tok for tok, n in counts.items() if n >= min_freq),
                      key=lambda tok: (-counts[tok], tok))
        if max_size is not None:
            kept = kept[:max_size - len(SPECIAL_TOKENS)]
        return cls(kept)

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocab):
            return NotImplemented
        return self.tokens == other.tokens

    __hash__ = None  # mutable-by-content equality: not usable as a dict key

    def __repr__(self) -> str:
        return f"Vocab({len(self)} tokens)"

    def __contains__(self, token: object) -> bool:
        return token in self._ids

    def token_to_id(self, token: str) -> int:
        return self._ids.get(token, UNK)

    def id_to_token(self, index: int) -> str:
        if not 0 <= index < len(self.tokens):
            raise IndexError(f"token id {index} is out of range for a vocabulary of {len(self)}")
        return self.tokens[index]

    def encode(self, tokens: list[str], *, add_bos: bool = False,
               add_eos: bool = False) -> list[int]:
        """Token strings → ids, unknown tokens → UNK, optionally framed by BOS/EOS."""
        ids = [self._ids.get(tok, UNK) for tok in tokens]
        return [BOS] * add_bos + ids + [EOS] * add_eos

    def decode(self, ids: Iterable[int], *, strip_specials: bool = True, extra: list[str] | None = None) -> list[str]:
        """Ids → token strings; with `strip_specials`, stop at the first EOS and drop PAD/BOS.
        Ids from len(self) on name `extra` tokens (words a copy model took from its source)."""
        out = []
        size = len(self.tokens)
        for index in ids:
            index = int(index)
            if strip_specials:
                if index == EOS:
                    break
                if index in (PAD, BOS):
                    continue
            if extra is not None and size <= index < size + len(extra):
                out.append(extra[index - size])
            else:
                out.append(self.id_to_token(index))
        return out

    def save(self, path: PathLike) -> None:
        """Write ``{"tokens": [...]}`` as UTF-8 JSON, atomically (temporary file, then rename)."""
        path = os.fspath(path)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"tokens": self.tokens}, f, ensure_ascii=False, indent=0)
            f.write("\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: PathLike) -> Vocab:
        """Read a saved vocabulary, refusing files whose ids would not match the saved ones."""
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ValueError(f"{os.fspath(path)}: expected a JSON object with a list of strings "
                             "under 'tokens'")
        if tuple(tokens[:len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS or len(set(tokens)) != len(tokens):
            raise ValueError(f"{os.fspath(path)}: the token list must start with {SPECIAL_TOKENS} "
                             "and contain no duplicates")
        return cls(tokens)
