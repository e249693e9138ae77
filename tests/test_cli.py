"""The CLI end to end, in subprocesses, the way a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def rnnstudio(*args, check=True, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "rnnstudio", *args], capture_output=True, text=True,
                          env={**os.environ}, cwd=cwd, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"rnnstudio {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def test_train_generate_models_score(tiny_corpus, tmp_path):
    out = rnnstudio("train", "--corpus", "text-file", "--corpus-opt", f"path={tiny_corpus}", "--cell", "gru",
                    "--hidden-size", "32", "--batch-size", "8", "--seq-len", "12", "--max-steps", "120",
                    "--name", "cli", "--json")
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    summary = lines[-1]
    assert summary["event"] == "summary"
    for key in ("model", "train_perplexity", "val_perplexity", "tokens_per_s", "steps"):
        assert key in summary
    assert summary["model"] == "cli" and summary["steps"] == 120
    assert summary["val_perplexity"] < 3  # vocabulary is 13 tokens

    gen = rnnstudio("generate", "--model", "cli", "--prefix", "the ", "--length", "50", "--seed", "1")
    again = rnnstudio("generate", "--model", "cli", "--prefix", "the ", "--length", "50", "--seed", "1")
    assert gen.stdout == again.stdout
    assert gen.stdout.startswith("the ") and len(gen.stdout.rstrip("\n")) == 54

    models = json.loads(rnnstudio("models", "--json").stdout)
    assert [m["name"] for m in models] == ["cli"] and models[0]["cell"] == "gru"
    assert models[0]["val_perplexity"] == pytest.approx(summary["val_perplexity"])

    sample = tmp_path / "sample.txt"
    sample.write_text("the cat sat on the mat. the cat sat on the mat.")
    score = json.loads(rnnstudio("score", "--model", "cli", str(sample), "--json").stdout)
    assert score["scored"] == len(sample.read_text()) - 1
    assert 1 <= score["perplexity"] < 3

    human = rnnstudio("train", "--corpus", "text-file", "--corpus-opt", f"path={tiny_corpus}", "--hidden-size", "16",
                      "--max-steps", "5", "--batch-size", "4", "--seq-len", "8", "--name", "human")
    assert "finished after 5 steps" in human.stdout


@pytest.mark.parametrize("args, message", [
    (["train", "--corpus", "text-file", "--corpus-opt", "path=/nonexistent", "--cell", "gru"], "no such file"),
    (["train", "--cell", "nope"], "unknown cell 'nope'"),
    (["train", "--corpus", "text-file", "--corpus-opt", "pth=x"], "has no option pth"),
    (["train", "--hidden-size", "0"], "--hidden-size must be an integer >= 1"),
    (["train", "--lr", "-1"], "--lr must be a finite number > 0"),
    (["train", "--device", "cuda:7"], "cuda:7"),
    (["generate", "--model", "ghost"], "no model named 'ghost'"),
    (["train", "--corpus-opt", "novalue"], "KEY=VALUE"),
])
def test_user_mistakes_give_one_line_and_exit_code_2(args, message, rnnstudio_home):
    proc = rnnstudio(*args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (rnnstudio_home / "data" / "models").exists() or not any((rnnstudio_home / "data" / "models").iterdir())
