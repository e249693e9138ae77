"""The perplexity inspector, the hidden-state explorer and the 'under the hood' RNN step, without Qt."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnstudio import explorer, inspector, scoring
from rnnstudio.checkpoint import LoadedModel, load_model
from rnnstudio.cli import main as cli_main
from rnnstudio.scoring import score_text
from rnnstudio.data import Vocab
from rnnstudio.errors import RNNStudioError
from rnnstudio.model import ModelConfig, RNNLanguageModel
from rnnstudio.plugins import default_host
from tiny_models import train_on_file


def train_model(path, name, *, cell="rnn-scratch", steps=15, seed=0, tokens="char", preprocess=None):
    train_on_file(path, name, cell=cell, hidden_size=16, batch_size=4, seq_len=16, max_steps=steps, eval_every=0,
                  checkpoint_every=0, seed=seed, tokens=tokens, preprocess=preprocess)
    return load_model(name)


def in_memory(cell: str, text: str, *, hidden=16, seed=0, encoding="onehot", tokens="char",
              preprocess="raw") -> LoadedModel:
    """A freshly initialised model wrapped like a loaded one (no training needed)."""
    torch.manual_seed(seed)
    vocab = Vocab.build(Counter(text if tokens == "char" else text.split()), tokenizer=tokens)
    cfg = ModelConfig(cell=cell, vocab_size=len(vocab), hidden_size=hidden, encoding=encoding)
    model = RNNLanguageModel(cfg, default_host().cell(cell)).eval()
    return LoadedModel(f"mem-{cell}", Path("."), model, vocab,
                       {"model": cfg.to_json(), "data": {"preprocess": preprocess}})


def test_rows_show_the_tokens_the_model_reads():
    """d2l preprocessing with word tokens: lowercased words, punctuation gone, lines kept apart."""
    loaded = in_memory("gru", "the cat sat on mat hello dog", tokens="word", preprocess="d2l")
    result = inspector.explain(loaded, "The cat, sat!\nhello (dog) zebra\n")
    assert [result["first_token"]] + [r["token"] for r in result["rows"]] == ["the", "cat", "sat", "hello", "dog",
                                                                              "zebra"]
    assert [r["unknown"] for r in result["rows"]] == [False, False, False, False, True]
    assert result["unit"] == "words"


def test_score_explain_json_holds_up(tiny_corpus, tmp_path, capsys):
    """`score --explain --json` in a subprocess: exp(mean row NLL) is the reported perplexity (1e-6 relative)."""
    train_model(tiny_corpus, "insp")
    sample = tmp_path / "sample.txt"
    sample.write_text("the cat sat on the mat. a dog sat on the cat!", encoding="utf-8")
    env = {**os.environ}

    def cli(*args):
        proc = subprocess.run([sys.executable, "-m", "rnnstudio", "score", "--model", "insp", str(sample), *args],
                              capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    lines = [json.loads(line) for line in cli("--explain", "--json").splitlines()]  # JSON lines: rows, then summary
    assert {line["event"] for line in lines[:-1]} == {"token"} and lines[-1]["event"] == "summary"
    rows, result = lines[:-1], lines[-1]
    assert len(rows) == result["scored"] == len(sample.read_text()) - 1
    nll = np.array([r["nll"] for r in rows], dtype=np.float64)
    assert math.exp(nll.mean()) == pytest.approx(result["perplexity"], rel=1e-6)
    assert result["bits-per-token"] == pytest.approx(nll.mean() / math.log(2), rel=1e-9)
    # 'd', 'g' and '!' are not in the training text: they are read as <unk> and counted
    assert result["unknown"] == 3 and {r["token"] for r in rows if r["unknown"]} == {"d", "g", "!"}
    for r in rows:
        assert r["probability"] == pytest.approx(math.exp(-r["nll"]), rel=1e-9)
        probs = [t["probability"] for t in r["top"]]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-9
        assert (r["rank"] == 1) == (r["probability"] >= probs[0] - 1e-12)
        if r["rank"] <= 5:
            assert r["probability"] == pytest.approx(probs[r["rank"] - 1], rel=1e-9)
    worked = result["worked_example"]
    first = [r["nll"] for r in rows[:5]]
    assert worked["first_perplexity"] == pytest.approx(math.exp(sum(first) / 5), rel=1e-12)
    assert worked["perplexity"] == pytest.approx(result["perplexity"], rel=1e-12)
    # the plain score (the trainer's batched evaluation, float32) agrees; in-process to save a subprocess
    plain = score_text(load_model("insp"), sample.read_text(encoding="utf-8"))
    assert plain["perplexity"] == pytest.approx(result["perplexity"], rel=1e-4)
    assert cli_main(["score", "--model", "insp", str(sample), "--explain"]) == 0
    text = capsys.readouterr().out
    assert "how the numbers add up" in text and "perplexity = exp(mean NLL)" in text


def test_explain_carries_state_across_chunks(monkeypatch):
    """Chunked B=1 pass with the state carried == one forward over the whole text."""
    text = "hello (world) \"quoted\" 123 and more text\n" * 3
    loaded = in_memory("gru", text, seed=3)
    monkeypatch.setattr(scoring, "SEQ_LEN", 7)
    result = inspector.explain(loaded, text, exact=True)
    ids = torch.tensor(loaded.vocab.encode(text))
    logits, _, _ = loaded.model(ids[None, :-1])
    want = F.cross_entropy(logits[0].double(), ids[1:], reduction="none")
    got = torch.tensor([r["nll"] for r in result["rows"]], dtype=torch.float64)
    assert torch.allclose(got, want, atol=1e-5)
    assert [r["token"] for r in result["rows"]] == list(text[1:])


def test_compare_two_models(tiny_corpus, tmp_path):
    a = in_memory("gru", tiny_corpus.read_text(), seed=1)
    b = train_model(tiny_corpus, "cmp-b", steps=20)
    assert a.vocab.idx_to_token == b.vocab.idx_to_token
    text = "the cat sat on the mat."
    result = inspector.compare(a, b, text)
    assert result["same_vocab"] and not result["notes"]
    assert sum(result["wins"].values()) == result["scored"] == len(text) - 1
    for row in result["rows"]:
        assert row["diff"] == pytest.approx(row["nll_b"] - row["nll_a"])
        assert row["winner"] == ("b" if row["diff"] < 0 else "a")
    assert result["wins"]["b"] > result["wins"]["a"]  # the trained model beats the untrained one
    assert result["perplexity_b"] < result["perplexity_a"]

    other = tmp_path / "other.txt"
    other.write_text("completely different words here, xyz! " * 50, encoding="utf-8")
    c = in_memory("gru", other.read_text())
    differs = inspector.compare(b, c, text)
    assert not differs["same_vocab"] and "vocabularies differ" in differs["notes"][0]
    assert any("unknown_in" in r for r in differs["rows"])

    w = in_memory("gru", text)
    w.vocab = Vocab(w.vocab.idx_to_token, "word")
    with pytest.raises(RNNStudioError, match="different tokenizers"):
        inspector.compare(b, w, text)


def quote_tracker(text: str) -> LoadedModel:
    """rnn-scratch with hand-set weights: unit 0 is +1 inside brackets and -1 outside, unit 1 fires on spaces.

    Unit 0: H = tanh(3 H_prev + 10 [x = '('] - 10 [x = ')']) keeps its sign between brackets (set/reset).
    The other units get small random weights, so they only echo the current character.
    """
    loaded = in_memory("rnn-scratch", text, hidden=16, seed=5)
    cell, v = loaded.model.cell, loaded.vocab
    with torch.no_grad():
        cell.W_xh[0].normal_(0, 0.3)
        cell.W_hh[0].normal_(0, 0.05)
        cell.W_xh[0][:, :2] = 0
        cell.W_hh[0][:, :2] = 0
        cell.W_hh[0][0, :] = 0
        cell.b_h[0][:2] = torch.tensor([-0.5, -2.0])
        cell.W_hh[0][0, 0] = 3.0
        cell.W_xh[0][v["("], 0] = 10.0
        cell.W_xh[0][v[")"], 0] = -10.0
        cell.W_xh[0][v[" "], 1] = 5.0
    return loaded


def test_explorer_finds_the_unit_that_tracks_brackets():
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "(gamma delta)", "(x)", "eps", "(zeta eta theta)", "iota"]  # never nested
    text = " ".join(rng.choice(words, size=300))
    loaded = quote_tracker(text)
    acts = explorer.explore(loaded, text)
    assert list(acts.series) == ["h[0]"] and acts.series["h[0]"].shape == (len(text), 16)
    top = explorer.rank_units(acts, feature="inside brackets", limit=3)
    assert (top[0]["layer"], top[0]["unit"]) == ("h[0]", 0) and top[0]["r"] > 0.9
    assert abs(top[1]["r"]) < 0.8 * abs(top[0]["r"])
    best = explorer.rank_units(acts, limit=0)
    by_unit = {r["unit"]: r for r in best}
    assert by_unit[1]["feature"] == "whitespace" and by_unit[1]["r"] > 0.9
    assert by_unit[0]["feature"] in ("inside brackets", "bracket depth")
    with pytest.raises(RNNStudioError, match="unknown feature"):
        explorer.rank_units(acts, feature="nope")


def test_text_features():
    f = explorer.text_features(list('a "b(c)" D1\nxy'))
    assert f["inside quotes"].tolist() == [0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert f["inside brackets"].tolist() == [0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert f["position in line"].tolist()[-4:] == [11, 0, 1, 2]
    assert f["uppercase"][9] == 1 and f["digit"][10] == 1 and f["start of word"].tolist()[:4] == [1, 0, 0, 1]


def test_explorer_lstm_has_cell_state_and_html_is_escaped(tmp_path):
    text = 'if a < b & "c" > d:\n    print(\'<script>\')\n'
    loaded = in_memory("lstm", text, hidden=8)
    acts = explorer.explore(loaded, text)
    assert set(acts.series) == {"h[0]", "c[0]"}
    assert explorer.series_label("c[0]") == "layer 1 cell state c"
    assert not np.allclose(acts.series["h[0]"], acts.series["c[0]"])
    path = tmp_path / "unit.html"
    explorer.save_html(acts, "c[0]", 3, path)
    page = path.read_text(encoding="utf-8")
    assert "<script" not in page and "&lt;</span>" in page and "&amp;</span>" in page and "&quot;</span>" in page
    assert page.count("<span ") == len(text)
    # the state read after each single step equals the cell's own full-sequence output
    ids = torch.tensor(loaded.vocab.encode(text))
    out, _ = loaded.model.cell(loaded.model.encode(ids[:, None]), loaded.model.begin_state(1))
    assert np.allclose(acts.series["h[0]"], out[:, 0].detach().numpy(), atol=1e-5)


@pytest.mark.parametrize("cell", ["rnn-scratch", "rnn"])
def test_recurrence_both_ways(cell):
    text = "the quick brown fox jumps over the lazy dog"
    loaded = in_memory(cell, text, hidden=24, seed=2, encoding="embedding" if cell == "rnn" else "onehot")
    if cell == "rnn-scratch":
        with torch.no_grad():
            for p in loaded.model.cell.parameters():
                p.normal_(0, 0.5)  # d2l's 0.01 init would make every value nearly 0
    result = explorer.recurrence_both_ways(loaded, text, step=10)
    assert result["token"] == text[10] and len(result["separate"]) == 24
    assert result["max_difference"] < 1e-5 and result["max_difference_model"] < 1e-5
    assert max(abs(v) for v in result["separate"]) > 0.1  # a real step, not all zeros
    E = result["shapes"]["X_t"][1]
    assert result["shapes"]["W"] == [E + 24, 24] and result["shapes"]["XH"] == [1, E + 24]
    with pytest.raises(RNNStudioError, match="step must be between"):
        explorer.recurrence_both_ways(loaded, text, step=len(text))


def test_recurrence_needs_a_plain_rnn():
    with pytest.raises(RNNStudioError, match="plain RNN cell"):
        explorer.recurrence_both_ways(in_memory("gru", "abcabc"), "abc")
