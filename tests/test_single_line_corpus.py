"""A corpus that is one giant line trains like any other: it streams in bounded pieces, with or without spaces."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from rnnstudio import data
from rnnstudio.data import _pieces, encode_stream

CHUNK = 1 << 20  # what the text-file corpus yields at a time


def one_line(n: int, alphabet: str) -> str:
    rng = random.Random(0)
    return "".join(rng.choices(alphabet, k=n))


@pytest.mark.parametrize("tokenizer,preprocess", [("char", "d2l"), ("word", "raw"), ("word", "d2l")])
@pytest.mark.parametrize("alphabet", ["abcdefgh ", "abcdefgh"])  # with spaces, and one endless word
def test_a_giant_line_is_cut_into_bounded_pieces(tokenizer, preprocess, alphabet, monkeypatch):
    monkeypatch.setattr(data, "_MAX_PIECE", 1 << 16)  # the same logic at a size the test can afford
    text = one_line(1 << 19, alphabet)
    chunks = [text[i: i + (1 << 14)] for i in range(0, len(text), 1 << 14)]
    pieces = list(_pieces(iter(chunks), tokenizer, preprocess))
    assert len(pieces) > 4 and max(map(len, pieces)) <= (1 << 16) + (1 << 14)
    if preprocess == "raw":
        assert "".join(pieces) == text  # nothing lost or repeated at the cuts
    whole = encode_stream(lambda: iter(chunks), tokenizer=tokenizer, preprocess=preprocess)
    assert len(whole.ids) > 0


def test_cli_trains_on_a_single_line_corpus(tmp_path):
    path = tmp_path / "one-line.txt"
    path.write_text(one_line(3_000_000, "abcdefghij klmnop,."), encoding="utf-8")  # no newline at all
    proc = subprocess.run([sys.executable, "-m", "rnnstudio", "train", "--corpus", "text-file", "--corpus-opt",
                           f"path={path}", "--cell", "gru", "--hidden-size", "16", "--batch-size", "8",
                           "--seq-len", "16", "--max-steps", "10", "--eval-every", "0", "--threads", "1",
                           "--device", "cpu", "--name", "one-line", "--json"],
                          capture_output=True, text=True, timeout=300, env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert summary["event"] == "summary" and summary["steps"] == 10
