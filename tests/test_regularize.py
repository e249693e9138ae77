"""rnnstudio.dropout: F.dropout's distribution and gradient, drawn with rand_like on the CPU."""

import pytest
import torch
import torch.nn.functional as F

from rnnstudio import dropout


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
def test_keeps_each_element_with_probability_one_minus_p_and_scales_it(p):
    torch.manual_seed(0)
    y = dropout(torch.ones(400_000), p)
    kept = y != 0
    assert abs(float(kept.float().mean()) - (1 - p)) < 0.005  # ~6 standard deviations at 400k draws
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p)))


def test_the_gradient_is_the_same_mask_and_scale():
    torch.manual_seed(1)
    x = torch.randn(35, 8, 16, requires_grad=True)
    y = dropout(x, 0.3)
    g = torch.randn_like(y)
    y.backward(g)
    mask = (y != 0).float() / 0.7
    assert torch.allclose(y, x.detach() * mask)
    assert torch.allclose(x.grad, g * mask)


def test_a_seeded_run_repeats_and_evaluation_is_the_identity():
    x = torch.randn(64, 32)
    torch.manual_seed(5)
    a = dropout(x, 0.4)
    torch.manual_seed(5)
    assert torch.equal(a, dropout(x, 0.4))
    assert not torch.equal(a, dropout(x, 0.4))  # the generator moved on
    assert dropout(x, 0.4, training=False) is x and dropout(x, 0.0) is x


def test_other_dtypes_and_edge_probabilities_are_torchs():
    x = torch.randn(1000, dtype=torch.float64)
    torch.manual_seed(2)
    a = dropout(x, 0.3)
    torch.manual_seed(2)
    assert torch.equal(a, F.dropout(x, 0.3, True))
    assert torch.equal(dropout(torch.ones(10), 1.0), torch.zeros(10))
    with pytest.raises(ValueError):
        dropout(torch.ones(3), 1.5)
