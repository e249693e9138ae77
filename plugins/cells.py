"""Built-in recurrent cells: d2l's RNN, GRU and LSTM written from scratch, and torch's fused nn.RNN/GRU/LSTM.

The scratch cells keep d2l's explicit parameters (``W_xh``, ``W_hr``, ``b_f``, ...) so the code reads like
the book. For speed they stack a layer's gate weights at call time and run the time loop in
``fast_recurrence`` (hand-written BPTT), and each can copy the weights of its torch counterpart
(``load_from_torch``), which is how the tests prove that both compute the same thing.

Every cell also has ``step(x, state)`` for generation, one token at a time: torch's one-step kernels
(``torch.rnn_tanh_cell``/``gru_cell``/``lstm_cell``) on the layer weights, with the scratch cells'
stacked weights cached between tokens (rebuilding them cost more than the step itself).
"""

from __future__ import annotations

import torch
from torch import nn

import rnnstudio
from rnnstudio import Cell, Param, dropout

from .fast_recurrence import gru_layer, lstm_layer, project_inputs, rnn_layer
from .fused_inference import run_layers

INIT_STD = Param("init_std", "float", 0.01, min=0.0, help="Std of the normal init of the weights (d2l uses 0.01).")


class _ScratchCell(Cell):
    """Shared plumbing: explicit per-layer parameters named ``{W_xr, W_hr, b_r, ...}[layer]``."""

    gates: tuple[str, ...] = ()  # one letter per gate, in torch's order
    loop_gates: tuple[str, ...] = ()  # the order ``forward``'s time loop stacks them in (empty: ``gates``)
    loop_doubled: str = ""  # a gate whose block the time loop wants doubled (its tanh comes from a sigmoid)
    params = (INIT_STD,)

    def __init__(self, input_size, hidden_size, num_layers=1, dropout=0.0, **options):
        super().__init__(input_size, hidden_size, num_layers, dropout, **options)
        std = self.options["init_std"]
        for g in self.gates:
            setattr(self, f"W_x{g}", nn.ParameterList())
            setattr(self, f"W_h{g}", nn.ParameterList())
            setattr(self, f"b_{g}", nn.ParameterList())
        for layer in range(num_layers):
            n_in = input_size if layer == 0 else hidden_size
            for g in self.gates:
                getattr(self, f"W_x{g}").append(nn.Parameter(torch.randn(n_in, hidden_size) * std))
                getattr(self, f"W_h{g}").append(nn.Parameter(torch.randn(hidden_size, hidden_size) * std))
                getattr(self, f"b_{g}").append(nn.Parameter(torch.zeros(hidden_size)))
        self._step_cache = None  # (state it returned, weights key, weights): see _step_weights
        self._key_params = None  # the parameters that key is made of

    def stacked(self, layer: int):
        """A layer's gate weights side by side, as ``forward``'s time loop takes them: W_x (E, G*H),
        W_h (H, G*H), b (G*H,). Built per call: one copy per sequence, small next to the time loop."""
        return self._loop_layout(layer)

    def _loop_layout(self, layer: int):
        return self._cat_gates(layer, self.loop_gates or self.gates, self.loop_doubled)

    def _cat_gates(self, layer: int, order: tuple[str, ...], doubled: str = ""):
        """W_x (E, G*H), W_h (H, G*H), b (G*H,) with the gate blocks in ``order``, the ``doubled`` one times 2."""
        def blocks(kind):
            return [getattr(self, f"{kind}{g}")[layer] * 2 if g == doubled else getattr(self, f"{kind}{g}")[layer]
                    for g in order]

        if len(order) == 1 and not doubled:  # the RNN: its parameters as they are (a one-tensor cat would copy)
            return tuple(blocks(kind)[0] for kind in ("W_x", "W_h", "b_"))
        return torch.cat(blocks("W_x"), dim=1), torch.cat(blocks("W_h"), dim=1), torch.cat(blocks("b_"))

    def step(self, x, state):  # (N, E), state -> top layer's (N, H), new state
        """One time step for generation, on torch's fused one-step kernels (same formulas as ``forward``)."""
        weights = self._step_weights(state)
        h, new_state = _step_layers(self._step_fn, weights, x, state, self._step_dropout())
        if self._step_cache is not None and self._step_cache[2] is weights:
            self._step_cache = (new_state, *self._step_cache[1:])  # the next token may reuse them
        return h, new_state

    def _step_dropout(self):
        return (lambda t: dropout(t, self.dropout)) if self.training and self.dropout > 0 else None

    def _step_weights(self, state) -> list:
        """w_ih (G*H, E), w_hh (G*H, H), b_ih, b_hh per layer, flat, in torch's layout (a ~3 MB copy, which
        costs more than a step). Without autograd they are reused only while a generation feeds back the
        state the previous step returned and no parameter changed storage or version. No cheap key sees a
        change made through ``param.data`` or a replaced parameter, so a reuse never outlives one stream of
        tokens: any other call rebuilds them."""
        build = lambda: [w for layer in range(self.num_layers) for w in self._torch_layout(layer)]  # noqa: E731
        if torch.is_grad_enabled():
            self._step_cache = None
            return build()
        key = self._weights_key()
        hit = self._step_cache
        if hit is None or hit[0] is not state or hit[1] != key:
            with torch.inference_mode(False), torch.no_grad():  # normal tensors, even when built during generation
                hit = self._step_cache = (None, key, build())
        return hit[2]

    def _weights_key(self) -> list[tuple[int, int]]:
        # A parameter's storage moves with .to() and its version counts in-place updates (optimizer steps,
        # load_state_dict). The parameter objects are listed once: walking the ParameterLists costs ~1 us each.
        if self._key_params is None:
            self._key_params = [p for name in self._list_names() for p in getattr(self, name)]
        return [(p.data_ptr(), p._version) for p in self._key_params]

    def _list_names(self) -> tuple[str, ...]:
        return tuple(f"{kind}{g}" for g in self.gates for kind in ("W_x", "W_h", "b_"))

    def _torch_layout(self, layer: int) -> tuple:
        W_x, W_h, b = self._cat_gates(layer, self.gates)
        return W_x.T.contiguous(), W_h.T.contiguous(), b, None

    def input_projection(self, x: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Hoisted out of the time loop: X W_x + b for all T steps in one GEMM. (T, B, G*H), and W_h.
        ``x`` may also be token ids (T, B) for layer 0 (``forward_tokens``): X is then one-hot, and
        X W_x is the ids' rows of W_x, gathered (a third of the one-hot GEMM's time, forward and backward)."""
        W_x, W_h, b = self.stacked(layer)
        if not x.is_floating_point():
            return nn.functional.embedding(x, W_x + b), W_h  # X W_x + b = rows of (W_x + b): a (V, G*H) add, not (T, B, G*H)
        if layer:
            x = dropout(x, self.dropout, self.training)
        T, B = x.shape[:2]
        return project_inputs(x.reshape(T * B, -1), W_x, b).view(T, B, -1), W_h

    def forward_tokens(self, idx: torch.Tensor, state):  # (T, B) ids, state -> (T, B, H), state
        """``forward`` on one-hot inputs, given as token ids: what the model calls when it has no embedding."""
        if idx.is_floating_point():
            raise TypeError("forward_tokens takes integer token ids (T, B)")
        return self.forward(idx, state)

    @torch.no_grad()
    def _copy_torch_weights(self, module: nn.RNNBase, order: tuple[str, ...]) -> None:
        """Copy nn.RNN/GRU/LSTM weights; ``order`` names torch's gate blocks with our gate letters."""
        if (module.input_size, module.hidden_size, module.num_layers) != (self.input_size, self.hidden_size,
                                                                         self.num_layers):
            raise ValueError("the torch module's input size, hidden size and layer count must match this cell's")
        if module.bidirectional or not module.bias or getattr(module, "proj_size", 0):
            raise ValueError("only unidirectional torch modules with biases and no projection can be loaded")
        H = self.hidden_size
        for layer in range(self.num_layers):
            w_ih = getattr(module, f"weight_ih_l{layer}")  # (G*H, E), torch computes x @ w_ih.T
            w_hh = getattr(module, f"weight_hh_l{layer}")
            bias = getattr(module, f"bias_ih_l{layer}") + getattr(module, f"bias_hh_l{layer}")
            for k, g in enumerate(order):
                rows = slice(k * H, (k + 1) * H)
                getattr(self, f"W_x{g}")[layer].copy_(w_ih[rows].T)
                getattr(self, f"W_h{g}")[layer].copy_(w_hh[rows].T)
                getattr(self, f"b_{g}")[layer].copy_(bias[rows])


class ScratchRNN(_ScratchCell):
    """d2l 8.5: H_t = tanh(X_t W_xh + H_{t-1} W_hh + b_h), with explicit parameters per layer."""

    name = "rnn-scratch"
    description = "d2l 8.5's RNN from scratch: explicit W_xh, W_hh, b_h and tanh."
    gates = ("h",)
    _step_fn = staticmethod(torch.rnn_tanh_cell)

    def forward(self, inputs, state):  # (T, B, E), (L, B, H) -> (T, B, H), (L, B, H)
        x, finals = inputs, []
        for layer in range(self.num_layers):
            xw, W_hh = self.input_projection(x, layer)  # X W_xh + b_h: (T, B, H)
            x = rnn_layer(xw, state[layer], W_hh)  # H_t = tanh(xw_t + H_{t-1} W_hh)
            finals.append(x[-1])
        return x, torch.stack(finals)

    def load_from_torch(self, module: nn.RNN) -> None:
        """Copy an ``nn.RNN`` (tanh) with the same sizes; its two biases add up to b_h."""
        if module.nonlinearity != "tanh":
            raise ValueError("only a tanh nn.RNN matches rnn-scratch")
        self._copy_torch_weights(module, ("h",))


class ScratchGRU(_ScratchCell):
    """d2l 9.1's gated recurrent unit with explicit reset (r), update (z) and candidate (h) parameters.

    R = σ(X W_xr + H W_hr + b_r), Z = σ(X W_xz + H W_hz + b_z),
    H~ = tanh(X W_xh + R ⊙ (H W_hh + b_hn) + b_h), H' = Z ⊙ H + (1 - Z) ⊙ H~.
    ``b_hn`` (zero in d2l) sits inside the reset product as in torch, so torch's weights load exactly.
    """

    name = "gru-scratch"
    description = "d2l 9.1's GRU from scratch: reset and update gates, candidate state, explicit weights."
    gates = ("r", "z", "h")

    def __init__(self, input_size, hidden_size, num_layers=1, dropout=0.0, **options):
        super().__init__(input_size, hidden_size, num_layers, dropout, **options)
        self.b_hn = nn.ParameterList(nn.Parameter(torch.zeros(hidden_size)) for _ in range(num_layers))

    _step_fn = staticmethod(torch.gru_cell)

    def _list_names(self) -> tuple[str, ...]:
        return (*super()._list_names(), "b_hn")

    def _torch_layout(self, layer: int) -> tuple:
        w_ih, w_hh, b, _ = super()._torch_layout(layer)
        b_hh = torch.cat([torch.zeros_like(b[:2 * self.hidden_size]), self.b_hn[layer]])  # b_hn inside the reset product
        return w_ih, w_hh, b, b_hh

    def forward(self, inputs, state):  # (T, B, E), (L, B, H) -> (T, B, H), (L, B, H)
        x, finals = inputs, []
        for layer in range(self.num_layers):
            xg, W_h = self.input_projection(x, layer)  # (T, B, 3H): r, z, candidate
            x = gru_layer(xg, state[layer], W_h, self.b_hn[layer])
            finals.append(x[-1])
        return x, torch.stack(finals)

    @torch.no_grad()
    def load_from_torch(self, module: nn.GRU) -> None:
        """Copy an ``nn.GRU`` with the same sizes (torch's gate order r, z, n)."""
        self._copy_torch_weights(module, ("r", "z", "h"))
        H = self.hidden_size
        for layer in range(self.num_layers):
            # torch: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)); only b_in belongs to b_h
            self.b_h[layer].copy_(getattr(module, f"bias_ih_l{layer}")[2 * H:])
            self.b_hn[layer].copy_(getattr(module, f"bias_hh_l{layer}")[2 * H:])


class ScratchLSTM(_ScratchCell):
    """d2l 9.2's LSTM with explicit input (i), forget (f), candidate (c) and output (o) parameters.

    I, F, O = σ(X W_x* + H W_h* + b_*), C~ = tanh(X W_xc + H W_hc + b_c),
    C' = F ⊙ C + I ⊙ C~, H' = O ⊙ tanh(C'). The state is a tuple (H, C), each (L, B, H).
    """

    name = "lstm-scratch"
    description = "d2l 9.2's LSTM from scratch: input, forget and output gates and a memory cell."
    gates = ("i", "f", "c", "o")  # torch's order i, f, g, o
    # lstm_layer's order: one sigmoid over all four blocks gives C~ as 2 sigmoid(2a) - 1 = tanh(a)
    loop_gates = ("i", "f", "o", "c")
    loop_doubled = "c"
    _step_fn = staticmethod(torch.lstm_cell)

    def begin_state(self, batch_size, device="cpu"):
        shape = (self.num_layers, batch_size, self.hidden_size)
        return torch.zeros(shape, device=device), torch.zeros(shape, device=device)

    def forward(self, inputs, state):  # (T, B, E), ((L, B, H), (L, B, H)) -> (T, B, H), (H, C)
        H0, C0 = state
        x, hs, cs = inputs, [], []
        for layer in range(self.num_layers):
            xg, W_h = self.input_projection(x, layer)  # (T, B, 4H): i, f, o, 2 x candidate
            x, c = lstm_layer(xg, H0[layer], C0[layer], W_h)
            hs.append(x[-1])
            cs.append(c)
        return x, (torch.stack(hs), torch.stack(cs))

    def hidden_units(self, state):
        return {"h": state[0], "c": state[1]}

    def load_from_torch(self, module: nn.LSTM) -> None:
        """Copy an ``nn.LSTM`` with the same sizes (torch's gate order i, f, g, o)."""
        self._copy_torch_weights(module, ("i", "f", "c", "o"))


class _FusedCell(Cell):
    """A torch nn.RNN/GRU/LSTM: its weights and (on a GPU) cuDNN kernels, dropout between layers only. On the
    CPU it infers through ``fused_inference``'s loops and the GRU and tanh RNN train through the scratch loops
    (``_scratch_loops``), both on oneDNN's GEMMs."""

    params = ()
    torch_class: type[nn.RNNBase] = nn.GRU
    _scratch_kind: str | None = None  # "gru" / "rnn": the scratch loop that trains it on the CPU (None: nn.RNN's)

    def __init__(self, input_size, hidden_size, num_layers=1, dropout=0.0, **options):
        super().__init__(input_size, hidden_size, num_layers, dropout, **options)
        self.rnn = self.torch_class(input_size, hidden_size, num_layers,
                                    dropout=dropout if num_layers > 1 else 0.0)

    def forward(self, inputs, state):
        if self._trains_on_scratch_loops(inputs):
            return self._scratch_loops(inputs, state)
        return self.rnn(inputs, state)

    def forward_tokens(self, idx, state):  # (T, B) ids, state -> (T, B, H), state
        """``forward`` on one-hot inputs given as ids. CPU inference gathers rows of W_ih (``fused_inference``),
        CPU training of the GRU and tanh RNN too (``_scratch_loops``); other devices keep nn.RNN's own kernels
        on the one-hot rows."""
        if self._trains_on_scratch_loops(idx):
            return self._scratch_loops(idx, state)
        if not self._gathers(idx):
            return self.rnn(nn.functional.one_hot(idx, self.input_size).to(self.rnn.weight_hh_l0.dtype), state)
        outputs, state, _ = self._run(idx, state, keep=False)
        return outputs, state

    def _trains_on_scratch_loops(self, x) -> bool:
        """CPU float32 training of the GRU and the tanh RNN runs the scratch cells' time loops on this module's
        own weights: their per-step GEMMs are on oneDNN (``rnnstudio.packed_linear``) and their backward is
        written by hand, while nn.GRU and nn.RNN train on MKL. Measured (``bench.py --only train``, one thread,
        batch 32 x 35 steps, idle box): this cell 1.89x a plain nn.GRU loop and rnn 1.91x nn.RNN at hidden 512;
        1.50x and 1.35x at 256. nn.LSTM trains on oneDNN's own fused RNN primitive, faster than lstm-scratch, so it
        stays. The formulas are torch's (the tests compare against nn.GRU/nn.RNN, values and gradients)."""
        return (self._scratch_kind is not None and x.device.type == "cpu" and torch.is_grad_enabled()
                and self.rnn.weight_hh_l0.dtype == torch.float32
                and getattr(self.rnn, "nonlinearity", "tanh") == "tanh")

    def _scratch_loops(self, x, state):  # ids (T, B) or inputs (T, B, E), (L, B, H) -> (T, B, H), (L, B, H)
        rnn, H = self.rnn, self.hidden_size
        drop = rnn.dropout if self.training and rnn.dropout > 0 else 0.0
        finals = []
        for layer in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = rnn._flat_weights[4 * layer: 4 * layer + 4]
            if self._scratch_kind == "gru":  # b_hn stays inside the reset product; the others add up
                b = torch.cat([b_ih[:2 * H] + b_hh[:2 * H], b_ih[2 * H:]])
            else:
                b = b_ih + b_hh
            if not x.is_floating_point():  # one-hot ids: X W_ih.T + b is rows of (W_ih.T + b)
                xg = nn.functional.embedding(x, (w_ih.T + b).contiguous())  # strided rows: 5x slower to gather
            else:
                if layer and drop:  # nn.GRU's dropout: on every layer's outputs but the last
                    x = dropout(x, drop)  # F.dropout's, faster on CPU
                T, B = x.shape[:2]
                xg = project_inputs(x.reshape(T * B, -1), w_ih.T, b).view(T, B, -1)
            if self._scratch_kind == "gru":
                x = gru_layer(xg, state[layer], w_hh.T, b_hh[2 * H:])
            else:
                x = rnn_layer(xg, state[layer], w_hh.T)
            finals.append(x[-1])
        return x, torch.stack(finals)

    def hidden_units_over(self, x, state):  # (T, B) ids or (T, B, E) inputs -> {kind: (T, L, B, H)}, state
        """``hidden_units`` after every step of x, every layer (nn.RNN returns only the top layer's), for the
        explorer. Inference only."""
        _, state, units = self._run(x, state, keep=True)
        return units, state

    def _gathers(self, idx) -> bool:
        return idx.device.type == "cpu" and not torch.is_grad_enabled() and not (self.training and self.rnn.dropout)

    def _run(self, x, state, keep):
        return run_layers(self._kind, self.rnn._flat_weights, x, state, keep=keep,
                          nonlinearity=getattr(self.rnn, "nonlinearity", "tanh"))

    def step(self, x, state):  # (N, E), state -> top layer's (N, H), new state
        """One time step for generation: torch's one-step kernel per layer on the module's own weights
        (what nn.RNNCell/GRUCell/LSTMCell run), without nn.RNN's sequence machinery."""
        rnn = self.rnn
        drop = rnn.dropout if self.training and rnn.dropout > 0 else 0.0
        # rnn._flat_weights: [w_ih, w_hh, b_ih, b_hh] per layer, kept current by torch
        return _step_layers(self._step_fn, rnn._flat_weights, x, state,
                            (lambda t: dropout(t, drop)) if drop else None)


class RNN(_FusedCell):
    name = "rnn"
    description = "torch.nn.RNN with tanh: the fused version of d2l 8.6's concise RNN."
    torch_class = nn.RNN
    _kind = "rnn"
    _scratch_kind = "rnn"
    _step_fn = staticmethod(torch.rnn_tanh_cell)


class GRU(_FusedCell):
    name = "gru"
    description = "torch.nn.GRU: the fused gated recurrent unit (d2l 9.1)."
    torch_class = nn.GRU
    _kind = "gru"
    _scratch_kind = "gru"
    _step_fn = staticmethod(torch.gru_cell)


class LSTM(_FusedCell):
    name = "lstm"
    description = "torch.nn.LSTM: the fused long short-term memory (d2l 9.2); state is (H, C)."
    torch_class = nn.LSTM
    _kind = "lstm"
    _step_fn = staticmethod(torch.lstm_cell)

    def begin_state(self, batch_size, device="cpu"):
        shape = (self.num_layers, batch_size, self.hidden_size)
        return torch.zeros(shape, device=device), torch.zeros(shape, device=device)

    def hidden_units(self, state):
        return {"h": state[0], "c": state[1]}


def _step_layers(step_fn, w, x, state, drop=None):
    """Run ``step_fn`` (torch.rnn_tanh_cell / gru_cell / lstm_cell) up a stack of layers for one time step.

    ``w`` is flat: w_ih (G*H, E), w_hh (G*H, H), b_ih, b_hh for layer 0, then layer 1, ... (torch's
    ``_flat_weights`` order). x (N, E); state (L, N, H), or (H, C) of that shape for the LSTM; ``drop``
    (a function applied between layers) or None. Returns the top layer's output (N, H) and the new state."""
    L = len(w) // 4
    if step_fn is torch.lstm_cell:
        H0, C0 = state
        if L == 1:  # the common case, with the fewest ops
            h, c = step_fn(x, (H0[0], C0[0]), w[0], w[1], w[2], w[3])
            return h, (h.unsqueeze(0), c.unsqueeze(0))
        hs, cs = [], []
        for k in range(L):
            if k and drop is not None:
                x = drop(x)
            x, c = step_fn(x, (H0[k], C0[k]), w[4 * k], w[4 * k + 1], w[4 * k + 2], w[4 * k + 3])
            hs.append(x)
            cs.append(c)
        return x, (torch.stack(hs), torch.stack(cs))
    if L == 1:
        h = step_fn(x, state[0], w[0], w[1], w[2], w[3])
        return h, h.unsqueeze(0)
    hs = []
    for k in range(L):
        if k and drop is not None:
            x = drop(x)
        x = step_fn(x, state[k], w[4 * k], w[4 * k + 1], w[4 * k + 2], w[4 * k + 3])
        hs.append(x)
    return x, torch.stack(hs)


@rnnstudio.hookimpl
def register_cells(register):
    for cls in (ScratchRNN, ScratchGRU, ScratchLSTM, RNN, GRU, LSTM):
        register(cls)
