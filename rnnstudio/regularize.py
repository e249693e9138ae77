"""Dropout that is cheaper on the CPU than ``torch.nn.functional.dropout``, with the same distribution.

On CPU torch draws dropout's mask with ``bernoulli_``, which on this 2-core AMD EPYC took 2.8 ms for a
35 x 32 x 256 float32 tensor, while ``rand_like`` filled it in 0.86 ms. ``U >= p`` for ``U`` uniform on [0, 1) keeps an
element with probability ``1 - p``, exactly Bernoulli(1 - p); kept elements are scaled by ``1 / (1 - p)`` as
``F.dropout`` does. Forward and backward of (35, 32, 256) at p = 0.3, one thread: 4.13 ms -> 2.03 ms; (35, 32, 512)
7.77 -> 3.67 ms. A two-layer GRU-256 with dropout between the layers and before the output layer (what ``--recipe
auto`` trains on a long budget) spent 8% of its step in ``bernoulli_``. Other devices and dtypes keep torch's
dropout (on a GPU it is one fused kernel). The masks come from torch's global generator, so a seeded run
repeats, though not with ``F.dropout``'s masks. Part of the plugin API (``from rnnstudio import dropout``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)``, faster for float32 CPU tensors; never in place."""
    if not training or p == 0:
        return x
    if x.device.type != "cpu" or x.dtype != torch.float32 or not 0 < p < 1:
        return F.dropout(x, p, training)  # p = 1 and bad values: torch's own result or error
    keep = torch.rand_like(x).ge_(p).mul_(1.0 / (1.0 - p))  # ge_ in place writes 1.0 / 0.0 into the float buffer
    return x * keep
