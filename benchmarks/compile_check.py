"""Does torch.compile pay for the scratch cells' time loop? (bench.py item 1 asks to try it.)

    python benchmarks/compile_check.py      # ~1-2 minutes, most of it compiling; needs a C++ compiler

Compiles a d2l-style LSTM layer (per-step GEMM and gate math, recorded by autograd) with
torch.compile and times forward + backward (hidden 512, batch 32, 35 steps, one thread, thread CPU
time) against the same code eager and against the hand-written BPTT the lstm-scratch cell uses.
"""
import statistics
import time

import torch

from rnnstudio.builtin_plugins import fast_recurrence as fr

torch.set_num_threads(1)
T, B, H = 35, 32, 512

def d2l_lstm(xg, h, c, W_h):  # gates i, f, c~, o (torch's order), autograd records every op
    ys = []
    for t in range(xg.shape[0]):
        g = xg[t] + h @ W_h
        i, f, cand, o = g.chunk(4, dim=1)
        i, f, o = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o)
        c = f * c + i * torch.tanh(cand)
        h = o * torch.tanh(c)
        ys.append(h)
    return torch.stack(ys)


def main() -> None:
    torch.manual_seed(0)
    xg = torch.randn(T, B, 4 * H, requires_grad=True)
    W = (torch.randn(H, 4 * H) * 0.01).requires_grad_()
    h0, c0 = torch.zeros(B, H), torch.zeros(B, H)
    w_out = torch.randn(T, B, H)

    def run(fn):
        Y = fn(xg, h0, c0, W)
        if isinstance(Y, tuple):
            Y = Y[0]
        (Y * w_out).sum().backward()

    compiled = torch.compile(d2l_lstm)
    t0 = time.perf_counter()
    run(compiled)
    print(f"compile + first call: {time.perf_counter() - t0:.1f} s", flush=True)
    fns = {"eager d2l": lambda: run(d2l_lstm), "compiled d2l": lambda: run(compiled),
           "hand BPTT": lambda: run(fr.lstm_layer)}
    res = {k: [] for k in fns}
    for _ in range(12):
        for k, f in fns.items():
            t = time.thread_time()
            f()
            res[k].append(time.thread_time() - t)
    for k, v in res.items():
        print(f"{k:14s} best {min(v)*1e3:6.1f} ms  median {statistics.median(v)*1e3:6.1f} ms", flush=True)


if __name__ == "__main__":
    main()
