"""The encoded-corpus cache: a hit skips tokenizing, any change misses, and a damaged cache is rebuilt with a warning."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from rnnstudio import corpus_cache
from rnnstudio.corpus_cache import cache_folder, encode_corpus
from rnnstudio.data import encode_stream
from rnnstudio.plugins import default_host


@pytest.fixture
def encodes(monkeypatch):
    """How many times the corpus was really tokenized (with every corpus big enough to cache)."""
    monkeypatch.setattr(corpus_cache, "MIN_TOKENS", 0)
    calls = []

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return encode_stream(*args, **kwargs)

    monkeypatch.setattr(corpus_cache, "encode_stream", counting)
    return calls


def text_file(path, **options):
    return default_host().corpus("text-file")(path=str(path), **options)


def encode(path, warnings=None, **settings):
    return encode_corpus(text_file(path), warn=(warnings if warnings is not None else []).append, **settings)


def test_a_second_encode_reads_the_cache_memory_mapped(tiny_corpus, encodes):
    first = encode(tiny_corpus)
    warnings = []
    second = encode(tiny_corpus, warnings)
    assert len(encodes) == 1 and warnings == []
    assert second.ids.dtype == first.ids.dtype and second.ids.tolist() == first.ids.tolist()
    assert second.vocab.idx_to_token == first.vocab.idx_to_token and second.counts == first.counts
    assert list(second.counts) == list(first.counts)  # first-seen order, which breaks ties in the vocabulary
    if sys.platform.startswith("linux"):  # the ids are the cache file's pages, not a copy
        assert str(_entry(".npy").resolve()) in Path("/proc/self/maps").read_text()


@pytest.mark.parametrize("settings", [dict(tokenizer="word"), dict(preprocess="d2l"), dict(min_freq=5),
                                      dict(max_tokens=100)])
def test_other_tokenizer_settings_miss(tiny_corpus, encodes, settings):
    encode(tiny_corpus)
    other = encode(tiny_corpus, **settings)
    assert len(encodes) == 2
    assert other.ids.tolist() == encode_stream(text_file(tiny_corpus).iter_text, **settings).ids.tolist()


def test_other_corpus_options_miss(tiny_corpus, encodes):
    encode(tiny_corpus)
    encode_corpus(text_file(tiny_corpus, encoding="latin-1"))
    assert len(encodes) == 2


def test_a_changed_file_invalidates_the_cache(tiny_corpus, encodes):
    encode(tiny_corpus)
    stat = tiny_corpus.stat()
    tiny_corpus.write_text("the dog sat on the log. " * 400, encoding="utf-8")  # the same size
    os.utime(tiny_corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old modification time
    again = encode(tiny_corpus)
    assert len(encodes) == 2 and "d" in again.vocab.token_to_idx


def test_a_new_file_in_a_folder_invalidates_the_cache(tmp_path, encodes):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("abc abc abc " * 50, encoding="utf-8")
    encode(folder)
    (folder / "b.txt").write_text("xyz xyz " * 50, encoding="utf-8")
    assert "x" in encode(folder).vocab.token_to_idx and len(encodes) == 2


def _entry(suffix):
    [path] = cache_folder().glob(f"*{suffix}")
    return path


@pytest.mark.parametrize("damage", ["flip a byte", "truncate ids", "garbage json", "ids out of range", "no ids"])
def test_a_damaged_cache_is_rebuilt_with_a_warning(tiny_corpus, encodes, damage):
    first = encode(tiny_corpus)
    ids, meta = _entry(".npy"), _entry(".json")
    if damage == "flip a byte":
        data = bytearray(ids.read_bytes())
        data[-10] ^= 0x01
        ids.write_bytes(bytes(data))
    elif damage == "truncate ids":
        ids.write_bytes(ids.read_bytes()[:-100])
    elif damage == "garbage json":
        meta.write_text("{not json", encoding="utf-8")
    elif damage == "ids out of range":
        doc = json.loads(meta.read_text(encoding="utf-8"))
        doc["vocab"]["tokens"] = doc["vocab"]["tokens"][:3]
        meta.write_text(json.dumps(doc), encoding="utf-8")
    else:
        ids.unlink()
    warnings = []
    again = encode(tiny_corpus, warnings)
    assert len(encodes) == 2, "a damaged cache must never be used"
    assert len(warnings) == 1 and "damaged" in warnings[0] and "\n" not in warnings[0], warnings
    assert again.ids.tolist() == first.ids.tolist()
    warnings.clear()
    encode(tiny_corpus, warnings)  # the rebuilt entry is good again
    assert len(encodes) == 2 and warnings == []


def test_an_unwritable_cache_costs_a_warning_not_the_run(tiny_corpus, encodes, monkeypatch):
    blocker = tiny_corpus.parent / "not-a-folder"
    blocker.write_text("x", encoding="utf-8")
    monkeypatch.setattr(corpus_cache, "cache_folder", lambda: blocker / "encoded")
    warnings = []
    enc = encode(tiny_corpus, warnings)
    assert len(enc.ids) > 0 and len(warnings) == 1 and "cache" in warnings[0]


def test_a_small_corpus_is_not_written(tiny_corpus):
    encode(tiny_corpus)
    assert not cache_folder().exists()


def test_a_corpus_without_a_fingerprint_is_never_cached(encodes):
    corpus = default_host().corpus("time-machine")(path=None)
    monkey = type("NoFingerprint", (type(corpus),), {"read": lambda self: "some text " * 30, "fingerprint": lambda self: None})
    encode_corpus(monkey())
    encode_corpus(monkey())
    assert len(encodes) == 2 and not cache_folder().exists()


def test_training_twice_and_resuming_encode_once(tiny_corpus, encodes):
    from rnnstudio.trainer import TrainConfig, Trainer

    def train(**kw):
        cfg = TrainConfig(corpus="text-file", corpus_options={"path": str(tiny_corpus)}, cell="gru", hidden_size=8,
                          batch_size=4, seq_len=8, eval_every=0, device="cpu", threads=1, **kw)
        return [ev for ev in Trainer(cfg).run() if ev.kind == "warning"]

    assert train(max_steps=2, name="one") == []
    assert train(max_steps=2, name="two") == []
    assert train(max_steps=4, name="one", resume=True) == []
    assert len(encodes) == 1
