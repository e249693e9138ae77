"""Word-level language models end to end through the real command line: train, generate, score."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from rnnstudio.checkpoint import model_path, read_vocab

COMMON = "the a cat dog sat ran on under mat rug and then slept".split()
RARE = ["zebra", "quokka", "axolotl"]  # each appears once, so min_freq 2 turns them into <unk>


def rnnstudio(*args, home):
    env = {**os.environ, "RNNSTUDIO_HOME": str(home), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "rnnstudio", *args], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def word_corpus(tmp_path):
    rng = random.Random(0)
    words = [rng.choice(COMMON) for _ in range(3000)]
    for i, w in enumerate(RARE):
        words.insert(100 * (i + 1), w)
    lines = [" ".join(words[i: i + 12]) for i in range(0, len(words), 12)]
    path = tmp_path / "words.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_word_model_trains_generates_words_and_scores_words(word_corpus, rnnstudio_home):
    out = rnnstudio("train", "--corpus", "text-file", "--corpus-opt", f"path={word_corpus}", "--tokens", "word",
                    "--min-freq", "2", "--cell", "lstm-scratch", "--hidden-size", "16", "--batch-size", "4",
                    "--seq-len", "6", "--max-steps", "8", "--optimizer", "sgd", "--eval-every", "0",
                    "--name", "words", "--json", home=rnnstudio_home)
    events = [json.loads(line) for line in out.splitlines()]
    assert events[-1]["event"] == "summary" and events[-1]["steps"] == 8

    vocab = read_vocab(model_path("words"))
    assert vocab.tokenizer == "word"
    assert vocab.idx_to_token[0] == "<unk>"
    assert set(vocab.idx_to_token[1:]) == set(COMMON)  # the rare words did not make it in

    text = rnnstudio("generate", "--model", "words", "--prefix", "the cat", "--length", "12", "--seed", "0",
                     home=rnnstudio_home).rstrip("\n")
    words = text.split(" ")
    assert len(words) == 2 + 12 and words[:2] == ["the", "cat"]
    assert all(w in vocab.token_to_idx for w in words)  # whole words, one space apart

    scored = json.loads(rnnstudio("score", "--model", "words", str(word_corpus), "--json", home=rnnstudio_home))
    n_words = len(word_corpus.read_text(encoding="utf-8").split())
    assert scored["unit"] == "words"
    assert scored["tokens"] == n_words and scored["scored"] == n_words - 1
    assert scored["unknown"] == len(RARE)
    assert scored["perplexity"] > 1
