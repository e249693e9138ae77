"""Generation's one-token path (RNNLanguageModel.step) computes what the full sequence forward computes."""

import pytest
import torch

from rnnstudio.model import ModelConfig, RNNLanguageModel, onednn_off
from rnnstudio.plugins import default_host


@pytest.mark.parametrize("cell", default_host().names("cell"))
def test_step_matches_forward_flat(cell):
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(cell=cell, vocab_size=11, hidden_size=8, num_layers=2),
                             default_host().cell(cell)).eval()
    idx = torch.randint(0, 11, (3, 6))
    with torch.no_grad():
        full, full_state = model.forward_flat(idx)  # (T*B, V), time-major
        state = model.begin_state(3)
        steps = []
        for t in range(idx.shape[1]):
            logits, state = model.step(idx[:, t], state)
            steps.append(logits)
    torch.testing.assert_close(torch.cat(steps), full, atol=1e-5, rtol=1e-5)
    for a, b in zip(state if isinstance(state, tuple) else (state,),
                    full_state if isinstance(full_state, tuple) else (full_state,)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_onednn_off_restores_the_flag():
    before = torch.backends.mkldnn.enabled
    with onednn_off():
        assert torch.backends.mkldnn.enabled is False
    assert torch.backends.mkldnn.enabled == before
    with pytest.raises(RuntimeError):
        with onednn_off():
            raise RuntimeError("boom")
    assert torch.backends.mkldnn.enabled == before


def test_training_still_works_after_generation():
    """Generation runs under inference_mode; nothing it leaves on the model may break a later backward."""
    from rnnstudio.data import Vocab
    from rnnstudio.sampling import SamplingConfig, generate_text

    vocab = Vocab(["<unk>", *"abcdefghij"])
    model = RNNLanguageModel(ModelConfig(cell="gru", vocab_size=len(vocab), hidden_size=8), default_host().cell("gru"))
    (text,) = generate_text(model, vocab, "abc", SamplingConfig(length=5, seed=1))
    assert text.startswith("abc")
    x = torch.randint(0, len(vocab), (2, 5))
    _, loss, _ = model(x, targets=x)
    loss.backward()
    assert model.head.weight.grad is not None
    assert model.step(x[:, 0], model.begin_state(2))[0].shape == (2, len(vocab))


BUILTIN_CELLS = ["rnn-scratch", "gru-scratch", "lstm-scratch", "rnn", "gru", "lstm"]


def _states(state):
    return state if isinstance(state, tuple) else (state,)


def _random_state(cell, batch):
    state = cell.begin_state(batch)
    return tuple(torch.randn_like(s) for s in state) if isinstance(state, tuple) else torch.randn_like(state)


@pytest.mark.parametrize("name", BUILTIN_CELLS)
def test_cell_step_equals_forward_on_one_time_step(name):
    """Two layers and a non-zero state (for the LSTM both H and C): step's output and state match forward's."""
    torch.manual_seed(0)
    cell = default_host().cell(name)(input_size=5, hidden_size=7, num_layers=2, init_std=0.5) if "scratch" in name \
        else default_host().cell(name)(input_size=5, hidden_size=7, num_layers=2)
    cell.eval()
    x, state = torch.randn(3, 5), _random_state(cell, 3)
    with torch.no_grad():
        out, full_state = cell(x[None], state)
        h, step_state = cell.step(x, state)
    torch.testing.assert_close(h, out[0], atol=1e-6, rtol=1e-5)
    assert len(_states(step_state)) == len(_states(full_state))
    for a, b in zip(_states(step_state), _states(full_state)):
        assert a.shape == b.shape == (2, 3, 7)
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", BUILTIN_CELLS)
def test_cell_step_is_differentiable_like_forward(name):
    torch.manual_seed(0)
    cell = default_host().cell(name)(input_size=4, hidden_size=6, num_layers=2).eval()
    x, state = torch.randn(2, 4), _random_state(cell, 2)
    grads = []
    for run in ("forward", "step"):
        cell.zero_grad()
        h = cell(x[None], state)[0][0] if run == "forward" else cell.step(x, state)[0]
        h.pow(2).sum().backward()
        grads.append([p.grad.clone() for p in cell.parameters()])
    for g_forward, g_step in zip(*grads):
        torch.testing.assert_close(g_step, g_forward, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["rnn-scratch", "gru-scratch", "lstm-scratch"])
def test_scratch_step_sees_weight_changes(name):
    """The scratch cells cache their stacked weights for step(); an in-place update must invalidate the cache."""
    torch.manual_seed(0)
    cell = default_host().cell(name)(input_size=4, hidden_size=6, num_layers=2, init_std=0.3).eval()
    x, state = torch.randn(2, 4), _random_state(cell, 2)
    opt = torch.optim.SGD(cell.parameters(), lr=0.5)
    for _ in range(2):
        with torch.inference_mode():
            before = cell.step(x, state)[0]
        cell(x[None], state)[0].sum().backward()  # training between two generations
        opt.step()
        opt.zero_grad()
        with torch.inference_mode():
            after = cell.step(x, state)[0]
            expected = cell(x[None], state)[0][0]
        assert not torch.equal(before, after)
        torch.testing.assert_close(after, expected, atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        next(iter(cell.parameters())).copy_(torch.zeros(()))  # load_state_dict-style copy
        torch.testing.assert_close(cell.step(x, state)[0], cell(x[None], state)[0][0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("encoding", ["onehot", "embedding"])
def test_model_step_takes_a_list_of_ids_or_a_tensor(encoding):
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(cell="lstm-scratch", vocab_size=9, hidden_size=6, encoding=encoding),
                             default_host().cell("lstm-scratch")).eval()
    with torch.inference_mode():
        for ids in ([4], [1, 8, 1]):
            state = model.begin_state(len(ids))
            a, sa = model.step(ids, state)
            b, sb = model.step(torch.tensor(ids), state)
            torch.testing.assert_close(a, b)
            for s, t in zip(sa, sb):
                torch.testing.assert_close(s, t)


class _PlainCell(torch.nn.Module):
    """A third-party style cell with only forward (no step): generation must go through forward."""

    def __init__(self, input_size, hidden_size, num_layers=1, dropout=0.0, **options):
        super().__init__()
        self.num_layers, self.hidden_size = num_layers, hidden_size
        self.rnn = torch.nn.GRU(input_size, hidden_size, num_layers)
        self.calls = 0

    def begin_state(self, batch_size, device="cpu"):
        return torch.zeros(self.num_layers, batch_size, self.hidden_size, device=device)

    def forward(self, inputs, state):
        self.calls += 1
        return self.rnn(inputs, state)


def test_a_cell_without_step_generates_through_forward():
    from rnnstudio.data import Vocab
    from rnnstudio.sampling import SamplingConfig, generate_text

    vocab = Vocab(["<unk>", *"abcdefghij"])
    model = RNNLanguageModel(ModelConfig(cell="plain", vocab_size=len(vocab), hidden_size=8, num_layers=2), _PlainCell)
    assert not hasattr(model.cell, "step")
    (text,) = generate_text(model, vocab, "abc", SamplingConfig(length=6, greedy=True))
    assert len(text) == 3 + 6
    assert model.cell.calls == 1 + 5  # the prefix once, then one call per token after the first


def test_stream_does_not_leave_inference_mode_on_between_tokens():
    """Tokens are computed in chunks under inference mode; the caller's code between yields runs normally."""
    from rnnstudio.data import Vocab
    from rnnstudio.sampling import SamplingConfig, stream

    vocab = Vocab(["<unk>", *"abcdefghij"])
    model = RNNLanguageModel(ModelConfig(cell="gru-scratch", vocab_size=len(vocab), hidden_size=8),
                             default_host().cell("gru-scratch"))
    seen = []
    for pieces in stream(model, vocab, "abc", SamplingConfig(length=40, seed=3)):
        seen.append(pieces)
        assert not torch.is_inference_mode_enabled()
        assert torch.is_grad_enabled()
    assert len(seen) == 40
    again = [p for p in stream(model, vocab, "abc", SamplingConfig(length=40, seed=3))]
    assert again == seen
    assert model.training  # restored
