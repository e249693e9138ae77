"""The language model: input encoding, a plugin cell for the recurrence, and the output projection."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .components import Cell
from .errors import RNNStudioError
from .gemm import linear, packed_linear
from .regularize import dropout

ENCODINGS = ("onehot", "embedding")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model's architecture; saved as JSON beside the weights."""

    cell: str = "gru"
    vocab_size: int = 0
    hidden_size: int = 256  # d2l 9.1/9.2 use 256 hidden units
    num_layers: int = 1  # d2l 9.3 stacks 2 for the deep LSTM
    dropout: float = 0.0  # between layers only, so it needs num_layers > 1 to have an effect
    output_dropout: float = 0.0  # on the top layer's outputs, before the output layer (one layer has it too)
    encoding: str = "onehot"  # d2l feeds one-hot vectors; "embedding" learns a dense vector per token
    embed_size: int = 0  # embedding width; 0 means the same as hidden_size
    cell_options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.vocab_size < 2:
            raise RNNStudioError("the vocabulary has fewer than 2 tokens; a model needs text with at least two distinct tokens")
        if self.hidden_size < 1:
            raise RNNStudioError(f"hidden size must be at least 1, got {self.hidden_size}")
        if self.num_layers < 1:
            raise RNNStudioError(f"number of layers must be at least 1, got {self.num_layers}")
        if not 0.0 <= self.dropout < 1.0:
            raise RNNStudioError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.output_dropout < 1.0:
            raise RNNStudioError(f"output dropout must be in [0, 1), got {self.output_dropout}")
        if self.encoding not in ENCODINGS:
            raise RNNStudioError(f"unknown input encoding {self.encoding!r}; use {' or '.join(ENCODINGS)}")
        if self.embed_size < 0:
            raise RNNStudioError(f"embedding size must be >= 0, got {self.embed_size}")

    @property
    def input_size(self) -> int:
        if self.encoding == "onehot":
            return self.vocab_size
        return self.embed_size or self.hidden_size

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "ModelConfig":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


class RNNLanguageModel(nn.Module):
    """``forward(idx, state=None, targets=None) -> logits, loss, state`` over token ids ``idx`` (B, T)."""

    def __init__(self, config: ModelConfig, cell_cls: type[Cell]):
        super().__init__()
        config.validate()
        self.config = config
        if config.encoding == "embedding":
            self.embedding = nn.Embedding(config.vocab_size, config.input_size)
        else:
            self.embedding = None
        self.cell = cell_cls(
            input_size=config.input_size,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout,
            **config.cell_options,
        )
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        self._eye = None  # generation's one-hot rows, made on first use (not a buffer: never saved)

    def begin_state(self, batch_size: int, device: torch.device | str | None = None):
        if device is None:
            device = self.head.weight.device
        return self.cell.begin_state(batch_size, device)

    def encode(self, idx_tb: torch.Tensor) -> torch.Tensor:
        """Token ids (T, B) -> inputs (T, B, E): one-hot rows or learned embeddings."""
        if self.embedding is not None:
            return self.embedding(idx_tb)
        return F.one_hot(idx_tb, self.config.vocab_size).to(self.head.weight.dtype)

    def forward_flat(self, idx: torch.Tensor, state=None):
        """Logits for every position, time-major and flattened: (T*B, V), plus the new state."""
        B = idx.shape[0]
        if state is None:
            state = self.begin_state(B, idx.device)
        cell = self.cell
        if self.embedding is None and hasattr(cell, "forward_tokens"):  # one-hot inputs, as ids: the cell gathers rows
            outputs, state = cell.forward_tokens(idx.T, state)  # (T, B, H)
        else:
            outputs, state = cell(self.encode(idx.T), state)  # (T, B, H)
        if self.training and self.config.output_dropout > 0:
            # Zaremba et al.'s dropout on the connection to the output layer, which a one-layer model has too.
            # Measured (quality.py's setup, The Time Machine, --max-steps, one thread): 1 layer at 1500 steps
            # 2.425 nats/char -> 2.388 with 0.3, 2.356 with 0.5; 2 layers (0.3 between) at 2000 steps 2.307 -> 2.244.
            outputs = dropout(outputs, self.config.output_dropout)  # F.dropout's, faster on CPU
        flat = outputs.reshape(-1, outputs.shape[-1])
        if torch.is_grad_enabled():  # training: F.linear's GEMMs on oneDNN where it has them (gemm.linear)
            logits = linear(flat, self.head.weight, self.head.bias)  # (T*B, V)
        else:  # scoring and validation: oneDNN's GEMM where it has one (2-2.8x faster here, see gemm.py)
            logits = packed_linear(self.head.weight, self.head.bias, len(flat))(flat)
        return logits, state

    def step(self, idx: torch.Tensor | list[int], state):
        """One token per row, for generation: ids (N,) -> logits (N, V), new state.

        ``idx`` may also be a list of ints (what ``tolist()`` gave the sampler): one id is then a slice of
        a cached table, no indexing op. A cell may define ``step(x, state) -> (h, state)`` over one time
        step (x (N, E), h (N, H) the top layer's output) to skip its sequence machinery; other cells run
        ``forward`` with T = 1."""
        head = self.head
        weight = head.weight
        if self.embedding is not None:
            table = self.embedding.weight  # (V, E)
        elif self.config.vocab_size <= 4096:
            table = self._eye_for(weight)  # (V, V) one-hot rows
        else:  # a large vocabulary: no V x V identity
            table = None
        if isinstance(idx, list):
            if len(idx) == 1 and table is not None:
                x = table[idx[0]: idx[0] + 1]  # (1, E): a view
                idx = None
            else:
                idx = torch.tensor(idx, device=weight.device)
        if idx is not None:
            x = F.embedding(idx, table) if table is not None else F.one_hot(idx, self.config.vocab_size).to(weight.dtype)
        cell = self.cell
        cell_step = getattr(cell, "step", None)
        if cell_step is not None:
            h, state = cell_step(x, state)
        else:
            with onednn_off():
                outputs, state = cell(x[None], state)
            h = outputs[0]
        return F.linear(h, weight, head.bias), state  # self.head without the module call

    def _eye_for(self, weight: torch.Tensor) -> torch.Tensor:
        """The cached (V, V) identity whose rows are the one-hot inputs, on ``weight``'s device and dtype."""
        eye = self._eye
        if eye is None or eye.dtype != weight.dtype or eye.device != weight.device:
            with torch.inference_mode(False):  # a normal tensor, even when first made during generation
                eye = self._eye = torch.eye(self.config.vocab_size, dtype=weight.dtype, device=weight.device)
        return eye

    @staticmethod
    def flat_targets(targets: torch.Tensor) -> torch.Tensor:
        """Targets (B, T) in the same time-major order as ``forward_flat``'s logits: (T*B,)."""
        return targets.T.reshape(-1)

    def forward(self, idx: torch.Tensor, state=None, targets: torch.Tensor | None = None):
        logits, state = self.forward_flat(idx, state)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits, self.flat_targets(targets))
        T, B = idx.shape[1], idx.shape[0]
        return logits.view(T, B, -1).transpose(0, 1), loss, state  # logits (B, T, V)


@contextmanager
def onednn_off():
    """oneDNN re-plans its RNN kernels on every call: a one-token nn.LSTM step is ~20x slower with it on.
    The switch is process-wide, so hold it only around single calls (a concurrent training thread may
    briefly run without oneDNN: slower, never wrong)."""
    was = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = was


def detach_state(state):
    """Cut the graph at a batch boundary (d2l's sequential partitioning), keeping the values."""
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def state_tensors(state) -> list[torch.Tensor]:
    return list(state) if isinstance(state, tuple) else [state]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
