"""Built-in recurrent cells: d2l's RNN written from scratch, and torch's fused GRU."""

from __future__ import annotations

import torch
from torch import nn

import rnnstudio
from rnnstudio import Cell, Param


class ScratchRNN(Cell):
    """d2l 8.5: H_t = tanh(X_t W_xh + H_{t-1} W_hh + b_h), with explicit parameters per layer."""

    name = "rnn-scratch"
    description = "d2l 8.5's RNN from scratch: explicit W_xh, W_hh, b_h and tanh."
    params = (
        Param("init_std", "float", 0.01, min=0.0, help="Std of the normal init of the weights (d2l uses 0.01)."),
    )

    def __init__(self, input_size, hidden_size, num_layers=1, dropout=0.0, **options):
        super().__init__(input_size, hidden_size, num_layers, dropout, **options)
        std = self.options["init_std"]
        self.W_xh = nn.ParameterList()
        self.W_hh = nn.ParameterList()
        self.b_h = nn.ParameterList()
        for layer in range(num_layers):
            n_in = input_size if layer == 0 else hidden_size
            self.W_xh.append(nn.Parameter(torch.randn(n_in, hidden_size) * std))
            self.W_hh.append(nn.Parameter(torch.randn(hidden_size, hidden_size) * std))
            self.b_h.append(nn.Parameter(torch.zeros(hidden_size)))
        self.drop = nn.Dropout(dropout)

    def forward(self, inputs, state):  # (T, B, E), (L, B, H) -> (T, B, H), (L, B, H)
        x = inputs
        finals = []
        for layer in range(self.num_layers):
            if layer:
                x = self.drop(x)
            # Hoisted out of the time loop: one GEMM for X W_xh + b_h over all T steps. (T, B, H)
            xw = torch.addmm(self.b_h[layer], x.reshape(-1, x.shape[-1]), self.W_xh[layer]).view(x.shape[0], x.shape[1], -1)
            h = state[layer]
            W_hh = self.W_hh[layer]
            outs = []
            for t in range(x.shape[0]):
                h = torch.tanh(torch.addmm(xw[t], h, W_hh))
                outs.append(h)
            x = torch.stack(outs)
            finals.append(h)
        return x, torch.stack(finals)


class GRU(Cell):
    name = "gru"
    description = "torch.nn.GRU: the fused gated recurrent unit (d2l 9.1)."
    params = ()

    def __init__(self, input_size, hidden_size, num_layers=1, dropout=0.0, **options):
        super().__init__(input_size, hidden_size, num_layers, dropout, **options)
        self.rnn = nn.GRU(input_size, hidden_size, num_layers, dropout=dropout if num_layers > 1 else 0.0)

    def forward(self, inputs, state):
        return self.rnn(inputs, state)


@rnnstudio.hookimpl
def register_cells(register):
    register(ScratchRNN)
    register(GRU)
