"""The data pipeline: preprocessing, vocabulary, streaming encoding, split and d2l's partitionings."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from rnnstudio.data import (BatchPlan, Vocab, compact_dtype, d2l_preprocess_line, encode_stream, encode_text,
                            eval_batches, train_val_split)


def test_d2l_preprocessing_lowercases_and_collapses_non_letters():
    assert d2l_preprocess_line("The Time-Traveller (for so it will be...)  ") == "the time traveller for so it will be"
    # d2l 8.2 joins preprocessed lines with nothing between them
    enc = encode_text("Ab,c\n\nD!e\n", preprocess="d2l")
    assert enc.vocab.decode(enc.ids.tolist()) == "ab cd e"


def test_vocab_has_d2l_semantics():
    counts = Counter("aaabbc")
    v = Vocab.build(counts, min_freq=2)
    assert v.idx_to_token == ["<unk>", "a", "b"]
    assert v["c"] == 0 and v["a"] == 1
    assert Vocab.from_json(v.to_json()).idx_to_token == v.idx_to_token
    # equal counts keep first-seen order, as d2l's stable sort does
    assert Vocab.build(Counter("xyyx")).idx_to_token == ["<unk>", "x", "y"]


def test_streaming_encoding_equals_whole_text_encoding_across_chunk_boundaries():
    text = "Hello, World!\nThe quick brown fox\njumps over the lazy dog.\n" * 50
    chunks = [text[i:i + 7] for i in range(0, len(text), 7)]  # splits words and lines
    for tokenizer in ("char", "word"):
        for preprocess in ("raw", "d2l"):
            whole = encode_text(text, tokenizer=tokenizer, preprocess=preprocess)
            streamed = encode_stream(lambda: iter(chunks), tokenizer=tokenizer, preprocess=preprocess)
            assert streamed.vocab.idx_to_token == whole.vocab.idx_to_token
            assert torch.equal(streamed.ids, whole.ids), (tokenizer, preprocess)


@pytest.mark.parametrize("seed", range(4))
def test_character_encoding_matches_a_per_character_reference(seed):
    """The vectorised encoder's paths (all-Latin-1 blocks through bytes.translate, wider text through a lookup
    table, ids past one byte) agree with the obvious per-character encoding, across block boundaries."""
    import random

    from rnnstudio.data import _BLOCK

    rng = random.Random(seed)
    latin = [chr(c) for c in range(1, 256)]
    wide = [chr(c) for c in range(256, 700)] + ["\u201c", "\u201d", "\U0001f600"]
    parts = []
    for _ in range(3):
        alphabet = rng.sample(latin, rng.randint(1, 80)) + (rng.sample(wide, rng.randint(1, 300))
                                                              if rng.random() < 0.5 else [])
        parts.append("".join(rng.choice(alphabet) for _ in range(rng.choice([10, 1000, _BLOCK + 7]))))
    text = "".join(parts)
    min_freq, max_tokens = rng.choice([(0, 0), (3, 0), (0, 5000)])
    chunks = [text[i:i + 300_000] for i in range(0, len(text), 300_000)]
    enc = encode_stream(lambda: iter(chunks), min_freq=min_freq, max_tokens=max_tokens)
    expected = Vocab.build(Counter(text), min_freq=min_freq)
    assert enc.vocab.idx_to_token == expected.idx_to_token
    assert enc.ids.tolist() == [expected[c] for c in (text[:max_tokens] if max_tokens else text)]


def test_word_tokens_and_unknowns():
    enc = encode_text("a b a c a b", tokenizer="word", min_freq=2)
    assert enc.vocab.idx_to_token == ["<unk>", "a", "b"]
    assert enc.ids.tolist() == [1, 2, 1, 0, 1, 2]
    assert enc.vocab.decode([1, 2, 0]) == "a b <unk>"


def test_ids_use_a_compact_dtype():
    assert encode_text("abcabc").ids.dtype == torch.uint8
    assert compact_dtype(300) == torch.int16
    assert compact_dtype(100_000) == torch.int32


def test_split_keeps_the_last_tenth_for_validation():
    ids = torch.arange(100)
    train, val = train_val_split(ids, 0.1)
    assert train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))


@pytest.mark.parametrize("world_size", [1, 2])
def test_sequential_partitioning_is_contiguous_and_covers_the_stream(world_size):
    ids = torch.arange(1000)
    B, T = 4, 5
    plans = [BatchPlan(ids, B, T, "sequential", seed=3, epoch=1, rank=r, world_size=world_size) for r in range(world_size)]
    offset = plans[0].offset
    assert 0 <= offset <= T
    seen = []
    for plan in plans:
        assert plan.offset == offset and len(plan) == len(plans[0])
        prev = None
        for X, Y in plan:
            assert X.shape == (B, T) and Y.shape == (B, T) and X.dtype == torch.int64
            assert torch.equal(Y, X + 1)  # Y is X shifted by one token
            if prev is not None:  # row b of batch i+1 continues row b of batch i
                assert torch.equal(X[:, 0], prev[:, -1] + 1)
            prev = X
            seen.append(X.flatten())
    seen = torch.cat(seen).sort().values
    assert len(torch.unique(seen)) == len(seen)  # no token twice
    per_row = (len(ids) - offset - 1) // (B * world_size)
    n_batches = per_row // T
    assert len(seen) == B * world_size * n_batches * T
    # every row starts where the previous row started plus the row length: the whole range is laid out
    assert plans[0][0][0][:, 0].tolist() == [offset + b * per_row for b in range(B)]


def test_random_partitioning_covers_each_subsequence_once():
    ids = torch.arange(503)
    B, T = 4, 7
    plan = BatchPlan(ids, B, T, "random", seed=1, epoch=0)
    starts = []
    for X, Y in plan:
        assert X.shape == (B, T)
        assert torch.equal(Y, X + 1)
        assert torch.all(X[:, 1:] - X[:, :-1] == 1)  # each row is a contiguous subsequence
        starts += X[:, 0].tolist()
    num_subseqs = (len(ids) - plan.offset - 1) // T
    assert len(starts) == len(set(starts)) == (num_subseqs // B) * B
    assert all((s - plan.offset) % T == 0 for s in starts)
    other = BatchPlan(ids, B, T, "random", seed=1, epoch=1)
    assert [x[:, 0].tolist() for x, _ in other] != [x[:, 0].tolist() for x, _ in plan]


def test_plans_are_a_pure_function_of_seed_and_epoch():
    ids = torch.arange(400)
    a = BatchPlan(ids, 2, 5, "random", seed=7, epoch=2)
    b = BatchPlan(ids, 2, 5, "random", seed=7, epoch=2)
    assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a, b))


def test_eval_batches_predict_every_token_exactly_once():
    ids = torch.arange(1, 108)
    for B, T in [(4, 5), (32, 35), (1, 256)]:
        ys = torch.cat([Y.flatten() for _, Y, _ in eval_batches(ids, B, T)])
        assert sorted(ys.tolist()) == list(range(2, 108))
