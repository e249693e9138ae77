"""The six built-in cells: scratch cells match torch's fused ones, gradients are right, options work."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnnstudio.builtin_plugins.fast_recurrence import gru_layer, lstm_layer, rnn_layer
from rnnstudio.model import ModelConfig, RNNLanguageModel
from rnnstudio.plugins import default_host
from rnnstudio.trainer import Finished, TrainConfig, Trainer

ALL_CELLS = ("rnn-scratch", "gru-scratch", "lstm-scratch", "rnn", "gru", "lstm")
PAIRS = [("rnn-scratch", nn.RNN), ("gru-scratch", nn.GRU), ("lstm-scratch", nn.LSTM)]
E, H, L, T, B = 7, 6, 2, 9, 4


def cell_class(name):
    return default_host().cell(name)


def random_state(name, gen):
    if "lstm" in name:
        return torch.randn(L, B, H, generator=gen), torch.randn(L, B, H, generator=gen)
    return torch.randn(L, B, H, generator=gen)


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def paired(name, torch_cls, seed=0):
    """A torch module with non-trivial weights (biases included) and a scratch cell loaded from it."""
    torch.manual_seed(seed)
    ref = torch_cls(E, H, L)
    with torch.no_grad():
        for p in ref.parameters():
            p.uniform_(-0.6, 0.6)
    cell = cell_class(name)(E, H, L)
    cell.load_from_torch(ref)
    return ref, cell


def paired_with_inputs(name, torch_cls, seed):
    """``paired``'s two modules, an input (T, B, E) and a starting state drawn from a generator seeded ``seed``,
    and that generator for further draws."""
    ref, cell = paired(name, torch_cls)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, E, generator=gen)
    return ref, cell, gen, x, random_state(name, gen)


def test_all_six_cells_are_registered():
    names = default_host().names("cell")
    for name in ALL_CELLS:
        assert name in names


@pytest.mark.parametrize("name,torch_cls", PAIRS)
def test_scratch_matches_fused_outputs_and_final_states(name, torch_cls):
    ref, cell, _, x, state = paired_with_inputs(name, torch_cls, seed=1)
    y_ref, s_ref = ref(x, state)
    y, s = cell(x, state)
    assert y.shape == (T, B, H)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=0)
    for got, want in zip(as_tuple(s), as_tuple(s_ref), strict=True):
        assert got.shape == (L, B, H)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name,torch_cls", PAIRS)
def test_scratch_matches_fused_gradients(name, torch_cls):
    """The hand-written BPTT gives torch's gradients for the inputs, the state and every weight."""
    ref, cell, gen, x, state = paired_with_inputs(name, torch_cls, seed=2)
    w_out = torch.randn(T, B, H, generator=gen)
    w_fin = [torch.randn(L, B, H, generator=gen) for _ in as_tuple(state)]

    def grads(module):
        xi = x.clone().requires_grad_()
        si = tuple(s.clone().requires_grad_() for s in as_tuple(state))
        y, fin = module(xi, si if len(si) > 1 else si[0])
        loss = (y * w_out).sum() + sum((f * w).sum() for f, w in zip(as_tuple(fin), w_fin))
        loss.backward()
        return xi.grad, [s.grad for s in si]

    dx_ref, ds_ref = grads(ref)
    dx, ds = grads(cell)
    torch.testing.assert_close(dx, dx_ref, atol=1e-5, rtol=0)
    for got, want in zip(ds, ds_ref, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # weight gradients, mapped back to torch's layout (gate blocks stacked, transposed)
    for layer in range(L):
        w_hh = torch.cat([getattr(cell, f"W_h{g}")[layer].grad for g in cell.gates], dim=1).T
        w_ih = torch.cat([getattr(cell, f"W_x{g}")[layer].grad for g in cell.gates], dim=1).T
        torch.testing.assert_close(w_hh, getattr(ref, f"weight_hh_l{layer}").grad, atol=1e-5, rtol=0)
        torch.testing.assert_close(w_ih, getattr(ref, f"weight_ih_l{layer}").grad, atol=1e-5, rtol=0)
    if name == "gru-scratch":
        torch.testing.assert_close(cell.b_hn[0].grad, ref.bias_hh_l0.grad[2 * H:], atol=1e-5, rtol=0)


def test_fast_loops_pass_gradcheck():
    """Double-precision finite differences agree with the hand-written backward passes."""
    gen = torch.Generator().manual_seed(3)
    h, steps, batch = 3, 4, 2

    def rand(*shape):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * 0.5).requires_grad_()

    assert torch.autograd.gradcheck(rnn_layer, (rand(steps, batch, h), rand(batch, h), rand(h, h)))
    assert torch.autograd.gradcheck(gru_layer, (rand(steps, batch, 3 * h), rand(batch, h), rand(h, 3 * h), rand(h)))
    assert torch.autograd.gradcheck(lstm_layer, (rand(steps, batch, 4 * h), rand(batch, h), rand(batch, h),
                                                 rand(h, 4 * h)))


@pytest.mark.parametrize("layer, widths", [(rnn_layer, (1,)), (gru_layer, (3, 0)), (lstm_layer, (4,))])
def test_a_detached_start_state_skips_its_gradient_and_changes_no_other(layer, widths):
    """Training carries detached states, so backward skips dL/dh0 (one GEMM); every other gradient is the same."""
    gen = torch.Generator().manual_seed(5)
    h, steps, batch, G = 5, 6, 3, widths[0]
    xg, h0, c0, W = (torch.randn(*shape, generator=gen) * 0.5
                     for shape in ((steps, batch, G * h), (batch, h), (batch, h), (h, G * h)))
    b_hn = torch.randn(h, generator=gen) * 0.5

    def grads(h0_needs_grad):
        x, w, b, s = (t.clone().requires_grad_() for t in (xg, W, b_hn, h0))
        s.requires_grad_(h0_needs_grad)
        args = {rnn_layer: (x, s, w), gru_layer: (x, s, w, b), lstm_layer: (x, s, c0, w)}[layer]
        out = layer(*args)
        y = out[0] if isinstance(out, tuple) else out
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        return [t.grad for t in (x, w)] + ([b.grad] if layer is gru_layer else []), s.grad

    with_h0, dh0 = grads(True)
    without_h0, none = grads(False)
    assert dh0 is not None and none is None
    for a, b in zip(with_h0, without_h0):
        assert torch.equal(a, b)


def test_rnn_scratch_fast_path_equals_textbook_steps():
    """d2l 8.5, one step at a time: H_t = tanh(X_t W_xh + H_{t-1} W_hh + b_h), layer after layer."""
    torch.manual_seed(4)
    cell = cell_class("rnn-scratch")(E, H, L, init_std=0.3)
    with torch.no_grad():
        for b in cell.b_h:
            b.uniform_(-0.5, 0.5)
    x = torch.randn(T, B, E)
    state = torch.randn(L, B, H)
    layer_in, finals = x, []
    for layer in range(L):
        Hs, outs = state[layer], []
        for X_t in layer_in:
            Hs = torch.tanh(X_t @ cell.W_xh[layer] + Hs @ cell.W_hh[layer] + cell.b_h[layer])
            outs.append(Hs)
        layer_in = torch.stack(outs)
        finals.append(Hs)
    y, s = cell(x, state)
    torch.testing.assert_close(y, layer_in, atol=1e-6, rtol=0)
    torch.testing.assert_close(s, torch.stack(finals), atol=1e-6, rtol=0)


def test_rnn_scratch_fast_path_equals_textbook_gradients():
    torch.manual_seed(5)
    cell = cell_class("rnn-scratch")(E, H, 1, init_std=0.3)
    x = torch.randn(T, B, E)
    y, _ = cell(x, torch.zeros(1, B, H))
    y.square().sum().backward()
    fast = [p.grad.clone() for p in (cell.W_xh[0], cell.W_hh[0], cell.b_h[0])]
    cell.zero_grad()
    Hs, loss = torch.zeros(B, H), 0
    for X_t in x:
        Hs = torch.tanh(X_t @ cell.W_xh[0] + Hs @ cell.W_hh[0] + cell.b_h[0])
        loss = loss + Hs.square().sum()
    loss.backward()
    for got, p in zip(fast, (cell.W_xh[0], cell.W_hh[0], cell.b_h[0])):
        torch.testing.assert_close(got, p.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ALL_CELLS)
def test_dropout_acts_only_between_layers_and_only_in_training(name):
    torch.manual_seed(6)
    cls = cell_class(name)
    x = torch.randn(T, B, E)
    deep = cls(E, H, 2, dropout=0.5)
    state = deep.begin_state(B)
    deep.eval()
    y1, _ = deep(x, state)
    y2, _ = deep(x, state)
    torch.testing.assert_close(y1, y2)  # eval: no dropout
    deep.train()
    y3, _ = deep(x, state)
    assert not torch.allclose(y1, y3)  # training: the second layer sees dropped inputs
    shallow = cls(E, H, 1, dropout=0.5).train()
    a, _ = shallow(x, shallow.begin_state(B))
    b, _ = shallow(x, shallow.begin_state(B))
    torch.testing.assert_close(a, b)  # one layer: nothing between layers to drop


@pytest.mark.parametrize("name", ("lstm-scratch", "lstm"))
def test_lstm_state_is_a_pair_of_hidden_and_memory(name):
    cell = cell_class(name)(E, H, 3)
    state = cell.begin_state(B)
    assert isinstance(state, tuple) and [s.shape for s in state] == [(3, B, H)] * 2
    _, (h, c) = cell(torch.randn(T, B, E), state)
    assert h.shape == c.shape == (3, B, H)
    assert set(cell.hidden_units((h, c))) == {"h", "c"}


def test_load_from_torch_rejects_a_different_shape():
    cell = cell_class("gru-scratch")(E, H, L)
    with pytest.raises(ValueError):
        cell.load_from_torch(nn.GRU(E, H + 1, L))


@pytest.mark.parametrize("name", ("rnn-scratch", "gru", "lstm-scratch"))
def test_onehot_equals_identity_embedding(name):
    """Encoding is a model option: an embedding whose weight is the identity is the one-hot encoding."""
    V = 11
    torch.manual_seed(7)
    onehot = RNNLanguageModel(ModelConfig(cell=name, vocab_size=V, hidden_size=H, num_layers=2), cell_class(name))
    embedded = RNNLanguageModel(ModelConfig(cell=name, vocab_size=V, hidden_size=H, num_layers=2,
                                            encoding="embedding", embed_size=V), cell_class(name))
    embedded.cell.load_state_dict(onehot.cell.state_dict())
    embedded.head.load_state_dict(onehot.head.state_dict())
    with torch.no_grad():
        embedded.embedding.weight.copy_(torch.eye(V))
    idx = torch.randint(0, V, (3, 8))
    a, _, _ = onehot(idx)
    b, _, _ = embedded(idx)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", ALL_CELLS)
def test_every_cell_trains_deep_with_dropout(name, tiny_corpus, restore_threads):
    cfg = TrainConfig(corpus="text-file", corpus_options={"path": str(tiny_corpus)}, cell=name, hidden_size=16,
                      num_layers=2, dropout=0.1, batch_size=4, seq_len=8, max_steps=25, eval_every=0, save=False,
                      optimizer="sgd", lr=1.0, threads=1)  # one thread: the 2-core test machine is shared
    events = list(Trainer(cfg).run())
    fin = events[-1]
    assert isinstance(fin, Finished) and fin.steps == 25
    first = next(e for e in events if e.kind == "progress")
    assert fin.train_perplexity < first.train["perplexity"]  # it learned something


@pytest.mark.parametrize("name", ["rnn-scratch", "gru-scratch", "lstm-scratch"])
def test_token_ids_path_equals_one_hot_inputs(name):
    """The model hands scratch cells token ids (they gather weight rows); outputs and every gradient
    equal the one-hot GEMM path's."""
    torch.manual_seed(5)
    vocab = 11
    model = RNNLanguageModel(ModelConfig(cell=name, vocab_size=vocab, hidden_size=H, num_layers=2,
                                         cell_options={"init_std": 0.3}), cell_class(name))
    idx = torch.randint(0, vocab, (B, T))

    def run(use_ids):
        model.zero_grad(set_to_none=True)
        if use_ids:
            logits, _ = model.forward_flat(idx)
        else:
            x = F.one_hot(idx.T, vocab).float()
            out, _ = model.cell(x, model.begin_state(B))
            logits = model.head(out.reshape(-1, H))
        (logits * torch.linspace(-1, 1, logits.numel()).view_as(logits)).sum().backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    logits_ids, grads_ids = run(True)
    logits_hot, grads_hot = run(False)
    torch.testing.assert_close(logits_ids, logits_hot, atol=1e-5, rtol=1e-5)
    assert grads_ids.keys() == grads_hot.keys()
    for n in grads_ids:
        torch.testing.assert_close(grads_ids[n], grads_hot[n], atol=1e-5, rtol=1e-5, msg=n)
    with pytest.raises(TypeError):
        model.cell.forward_tokens(torch.zeros(T, B), model.begin_state(B))
