"""The code an RNN Studio user would otherwise write: d2l's scratch loop and raw PyTorch loops, for bench.py."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sequential_batches(ids: torch.Tensor, batch_size: int, num_steps: int, offset: int = 0):
    """d2l 8.3 seq_data_iter_sequential without the random offset: endless (X, Y) int64 (B, T) batches."""
    n = (len(ids) - offset - 1) // batch_size * batch_size
    xs = ids[offset: offset + n].view(batch_size, -1)
    ys = ids[offset + 1: offset + 1 + n].view(batch_size, -1)
    per_row = xs.shape[1] // num_steps
    while True:
        for i in range(per_row):
            cols = slice(i * num_steps, (i + 1) * num_steps)
            yield xs[:, cols].long(), ys[:, cols].long()


# -- d2l 8.5: RNN from scratch ----------------------------------------------------------------

class D2LScratchLoop:
    """d2l 8.5 verbatim in spirit: one-hot inputs, separate matmuls per step, grad_clipping, d2l.sgd."""

    name = "d2l scratch loop"

    def __init__(self, ids, vocab_size, hidden_size=512, batch_size=32, num_steps=35, lr=1.0, seed=0):
        torch.manual_seed(seed)
        self.V, self.H, self.lr = vocab_size, hidden_size, lr
        normal = lambda *shape: torch.randn(*shape) * 0.01  # noqa: E731
        self.params = [normal(vocab_size, hidden_size), normal(hidden_size, hidden_size), torch.zeros(hidden_size),
                       normal(hidden_size, vocab_size), torch.zeros(vocab_size)]
        for p in self.params:
            p.requires_grad_(True)
        self.batches = sequential_batches(ids, batch_size, num_steps)
        self.state = None

    def rnn(self, inputs, state):  # d2l's rnn(): inputs (T, B, V)
        W_xh, W_hh, b_h, W_hq, b_q = self.params
        (H,) = state
        outputs = []
        for X in inputs:
            H = torch.tanh(torch.mm(X, W_xh) + torch.mm(H, W_hh) + b_h)
            Y = torch.mm(H, W_hq) + b_q
            outputs.append(Y)
        return torch.cat(outputs, dim=0), (H,)

    def grad_clipping(self, theta):  # d2l 8.5
        norm = torch.sqrt(sum(torch.sum((p.grad ** 2)) for p in self.params))
        if norm > theta:
            for p in self.params:
                p.grad[:] *= theta / norm

    def step(self) -> int:
        X, Y = next(self.batches)
        if self.state is None:
            self.state = (torch.zeros(X.shape[0], self.H),)
        else:
            self.state = tuple(s.detach_() for s in self.state)
        y = Y.T.reshape(-1)
        y_hat, self.state = self.rnn(F.one_hot(X.T, self.V).type(torch.float32), self.state)
        loss = F.cross_entropy(y_hat, y).mean()
        for p in self.params:
            if p.grad is not None:
                p.grad.zero_()
        loss.backward()
        self.grad_clipping(1)
        with torch.no_grad():  # d2l.sgd with batch_size=1 (the loss is already a mean)
            for p in self.params:
                p -= self.lr * p.grad
        self.last_loss = loss.item()  # d2l's Accumulator reads the loss every step
        return X.numel()


# -- raw PyTorch loops around nn.RNN / nn.GRU / nn.LSTM --------------------------------------

TORCH_RNNS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


class RawTorchLoop:
    """A plain loop around a fused torch layer + Linear head, one-hot inputs, SGD and clip_grad_norm_."""

    def __init__(self, kind, ids, vocab_size, hidden_size=512, batch_size=32, num_steps=35, lr=1.0, seed=0):
        torch.manual_seed(seed)
        self.name = f"raw nn.{TORCH_RNNS[kind].__name__}"
        self.kind, self.V = kind, vocab_size
        self.rnn = TORCH_RNNS[kind](vocab_size, hidden_size)
        self.head = nn.Linear(hidden_size, vocab_size)
        self.params = list(self.rnn.parameters()) + list(self.head.parameters())
        self.opt = torch.optim.SGD(self.params, lr=lr)
        self.batches = sequential_batches(ids, batch_size, num_steps)
        self.state = None

    def step(self) -> int:
        X, Y = next(self.batches)
        if self.state is not None:
            self.state = tuple(s.detach() for s in self.state) if isinstance(self.state, tuple) else self.state.detach()
        out, self.state = self.rnn(F.one_hot(X.T, self.V).float(), self.state)  # (T, B, H)
        logits = self.head(out.reshape(-1, out.shape[-1]))
        loss = F.cross_entropy(logits, Y.T.reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.last_loss = loss.item()  # every loop prints or logs its loss
        return X.numel()


class RawTorchLoopATen(RawTorchLoop):
    """The same loop with oneDNN switched off around each step: nn.LSTM then runs ATen's own kernels on torch.mm
    (MKL), the path that nn.GRU, nn.RNN and the scratch cells always take. With oneDNN on, a float32 nn.LSTM
    trains through oneDNN's fused RNN primitive, whose GEMMs can be much faster than MKL's (see onednn_runs_lstm)."""

    def __init__(self, kind, *args, **kw):
        super().__init__(kind, *args, **kw)
        self.name += " (oneDNN off)"

    def step(self) -> int:
        was = torch.backends.mkldnn.enabled
        torch.backends.mkldnn.enabled = False
        try:
            return super().step()
        finally:
            torch.backends.mkldnn.enabled = was


def onednn_runs_lstm() -> bool:
    """Whether nn.LSTM's training forward goes through oneDNN here (its graph node says so)."""
    lstm = nn.LSTM(4, 8)
    out, _ = lstm(torch.zeros(3, 2, 4))
    return out.grad_fn is not None and "Mkldnn" in out.grad_fn.name()


# -- the ceiling for a scratch RNN -----------------------------------------------------------

class RNNGemmFloor:
    """Only the GEMMs that d2l's RNN training step cannot do without, at this machine's BLAS rates: per step
    H_{t-1} W_hh forward and dH_t W_hh^T backward (each (B, H) x (H, H), one after the other), and the
    weight gradient sum_t H_{t-1}^T dA_t as one GEMM over all steps. No elementwise math, input, head or
    optimizer. Its tokens/s bounds any float32 implementation of the same math on torch's BLAS: the
    d2l loop runs these GEMMs too (with the weight gradient split into T thin GEMMs)."""

    name = "rnn GEMM floor"

    def __init__(self, hidden_size=512, batch_size=32, num_steps=35, seed=0):
        gen = torch.Generator().manual_seed(seed)
        H, B, T = hidden_size, batch_size, num_steps
        self.W = torch.randn(H, H, generator=gen) * 0.01
        self.W_T = self.W.T.contiguous()
        self.Y = torch.randn(T, B, H, generator=gen)
        self.dA = torch.randn(T, B, H, generator=gen)
        self.bufs = (torch.empty(B, H), torch.empty(B, H))  # written in turn: a GEMM never reads its own output

    def step(self) -> int:
        h = self.Y[0]
        for t, y_t in enumerate(self.Y.unbind(0)):
            h = torch.addmm(y_t, h, self.W, out=self.bufs[t % 2])
        for t, d_t in enumerate(self.dA.unbind(0)):
            torch.addmm(d_t, d_t, self.W_T, out=self.bufs[t % 2])
        self.Y.flatten(0, 1).T @ self.dA.flatten(0, 1)
        return self.Y.shape[0] * self.Y.shape[1]


class RNNGemmFloorOneDNN(RNNGemmFloor):
    """The same GEMMs on oneDNN's matmul (the library nn.LSTM's fused primitive runs on), operands kept in
    oneDNN's own format so no step pays a conversion; the per-step addition is left out too. Where MKL does not
    use this CPU's AVX-512 (AMD), the MKL floor is about half this one: what the d2l loop, on torch.mm, leaves on
    the table. The scratch cells run their per-step GEMMs on oneDNN (``rnnstudio.packed_linear``), so this is
    the floor they are measured against."""

    name = "rnn GEMM floor (oneDNN)"

    def __init__(self, hidden_size=512, batch_size=32, num_steps=35, seed=0):
        super().__init__(hidden_size, batch_size, num_steps, seed)
        self.W_m, self.W_T_m = self.W_T.to_mkldnn(), self.W.to_mkldnn()  # mkldnn_linear(x, w) = x @ w.T
        self.Y_m = [y.to_mkldnn() for y in self.Y.unbind(0)]
        self.dA_m = [d.to_mkldnn() for d in self.dA.unbind(0)]
        self.YT_m = self.Y.flatten(0, 1).T.contiguous().to_mkldnn()  # (H, T*B)
        self.dAT_m = self.dA.flatten(0, 1).T.contiguous().to_mkldnn()

    def step(self) -> int:
        linear = torch._C._nn.mkldnn_linear
        h = self.Y_m[0]
        for _ in self.Y_m:
            h = linear(h, self.W_m, None)
        for d_t in self.dA_m:
            linear(d_t, self.W_T_m, None)
        linear(self.YT_m, self.dAT_m, None)  # sum_t H_{t-1}^T dA_t
        return self.Y.shape[0] * self.Y.shape[1]


# -- raw per-step generation loops ------------------------------------------------------------

TORCH_CELLS = {"rnn": nn.RNNCell, "gru": nn.GRUCell, "lstm": nn.LSTMCell}


class RawGenerationLoop:
    """d2l predict_ch8 written directly on nn.RNNCell/GRUCell/LSTMCell: warm up on the prefix once, then one step a token."""

    def __init__(self, kind, vocab_size, hidden_size=512, seed=0):
        torch.manual_seed(seed)
        self.name = f"raw nn.{TORCH_CELLS[kind].__name__}"
        self.kind, self.V, self.H = kind, vocab_size, hidden_size
        self.cell = TORCH_CELLS[kind](vocab_size, hidden_size)
        self.head = nn.Linear(hidden_size, vocab_size)

    @torch.no_grad()
    def generate(self, prefix_ids: list[int], length: int, greedy: bool = True, seed: int = 0,
                 on_first=None) -> list[int]:
        gen = torch.Generator().manual_seed(seed)
        eye = torch.eye(self.V)  # one-hot rows
        h = torch.zeros(1, self.H)
        state = (h, h.clone()) if self.kind == "lstm" else h
        for i in prefix_ids:
            state = self.cell(eye[i: i + 1], state)
        out = []
        for _ in range(length):
            hidden = state[0] if self.kind == "lstm" else state
            logits = self.head(hidden)  # (1, V)
            if greedy:
                tok = int(logits.argmax(dim=-1))
            else:
                tok = int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen))
            out.append(tok)
            if on_first is not None and len(out) == 1:
                on_first()
            state = self.cell(eye[tok: tok + 1], state)
        return out


def gemm_flops(n: int = 2048, repeats: int = 5, clock=None, library: str = "blas") -> float | None:
    """FLOP/s of a large float32 GEMM (n x n @ n x n), the best of ``repeats`` timed with ``clock``.

    ``library`` "blas" is torch.mm (MKL here: what nn.RNN and nn.GRU run on); "onednn" is oneDNN's matmul (what
    nn.LSTM's fused primitive and the scratch cells' per-step GEMMs run on), None where torch has no oneDNN. On a CPU that MKL
    does not dispatch its AVX-512 kernels for (AMD), the two differ by 2-3x."""
    import time

    clock = clock or time.perf_counter
    a, b = torch.randn(n, n), torch.randn(n, n)
    if library == "onednn":
        if not torch.backends.mkldnn.is_available():
            return None
        a, b = a.to_mkldnn(), b.T.contiguous().to_mkldnn()  # mkldnn_linear computes a @ b.T

        def mm():
            torch._C._nn.mkldnn_linear(a, b, None)
    else:
        def mm():
            torch.mm(a, b)
    mm()  # warm-up
    best = math.inf
    for _ in range(repeats):
        t0 = clock()
        mm()
        best = min(best, clock() - t0)
    return 2 * n ** 3 / best
