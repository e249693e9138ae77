"""Text to token ids: preprocessing, tokenization, the vocabulary, the split and d2l's two batchings."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch

from .errors import RNNStudioError
from .vocab import TOKENIZERS, UNK, Vocab, tokenize  # noqa: F401  (re-exported: the data API)

PREPROCESSINGS = ("raw", "d2l")
_NON_LETTERS = re.compile(r"[^A-Za-z]+")
_MAX_PIECE = 1 << 22  # re-chunked pieces stay near 4 MB, so no step holds the whole text twice


# -- preprocessing and tokenization --------------------------------------------------------

def d2l_preprocess_line(line: str) -> str:
    """d2l 8.2: each run of non-letters becomes one space, trimmed, lowercased."""
    return _NON_LETTERS.sub(" ", line).strip().lower()


def _pieces(chunks: Iterable[str], tokenizer: str, preprocess: str) -> Iterator[str]:
    """Re-chunk a text stream so that no piece splits a line (d2l) or a word (word tokens),
    then apply the preprocessing. d2l joins its preprocessed lines with nothing between them."""
    need_lines = preprocess == "d2l"
    need_words = tokenizer == "word"
    joiner = " " if need_words else ""  # d2l keeps each line's words apart; its characters run together
    carry = ""
    for chunk in chunks:
        if not chunk:
            continue
        text = carry + chunk
        if need_lines:
            cut = text.rfind("\n") + 1
            if cut == 0 and len(text) > _MAX_PIECE:  # a giant line: cut at whitespace instead
                cut = max(text.rfind(" "), 0) + 1
        elif need_words:
            cut = max(text.rfind(" "), text.rfind("\n"), text.rfind("\t")) + 1
        else:
            cut = len(text)
        if cut == 0:
            carry = text
            continue
        piece, carry = text[:cut], text[cut:]
        yield _apply(piece, preprocess, joiner)
    if carry:
        yield _apply(carry, preprocess, joiner)


def _apply(piece: str, preprocess: str, joiner: str) -> str:
    if preprocess == "raw":
        return piece
    return joiner.join(d2l_preprocess_line(line) for line in piece.split("\n"))


# -- compact ids ---------------------------------------------------------------------------

def compact_dtype(vocab_size: int) -> torch.dtype:
    """The smallest integer type that holds every id: 1 byte a token for character vocabularies."""
    if vocab_size <= 256:
        return torch.uint8
    if vocab_size <= 32767:
        return torch.int16
    return torch.int32


# -- encoding a corpus ---------------------------------------------------------------------

@dataclass
class EncodedCorpus:
    vocab: Vocab
    ids: torch.Tensor  # (N,) compact integer ids
    counts: Counter


def count_tokens(chunks: Iterable[str], tokenizer: str, preprocess: str) -> Counter:
    counts: Counter = Counter()
    for piece in _pieces(chunks, tokenizer, preprocess):
        counts.update(piece if tokenizer == "char" else piece.split())
    return counts


def _encode_piece(piece: str, vocab: Vocab, table: np.ndarray | None) -> np.ndarray:
    if vocab.tokenizer == "char":
        cps = np.frombuffer(piece.encode("utf-32-le"), dtype=np.uint32)
        if table is not None:
            return table[np.minimum(cps, len(table) - 1)]
        return np.fromiter((vocab[c] for c in piece), dtype=np.int64, count=len(piece))
    return np.fromiter((vocab.token_to_idx.get(w, 0) for w in piece.split()), dtype=np.int64)


def _char_table(vocab: Vocab) -> np.ndarray | None:
    """Code point -> id lookup for character vocabularies; the last slot catches anything above."""
    cps = [ord(t) for t in vocab.idx_to_token[1:] if len(t) == 1]
    if len(cps) != len(vocab) - 1:
        return None
    # The ids' own compact type, so a 1 MB piece looks up into 1 MB rather than 8 MB of int64.
    compact = torch.empty(0, dtype=compact_dtype(len(vocab))).numpy().dtype
    table = np.zeros(max(cps, default=0) + 2, dtype=compact)
    for cp in cps:
        table[cp] = vocab.token_to_idx[chr(cp)]
    return table


def encode_stream(chunks_factory, *, tokenizer: str = "char", preprocess: str = "raw", min_freq: int = 0,
                  max_tokens: int = 0, vocab: Vocab | None = None) -> EncodedCorpus:
    """Encode a text stream in two passes (count, then encode) into one compact id tensor.

    ``chunks_factory()`` must return a fresh iterator over the text each time it is called.
    Only one piece of text and the final id tensor are in memory at once.
    """
    if tokenizer not in TOKENIZERS:
        raise RNNStudioError(f"unknown tokenizer {tokenizer!r}; use one of {', '.join(TOKENIZERS)}")
    if preprocess not in PREPROCESSINGS:
        raise RNNStudioError(f"unknown preprocessing {preprocess!r}; use one of {', '.join(PREPROCESSINGS)}")
    counts = count_tokens(chunks_factory(), tokenizer, preprocess)
    total = sum(counts.values())
    if vocab is None:
        vocab = Vocab.build(counts, min_freq=min_freq, tokenizer=tokenizer)
    n = min(total, max_tokens) if max_tokens > 0 else total
    ids = torch.empty(n, dtype=compact_dtype(len(vocab)))
    out = ids.numpy()
    table = _char_table(vocab) if tokenizer == "char" else None
    pos = 0
    for piece in _pieces(chunks_factory(), tokenizer, preprocess):
        if pos >= n:
            break
        enc = _encode_piece(piece, vocab, table)[: n - pos]
        out[pos: pos + len(enc)] = enc
        pos += len(enc)
    return EncodedCorpus(vocab, ids[:pos], counts)


def encode_text(text: str, **kwargs) -> EncodedCorpus:
    return encode_stream(lambda: iter([text]), **kwargs)


def train_val_split(ids: torch.Tensor, val_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """The last ``val_fraction`` of the tokens are the validation set (views, no copies)."""
    n_val = int(len(ids) * val_fraction)
    return ids[: len(ids) - n_val], ids[len(ids) - n_val:]


# -- d2l's minibatch partitionings -------------------------------------------------------

class BatchPlan:
    """One epoch's minibatches, indexable so training can resume mid-epoch.

    ``sequential`` (d2l seq_data_iter_sequential): a random offset, then the stream is laid out
    as ``world_size * batch_size`` contiguous rows; batch i is columns ``[i*T, (i+1)*T)``, so row b
    of batch i+1 continues row b of batch i and the hidden state can be carried across batches.
    ``random`` (d2l seq_data_iter_random): a random offset, subsequences of length T in a random
    order; each batch needs a fresh state.

    The plan is a pure function of ``(seed, epoch)``, which makes resuming exact. Under data
    parallelism, rank r gets rows ``[r*B, (r+1)*B)`` of every global batch.
    """

    def __init__(self, ids: torch.Tensor, batch_size: int, num_steps: int, partition: str = "sequential", *,
                 seed: int = 0, epoch: int = 0, rank: int = 0, world_size: int = 1):
        if partition not in ("sequential", "random"):
            raise RNNStudioError(f"unknown partition {partition!r}; use sequential or random")
        self.ids, self.B, self.T, self.partition = ids, batch_size, num_steps, partition
        self.rank, self.world = rank, world_size
        g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63))
        rows = batch_size * world_size
        n = len(ids)
        if partition == "sequential":
            self.offset = int(torch.randint(0, num_steps + 1, (1,), generator=g))
            per_row = max((n - self.offset - 1) // rows, 0)
            self.num_batches = per_row // num_steps
            used = per_row * rows
            self._xs = ids[self.offset: self.offset + used].view(rows, per_row) if used else None
            self._ys = ids[self.offset + 1: self.offset + 1 + used].view(rows, per_row) if used else None
        else:
            self.offset = int(torch.randint(0, num_steps, (1,), generator=g))
            num_subseqs = max((n - self.offset - 1) // num_steps, 0)
            starts = torch.arange(num_subseqs) * num_steps + self.offset
            self._starts = starts[torch.randperm(num_subseqs, generator=g)]
            self.num_batches = num_subseqs // rows
            self._steps = torch.arange(num_steps)

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch i as int64 ``(X, Y)``, each (B, T); Y is X shifted by one token."""
        if not 0 <= i < self.num_batches:
            raise IndexError(i)
        lo, hi = self.rank * self.B, (self.rank + 1) * self.B
        if self.partition == "sequential":
            cols = slice(i * self.T, (i + 1) * self.T)
            return self._xs[lo:hi, cols].long(), self._ys[lo:hi, cols].long()
        starts = self._starts[i * self.B * self.world + lo: i * self.B * self.world + hi]
        index = starts[:, None] + self._steps  # (B, T)
        return self.ids[index].long(), self.ids[index + 1].long()

    def __iter__(self):
        for i in range(self.num_batches):
            yield self[i]


def sequential_batches(ids, batch_size, num_steps, **kw):
    return iter(BatchPlan(ids, batch_size, num_steps, "sequential", **kw))


def random_batches(ids, batch_size, num_steps, **kw):
    return iter(BatchPlan(ids, batch_size, num_steps, "random", **kw))


def eval_batches(ids: torch.Tensor, batch_size: int, num_steps: int, *, rank: int = 0,
                 world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor, bool]]:
    """Every next-token prediction of ``ids`` exactly once, as ``(X, Y, fresh_state)``.

    The stream is laid out in ``batch_size`` rows (state carried across chunks); the few tokens
    that do not fill a row come last as one short row with a fresh state. Under data parallelism
    each rank gets its share of the rows, and rank 0 takes the leftover row.
    """
    n = len(ids) - 1
    if n <= 0:
        return
    rows = max(min(batch_size * world_size, n // max(num_steps, 1)), world_size, 1)
    per_row = n // rows
    if per_row > 0:
        xs = ids[: rows * per_row].view(rows, per_row)
        ys = ids[1: rows * per_row + 1].view(rows, per_row)
        share = rows // world_size
        lo = rank * share
        hi = rows if rank == world_size - 1 else lo + share
        for j, start in enumerate(range(0, per_row, num_steps)):
            cols = slice(start, start + num_steps)
            yield xs[lo:hi, cols].long(), ys[lo:hi, cols].long(), j == 0
    tail = n - rows * per_row
    if tail and rank == 0:
        x = ids[rows * per_row: n][None, :].long()
        y = ids[rows * per_row + 1: n + 1][None, :].long()
        for j, start in enumerate(range(0, tail, num_steps)):
            yield x[:, start: start + num_steps], y[:, start: start + num_steps], j == 0
