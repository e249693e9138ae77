"""Scratch cells reuse their stacked weights only within one stream of generated tokens, so no change is missed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnstudio.plugins import default_host

SCRATCH = ["rnn-scratch", "gru-scratch", "lstm-scratch"]


def make(name):
    torch.manual_seed(0)
    return default_host().cell(name)(input_size=4, hidden_size=6, num_layers=2, init_std=0.3).eval()


def fresh_state(cell, n=2):
    torch.manual_seed(1)
    state = cell.begin_state(n)
    return tuple(torch.randn_like(s) for s in state) if isinstance(state, tuple) else torch.randn_like(state)


def reference(cell, x, state):
    """The cell's output computed with autograd on, where nothing is ever reused."""
    with torch.enable_grad():
        return cell(x[None], state)[0][0].detach()


def change_through_data(cell):
    next(iter(cell.parameters())).data.add_(1.0)  # bypasses the version counter


def replace_a_parameter(cell):
    weights = getattr(cell, f"W_x{cell.gates[0]}")
    weights[0] = nn.Parameter(weights[0].detach() + 1.0)


@pytest.mark.parametrize("name", SCRATCH)
@pytest.mark.parametrize("change", [change_through_data, replace_a_parameter])
def test_step_and_forward_see_every_weight_change_under_no_grad(name, change):
    cell = make(name)
    x, state = torch.randn(2, 4), fresh_state(cell)
    with torch.no_grad():
        old_step = cell.step(x, state)[0]
        old_forward = cell(x[None], state)[0][0]
        change(cell)
        new_step = cell.step(x, state)[0]
        new_forward = cell(x[None], state)[0][0]
    expected = reference(cell, x, state)
    assert not torch.allclose(old_step, expected)
    torch.testing.assert_close(new_step, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(new_forward, expected, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(old_forward, new_forward)


@pytest.mark.parametrize("name", SCRATCH)
def test_a_stream_of_steps_builds_the_weights_once(name, monkeypatch):
    cell = make(name)
    builds = []
    real = type(cell)._torch_layout
    monkeypatch.setattr(type(cell), "_torch_layout", lambda self, layer: builds.append(layer) or real(self, layer))
    x, state = torch.randn(2, 4), fresh_state(cell)
    with torch.inference_mode():
        for _ in range(10):
            h, state = cell.step(x, state)  # each step feeds back the state the last one returned
    assert builds == [0, 1]
    with torch.inference_mode():
        cell.step(x, fresh_state(cell))  # a new stream (any state not just returned) rebuilds
    assert builds == [0, 1, 0, 1]
