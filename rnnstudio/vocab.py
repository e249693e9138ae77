"""Tokens and the vocabulary: plain Python (no torch), so listing and reading models stays light."""

from __future__ import annotations

from collections import Counter
from typing import Iterable


UNK = "<unk>"


def tokenizer_for(tokenizer, host=None):
    """A tokenizer instance: ``tokenizer`` itself, or a new one of the registered tokenizer of that name."""
    if not isinstance(tokenizer, str):
        return tokenizer
    if host is None:
        from .plugins import default_host

        host = default_host()
    return host.get("tokenizer", tokenizer)()


def tokenize(text: str, tokenizer="char") -> list[str]:
    """Split text into tokens with a tokenizer (an instance, or a registered name)."""
    return tokenizer_for(tokenizer).split(text)


# -- vocabulary ----------------------------------------------------------------------------

class Vocab:
    """d2l's vocabulary: ``<unk>`` is index 0, then reserved tokens, then tokens by falling frequency."""

    def __init__(self, tokens: list[str], tokenizer="char"):
        """``tokenizer``: a ``rnnstudio.Tokenizer`` instance, or the name of a registered one (made on first use)."""
        if not tokens or tokens[0] != UNK:
            raise ValueError("a vocabulary starts with <unk>")
        self.idx_to_token = list(tokens)
        self.token_to_idx = {t: i for i, t in enumerate(self.idx_to_token)}
        if len(self.token_to_idx) != len(self.idx_to_token):
            raise ValueError("a vocabulary lists each token once")
        self._tokenizer = None if isinstance(tokenizer, str) else tokenizer
        self.tokenizer: str = tokenizer if isinstance(tokenizer, str) else tokenizer.name  # its name

    @classmethod
    def build(cls, counts: Counter, *, min_freq: int = 0, reserved: Iterable[str] = (), tokenizer="char") -> "Vocab":
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

    @property
    def text_tokenizer(self):
        """The tokenizer instance that cuts text into this vocabulary's tokens."""
        if self._tokenizer is None:
            self._tokenizer = tokenizer_for(self.tokenizer)
        return self._tokenizer

    def __len__(self) -> int:
        return len(self.idx_to_token)

    @property
    def unk(self) -> int:
        return 0

    def __getitem__(self, token: str) -> int:
        return self.token_to_idx.get(token, 0)

    def encode(self, text: str) -> list[int]:
        return [self.token_to_idx.get(t, 0) for t in self.text_tokenizer.split(text)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.text_tokenizer.join([self.idx_to_token[int(i)] for i in ids])

    @property
    def separator(self) -> str:
        """The text between two tokens in a decoded text."""
        return self.text_tokenizer.separator

    def unknown_tokens(self, text: str) -> list[str]:
        return sorted({t for t in self.text_tokenizer.split(text) if t not in self.token_to_idx})

    def char_lengths(self) -> list[int]:
        """Characters each token stands for in a decoded text, the separator included (<unk>: one)."""
        sep = len(self.separator)
        return [1 + sep] + [len(t) + sep for t in self.idx_to_token[1:]]

    def to_json(self) -> dict:
        return {"tokenizer": self.tokenizer, "tokens": self.idx_to_token}

    @classmethod
    def from_json(cls, data: dict, tokenizer=None) -> "Vocab":
        """A vocabulary from vocab.json; ``tokenizer`` (an instance with its state) overrides the name saved there."""
        return cls(list(data["tokens"]), tokenizer or data.get("tokenizer") or "char")
