"""Text to token ids: preprocessing, tokenization, the vocabulary, the split and d2l's two batchings."""

from __future__ import annotations

import mmap
import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch

from .errors import RNNStudioError
from .vocab import UNK, Vocab, tokenize, tokenizer_for  # noqa: F401  (re-exported: the data API)

PREPROCESSINGS = ("raw", "d2l")
_NON_LETTERS = re.compile(r"[^A-Za-z]+")
_MAX_PIECE = 1 << 22  # re-chunked pieces stay near 4 MB, so no step holds the whole text twice
_BLOCK = 1 << 18  # characters encoded at once: 256k of them need ~3 MB of temporaries


# -- preprocessing and tokenization --------------------------------------------------------

def d2l_preprocess_line(line: str) -> str:
    """d2l 8.2: each run of non-letters becomes one space, trimmed, lowercased."""
    return _NON_LETTERS.sub(" ", line).strip().lower()


def _pieces(chunks: Iterable[str], tokenizer, preprocess: str) -> Iterator[str]:
    """Re-chunk a text stream so that no piece splits a line (d2l) or a word (a tokenizer of whole words),
    then apply the preprocessing. d2l joins its preprocessed lines with nothing between them."""
    need_lines = preprocess == "d2l"
    need_words = tokenizer_for(tokenizer).whole_words
    joiner = " " if need_words else ""  # d2l keeps each line's words apart; its characters run together
    carry = ""
    for chunk in chunks:
        if not chunk:
            continue
        text = carry + chunk
        if need_lines:
            cut = text.rfind("\n") + 1
            if cut == 0 and len(text) > _MAX_PIECE:  # a giant line: cut at whitespace, else anywhere
                cut = text.rfind(" ") + 1 or len(text)
        elif need_words:
            cut = max(text.rfind(" "), text.rfind("\n"), text.rfind("\t")) + 1
            if cut == 0 and len(text) > _MAX_PIECE:  # a giant "word" would otherwise grow without bound
                cut = len(text)
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


class _CharEncoder:
    """One vectorised pass over a character stream: each piece's code points become provisional ids in
    first-seen order (so ties in counts keep d2l's first-seen order), counted as they go. ``finish`` maps
    them onto the vocabulary's ids."""

    def __init__(self, limit: int):
        self.limit = limit  # keep the first ``limit`` ids (0: all); counting always covers the whole text
        self.table = np.zeros(256, dtype=np.uint8)  # code point -> provisional id + 1 (0: not seen yet)
        self.code_points: list[int] = []  # provisional id -> code point
        self.counts = np.zeros(256, dtype=np.int64)
        self.kept_ids = _Slabs()
        self.kept = 0
        self._byte_table: bytes | None = None  # self.table's first 256 entries for bytes.translate, while uint8

    def _learn(self, cps: np.ndarray) -> None:
        """Give the code points of ``cps`` not seen before the next provisional ids, in the order they appear."""
        top = int(cps.max())
        if top >= len(self.table):
            grown = np.zeros(max(top + 1, 2 * len(self.table)), dtype=self.table.dtype)
            grown[: len(self.table)] = self.table
            self.table = grown
        unseen = cps[np.take(self.table, cps) == 0]
        values, first = np.unique(unseen, return_index=True)
        new = values[np.argsort(first, kind="stable")]
        total = len(self.code_points) + len(new)
        if total >= np.iinfo(self.table.dtype).max:
            self.table = self.table.astype(np.uint16 if total < 65535 else np.int32)
        self.table[new] = np.arange(len(self.code_points) + 1, total + 1, dtype=self.table.dtype)
        self._byte_table = None
        self.code_points.extend(int(v) for v in new)
        if total > len(self.counts):
            self.counts = np.concatenate([self.counts, np.zeros(total, dtype=np.int64)])

    def add(self, piece: str) -> None:
        for start in range(0, len(piece), _BLOCK):  # blocks keep the temporaries (code points, indices) small
            self._add_block(piece[start: start + _BLOCK])

    def _latin1_ids(self, latin: bytes) -> np.ndarray | None:
        """Provisional ids of an all-Latin-1 block through ``bytes.translate``, a 256-entry lookup in C that is
        ~4x faster than ``np.take`` (which first widens the indices to int64); None once ids outgrow a byte."""
        if self.table.dtype != np.uint8:
            return None
        if self._byte_table is None:
            self._byte_table = self.table[:256].tobytes()
        ids = bytearray(latin).translate(self._byte_table)  # writable, so torch.bincount can read it
        if b"\x00" in ids:  # some character not seen before
            self._learn(np.frombuffer(latin, dtype=np.uint8))
            return self._latin1_ids(latin)
        return np.frombuffer(ids, dtype=np.uint8)

    def _add_block(self, piece: str) -> None:
        latin = _latin1(piece)
        cps = np.frombuffer(latin, dtype=np.uint8) if latin is not None else _wide_code_points(piece)
        ids = self._latin1_ids(latin) if latin is not None else None
        if ids is None:
            ids = np.take(self.table, cps, mode="clip")  # code points past the table's end are unseen too
            if len(cps) and (int(cps.max()) >= len(self.table) or not ids.all()):
                self._learn(cps)
                ids = np.take(self.table, cps)
        # torch's bincount reads uint8 and int32 without a cast; numpy's converts to int64 first (3x slower)
        counted = torch.from_numpy(ids if ids.dtype != np.uint16 else ids.astype(np.int32))
        here = torch.bincount(counted, minlength=len(self.code_points) + 1).numpy()
        self.counts[: len(here) - 1] += here[1:]
        if not self.limit or self.kept < self.limit:
            keep = ids if not self.limit else ids[: self.limit - self.kept]
            self.kept_ids.append(keep)
            self.kept += len(keep)

    def counter(self) -> Counter:
        return Counter({chr(cp): int(n) for cp, n in zip(self.code_points, self.counts)})

    def finish(self, vocab: Vocab) -> torch.Tensor:
        """The kept ids in ``vocab``'s numbering (code points it lacks become <unk>), as one compact tensor."""
        remap = np.zeros(len(self.code_points) + 1, dtype=torch.empty(0, dtype=compact_dtype(len(vocab))).numpy().dtype)
        for i, cp in enumerate(self.code_points):
            remap[i + 1] = vocab[chr(cp)]
        ids = torch.empty(self.kept, dtype=compact_dtype(len(vocab)))
        out, pos = ids.numpy(), 0
        byte_remap = remap.tobytes().ljust(256, b"\x00") if remap.dtype == np.uint8 and len(remap) <= 256 else None

        def copy(part: np.ndarray) -> None:
            nonlocal pos
            if byte_remap is not None and part.dtype == np.uint8:  # bytes.translate: see _latin1_ids
                out[pos: pos + len(part)] = np.frombuffer(part.tobytes().translate(byte_remap), dtype=np.uint8)
                pos += len(part)
                return
            for start in range(0, len(part), _BLOCK):  # np.take makes an int64 copy of its indices
                block = part[start: start + _BLOCK]
                np.take(remap, block, out=out[pos: pos + len(block)])
                pos += len(block)

        self.kept_ids.drain(copy)
        return ids


# A slab is filled as soon as it is made, so on Linux its pages are mapped in one call (MAP_POPULATE) rather
# than one page fault at a time: a 100 MB encode ran ~20% faster (docs/performance.md).
_SLAB_OPTIONS = ({"flags": mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE}
                 if hasattr(mmap, "MAP_POPULATE") else {})


class _Slabs:
    """A growing array of ids kept in 1M-element slabs of anonymous memory. Draining unmaps each slab as soon
    as it is copied (freed malloc memory often stays with the process), so copying the provisional ids into
    the final tensor never holds both in full: about one byte of memory per character, not two."""

    SIZE = 1 << 20

    def __init__(self):
        self._slabs: list[list] = []  # [memory, array, filled]

    def append(self, ids: np.ndarray) -> None:
        while len(ids):
            if not self._slabs or self._slabs[-1][1].dtype != ids.dtype or self._slabs[-1][2] == self.SIZE:
                memory = mmap.mmap(-1, self.SIZE * ids.dtype.itemsize, **_SLAB_OPTIONS)
                self._slabs.append([memory, np.frombuffer(memory, dtype=ids.dtype), 0])
            slab = self._slabs[-1]
            n = min(len(ids), self.SIZE - slab[2])
            slab[1][slab[2]: slab[2] + n] = ids[:n]
            slab[2] += n
            ids = ids[n:]

    def drain(self, use) -> None:
        """Call ``use(ids)`` on each slab's ids in order, releasing each slab right after."""
        while self._slabs:
            memory, array, filled = self._slabs.pop(0)
            use(array[:filled])
            del array
            memory.close()


def _latin1(piece: str) -> bytes | None:
    """A piece's code points as bytes when it is all Latin-1, else None."""
    try:
        return piece.encode("latin-1")
    except UnicodeEncodeError:
        return None


def _wide_code_points(piece: str) -> np.ndarray:
    """A piece's code points, four bytes each (for text that is not all Latin-1)."""
    return np.frombuffer(piece.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def count_tokens(chunks: Iterable[str], tokenizer, preprocess: str) -> Counter:
    tokenizer = tokenizer_for(tokenizer)
    if tokenizer.one_token_per_character:
        chars = _CharEncoder(limit=1)  # counts only
        for piece in _pieces(chunks, tokenizer, preprocess):
            chars.add(piece)
        return chars.counter()
    counts: Counter = Counter()
    for piece in _pieces(chunks, tokenizer, preprocess):
        counts.update(tokenizer.split(piece))
    return counts


def fit_tokenizer(chunks_factory, tokenizer, preprocess: str) -> None:
    """Let a tokenizer that learns from the corpus (``fit``) see its preprocessed text."""
    if not tokenizer.one_token_per_character:
        tokenizer.fit(lambda: _pieces(chunks_factory(), tokenizer, preprocess))


def _encode_split(piece: str, vocab: Vocab, tokenizer, limit: int) -> np.ndarray:
    """At most ``limit`` token ids of ``piece``."""
    return np.fromiter((vocab.token_to_idx.get(t, 0) for t in tokenizer.split(piece)), dtype=np.int64)[:limit]


def encode_stream(chunks_factory, *, tokenizer="char", preprocess: str = "raw", min_freq: int = 0,
                  max_tokens: int = 0, vocab: Vocab | None = None) -> EncodedCorpus:
    """Encode a text stream into one compact id tensor: characters in one vectorised pass, other tokens in
    two (count, then encode), after the tokenizer's ``fit`` on a new vocabulary.

    ``tokenizer`` is a ``Tokenizer`` or a registered name; with ``vocab`` given, the vocabulary's own tokenizer
    is used. ``chunks_factory()`` must return a fresh iterator over the text each time it is called. Only one
    piece of text and about two copies of the ids (one byte per character for most text) are in memory at once.
    """
    if preprocess not in PREPROCESSINGS:
        raise RNNStudioError(f"unknown preprocessing {preprocess!r}; use one of {', '.join(PREPROCESSINGS)}")
    tokenizer = vocab.text_tokenizer if vocab is not None else tokenizer_for(tokenizer)
    if vocab is None:
        fit_tokenizer(chunks_factory, tokenizer, preprocess)
    if tokenizer.one_token_per_character:
        chars = _CharEncoder(limit=max(max_tokens, 0))
        for piece in _pieces(chunks_factory(), tokenizer, preprocess):
            chars.add(piece)
        counts = chars.counter()
        vocab = vocab or Vocab.build(counts, min_freq=min_freq, tokenizer=tokenizer)
        return EncodedCorpus(vocab, chars.finish(vocab), counts)
    counts = count_tokens(chunks_factory(), tokenizer, preprocess)
    total = sum(counts.values())
    if vocab is None:
        vocab = Vocab.build(counts, min_freq=min_freq, reserved=tokenizer.learnt_tokens() or (), tokenizer=tokenizer)
    n = min(total, max_tokens) if max_tokens > 0 else total
    ids = torch.empty(n, dtype=compact_dtype(len(vocab)))
    out = ids.numpy()
    pos = 0
    for piece in _pieces(chunks_factory(), tokenizer, preprocess):
        if pos >= n:
            break
        enc = _encode_split(piece, vocab, tokenizer, n - pos)
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
