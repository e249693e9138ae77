"""CPU float32 training of the fused gru and rnn cells runs the scratch time loops on nn.GRU/nn.RNN's own
weights: the same values and gradients as nn.GRU/nn.RNN, and nn.RNN's kernels everywhere else."""

import pytest
import torch

from rnnstudio.plugins import default_host

HOST = default_host()


def _pair(name, E=7, H=12, L=2):
    torch.manual_seed(0)
    cell = HOST.cell(name)(input_size=E, hidden_size=H, num_layers=L)
    return cell, cell.rnn


@pytest.mark.parametrize("name", ["gru", "rnn"])
@pytest.mark.parametrize("ids", [False, True])
def test_values_and_gradients_equal_torchs_module(name, ids):
    cell, module = _pair(name)
    T, B, E = 6, 4, 7
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, E, (T, B), generator=g) if ids else torch.randn(T, B, E, generator=g)
    h0 = torch.randn(2, B, 12, generator=g) * 0.5
    assert cell._trains_on_scratch_loops(x)
    out, hT = cell.forward_tokens(x, h0) if ids else cell(x, h0)
    (out.square().sum() + hT.sum()).backward()
    ours = {n: p.grad.clone() for n, p in module.named_parameters()}
    module.zero_grad()
    onehot = torch.nn.functional.one_hot(x, E).float() if ids else x
    ref, ref_hT = module(onehot, h0)  # nn.GRU / nn.RNN's own kernels
    (ref.square().sum() + ref_hT.sum()).backward()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(hT, ref_hT, rtol=1e-4, atol=1e-5)
    for n, p in module.named_parameters():
        torch.testing.assert_close(ours[n], p.grad, rtol=1e-4, atol=1e-4, msg=f"{name} {n}")


def test_other_cases_keep_torchs_kernels():
    cell, _ = _pair("gru")
    x = torch.randn(3, 2, 7)
    with torch.no_grad():
        assert not cell._trains_on_scratch_loops(x)  # inference: fused_inference's loops
    assert not HOST.cell("gru")(input_size=7, hidden_size=12).double()._trains_on_scratch_loops(x.double())
    lstm = HOST.cell("lstm")(input_size=7, hidden_size=12)
    assert not lstm._trains_on_scratch_loops(x)  # nn.LSTM trains on oneDNN's fused primitive
    relu = HOST.cell("rnn")(input_size=7, hidden_size=12)
    relu.rnn.nonlinearity = "relu"
    assert not relu._trains_on_scratch_loops(x)


def test_dropout_between_layers_acts_in_training_only():
    torch.manual_seed(0)
    cell = HOST.cell("gru")(input_size=7, hidden_size=12, num_layers=2, dropout=0.5)
    x, h0 = torch.randn(5, 3, 7), torch.zeros(2, 3, 12)
    cell.train()
    a, _ = cell(x, h0)
    b, _ = cell(x, h0)
    assert not torch.allclose(a, b)  # different masks
    cell.eval()
    c, _ = cell(x, h0)
    torch.testing.assert_close(c, cell.rnn(x, h0)[0], rtol=1e-4, atol=1e-5)
