"""packed_linear: oneDNN's packed GEMM where it works, addmm elsewhere; the same numbers either way."""

import pytest
import torch

from rnnstudio import gemm, packed_linear


@pytest.fixture
def operands():
    g = torch.Generator().manual_seed(0)
    return torch.randn(16, 32, generator=g), torch.randn(48, 32, generator=g), torch.randn(48, generator=g)


@pytest.mark.parametrize("bias", [True, False])
def test_matches_addmm(operands, bias):
    x, w, b = operands
    b = b if bias else None
    expected = x @ w.T + (b if bias else 0)
    torch.testing.assert_close(packed_linear(w, b, len(x))(x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed_linear(w, b, len(x))(x[:5]), expected[:5], rtol=1e-5, atol=1e-5)  # other rows


def test_other_dtypes_and_a_torch_without_onednn_take_addmm(operands, monkeypatch):
    x, w, b = operands
    got = packed_linear(w.double(), b.double(), len(x))(x.double())
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, torch.addmm(b.double(), x.double(), w.double().T))
    monkeypatch.setattr(gemm, "_ONEDNN", False)
    torch.testing.assert_close(packed_linear(w, b, len(x))(x), torch.addmm(b, x, w.T))


def test_a_broken_op_is_detected_not_trusted(monkeypatch):
    monkeypatch.setattr(gemm, "_ONEDNN", None)

    class NoOps:
        def __getattr__(self, name):
            raise RuntimeError("no oneDNN in this build")

    monkeypatch.setattr(torch, "ops", type("Ops", (), {"mkldnn": NoOps()})())
    assert gemm.onednn_available() is False



def test_matmul_on_strided_views_matches_mm():
    from rnnstudio import matmul

    g = torch.Generator().manual_seed(1)
    states, dG = torch.randn(9, 4, 16, generator=g), torch.randn(8, 4, 24, generator=g)
    a, b = states[:-1].flatten(0, 1).T, dG.flatten(0, 1)  # a weight gradient's operands, as views
    torch.testing.assert_close(matmul(a, b), a @ b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(matmul(a.double(), b.double()), a.double() @ b.double())


@pytest.mark.parametrize("bias", [True, False])
def test_linear_values_and_gradients_equal_f_linear(bias):
    from rnnstudio.gemm import linear

    g = torch.Generator().manual_seed(2)
    x = torch.randn(20, 16, generator=g, requires_grad=True)
    w = torch.randn(9, 16, generator=g, requires_grad=True)
    b = torch.randn(9, generator=g, requires_grad=True) if bias else None
    up = torch.randn(20, 9, generator=g)
    (linear(x, w, b) * up).sum().backward()
    ours = [t.grad.clone() for t in (x, w, b) if t is not None]
    for t in (x, w, b):
        if t is not None:
            t.grad = None
    (torch.nn.functional.linear(x, w, b) * up).sum().backward()
    for got, t in zip(ours, [t for t in (x, w, b) if t is not None]):
        torch.testing.assert_close(got, t.grad, rtol=1e-5, atol=1e-5)
