"""The per-step GEMM of a time loop, ``x @ W.T + b`` for one fixed ``W``, on oneDNN with ``W`` packed once.

A recurrent loop multiplies by the same ``W_hh`` at every step. torch's ``addmm`` runs on its BLAS (MKL in the
x86 wheels), which on this 2-core AMD EPYC (avx512) reached 88 GFLOP/s on one thread, while oneDNN's matmul
reached 201 (``benchmarks/bench.py``'s machine rows, 2026-12-02); another 2-core AMD EPYC box that
evening gave 92 and 108, and 140 us packed against 150 us on ``addmm`` for the thin training GEMM
(32 x 256 by 256 x 768), 517 against 566 for the scoring one below: the gain depends on the CPU. For the GRU-256 step of scoring
(128 x 256 by 256 x 768, one thread) ``addmm`` took 526 us and oneDNN's linear on a weight reordered once into
its blocked format 236 us (``torch.ops.mkldnn._linear_pointwise``, the op that torch's own compiler emits for
frozen CPU linears), with results equal up to float32 rounding (5e-5 on outputs of size ~30). The output layer
of scoring (3712 x 256 by 256 x 94) took 2420 us on `F.linear` and 946 us packed, the packing included.

``packed_linear(W, b, rows)`` packs ``W`` (out, in) for ``rows``-row inputs and returns ``f(x) -> x @ W.T + b``.
It uses oneDNN for float32 CPU tensors when this torch has the op and a first call agrees with ``addmm``;
everything else (other devices or dtypes, a torch without oneDNN) gets ``addmm``, so the choice never changes
what is computed beyond rounding. Pack again after ``W`` changes (a training step): the oneDNN path keeps a
reordered copy. Part of the plugin API (``from rnnstudio import packed_linear``): a cell's own time loop can
use it too.
"""

from __future__ import annotations

from typing import Callable

import torch

_ONEDNN: bool | None = None  # whether oneDNN's packed linear works here; decided on first use


def onednn_available() -> bool:
    """Whether ``torch.ops.mkldnn``'s packed linear exists and agrees with ``addmm`` on a small probe."""
    global _ONEDNN
    if _ONEDNN is None:
        try:
            ops = torch.ops.mkldnn
            with torch.no_grad():
                g = torch.Generator().manual_seed(0)
                x, w, b = (torch.randn(*s, generator=g) for s in ((4, 8), (12, 8), (12,)))
                y = ops._linear_pointwise(x, ops._reorder_linear_weight(w, 4), b, "none", [], "")
                _ONEDNN = bool(torch.allclose(y, torch.addmm(b, x, w.T), rtol=1e-4, atol=1e-5))
        except Exception:  # no oneDNN in this build, or an op with another signature
            _ONEDNN = False
    return _ONEDNN


def packed_linear(weight: torch.Tensor, bias: torch.Tensor | None, rows: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``f(x) = x @ weight.T + bias`` for inputs of ``rows`` rows (others work, perhaps slower), no autograd."""
    w = weight.detach()
    b = None if bias is None else bias.detach()
    if w.device.type == "cpu" and w.dtype == torch.float32 and rows > 0 and onednn_available():
        ops = torch.ops.mkldnn
        wp = ops._reorder_linear_weight(w.contiguous(), rows)
        return lambda x: ops._linear_pointwise(x, wp, b, "none", [], "")
    wt = w.T
    if b is None:
        return lambda x: x @ wt
    return lambda x: torch.addmm(b, x, wt)


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for operands used once (a weight gradient), on oneDNN's linear without packing where it works.

    For a scratch layer's weight gradient, ``H^T dG`` over all T steps (views of (T*B, H) and (T*B, G)), this
    made a training step 1.05-1.24x as fast as ``torch.mm`` at hidden 256-512 (helper measurement, 2026-12-02,
    one thread), where packing one operand for a single use lost. No autograd; ``a @ b`` off the CPU or float32.
    """
    if (a.device.type == "cpu" and a.dtype == torch.float32 and b.dtype == torch.float32 and a.dim() == 2
            and b.dim() == 2 and onednn_available()):
        return torch.ops.mkldnn._linear_pointwise(a, b.T, None, "none", [], "")
    return a @ b


class _Linear(torch.autograd.Function):
    """``F.linear`` with its three GEMMs (forward, dX, dW) on oneDNN, unpacked: the output layer of training."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        dy = dy.contiguous()
        dx = matmul(dy, weight) if ctx.needs_input_grad[0] else None
        dw = matmul(dy.T, x) if ctx.needs_input_grad[1] else None
        db = dy.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dw, db


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for 2-D ``x``, with autograd, on oneDNN where ``packed_linear`` would be.

    The output layer of a hidden-256 model with 104 characters, forward, loss and backward over a batch of
    32 x 35 tokens: 2.4 ms with ``F.linear`` (MKL), 1.5 ms here (one thread; gradients equal within 5e-8)."""
    if (x.device.type == "cpu" and x.dim() == 2 and x.dtype == weight.dtype == torch.float32
            and (bias is None or bias.dtype == torch.float32) and onednn_available()):
        return _Linear.apply(x, weight, bias)
    return torch.nn.functional.linear(x, weight, bias)
