"""The one scoring path: parallel streams with a burn-in match the exact single pass; every prediction once."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnstudio import scoring
from rnnstudio.checkpoint import load_model
from tiny_models import train_on_file

TEXT = ("It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
        "foolishness, it was the epoch of belief, it was the epoch of incredulity.\n")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small GRU trained for a few dozen steps on a repeating text (long enough to split into streams)."""
    home = tmp_path_factory.mktemp("home")
    corpus = home / "corpus.txt"
    corpus.write_text(TEXT * 60, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:  # a module-scoped fixture cannot use ``monkeypatch``
        mp.setenv("RNNSTUDIO_HOME", str(home))
        train_on_file(corpus, "score-me", cell="gru", hidden_size=32, batch_size=8, seq_len=32, max_steps=40,
                      eval_every=0, checkpoint_every=0, seed=0, threads=1)
        yield load_model("score-me"), corpus, home


@pytest.mark.parametrize("n, streams, burn_in", [(10_000, 32, 64), (1_000, 32, 64), (700, 4, 16), (5, 8, 2),
                                                  (3_001, 7, 0), (10_000, 1, 64)])
def test_layout_scores_every_prediction_exactly_once(n, streams, burn_in):
    """Positions from the streams (and from the ranks sharing them) cover 0..n-1, each once."""
    torch.manual_seed(0)
    ids = torch.randint(0, 5, (n + 1,))
    model = _model(vocab=5)
    seen = []
    for world in (1, 3):
        for rank in range(world):
            for logits, targets, where in scoring.predictions(model, ids, streams=streams, burn_in=burn_in,
                                                              seq_len=50, rank=rank, world_size=world):
                assert logits.shape == (len(where), 5) and torch.equal(targets, ids[where + 1])
                seen.append(where)
        got = torch.cat(seen).sort().values
        assert torch.equal(got, torch.arange(n)), (world, got[:10])
        seen = []
    layout = scoring.plan_streams(n, streams, burn_in)
    assert layout.streams <= max(streams, 1)
    if layout.streams > 1:  # every span is at least MIN_SPAN burn-ins long
        assert layout.span >= scoring.MIN_SPAN * layout.burn_in


def _model(vocab: int, hidden: int = 8):
    from rnnstudio.model import ModelConfig, RNNLanguageModel
    from rnnstudio.plugins import load_plugins

    torch.manual_seed(1)
    return RNNLanguageModel(ModelConfig(cell="gru", vocab_size=vocab, hidden_size=hidden),
                            load_plugins(no_plugins=True).cell("gru")).eval()


def test_multi_stream_with_burn_in_matches_exact_within_the_documented_tolerance(trained):
    """Streams + burn-in vs one left-to-right pass (a literal forward over the whole text)."""
    loaded, corpus, _ = trained
    text = corpus.read_text(encoding="utf-8")
    fast = scoring.score_text(loaded, text)
    exact = scoring.score_text(loaded, text, exact=True)
    assert fast["streams"] > 4 and exact["streams"] == 1  # the fast path really split the text
    ids = torch.tensor(loaded.vocab.encode(text))
    with torch.no_grad():
        logits, _, _ = loaded.model(ids[None, :-1])
    literal = math.exp(F.cross_entropy(logits[0].double(), ids[1:]).item())
    assert exact["perplexity"] == pytest.approx(literal, rel=1e-5)
    assert abs(fast["perplexity"] / exact["perplexity"] - 1) < scoring.BURN_IN_TOLERANCE
    assert fast["scored"] == exact["scored"] == len(ids) - 1
    # without a burn-in the later streams start cold and the error is larger: the burn-in is doing work
    cold = scoring.score_text(loaded, text, burn_in=0, streams=fast["streams"])
    assert abs(cold["perplexity"] / exact["perplexity"] - 1) > abs(fast["perplexity"] / exact["perplexity"] - 1)


def test_per_token_scores_match_the_exact_pass_after_the_burn_in(trained):
    """Explain's per-token NLLs: identical to the exact pass in stream 0, close elsewhere; ranks agree with NLLs."""
    loaded, corpus, _ = trained
    text = corpus.read_text(encoding="utf-8")
    ids = torch.tensor(loaded.vocab.encode(text))
    fast = scoring.token_scores(loaded.model, ids)
    exact = scoring.token_scores(loaded.model, ids, streams=1)
    layout = scoring.plan_streams(len(ids) - 1)
    head = layout.span + layout.burn_in  # stream 0 reads the text's start exactly as the single pass does
    np.testing.assert_allclose(fast.nll[:head], exact.nll[:head], atol=1e-5)
    assert np.abs(fast.nll - exact.nll).mean() < 1e-3
    top_nll = -fast.top_log_probs[:, 0]
    assert np.all((fast.rank == 1) == (fast.nll <= top_nll + 1e-9))


def test_validation_uses_the_same_path(trained):
    """The trainer's evaluate is score_ids with batch_size streams."""
    from rnnstudio.plugins import default_host
    from rnnstudio.trainer import evaluate

    loaded, corpus, _ = trained
    ids = torch.tensor(loaded.vocab.encode(corpus.read_text(encoding="utf-8")))
    host = default_host()
    a = evaluate(loaded.model, ids, 8, 32, scoring.metric_set(host, print, loaded.vocab), "cpu")
    b = scoring.score_ids(loaded.model, ids, scoring.metric_set(host, print, loaded.vocab), streams=8, seq_len=32)
    assert a == b and math.isfinite(a["nats-per-char"])


def test_score_exact_and_streamed_explain_from_the_cli(trained, tmp_path):
    """`score --exact` reports one stream; `score --explain --json` writes JSON lines: rows, then the summary."""
    _, corpus, home = trained
    env = {**os.environ, "RNNSTUDIO_HOME": str(home)}

    def cli(*args):
        proc = subprocess.run([sys.executable, "-m", "rnnstudio", "score", "--model", "score-me", str(corpus), *args],
                              capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    exact = json.loads(cli("--exact", "--json"))
    fast = json.loads(cli("--json"))
    assert exact["streams"] == 1 and fast["streams"] > 1
    assert fast["perplexity"] == pytest.approx(exact["perplexity"], rel=scoring.BURN_IN_TOLERANCE)
    lines = cli("--explain", "--json").splitlines()
    rows = [json.loads(line) for line in lines[:-1]]
    summary = json.loads(lines[-1])
    assert summary["event"] == "summary" and "rows" not in summary
    assert [r["position"] for r in rows] == list(range(1, summary["scored"] + 1))
    nll = np.array([r["nll"] for r in rows])
    assert math.exp(nll.mean()) == pytest.approx(summary["perplexity"], rel=1e-9)
    table = cli("--explain", "--rows", "3").splitlines()
    assert table[0].split()[:2] == ["pos", "token"] and table[1].split()[0] == "1" and "more rows" in table[4]


def test_scoring_threads_follow_trainings_policy_and_restore_the_count():
    """On the CPU score times 1 thread against every core (training's ThreadTuner); the count is put back."""
    from rnnstudio.threads import ThreadTuner, max_auto_threads

    before = torch.get_num_threads()
    with scoring.scoring_threads("cpu") as tuner:
        assert isinstance(tuner, ThreadTuner) and tuner.candidates[-1] == max_auto_threads()
        torch.set_num_threads(1)
    assert torch.get_num_threads() == before
    with scoring.scoring_threads("meta") as tuner:
        assert tuner is None
