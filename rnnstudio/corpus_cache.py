"""The encoded-corpus cache: a corpus is tokenized once; later runs, resumes and torchrun ranks map the ids from disk."""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import paths
from .data import EncodedCorpus, Vocab, compact_dtype, encode_stream, tokenizer_for
from .fileio import atomic_write, atomic_write_json

FORMAT = 2  # 2: the tokenizer is a plugin (name, options and learnt state)
KEEP = 8  # cached corpora kept; the least recently used beyond that are deleted
MIN_TOKENS = 1 << 20  # smaller corpora encode in milliseconds: not worth a file


def files_fingerprint(files) -> list:
    """A corpus fingerprint for text read from ``files``: each one's path, size, inode and change times.

    Any write to a file changes its ctime (which, unlike the mtime, a program cannot set back), so an edited
    file never matches its old encoding.
    """
    out = []
    for f in files:
        st = os.stat(f)
        out.append([str(Path(f).resolve()), st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns])
    return out


def cache_folder() -> Path:
    return paths.cache_dir() / "encoded"


def cache_key(corpus, *, tokenizer, preprocess: str, min_freq: int, max_tokens: int,
              vocab: Vocab | None) -> dict | None:
    """Everything the encoded ids depend on, or None when the corpus cannot say what its text is without reading it."""
    fingerprint = corpus.fingerprint()
    if fingerprint is None:
        return None
    tokenizer = tokenizer_for(tokenizer)
    return {"format": FORMAT, "corpus": corpus.name, "plugin": f"{type(corpus).__module__}.{type(corpus).__qualname__}",
            "options": corpus.options, "fingerprint": fingerprint,
            "tokenizer": {"name": tokenizer.name, "options": tokenizer.options}, "preprocess": preprocess,
            "min_freq": min_freq, "max_tokens": max_tokens,
            "vocab": _digest([vocab.to_json(), vocab.text_tokenizer.state()]) if vocab is not None else None}


def _digest(obj) -> str:
    return hashlib.sha256(_canonical(obj).encode("utf-8")).hexdigest()


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)


def encode_corpus(corpus, *, tokenizer="char", preprocess: str = "raw", min_freq: int = 0, max_tokens: int = 0,
                  vocab: Vocab | None = None, warn: Callable[[str], None] = lambda message: None) -> EncodedCorpus:
    """``encode_stream`` over ``corpus.iter_text``, through the cache when the corpus has a fingerprint.

    A cached encoding is used only when its key matches and its ids pass their checksum; anything else is
    re-encoded (with a warning when a cache file was damaged). A cache that cannot be written costs a warning,
    never the run. Corpora under ``MIN_TOKENS`` tokens are not written.
    """
    tokenizer = vocab.text_tokenizer if vocab is not None else tokenizer_for(tokenizer)
    settings = dict(tokenizer=tokenizer, preprocess=preprocess, min_freq=min_freq, max_tokens=max_tokens, vocab=vocab)
    key = cache_key(corpus, **settings)
    if key is None:
        return encode_stream(corpus.iter_text, **settings)
    folder = cache_folder()
    name = _digest(key)[:32]
    hit = _read(folder, name, key, warn, tokenizer)
    if hit is None and vocab is not None:  # a resume: the encoding made with the vocabulary it was built from
        plain = cache_key(corpus, **{**settings, "vocab": None})
        hit = _read(folder, _digest(plain)[:32], plain, warn, tokenizer)
        if hit is not None and (hit.vocab.to_json(), hit.vocab.text_tokenizer.state()) != (
                vocab.to_json(), vocab.text_tokenizer.state()):
            hit = None
    if hit is not None:
        return hit
    encoded = encode_stream(corpus.iter_text, **settings)
    if len(encoded.ids) >= MIN_TOKENS:
        # Written atomically, ids first: a reader sees a whole entry or none. Processes that miss at the
        # same moment (torchrun ranks on a first run) each encode, and each writes the same entry.
        try:
            _write(folder, name, key, encoded)
            _evict(folder, keep=KEEP)
        except OSError as exc:
            warn(f"could not save the encoded corpus to {folder} ({exc.strerror or exc}); the next run encodes it again")
    return encoded


def _write(folder: Path, name: str, key: dict, encoded: EncodedCorpus) -> None:
    ids = encoded.ids.numpy()

    def write_ids(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, ids, allow_pickle=False)

    atomic_write(folder / f"{name}.npy", write_ids)
    atomic_write_json(folder / f"{name}.json", {
        "key": json.loads(_canonical(key)), "length": int(len(ids)), "dtype": str(ids.dtype), "crc32": zlib.crc32(memoryview(ids)),
        "vocab": encoded.vocab.to_json(), "tokenizer_state": encoded.vocab.text_tokenizer.state(), "counts": list(encoded.counts.items()),
    })


def _read(folder: Path, name: str, key: dict, warn, tokenizer) -> EncodedCorpus | None:
    meta_path, ids_path = folder / f"{name}.json", folder / f"{name}.npy"
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if _canonical(meta["key"]) != _canonical(key):
            return None  # a digest collision, or options that do not survive JSON: not this corpus
        fitted = type(tokenizer)(**tokenizer.options)  # with what it learnt from this corpus
        if meta["tokenizer_state"]:
            fitted.load_state(meta["tokenizer_state"])
        vocab = Vocab.from_json(meta["vocab"], fitted)
        ids = np.load(ids_path, mmap_mode="c", allow_pickle=False)  # copy-on-write: pages stay shared
        expected = torch.empty(0, dtype=compact_dtype(len(vocab))).numpy().dtype
        problem = None
        if ids.dtype != expected or ids.shape != (meta["length"],):
            problem = f"its ids are {ids.dtype} {ids.shape}, expected {expected} ({meta['length']},)"
        elif zlib.crc32(memoryview(ids)) != meta["crc32"]:
            problem = "its ids do not match their checksum"
        elif len(ids) and int(ids.max()) >= len(vocab):
            problem = "it has ids outside its vocabulary"
        if problem is None:
            counts = Counter({token: int(n) for token, n in meta["counts"]})
            os.utime(meta_path)  # recently used: kept longest
            return EncodedCorpus(vocab, torch.from_numpy(ids), counts)
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        problem = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
    warn(f"the cached encoding of corpus {key['corpus']!r} is damaged ({problem}); encoding it again")
    for p in (meta_path, ids_path):
        try:
            p.unlink()
        except OSError:
            pass
    return None


def _evict(folder: Path, keep: int) -> None:
    metas = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for meta in metas[keep:]:
        for p in (meta, meta.with_suffix(".npy")):
            try:
                p.unlink()
            except OSError:
                pass  # in use elsewhere (Windows keeps mapped files): tried again next time
