"""The scratch cells' GEMMs on oneDNN's packed weights (float32) agree with their float64 runs (addmm).

gradcheck and the comparisons with nn.RNN/GRU/LSTM at tiny sizes (test_cells.py) cover the formulas; these
check that the per-step GEMMs on packed weights, forward and backward, keep float32's accuracy at sizes where
oneDNN's blocked kernels do real work, over several layers.
"""

from __future__ import annotations

import copy

import pytest
import torch

from rnnstudio import gemm
from rnnstudio.builtin_plugins.fast_recurrence import project_inputs
from rnnstudio.plugins import default_host

E, H, L, T, B = 20, 48, 2, 15, 16

needs_onednn = pytest.mark.skipif(not gemm.onednn_available(), reason="this torch has no oneDNN packed linear")


def run(cell, x, state, w_out):
    """Outputs, final states and the gradients of every input and parameter for one weighted loss."""
    x = x.clone().requires_grad_()
    state = tuple(s.clone().requires_grad_() for s in state)
    cell.zero_grad()
    y, fin = cell(x, state if len(state) > 1 else state[0])
    fin = fin if isinstance(fin, tuple) else (fin,)
    loss = (y * w_out).sum() + sum(f.square().sum() for f in fin)
    loss.backward()
    grads = {"x": x.grad, **{f"state{i}": s.grad for i, s in enumerate(state)},
             **{name: p.grad for name, p in cell.named_parameters()}}
    return {"y": y.detach(), **{f"final{i}": f.detach() for i, f in enumerate(fin)}}, grads


@needs_onednn
@pytest.mark.parametrize("name", ["rnn-scratch", "gru-scratch", "lstm-scratch"])
def test_float32_onednn_loops_match_float64(name):
    torch.manual_seed(0)
    cell = default_host().cell(name)(E, H, L, init_std=0.25)
    with torch.no_grad():
        for n, p in cell.named_parameters():
            if n.startswith("b_"):
                p.uniform_(-0.5, 0.5)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, E, generator=gen)
    state = tuple(torch.randn(L, B, H, generator=gen) * 0.5 for _ in range(2 if "lstm" in name else 1))
    w_out = torch.randn(T, B, H, generator=gen)

    values, grads = run(cell, x, state, w_out)
    ref_values, ref_grads = run(copy.deepcopy(cell).double(), x.double(), tuple(s.double() for s in state),
                                w_out.double())
    for key, want in {**ref_values, **ref_grads}.items():
        got = {**values, **grads}[key]
        assert got.dtype == torch.float32
        scale = want.abs().max().item()
        torch.testing.assert_close(got.double(), want, rtol=0, atol=2e-5 * max(scale, 1.0), msg=key)


@needs_onednn
def test_onednn_and_addmm_paths_agree_in_float32(monkeypatch):
    """With oneDNN switched off the loops run on addmm: both paths agree within float32 rounding."""
    torch.manual_seed(2)
    cell = default_host().cell("gru-scratch")(E, H, L, init_std=0.25)
    x = torch.randn(T, B, E)
    state = (torch.randn(L, B, H),)
    w_out = torch.randn(T, B, H)
    onednn_values, onednn_grads = run(cell, x, state, w_out)
    monkeypatch.setattr(gemm, "_ONEDNN", False)
    addmm_values, addmm_grads = run(cell, x, state, w_out)
    for key, want in {**addmm_values, **addmm_grads}.items():
        torch.testing.assert_close({**onednn_values, **onednn_grads}[key], want, rtol=1e-5, atol=1e-5, msg=key)


def test_input_projection_passes_gradcheck():
    """X W_x + b with its hand-written backward (float64 takes the addmm path)."""
    gen = torch.Generator().manual_seed(3)
    x, W, b = (torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_() for shape in ((5, 3), (3, 4), (4,)))
    assert torch.autograd.gradcheck(project_inputs, (x, W, b))
