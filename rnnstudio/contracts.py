"""What the core checks of plugin components before trusting them: a cell's shapes and state, a corpus's pieces."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch

from .errors import RNNStudioError

PROBE_T, PROBE_B = 3, 2  # a time length and batch size that differ, so (B, T, H) never passes for (T, B, H)


def _shape(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"({', '.join(map(str, x.shape))})"
    if isinstance(x, (tuple, list)):
        return f"{type(x).__name__} of {len(x)}: [{', '.join(_shape(s) for s in x)}]"
    return type(x).__name__


def cell_call_problem(result: Any, state: Any, T: int, B: int, H: int) -> str | None:
    """What is wrong with ``result``, what a cell returned for inputs (T, B, .) and ``state``; None when it is right.

    A cell returns ``(outputs, new_state)``: outputs (T, B, H), and a new state built like the one it was
    given (a tensor of the same shape, or a tuple of as many tensors of the same shapes).
    """
    if not (isinstance(result, tuple) and len(result) == 2):
        return f"forward must return (outputs, state), got {_shape(result)}"
    outputs, new_state = result
    if not isinstance(outputs, torch.Tensor) or tuple(outputs.shape) != (T, B, H):
        transposed = isinstance(outputs, torch.Tensor) and tuple(outputs.shape) == (B, T, H)
        hint = " (batch-first: transpose to time-major)" if transposed else ""
        return f"outputs are {_shape(outputs)}, expected (T, B, H) = ({T}, {B}, {H}){hint}"
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        if not isinstance(new_state, torch.Tensor) or new_state.shape != state.shape:
            return f"the new state is {_shape(new_state)}, expected the shape of the state it was given {_shape(state)}"
        return None
    if not isinstance(new_state, tuple) or len(new_state) != len(state) or any(
            not isinstance(n, torch.Tensor) or n.shape != s.shape for n, s in zip(new_state, state)):
        return f"the new state is {_shape(new_state)}, expected one like the state it was given: {_shape(state)}"
    return None


def run_cell(model, idx: torch.Tensor, state):
    """The cell's own call inside ``model.forward_flat`` on ids (B, T): what the cell returned."""
    cell = model.cell
    if model.embedding is None and hasattr(cell, "forward_tokens"):
        return cell.forward_tokens(idx.T, state)
    return cell(model.encode(idx.T), state)


def probe_cell(model, ids: torch.Tensor, plugin: str) -> None:
    """Run the cell once, without gradients, on the first tokens of the training text (B=2, T=3) and
    refuse what it returns if the shapes or the state are wrong, naming ``plugin``. An exception from
    the cell is left to the training loop, which blames whoever raised it."""
    if len(ids) < PROBE_T * PROBE_B:
        return
    device = model.head.weight.device
    idx = ids[: PROBE_T * PROBE_B].view(PROBE_B, PROBE_T).to(device=device, dtype=torch.long)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            state = model.begin_state(PROBE_B, device)
            try:
                result = run_cell(model, idx, state)
            except (Exception, SystemExit):
                return
    finally:
        model.train(was_training)
    problem = cell_call_problem(result, state, PROBE_T, PROBE_B, model.config.hidden_size)
    if problem:
        raise RNNStudioError(f"the cell plugin broke the cell contract on the first batch: {problem}; "
                             f"a cell maps inputs (T, B, E) and a state to outputs (T, B, H) and a state "
                             f"like the one it was given (see docs/plugins.md)", source=plugin)


def plugin_label(host, kind: str, name: str) -> str:
    """``cell 'mgu' (rnnstudio-mgu 0.1 (entrypoint:mgu))``: a component and the plugin that provided it."""
    try:
        return f"{kind} {name!r} ({host.label(host.source_of(kind, name))})"
    except (KeyError, AttributeError):
        return f"{kind} {name!r}"


def checked_pieces(iter_text: Callable[[], Iterator[Any]], plugin: str) -> Callable[[], Iterator[str]]:
    """``iter_text`` whose pieces are checked: one that is not ``str`` is refused, naming ``plugin``."""

    def pieces() -> Iterator[str]:
        for number, piece in enumerate(iter_text(), 1):
            if not isinstance(piece, str):
                hint = " (decode bytes, e.g. data.decode('utf-8'))" if isinstance(piece, (bytes, bytearray)) else ""
                raise RNNStudioError(f"the corpus plugin gave a {type(piece).__name__} as piece {number} of its "
                                     f"text; iter_text() and read() must give str{hint}", source=plugin)
            yield piece

    return pieces
