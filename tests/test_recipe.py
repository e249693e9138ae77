"""--recipe auto: what it changes under a time budget, and what it leaves alone."""

from __future__ import annotations

import pytest

from rnnstudio import checkpoint as ckpt
from rnnstudio.config import TrainConfig
from rnnstudio.recipe import DECAY, DECAYS, DEEP, DEEP_EPOCHS, DROP, DROP_EPOCHS, WARMUP, decay_for, auto_recipe, probe_step_rate
from rnnstudio.trainer import Trainer


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(corpus="text-file", **{"batch_size": 32, "seq_len": 35, **kw})


def _never():
    raise AssertionError("the throughput probe ran although nothing needed it")


def test_only_a_time_budget_under_auto_changes_anything():
    for cfg in (_cfg(), _cfg(max_steps=400), _cfg(epochs=3), _cfg(minutes=5, recipe="manual"),
                _cfg(minutes=5, resume=True, name="m")):
        assert auto_recipe(cfg, 100_000, _never) == ({}, [])


def _rate_for(epochs, tokens=150_000, minutes=3):
    """The step rate at which ``epochs`` epochs of ``tokens`` fit ``minutes`` (batch 32 x 35 steps)."""
    return epochs * tokens / (32 * 35) / (minutes * 60 * 0.9)


def test_the_regularisation_and_the_depth_follow_the_epochs_that_fit_the_budget():
    tokens = 150_000
    cosine = {"schedule": "cosine", "warmup": WARMUP}
    changes, notes = auto_recipe(_cfg(minutes=3), tokens, lambda: _rate_for(2 * DEEP_EPOCHS))
    assert changes == {**cosine, **DROP, **DEEP, **DECAY, "weight_decay": decay_for(2 * DEEP_EPOCHS)}
    assert len(notes) == 1 and "2 layers with dropout 0.3" in notes[0] and "output dropout 0.5" in notes[0]
    assert f"weight decay {decay_for(2 * DEEP_EPOCHS):g}" in notes[0]
    assert "--recipe manual" in notes[0] and f"about {2 * DEEP_EPOCHS:.0f} epochs" in notes[0]
    decays = [decay for _, decay in DECAYS]
    assert decays == sorted(decays)  # more epochs, more decay
    for above, decay in DECAYS[1:]:
        changes, notes = auto_recipe(_cfg(minutes=3), tokens, lambda: _rate_for(1.5 * max(above, DEEP_EPOCHS)))
        assert changes["weight_decay"] == decay and f"weight decay {decay:g}" in notes[0]
    between = (DROP_EPOCHS + DEEP_EPOCHS) / 2
    changes, notes = auto_recipe(_cfg(minutes=3), tokens, lambda: _rate_for(between))
    assert changes == {**cosine, **DROP} and "layers" not in notes[0] and "decay 0.1" not in notes[0]
    changes, notes = auto_recipe(_cfg(minutes=3), tokens, lambda: _rate_for(DROP_EPOCHS / 2))
    assert changes == cosine and "dropout" not in notes[0] and "epochs" not in notes[0]


def test_settings_given_away_from_their_defaults_are_kept():
    changes, _ = auto_recipe(_cfg(minutes=3, schedule="linear", num_layers=3, output_dropout=0.2), 1000, _never)
    assert changes == {}
    changes, _ = auto_recipe(_cfg(minutes=3, warmup=10, dropout=0.2, output_dropout=0.1), 1000, _never)
    assert changes == {}
    changes, _ = auto_recipe(_cfg(minutes=3, warmup=10, weight_decay=0.01, optimizer="adamw"), 1000, lambda: 1e6)
    assert changes == {**DROP, **DEEP}  # the user's optimizer and weight decay stay
    changes, _ = auto_recipe(_cfg(minutes=3, warmup=10), 1000, lambda: 1e6)
    assert changes == {**DROP, **DEEP, **DECAY, "weight_decay": DECAYS[-1][1]}


def test_the_probe_measures_a_positive_rate_and_leaves_the_random_state_alone():
    import torch

    from rnnstudio.plugins import load_plugins

    host = load_plugins(no_plugins=True)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    rate = probe_step_rate(_cfg(hidden_size=16, batch_size=4, seq_len=8), host.cell("gru"), 30, torch.device("cpu"))
    assert rate > 0 and torch.equal(torch.rand(3), expected)


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_timed_run_saves_the_recipe_it_chose_and_a_resume_keeps_it(tiny_corpus, monkeypatch):
    monkeypatch.setattr("rnnstudio.recipe.probe_step_rate", lambda *a, **k: 1e6)  # many epochs fit
    clock = _Clock()
    cfg = TrainConfig(corpus="text-file", corpus_options={"path": str(tiny_corpus)}, hidden_size=16, batch_size=4,
                      seq_len=8, minutes=1, eval_every=0, device="cpu", threads=1, name="auto")

    def run(config):
        events = []
        for ev in Trainer(config, clock=clock).run():
            events.append(ev)
            if ev.kind == "progress":
                clock.now += 10
        return events

    events = run(cfg)
    assert any(e.kind == "warning" and e.message.startswith("recipe auto:") for e in events)
    saved = ckpt.read_config(ckpt.model_path("auto"))
    train = saved["train"]
    assert (train["num_layers"], train["dropout"], train["schedule"], train["warmup"]) == (2, 0.3, "cosine", WARMUP)
    chosen = {**DROP, **DECAY, "weight_decay": DECAYS[-1][1]}  # a rate of 1e6 steps/s: many epochs
    assert {k: train[k] for k in chosen} == chosen
    assert saved["model"]["output_dropout"] == DROP["output_dropout"]  # the model trained with it
    monkeypatch.setattr("rnnstudio.recipe.probe_step_rate", lambda *a, **k: pytest.fail("a resume re-chose"))
    resumed = run(TrainConfig(corpus="text-file", corpus_options={"path": str(tiny_corpus)}, minutes=2,
                              eval_every=0, device="cpu", threads=1, name="auto", resume=True))
    assert not any(e.kind == "warning" and "recipe auto" in e.message for e in resumed)
    assert ckpt.read_config(ckpt.model_path("auto"))["train"]["num_layers"] == 2
