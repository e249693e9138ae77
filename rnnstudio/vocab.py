"""Tokens and the vocabulary: plain Python (no torch), so listing and reading models stays light."""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from .errors import RNNStudioError

TOKENIZERS = ("char", "word")
UNK = "<unk>"


def tokenize(text: str, tokenizer: str = "char") -> list[str]:
    """Split text into tokens: characters, or whitespace-separated words."""
    if tokenizer == "char":
        return list(text)
    if tokenizer == "word":
        return text.split()
    raise RNNStudioError(f"unknown tokenizer {tokenizer!r}; use one of {', '.join(TOKENIZERS)}")


# -- vocabulary ----------------------------------------------------------------------------

class Vocab:
    """d2l's vocabulary: ``<unk>`` is index 0, then reserved tokens, then tokens by falling frequency."""

    def __init__(self, tokens: list[str], tokenizer: str = "char"):
        if not tokens or tokens[0] != UNK:
            raise ValueError("a vocabulary starts with <unk>")
        self.idx_to_token = list(tokens)
        self.token_to_idx = {t: i for i, t in enumerate(self.idx_to_token)}
        if len(self.token_to_idx) != len(self.idx_to_token):
            raise ValueError("a vocabulary lists each token once")
        self.tokenizer = tokenizer

    @classmethod
    def build(cls, counts: Counter, *, min_freq: int = 0, reserved: Iterable[str] = (), tokenizer: str = "char") -> "Vocab":
        # sorted() is stable, so equal counts keep first-seen order, as in d2l.
        ordered = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)
        tokens = [UNK] + [t for t in reserved if t != UNK]
        seen = set(tokens)
        for tok, freq in ordered:
            if freq < min_freq:
                break
            if tok not in seen:
                tokens.append(tok)
                seen.add(tok)
        return cls(tokens, tokenizer)

    def __len__(self) -> int:
        return len(self.idx_to_token)

    @property
    def unk(self) -> int:
        return 0

    def __getitem__(self, token: str) -> int:
        return self.token_to_idx.get(token, 0)

    def encode(self, text: str) -> list[int]:
        return [self.token_to_idx.get(t, 0) for t in tokenize(text, self.tokenizer)]

    def decode(self, ids: Iterable[int]) -> str:
        sep = " " if self.tokenizer == "word" else ""
        return sep.join(self.idx_to_token[int(i)] for i in ids)

    @property
    def separator(self) -> str:
        return " " if self.tokenizer == "word" else ""

    def unknown_tokens(self, text: str) -> list[str]:
        return sorted({t for t in tokenize(text, self.tokenizer) if t not in self.token_to_idx})

    def to_json(self) -> dict:
        return {"tokenizer": self.tokenizer, "tokens": self.idx_to_token}

    @classmethod
    def from_json(cls, data: dict) -> "Vocab":
        return cls(list(data["tokens"]), data.get("tokenizer", "char"))
