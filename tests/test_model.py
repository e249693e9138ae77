"""The recurrence identity, perplexity of a uniform model, and the model's shapes."""

from __future__ import annotations

import math

import pytest
import torch

from rnnstudio.model import ModelConfig, RNNLanguageModel
from rnnstudio.plugins import load_plugins
from rnnstudio.trainer import MetricSet, evaluate


def test_recurrence_identity_integer_case():
    X = torch.arange(3).reshape(3, 1)
    W_xh = torch.arange(4).reshape(1, 4)
    H = torch.arange(12).reshape(3, 4)
    W_hh = torch.arange(16).reshape(4, 4)
    expected = torch.tensor([[56, 62, 68, 74], [152, 175, 198, 221], [248, 288, 328, 368]])
    separate = X @ W_xh + H @ W_hh
    concatenated = torch.cat([X, H], dim=1) @ torch.cat([W_xh, W_hh], dim=0)
    assert torch.equal(separate, expected)
    assert torch.equal(concatenated, expected)


def test_recurrence_identity_random_values():
    g = torch.Generator().manual_seed(0)
    X, H = torch.randn(5, 7, generator=g, dtype=torch.float64), torch.randn(5, 11, generator=g, dtype=torch.float64)
    W_xh, W_hh = torch.randn(7, 11, generator=g, dtype=torch.float64), torch.randn(11, 11, generator=g, dtype=torch.float64)
    torch.testing.assert_close(X @ W_xh + H @ W_hh, torch.cat([X, H], 1) @ torch.cat([W_xh, W_hh], 0))


def _model(cell="gru", V=11, H=8, layers=1):
    host = load_plugins(no_plugins=True)
    return RNNLanguageModel(ModelConfig(cell=cell, vocab_size=V, hidden_size=H, num_layers=layers), host.cell(cell)), host


@pytest.mark.parametrize("V", [2, 7, 28])
def test_uniform_model_has_perplexity_exactly_v(V):
    model, host = _model(V=V)
    with torch.no_grad():  # zero output layer: every token gets probability 1/V
        model.head.weight.zero_()
        model.head.bias.zero_()
    ids = torch.randint(0, V, (500,), generator=torch.Generator().manual_seed(1))
    metrics = MetricSet({n: host.metric(n) for n in host.names("metric")}, warn=lambda m: pytest.fail(m))
    values = evaluate(model, ids, 4, 9, metrics, "cpu")
    assert values["perplexity"] == pytest.approx(V, rel=1e-6)
    assert values["cross-entropy"] == pytest.approx(math.log(V), rel=1e-6)
    assert values["bits-per-token"] == pytest.approx(math.log2(V), rel=1e-6)


def test_perplexity_is_exp_of_mean_nll_over_all_tokens_not_mean_of_batch_perplexities():
    model, host = _model(V=5)
    ids = torch.randint(0, 5, (301,), generator=torch.Generator().manual_seed(2))
    metrics = MetricSet({"perplexity": host.metric("perplexity")}, warn=print)
    ppl = evaluate(model, ids, 3, 10, metrics, "cpu")["perplexity"]
    # the same numbers by hand: 300 tokens are one stream (too short to split), so one forward pass, all NLLs pooled
    with torch.no_grad():
        logits, _, _ = model(ids[None, :-1])
        nlls = [torch.nn.functional.cross_entropy(logits[0], ids[1:], reduction="none")]
    nll = torch.cat(nlls).double()
    assert len(nll) == 300
    assert ppl == pytest.approx(math.exp(nll.mean().item()), rel=1e-6)


@pytest.mark.parametrize("cell", ["gru", "rnn-scratch"])
def test_forward_shapes_and_state_carry(cell):
    model, _ = _model(cell=cell, V=13, H=6, layers=2)
    idx = torch.randint(0, 13, (3, 4))
    logits, loss, state = model(idx, targets=idx)
    assert logits.shape == (3, 4, 13) and loss.ndim == 0
    # running the sequence in two halves with the state carried equals one pass
    l1, _, s1 = model(idx[:, :2])
    l2, _, _ = model(idx[:, 2:], s1)
    torch.testing.assert_close(torch.cat([l1, l2], dim=1), logits, rtol=1e-5, atol=1e-6)


def test_parameter_count_does_not_grow_with_time_steps():
    model, _ = _model(cell="rnn-scratch", V=10, H=4)
    n = sum(p.numel() for p in model.parameters())
    for T in (1, 50):
        model(torch.zeros(2, T, dtype=torch.long))
        assert sum(p.numel() for p in model.parameters()) == n
    assert n == (10 * 4 + 4 * 4 + 4) + (4 * 10 + 10)


def test_perplexity_of_a_diverged_model_is_infinite_not_an_error():
    host = load_plugins(no_plugins=True)
    metric = host.metric("perplexity")()
    metric.update(None, torch.zeros(2, dtype=torch.long), torch.tensor([800.0, 900.0]))
    assert metric.value() == math.inf
