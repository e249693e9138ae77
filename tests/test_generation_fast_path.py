"""Generation's one-token path (RNNLanguageModel.step) computes what the full sequence forward computes."""

import pytest
import torch

from rnnstudio.model import ModelConfig, RNNLanguageModel, onednn_off
from rnnstudio.plugins import default_host


@pytest.mark.parametrize("cell", default_host().names("cell"))
def test_step_matches_forward_flat(cell):
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(cell=cell, vocab_size=11, hidden_size=8, num_layers=2),
                             default_host().cell(cell)).eval()
    idx = torch.randint(0, 11, (3, 6))
    with torch.no_grad():
        full, full_state = model.forward_flat(idx)  # (T*B, V), time-major
        state = model.begin_state(3)
        steps = []
        for t in range(idx.shape[1]):
            logits, state = model.step(idx[:, t], state)
            steps.append(logits)
    torch.testing.assert_close(torch.cat(steps), full, atol=1e-5, rtol=1e-5)
    for a, b in zip(state if isinstance(state, tuple) else (state,),
                    full_state if isinstance(full_state, tuple) else (full_state,)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_onednn_off_restores_the_flag():
    before = torch.backends.mkldnn.enabled
    with onednn_off():
        assert torch.backends.mkldnn.enabled is False
    assert torch.backends.mkldnn.enabled == before
    with pytest.raises(RuntimeError):
        with onednn_off():
            raise RuntimeError("boom")
    assert torch.backends.mkldnn.enabled == before


def test_training_still_works_after_generation():
    """Generation runs under inference_mode; nothing it leaves on the model may break a later backward."""
    from rnnstudio.data import Vocab
    from rnnstudio.sampling import SamplingConfig, generate_text

    vocab = Vocab(["<unk>", *"abcdefghij"])
    model = RNNLanguageModel(ModelConfig(cell="gru", vocab_size=len(vocab), hidden_size=8), default_host().cell("gru"))
    (text,) = generate_text(model, vocab, "abc", SamplingConfig(length=5, seed=1))
    assert text.startswith("abc")
    x = torch.randint(0, len(vocab), (2, 5))
    _, loss, _ = model(x, targets=x)
    loss.backward()
    assert model.head.weight.grad is not None
    assert model.step(x[:, 0], model.begin_state(2))[0].shape == (2, len(vocab))
