"""Time loops of the scratch cells with hand-written backpropagation through time.

Each layer function takes the input projection of all T steps, already computed in one GEMM,
``xg`` (T, B, G*H) with the gates side by side, and runs only what must be sequential: one GEMM
per step for all gates' hidden projections, then the elementwise gate math. Autograd would record
a dozen small nodes per step; instead each loop is one ``autograd.Function`` whose backward walks
the steps in reverse and computes the weight gradient with one GEMM over all T steps at the end.
The formulas are d2l's (8.5, 9.1, 9.2); tests check them against torch's nn.RNN/GRU/LSTM and
``torch.autograd.gradcheck``.
"""

from __future__ import annotations

import torch


def _needs_graph(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


# -- RNN: H_t = tanh(xw_t + H_{t-1} W_hh) ------------------------------------------------

class _RNNLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xw, h0, W_hh):  # (T, B, H), (B, H), (H, H) -> Y (T, B, H)
        Y = xw.new_empty(xw.shape)
        h = h0
        for t in range(xw.shape[0]):
            h = torch.tanh(torch.addmm(xw[t], h, W_hh), out=Y[t])
        ctx.save_for_backward(h0, W_hh, Y)
        return Y

    @staticmethod
    def backward(ctx, dY):
        h0, W_hh, Y = ctx.saved_tensors
        dtanh = 1 - Y * Y  # tanh' = 1 - tanh^2, for all steps at once
        dpre = torch.empty_like(Y)  # gradient of the pre-activation at every step
        dh = torch.zeros_like(h0)
        W_hhT = W_hh.T
        for t in reversed(range(Y.shape[0])):
            dh = dh + dY[t]
            torch.mul(dh, dtanh[t], out=dpre[t])
            dh = dpre[t] @ W_hhT
        H_prev = torch.cat([h0[None], Y[:-1]])  # (T, B, H)
        dW_hh = H_prev.flatten(0, 1).T @ dpre.flatten(0, 1)
        return dpre, dh, dW_hh


def rnn_layer(xw, h0, W_hh):
    """Outputs (T, B, H) of a tanh RNN layer; the final state is the last row."""
    if not _needs_graph(xw, h0, W_hh):
        return _RNNLayer.forward(_NoCtx(), xw, h0, W_hh)
    return _RNNLayer.apply(xw, h0, W_hh)


# -- GRU (d2l 9.1, torch's placement of b_hn) --------------------------------------------

class _GRULayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xg, h0, W_h, b_hn):  # (T, B, 3H), (B, H), (H, 3H), (H,) -> Y (T, B, H)
        T, B, H = xg.shape[0], xg.shape[1], h0.shape[1]
        Y = xg.new_empty(T, B, H)
        RZ, N, HN = xg.new_empty(T, B, 2 * H), xg.new_empty(T, B, H), xg.new_empty(T, B, H)
        h = h0
        for t in range(T):  # results go straight into the buffers that backward reads
            hg = h @ W_h  # (B, 3H): all gates' hidden projections in one GEMM
            rz = torch.add(xg[t, :, :2 * H], hg[:, :2 * H], out=RZ[t]).sigmoid_()  # R and Z
            r, z = rz[:, :H], rz[:, H:]
            hn = torch.add(hg[:, 2 * H:], b_hn, out=HN[t])  # H W_hh + b_hn
            n = torch.addcmul(xg[t, :, 2 * H:], r, hn, out=N[t]).tanh_()  # candidate H~
            h = torch.addcmul(n, z, h - n, out=Y[t])  # Z H + (1 - Z) H~
        ctx.save_for_backward(h0, W_h, Y, RZ, N, HN)
        return Y

    @staticmethod
    def backward(ctx, dY):
        h0, W_h, Y, RZ, N, HN = ctx.saved_tensors
        T, H = Y.shape[0], Y.shape[2]
        H_prev = torch.cat([h0[None], Y[:-1]])  # (T, B, H)
        R, Z = RZ[..., :H], RZ[..., H:]
        # Local derivatives depend only on forward values: compute them for all steps at once.
        # H' = Z H + (1 - Z) H~ and H~ = tanh(a + R hn), so with g = dL/dH':
        dn_dh = (1 - Z) * (1 - N * N)  # candidate pre-activation: g (1 - Z) (1 - H~^2)
        dr_dn = HN * R * (1 - R)  # reset pre-activation: (candidate grad) hn σ'(R)
        dz_dh = (H_prev - N) * Z * (1 - Z)  # update pre-activation: g (H - H~) σ'(Z)
        dN = torch.empty_like(Y)  # gradient of the candidate pre-activation, per step
        dHG = torch.empty(T, Y.shape[1], 3 * H, dtype=Y.dtype, device=Y.device)  # gradient of H W_h
        W_hT = W_h.T
        dh = torch.zeros_like(h0)
        for t in reversed(range(T)):
            dh = dh + dY[t]
            dn = torch.mul(dh, dn_dh[t], out=dN[t])
            torch.mul(dn, dr_dn[t], out=dHG[t, :, :H])
            torch.mul(dh, dz_dh[t], out=dHG[t, :, H:2 * H])
            torch.mul(dn, R[t], out=dHG[t, :, 2 * H:])  # through R ⊙ (H W_hh + b_hn)
            dh = torch.addmm(dh * Z[t], dHG[t], W_hT)
        dW_h = H_prev.flatten(0, 1).T @ dHG.flatten(0, 1)
        db_hn = dHG[..., 2 * H:].sum((0, 1))
        dxg = torch.cat([dHG[..., :2 * H], dN], dim=2)  # the input side skips R in the candidate block
        return dxg, dh, dW_h, db_hn


def gru_layer(xg, h0, W_h, b_hn):
    """Outputs (T, B, H) of a GRU layer; the final state is the last row."""
    if not _needs_graph(xg, h0, W_h, b_hn):
        return _GRULayer.forward(_NoCtx(), xg, h0, W_h, b_hn)
    return _GRULayer.apply(xg, h0, W_h, b_hn)


# -- LSTM (d2l 9.2) ----------------------------------------------------------------------

class _LSTMLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xg, h0, c0, W_h):  # (T, B, 4H), (B, H), (B, H), (H, 4H) -> Y (T, B, H), C_T (B, H)
        T, B, H = xg.shape[0], xg.shape[1], h0.shape[1]
        Y = xg.new_empty(T, B, H)
        G = xg.new_empty(T, B, 4 * H)  # activated gates i, f, C~, o
        C, TC = xg.new_empty(T, B, H), xg.new_empty(T, B, H)  # memory cells and their tanh
        h, c = h0, c0
        for t in range(T):
            g = torch.addmm(xg[t], h, W_h, out=G[t])  # all gates' pre-activations: (B, 4H)
            i, f, cand, o = g.split(H, dim=1)
            g[:, :2 * H].sigmoid_()
            cand.tanh_()
            o.sigmoid_()
            c = torch.addcmul(f * c, i, cand, out=C[t])  # C = F C + I C~
            h = torch.mul(o, torch.tanh(c, out=TC[t]), out=Y[t])  # H = O tanh(C)
        ctx.save_for_backward(h0, c0, W_h, Y, G, C, TC)
        return Y, C[-1].clone()

    @staticmethod
    def backward(ctx, dY, dC_T):
        h0, c0, W_h, Y, G, C, TC = ctx.saved_tensors
        T, B, H = Y.shape
        H_prev = torch.cat([h0[None], Y[:-1]])
        C_prev = torch.cat([c0[None], C[:-1]])
        I, F, Cand, O = G.split(H, dim=2)
        # Local derivatives depend only on forward values: compute them for all steps at once.
        dc_dh = O * (1 - TC * TC)  # H = O tanh(C)
        d_ifc_dc = torch.cat([Cand * I * (1 - I), C_prev * F * (1 - F), I * (1 - Cand * Cand)], dim=2)
        d_ifc_dc = d_ifc_dc.view(T, B, 3, H)  # pre-activations of I, F, C~ per unit of dL/dC
        do_dh = TC * O * (1 - O)  # pre-activation of O per unit of dL/dH
        dgates = torch.empty_like(G)  # gradient of the gate pre-activations
        W_hT = W_h.T
        dh = torch.zeros_like(h0)
        dc = dC_T.clone() if dC_T is not None else torch.zeros_like(c0)
        for t in reversed(range(T)):
            dh = dh + dY[t]
            dc = torch.addcmul(dc, dh, dc_dh[t])
            torch.mul(dc[:, None], d_ifc_dc[t], out=dgates[t, :, :3 * H].view(B, 3, H))
            torch.mul(dh, do_dh[t], out=dgates[t, :, 3 * H:])
            dc = dc * F[t]
            dh = dgates[t] @ W_hT
        dW_h = H_prev.flatten(0, 1).T @ dgates.flatten(0, 1)
        return dgates, dh, dc, dW_h


def lstm_layer(xg, h0, c0, W_h):
    """Outputs (T, B, H) and the final memory cell (B, H) of an LSTM layer."""
    if not _needs_graph(xg, h0, c0, W_h):
        return _LSTMLayer.forward(_NoCtx(), xg, h0, c0, W_h)
    return _LSTMLayer.apply(xg, h0, c0, W_h)


class _NoCtx:
    """Stands in for autograd's ctx when no graph is needed (inference): saves nothing."""

    def save_for_backward(self, *tensors):
        pass
