"""The explorer reads activations through the scoring path, in chunks of steps, and they equal one-token stepping."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from rnnstudio.explorer import collect_activations
from rnnstudio.model import ModelConfig, RNNLanguageModel
from rnnstudio.plugins import load_plugins

ROOT = Path(__file__).resolve().parent.parent


def _one_token_at_a_time(model, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The explorer's former loop: B = 1, one token per cell call, ``hidden_units`` after each. {kind: (T, L, H)}."""
    out: dict[str, list] = {}
    with torch.no_grad():
        state = model.begin_state(1)
        for t in range(len(ids)):
            _, state = model.cell(model.encode(ids[t].view(1, 1)), state)
            for kind, value in model.cell.hidden_units(state).items():  # (L, 1, H)
                out.setdefault(kind, []).append(value[:, 0, :].clone())
    return {k: torch.stack(v) for k, v in out.items()}


@pytest.mark.parametrize("cell, layers, encoding", [("gru", 1, "onehot"), ("gru", 2, "onehot"), ("lstm", 2, "onehot"),
                                                    ("rnn", 1, "embedding"), ("gru-scratch", 1, "onehot"),
                                                    ("lstm-scratch", 2, "onehot")])
def test_chunked_activations_equal_one_token_stepping(cell, layers, encoding):
    host = load_plugins(no_plugins=True)
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(cell=cell, vocab_size=13, hidden_size=12, num_layers=layers,
                                         encoding=encoding, cell_options={} if "scratch" not in cell else
                                         {"init_std": 0.3}), host.cell(cell))
    ids = torch.randint(0, 13, (53,))
    acts = collect_activations(model, ids, [str(i) for i in ids.tolist()], seq_len=10)  # 6 chunks, the last short
    want = _one_token_at_a_time(model.eval(), ids)
    assert sorted(acts.series) == sorted(f"{k}[{layer}]" for k in want for layer in range(layers))
    for kind, steps in want.items():
        for layer in range(layers):
            got = torch.from_numpy(acts.series[f"{kind}[{layer}]"])
            assert got.shape == (53, 12)
            torch.testing.assert_close(got, steps[:, layer, :], atol=1e-5, rtol=0)


def _calls(path: Path) -> set[str]:
    """Names of the functions a module calls (``f(...)`` and ``x.f(...)``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            f = node.func
            names.add(f.id if isinstance(f, ast.Name) else getattr(f, "attr", ""))
    return names


def test_validation_score_inspector_and_explorer_go_through_scoring():
    """Each consumer reaches the model through rnnstudio/scoring.py, not a loop of its own."""
    assert "score_ids" in _calls(ROOT / "rnnstudio" / "evaluation.py")  # validation during training
    assert "score_stream" in _calls(ROOT / "rnnstudio" / "cli.py")  # rnnstudio score
    assert "explain_text" in _calls(ROOT / "rnnstudio" / "inspector.py")  # inspector, score --explain
    assert "hidden_states" in _calls(ROOT / "rnnstudio" / "explorer.py")  # explorer
    for consumer in ("evaluation.py", "inspector.py", "explorer.py"):
        calls = _calls(ROOT / "rnnstudio" / consumer)
        assert not calls & {"forward_flat", "forward_tokens"}, consumer  # no model loop outside scoring
    scoring_source = (ROOT / "rnnstudio" / "scoring.py").read_text(encoding="utf-8")
    assert "forward_flat" in _calls(ROOT / "rnnstudio" / "scoring.py") and "hidden_units_over" in scoring_source


def test_trainer_validation_calls_evaluate():
    assert "evaluate" in _calls(ROOT / "rnnstudio" / "trainer.py") | _calls(ROOT / "rnnstudio" / "distributed.py")


def test_fused_cells_gather_only_without_autograd():
    """Training keeps nn.GRU's kernels (autograd on); inference gathers rows of W_ih, with the same outputs."""
    host = load_plugins(no_plugins=True)
    for cell in ("gru", "lstm", "rnn"):
        torch.manual_seed(0)
        model = RNNLanguageModel(ModelConfig(cell=cell, vocab_size=11, hidden_size=8, num_layers=2), host.cell(cell))
        ids = torch.randint(0, 11, (3, 9))
        logits, _ = model.forward_flat(ids)
        assert logits.requires_grad
        with torch.no_grad():
            fast, _ = model.forward_flat(ids)
        torch.testing.assert_close(fast, logits.detach(), atol=1e-5, rtol=0)
