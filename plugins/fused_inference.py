"""Inference-only time loops on torch's RNN/GRU/LSTM weights: one-hot inputs gathered, every layer's states kept.

``nn.GRU`` on one-hot inputs multiplies each (V,) one-hot row by ``W_ih``: V x 3H multiply-adds a token
(a quarter of a hidden-256 GRU's work at V = 94) to pick one row. Without autograd, the fused cells run these
loops instead: layer 0's input projection is the ids' rows of ``W_ih.T + b_ih``, gathered, the later layers'
one GEMM over all T steps, and each step one GEMM for the hidden projection plus the gate math of torch's
formulas (the tests check it against nn.RNN/GRU/LSTM). That GEMM runs on oneDNN with ``W_hh`` packed once per
call where this torch has it (``rnnstudio.packed_linear``: 2.2x faster than ``addmm`` for a hidden-256 GRU
here). ``keep`` also returns every layer's state after every step, which the explorer shows and which ``nn.GRU``
only gives for the top layer.

Weights are torch's flat layout, ``[w_ih (G*H, E), w_hh (G*H, H), b_ih, b_hh]`` per layer (``_flat_weights``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rnnstudio import packed_linear


def input_gates(x: torch.Tensor, w_ih: torch.Tensor, b_ih: torch.Tensor) -> torch.Tensor:
    """X W_ih.T + b_ih for all T steps: (T, B, G*H). ``x`` is token ids (T, B) of one-hot inputs, or inputs (T, B, E)."""
    if not x.is_floating_point():
        return F.embedding(x, (w_ih.T + b_ih).contiguous())  # a one-hot row times W_ih.T is one of its rows
    T, B = x.shape[:2]
    return torch.addmm(b_ih, x.reshape(T * B, -1), w_ih.T).view(T, B, -1)


def run_layers(kind: str, weights, x: torch.Tensor, state, *, keep: bool = False, nonlinearity: str = "tanh"):
    """The stack of layers over x: top outputs (T, B, H), the final state, and, with ``keep``, every layer's
    state after every step as ``{"h": (T, L, B, H)}`` (LSTM: also ``"c"``), else None."""
    L = len(weights) // 4
    lstm = kind == "lstm"
    H0, C0 = state if lstm else (state, None)
    finals_h, finals_c, kept_h, kept_c = [], [], [], []
    for layer in range(L):
        w_ih, w_hh, b_ih, b_hh = weights[4 * layer: 4 * layer + 4]
        gi = input_gates(x, w_ih, b_ih)  # (T, B, G*H)
        if lstm:
            x, c_steps = _lstm_layer(gi, H0[layer], C0[layer], w_hh, b_hh, keep)
            finals_c.append(c_steps[-1])
            kept_c.append(c_steps)
        elif kind == "gru":
            x = _gru_layer(gi, H0[layer], w_hh, b_hh)
        else:
            x = _rnn_layer(gi, H0[layer], w_hh, b_hh, torch.tanh if nonlinearity == "tanh" else torch.relu)
        finals_h.append(x[-1])
        kept_h.append(x)
    final = torch.stack(finals_h)
    if lstm:
        final = (final, torch.stack(finals_c))
    if not keep:
        return x, final, None
    units = {"h": torch.stack(kept_h, dim=1)}  # (T, L, B, H)
    if lstm:
        units["c"] = torch.stack(kept_c, dim=1)
    return x, final, units


def _tanh_(a: torch.Tensor) -> torch.Tensor:
    """tanh(a) = 2 σ(2a) - 1, in place (within 3e-7): torch's CPU tanh costs about three of its sigmoids, and a
    hidden-256 GRU step ran 6-9% faster this way (as the scratch cells found, ``fast_recurrence``)."""
    return a.mul_(2).sigmoid_().mul_(2).sub_(1)


def _gru_layer(gi, h, w_hh, b_hh):
    # torch: r, z = σ(gi_rz + gh_rz), n = tanh(gi_n + r ⊙ gh_n), h' = n + z ⊙ (h - n), gh = h W_hh.T + b_hh
    T, B, G = gi.shape
    H = G // 3
    out = gi.new_empty(T, B, H)
    hidden = packed_linear(w_hh, b_hh, B)  # h W_hh.T + b_hh, W_hh packed once for the T steps
    for t in range(T):
        gh = hidden(h)  # (B, 3H)
        g = gi[t]
        rz = torch.sigmoid(g[:, :2 * H] + gh[:, :2 * H])
        n = _tanh_(torch.addcmul(g[:, 2 * H:], rz[:, :H], gh[:, 2 * H:]))
        h = torch.addcmul(n, rz[:, H:], h - n, out=out[t])
    return out


def _rnn_layer(gi, h, w_hh, b_hh, act):
    T, B, H = gi.shape
    out = gi.new_empty(T, B, H)
    gi = gi + b_hh  # both biases once for all steps
    hidden = packed_linear(w_hh, None, B)
    for t in range(T):
        h = act(hidden(h).add_(gi[t]), out=out[t])
    return out


def _lstm_layer(gi, h, c, w_hh, b_hh, keep):
    # torch: i, f, g, o = gates; c' = σf ⊙ c + σi ⊙ tanh g, h' = σo ⊙ tanh c'
    T, B, G = gi.shape
    H = G // 4
    out = gi.new_empty(T, B, H)
    cs = gi.new_empty(T, B, H) if keep else None
    gi = gi + b_hh  # both biases once for all steps
    hidden = packed_linear(w_hh, None, B)
    for t in range(T):
        gates = hidden(h).add_(gi[t])  # (B, 4H)
        gates[:, 2 * H: 3 * H] *= 2
        s = torch.sigmoid_(gates)  # one sigmoid for all four blocks: g = tanh(a) = 2 σ(2a) - 1
        g = s[:, 2 * H: 3 * H] * 2 - 1
        c = torch.addcmul(s[:, H: 2 * H] * c, s[:, :H], g, out=cs[t] if keep else None)
        h = torch.mul(s[:, 3 * H:], torch.tanh(c), out=out[t])
    return out, (cs if keep else c[None])
