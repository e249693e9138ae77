"""Time loops of the scratch cells with hand-written backpropagation through time.

Each layer function takes the input projection of all T steps, already computed in one GEMM,
``xg`` (T, B, G*H) with the gates side by side, and runs only what must be sequential: one GEMM
per step for all gates' hidden projections, then the elementwise gate math. Autograd would record
a dozen small nodes per step; instead each loop is one ``autograd.Function`` whose backward walks
the steps in reverse and computes the weight gradient with one GEMM over all T steps at the end.
The formulas are d2l's (8.5, 9.1, 9.2); tests check them against torch's nn.RNN/GRU/LSTM and
``torch.autograd.gradcheck``.

The per-step GEMMs, ``H W_h`` forward and ``dG W_h^T`` backward, go through ``rnnstudio.packed_linear``:
``W_h`` is packed once per forward or backward call (it changes only between optimizer steps) and multiplied
on oneDNN, which on this AMD CPU runs float32 GEMMs at about twice MKL's rate (``torch.addmm``); other dtypes
and devices get ``addmm``. Its results are fresh tensors, so each step adds them to what ``addmm``'s ``beta``
term used to carry.
"""

from __future__ import annotations

import threading

import torch

from rnnstudio import matmul, packed_linear


def _needs_graph(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


_SCRATCH = threading.local()  # per thread: role -> a buffer that backward passes reuse


def _scratch(role: str, shape, like: torch.Tensor) -> torch.Tensor:
    """An uninitialised buffer for temporaries that live only inside one backward call, reused between calls.

    On CPU a fresh multi-MB tensor comes from a fresh mmap, and touching it costs a page fault per 4 KB
    (~2,000 a step for the LSTM's temporaries alone). Backward passes run one at a time on a thread, and
    nothing handed back to autograd comes from here, so reuse is safe. Other devices have caching allocators.
    A buffer stays allocated until a call needs another shape or its thread ends (LSTM, hidden 512, batch 32,
    35 steps: 15 MB)."""
    if like.device.type != "cpu":
        return like.new_empty(shape)
    bufs = _SCRATCH.__dict__.setdefault("bufs", {})
    buf = bufs.get(role)
    if buf is None or buf.shape != tuple(shape) or buf.dtype != like.dtype:
        buf = bufs[role] = like.new_empty(shape)
    return buf


def _times(W: torch.Tensor, rows: int, scale: float = 1.0):
    """``f(x) = x @ W * scale`` for (rows, in) inputs, with W (in, out) packed once (``packed_linear`` takes (out, in))."""
    return packed_linear(W.T * scale if scale != 1.0 else W.T, None, rows)


def _times_transposed(W: torch.Tensor, rows: int):
    """``f(x) = x @ W.T``, the backward GEMM, with W (in, out) packed once."""
    return packed_linear(W, None, rows)


def _states_buffer(h0: torch.Tensor, T: int) -> torch.Tensor:
    """(T + 1, B, H) with row 0 = h0: the time loop writes H_t into row t + 1, so rows 1.. are the outputs
    and rows ..T - 1 the previous states that the weight gradient needs, both without a copy."""
    buf = h0.new_empty(T + 1, *h0.shape)
    buf[0] = h0
    return buf


def _weight_grad(states: torch.Tensor, dG: torch.Tensor) -> torch.Tensor:
    """sum_t H_{t-1}^T dG_t over all steps in one GEMM; ``states`` is ``_states_buffer``'s (h0, H_1 .. H_T).

    On oneDNN, unpacked (``rnnstudio.matmul``): through ``packed_linear`` (one operand copied and packed for one
    use) a scratch layer's forward+backward ran 0.83-1.18x as fast, slower at hidden 256, while oneDNN's linear on
    the two strided views was faster everywhere (this GEMM alone 4.7 -> 2.7 ms at hidden 256, 25.8 -> 12.9 ms for
    the LSTM at 512)."""
    return matmul(states[:-1].flatten(0, 1).T, dG.flatten(0, 1))


# -- the input projection: X W_x + b for all T steps, hoisted out of the time loop ------------------

class _Projection(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W_x, b):  # (N, E), (E, G), (G,) -> (N, G)
        ctx.save_for_backward(x, W_x)
        return packed_linear(W_x.T, b, x.shape[0])(x)

    @staticmethod
    def backward(ctx, dy):
        x, W_x = ctx.saved_tensors
        dy = dy.contiguous()
        dx = _times_transposed(W_x, dy.shape[0])(dy) if ctx.needs_input_grad[0] else None
        dW = matmul(x.T, dy) if ctx.needs_input_grad[1] else None  # unpacked oneDNN, as in _weight_grad
        db = dy.sum(0) if ctx.needs_input_grad[2] else None
        return dx, dW, db


def project_inputs(x, W_x, b):
    """X W_x + b (N, G) for inputs (N, E), the forward GEMM and backward's dX on oneDNN (``packed_linear``).
    On this CPU a 1120 x 512 by 512 x 1536 projection, forward and backward, ran 1.4x faster than ``addmm``."""
    if not _needs_graph(x, W_x, b):
        return _Projection.forward(_NoCtx(), x, W_x, b)
    return _Projection.apply(x, W_x, b)


# -- RNN: H_t = tanh(xw_t + H_{t-1} W_hh) ------------------------------------------------
#
# tanh(a) is computed as 2 sigmoid(2a) - 1 (within 2e-7 of torch.tanh): on CPU torch's tanh costs about
# three of its sigmoids. The doubling rides along: W_hh is packed doubled, and xw_t is added with alpha = 2.

_MINUS_ONE = {}  # (dtype, device) -> a 0-d tensor -1 for torch.add(-1, s, alpha=2): 2 s - 1 in one op


def _minus_one(like: torch.Tensor) -> torch.Tensor:
    key = (like.dtype, like.device)
    if key not in _MINUS_ONE:
        with torch.inference_mode(False):
            _MINUS_ONE[key] = torch.tensor(-1.0, dtype=like.dtype, device=like.device)
    return _MINUS_ONE[key]


class _RNNLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xw, h0, W_hh):  # (T, B, H), (B, H), (H, H) -> Y (T, B, H)
        states = _states_buffer(h0, xw.shape[0])
        Y = states[1:]
        minus_one = _minus_one(xw)
        times_2W = _times(W_hh, h0.shape[0], scale=2.0)  # H -> 2 H W_hh
        h = h0
        for xw_t, y_t in zip(xw.unbind(0), Y.unbind(0)):  # step by step: xw_t is read while hot in cache
            s = torch.add(times_2W(h), xw_t, alpha=2, out=y_t).sigmoid_()  # sigmoid(2 (xw_t + H W_hh))
            h = torch.add(minus_one, s, alpha=2, out=y_t)  # = tanh(xw_t + H W_hh)
        ctx.save_for_backward(W_hh, states)
        return Y

    @staticmethod
    def backward(ctx, dY):
        W_hh, states = ctx.saved_tensors
        Y = states[1:]
        T = Y.shape[0]
        # dpre starts as the outputs' gradients; walking back, row t - 1 gains the recurrent gradient from
        # row t in place, and row t becomes the pre-activation's gradient (times tanh' = 1 - tanh^2).
        dpre = dY.clone(memory_format=torch.contiguous_format)
        dtanh = torch.mul(Y, Y, out=_scratch("rnn tanh'", Y.shape, Y)).neg_().add_(1)
        times_WT = _times_transposed(W_hh, Y.shape[1])
        dpres, dtanhs = dpre.unbind(0), dtanh.unbind(0)
        for t in range(T - 1, 0, -1):
            dpres[t - 1].add_(times_WT(dpres[t].mul_(dtanhs[t])))
        dpres[0].mul_(dtanhs[0])
        dh0 = times_WT(dpres[0]) if ctx.needs_input_grad[1] else None  # a carried-over state is detached in training
        dW_hh = _weight_grad(states, dpre)
        return dpre, dh0, dW_hh


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
        states = _states_buffer(h0, T)
        Y = states[1:]
        RZ, N, HN = xg.new_empty(T, B, 2 * H), xg.new_empty(T, B, H), xg.new_empty(T, B, H)
        times_W = _times(W_h, B)
        h = h0
        for t in range(T):  # results go straight into the buffers that backward reads
            hg = times_W(h)  # (B, 3H): all gates' hidden projections in one GEMM
            rz = torch.add(xg[t, :, :2 * H], hg[:, :2 * H], out=RZ[t]).sigmoid_()  # R and Z
            r, z = rz[:, :H], rz[:, H:]
            hn = torch.add(hg[:, 2 * H:], b_hn, out=HN[t])  # H W_hh + b_hn
            n = torch.addcmul(xg[t, :, 2 * H:], r, hn, out=N[t]).tanh_()  # candidate H~
            h = torch.addcmul(n, z, h - n, out=Y[t])  # Z H + (1 - Z) H~
        ctx.save_for_backward(W_h, states, RZ, N, HN)
        return Y

    @staticmethod
    def backward(ctx, dY):
        W_h, states, RZ, N, HN = ctx.saved_tensors
        h0, Y, H_prev = states[0], states[1:], states[:-1]  # H_prev: (T, B, H)
        T, B, H = Y.shape
        R, Z = RZ[..., :H], RZ[..., H:]
        # Local derivatives depend only on forward values: compute them for all steps at once, in place in
        # reused buffers (a fresh one costs a page fault per 4 KB). H' = Z H + (1 - Z) H~ and H~ = tanh(a + R hn),
        # so with g = dL/dH', u (1 - u) as u - u u:
        dn_dh = torch.mul(N, N, out=_scratch("gru dn", N.shape, N)).neg_().add_(1)  # 1 - H~^2 ...
        dn_dh.addcmul_(dn_dh, Z, value=-1)  # ... times (1 - Z): the candidate pre-activation's g (1 - Z) (1 - H~^2)
        dr_dn = torch.mul(HN, R, out=_scratch("gru dr", N.shape, N))
        dr_dn.addcmul_(dr_dn, R, value=-1)  # the reset pre-activation's: (candidate grad) hn σ'(R)
        dz_dh = torch.sub(H_prev, N, out=_scratch("gru dz", N.shape, N)).mul_(Z)
        dz_dh.addcmul_(dz_dh, Z, value=-1)  # the update pre-activation's: g (H - H~) σ'(Z)
        # The input side's gradient is (dR, dZ, dN); the hidden side's, dHG, is (dR, dZ, dN R): the reset gate
        # acts on H W_hh + b_hn only. Each step writes dR and dZ into the returned gradient and copies them into
        # dHG while they are in cache (a torch.cat after the loop read and wrote the whole (T, B, 3H) again).
        dxg = torch.empty(T, B, 3 * H, dtype=Y.dtype, device=Y.device)
        dHG = _scratch("gru dhg", (T, B, 3 * H), Y)
        times_WT = _times_transposed(W_h, B)
        dYs, dxgs, dHGs = dY.unbind(0), dxg.unbind(0), dHG.unbind(0)
        dn_dhs, dr_dns, dz_dhs, Rs, Zs = (a.unbind(0) for a in (dn_dh, dr_dn, dz_dh, R, Z))
        dh = None
        for t in range(T - 1, -1, -1):
            dh = dYs[t] if dh is None else dh.add_(dYs[t])
            g, hg = dxgs[t], dHGs[t]
            dn = torch.mul(dh, dn_dhs[t], out=g[:, 2 * H:])
            torch.mul(dn, dr_dns[t], out=g[:, :H])
            torch.mul(dh, dz_dhs[t], out=g[:, H:2 * H])
            hg[:, :2 * H].copy_(g[:, :2 * H])
            torch.mul(dn, Rs[t], out=hg[:, 2 * H:])  # through R ⊙ (H W_hh + b_hn)
            if t or ctx.needs_input_grad[1]:  # dh0: skipped when h0 is detached (training carries detached states)
                dh = times_WT(hg).addcmul_(dh, Zs[t])
            else:
                dh = None
        dW_h = _weight_grad(states, dHG)
        db_hn = dHG[..., 2 * H:].sum((0, 1))
        return dxg, dh, dW_h, db_hn


def gru_layer(xg, h0, W_h, b_hn):
    """Outputs (T, B, H) of a GRU layer; the final state is the last row."""
    if not _needs_graph(xg, h0, W_h, b_hn):
        return _GRULayer.forward(_NoCtx(), xg, h0, W_h, b_hn)
    return _GRULayer.apply(xg, h0, W_h, b_hn)


# -- LSTM (d2l 9.2) ----------------------------------------------------------------------
#
# Layout of the gate blocks: i, f, o, c (torch's order is i, f, c, o), with the candidate block's
# pre-activation doubled by the caller (its weights and bias times 2). Then one sigmoid covers all four
# blocks and C~ = tanh(a) = 2 sigmoid(2a) - 1: on CPU torch's tanh costs about three of its sigmoids.

class _LSTMLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xg, h0, c0, W_h):  # (T, B, 4H), (B, H), (B, H), (H, 4H) -> Y (T, B, H), C_T (B, H)
        T, B, H = xg.shape[0], xg.shape[1], h0.shape[1]
        S = xg.new_empty(T, B, 4 * H)  # sigmoid of the gates' pre-activations: I, F, O and (C~ + 1) / 2
        states = _states_buffer(h0, T)
        Y = states[1:]  # outputs
        C, TC, CC = (xg.new_empty(T, B, H) for _ in range(3))  # memory cells, tanh(C), C~
        # per-step views made once: indexing in the loop would cost more than the elementwise math
        xs, Ss, Ys, Cs, TCs, CCs = (a.unbind(0) for a in (xg, S, Y, C, TC, CC))
        Is, Fs, Os, SCs = (block.unbind(0) for block in S.split(H, dim=2))
        minus_one = _minus_one(xg)
        times_W = _times(W_h, B)
        h, c = h0, c0
        for t in range(T):
            torch.add(times_W(h), xs[t], out=Ss[t]).sigmoid_()  # all gates: one GEMM, one sigmoid
            cand = torch.add(minus_one, SCs[t], alpha=2, out=CCs[t])  # C~ = 2 sigmoid(2a) - 1 = tanh(a)
            c = torch.mul(Fs[t], c, out=Cs[t]).addcmul_(Is[t], cand)  # C = F C + I C~
            tc = torch.mul(c, 2, out=TCs[t]).sigmoid_()
            tc = torch.add(minus_one, tc, alpha=2, out=TCs[t])  # tanh(C), the same way
            h = torch.mul(Os[t], tc, out=Ys[t])  # H = O tanh(C)
        ctx.save_for_backward(c0, W_h, states, S, C, TC, CC)
        return Y, C[-1].clone()

    @staticmethod
    def backward(ctx, dY, dC_T):
        c0, W_h, states, S, C, TC, CC = ctx.saved_tensors
        T, B, H = C.shape
        # Local derivatives depend only on forward values: compute them for all steps at once, in place.
        # K: d(pre-activation)/dC for I, F and C~ (doubled: the caller doubled that block's input), and
        # d(pre-activation)/dH for O.
        K = torch.sub(1, S, out=_scratch("lstm K", S.shape, S)).mul_(S)  # sigmoid' of every block
        Ki, Kf, Ko, Kc = K.split(H, dim=2)
        Ki.mul_(CC)  # C = F C + I C~
        Kf[0].mul_(c0)
        Kf[1:].mul_(C[:-1])
        Ko.mul_(TC)  # H = O tanh(C)
        Kc.mul_(S[..., :H]).mul_(2)
        Dc = torch.mul(TC, TC, out=_scratch("lstm Dc", TC.shape, TC))  # dC/dH: O (1 - tanh(C)^2)
        Dc.neg_().add_(1).mul_(S[..., 2 * H:3 * H])
        dG = torch.empty_like(S)  # gradient of the gate pre-activations
        times_WT = _times_transposed(W_h, B)
        dYs, Dcs, Kos, dGs = dY.unbind(0), Dc.unbind(0), Ko.unbind(0), dG.unbind(0)
        K4s, dG4s = K.view(T, B, 4, H).unbind(0), dG.view(T, B, 4, H).unbind(0)
        Fs = S[..., H:2 * H].unbind(0)
        dh = dY[-1]
        dc = dC_T.clone() if dC_T is not None else torch.zeros_like(c0)
        for t in range(T - 1, -1, -1):
            dc = torch.addcmul(dc, dh, Dcs[t])
            torch.mul(dc[:, None], K4s[t], out=dG4s[t])  # I, F and C~ (the O block is overwritten next)
            torch.mul(dh, Kos[t], out=dG4s[t][:, 2])
            dc.mul_(Fs[t])
            if t:
                dh = times_WT(dGs[t]).add_(dYs[t - 1])  # + the output's gradient
            else:  # dh0: skipped when h0 is detached (training carries detached states)
                dh = times_WT(dGs[0]) if ctx.needs_input_grad[1] else None
        dW_h = _weight_grad(states, dG)
        return dG, dh, dc, dW_h


def lstm_layer(xg, h0, c0, W_h):
    """Outputs (T, B, H) and the final memory cell (B, H) of an LSTM layer. ``xg`` and ``W_h`` hold the
    gate blocks in the order i, f, o, c with the candidate (c) block doubled (see above)."""
    if not _needs_graph(xg, h0, c0, W_h):
        return _LSTMLayer.forward(_NoCtx(), xg, h0, c0, W_h)
    return _LSTMLayer.apply(xg, h0, c0, W_h)


class _NoCtx:
    """Stands in for autograd's ctx when no graph is needed (inference): saves nothing."""

    def save_for_backward(self, *tensors):
        pass
