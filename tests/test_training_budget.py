"""Training within a budget: schedules, warm-up, AdamW, a time budget on an injected clock, patience, best vs last."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rnnstudio import checkpoint as ckpt
from rnnstudio import trainer as trainer_module
from rnnstudio.cli import main as cli_main
from rnnstudio.config import FINAL_LR_RATIO, TrainConfig
from rnnstudio.errors import RNNStudioError
from rnnstudio.schedules import lr_factor, step_progress
from rnnstudio.store.catalogue import list_models
from rnnstudio.trainer import Trainer

TINY = dict(cell="gru", hidden_size=16, num_layers=1, batch_size=4, seq_len=8, device="cpu", threads=1, seed=3)


def _config(corpus, **kw) -> TrainConfig:
    return TrainConfig(corpus="text-file", corpus_options={"path": str(corpus)}, **{**TINY, **kw})


class FakeClock:
    """A clock the test moves by hand: the loop measures its budget with it, so no test waits on real time."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _record_lrs(monkeypatch, cls) -> list[float]:
    """The learning rate of every optimizer step, as the optimizer sees it."""
    lrs: list[float] = []
    step = cls.step

    def recording_step(self, *a, **kw):
        lrs.append(self.param_groups[0]["lr"])
        return step(self, *a, **kw)

    monkeypatch.setattr(cls, "step", recording_step)
    return lrs


# -- schedule shapes ------------------------------------------------------------------------

def test_schedule_shapes():
    ps = [i / 20 for i in range(21)]
    assert all(lr_factor("constant", 100, 0, p) == 1.0 for p in ps)
    cosine = [lr_factor("cosine", 100, 0, p) for p in ps]
    linear = [lr_factor("linear", 100, 0, p) for p in ps]
    for curve in (cosine, linear):
        assert curve[0] == pytest.approx(1.0) and curve[-1] == pytest.approx(FINAL_LR_RATIO)
        assert all(a > b for a, b in zip(curve, curve[1:]))  # strictly decreasing
    assert cosine[10] == pytest.approx((1 + FINAL_LR_RATIO) / 2) == linear[10]
    assert cosine[5] > linear[5] and cosine[15] < linear[15]  # cosine stays high longer, then falls faster
    assert lr_factor("cosine", 100, 0, 1.7) == lr_factor("cosine", 100, 0, 1.0)  # clamped past the end
    assert lr_factor("linear", 100, 0, -0.5) == 1.0


def test_warmup_rises_linearly_then_the_schedule_starts_from_the_full_rate():
    assert [lr_factor("cosine", s, 4, 0.0) for s in range(1, 6)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert [lr_factor("constant", s, 3, 0.9) for s in (1, 2, 3, 4)] == [pytest.approx(1 / 3), pytest.approx(2 / 3), 1.0, 1.0]
    assert step_progress(4, 4, 14) == 0.0 and step_progress(9, 4, 14) == 0.5 and step_progress(14, 4, 14) == 1.0
    assert step_progress(3, 5, 5) == 1.0  # a warm-up as long as the run


def test_the_optimizer_follows_warmup_and_cosine_over_a_step_budget(tiny_corpus, monkeypatch):
    lrs = _record_lrs(monkeypatch, torch.optim.AdamW)
    cfg = _config(tiny_corpus, optimizer="adamw", weight_decay=0.1, lr=0.01, schedule="cosine", warmup=5,
                  max_steps=25, eval_every=0, save=False)
    list(Trainer(cfg).run())
    expected = [0.01 * lr_factor("cosine", s, 5, step_progress(s, 5, 25)) for s in range(1, 26)]
    assert lrs == pytest.approx(expected)
    assert lrs[:5] == pytest.approx([0.002, 0.004, 0.006, 0.008, 0.01]) and lrs[-1] == pytest.approx(0.001)


def test_sgd_and_a_constant_schedule_keep_the_learning_rate(tiny_corpus, monkeypatch):
    lrs = _record_lrs(monkeypatch, torch.optim.SGD)
    list(Trainer(_config(tiny_corpus, optimizer="sgd", max_steps=6, eval_every=0, save=False)).run())
    assert lrs == [1.0] * 6  # d2l's SGD at d2l's rate, untouched


def test_weight_decay_needs_adamw_and_minutes_need_one_process(tiny_corpus):
    with pytest.raises(RNNStudioError, match="weight-decay.*adamw"):
        _config(tiny_corpus, weight_decay=0.1).validate()
    with pytest.raises(RNNStudioError, match="minutes.*torchrun"):
        _config(tiny_corpus, minutes=1, world_size=2).validate()


def test_cli_refuses_a_typed_zero_budget_and_weight_decay_without_adamw(capsys):
    for argv, words in ((["train", "--minutes", "0"], "--minutes 0 trains nothing"),
                        (["train", "--weight-decay", "0.1", "--max-steps", "5"], "--weight-decay needs --optimizer adamw")):
        assert cli_main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and "\n" not in err and "Traceback" not in err


# -- a time budget on an injected clock -----------------------------------------------------

def _run_on_clock(cfg, clock, *, per_step=10.0, per_eval=0.0):
    """Train, moving the fake clock ``per_step`` seconds after each step and ``per_eval`` after each validation."""
    events = []
    for ev in Trainer(cfg, clock=clock).run():
        events.append(ev)
        if ev.kind == "progress":
            clock.now += per_step
        elif ev.kind == "evaluated":
            clock.now += per_eval
    return events


def test_a_time_budget_stops_when_spent_then_validates_and_saves(tiny_corpus):
    clock = FakeClock()
    events = _run_on_clock(_config(tiny_corpus, name="timed", minutes=1, eval_every=0), clock)
    progress = [e for e in events if e.kind == "progress"]
    # Steps start at 0, 10, ..., 50 s; the seventh would start at 60 s, the end of the budget.
    assert [p.step for p in progress] == [1, 2, 3, 4, 5, 6]
    assert [p.eta for p in progress] == pytest.approx([60, 50, 40, 30, 20, 10])  # the budget's, not the steps'
    assert progress[1].total_steps == 12 and progress[-1].total_steps == 7  # an estimate from the elapsed fraction
    assert events[0].kind == "started" and events[0].total_steps == 0
    tail = [e.kind for e in events[-3:]]
    assert tail == ["evaluated", "checkpoint", "summary"] and events[-1].steps == 6 and not events[-1].stopped
    pos, _ = ckpt.load_train_state(ckpt.model_path("timed"))
    assert pos["position"]["elapsed"] == pytest.approx(60.0)

    # The resume continues with what is left: a 2-minute budget in total gives 6 more steps.
    resumed = _run_on_clock(_config(tiny_corpus, name="timed", resume=True, minutes=2, eval_every=0), clock)
    assert [p.step for p in resumed if p.kind == "progress"] == list(range(7, 13))
    again = _run_on_clock(_config(tiny_corpus, name="timed", resume=True, minutes=2, eval_every=0), clock)
    assert not [e for e in again if e.kind == "progress"]
    assert any(e.kind == "warning" and "not trained" in e.message for e in again)


def test_the_budget_includes_validation_time(tiny_corpus):
    clock = FakeClock()
    events = _run_on_clock(_config(tiny_corpus, minutes=1, eval_every=2, save=False), clock, per_eval=15.0)
    # Steps at 0, 10, then a 15 s validation, 35, 45, validation, 70: past the budget after 4 steps.
    assert [e.step for e in events if e.kind == "progress"] == [1, 2, 3, 4]
    assert [e.step for e in events if e.kind == "evaluated"] == [2, 4]  # step 4's validation is the final one
    assert events[-1].kind == "summary" and events[-1].steps == 4


def test_over_a_time_budget_the_schedule_follows_the_elapsed_fraction(tiny_corpus, monkeypatch):
    lrs = _record_lrs(monkeypatch, torch.optim.Adam)
    _run_on_clock(_config(tiny_corpus, minutes=1, schedule="linear", lr=0.01, eval_every=0, save=False), FakeClock())
    assert lrs == pytest.approx([0.01 * lr_factor("linear", s, 0, (s - 1) * 10 / 60) for s in range(1, 7)])


# -- patience and the best weights ----------------------------------------------------------

def _scripted_validation(monkeypatch, perplexities):
    """Validation returns these perplexities in turn (then the last one again)."""
    seq = list(perplexities)

    def fake_evaluate(*a, **kw):
        ppl = seq.pop(0) if len(seq) > 1 else seq[0]
        return {"perplexity": ppl, "cross-entropy": math.log(ppl)}

    monkeypatch.setattr(trainer_module, "evaluate", fake_evaluate)


def _best_then_worse(tiny_corpus, monkeypatch, name="patient"):
    _scripted_validation(monkeypatch, [9.0, 5.0, 6.0, 7.0, 8.0])
    return list(Trainer(_config(tiny_corpus, name=name, max_steps=50, eval_every=1, patience=2, lr=0.02)).run())


def test_patience_stops_after_n_validations_without_improvement(tiny_corpus, monkeypatch):
    events = _best_then_worse(tiny_corpus, monkeypatch)
    assert [e.step for e in events if e.kind == "progress"] == [1, 2, 3, 4]
    assert [e.best for e in events if e.kind == "evaluated"] == [True, True, False, False]  # not repeated at the end
    assert any(e.kind == "warning" and "stopped early: 2 validations" in e.message for e in events)
    assert events[-1].kind == "summary" and events[-1].steps == 4 and not events[-1].stopped


def test_the_best_weights_are_kept_with_their_step_and_perplexity(tiny_corpus, monkeypatch, capsys):
    _best_then_worse(tiny_corpus, monkeypatch)
    path = ckpt.model_path("patient")
    best, best_meta = ckpt.read_tensors(path / ckpt.BEST, "patient")
    last, last_meta = ckpt.read_tensors(path / ckpt.WEIGHTS, "patient")
    assert best_meta["step"] == "2" and last_meta["step"] == "4"  # held in memory until the folder existed
    assert any(not torch.equal(best[k], last[k]) for k in best)
    row = next(m.row() for m in list_models() if m.name == "patient")
    assert (row["steps"], row["best_step"], row["best_val_perplexity"]) == (4, 2, 5.0)
    assert cli_main(["models"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "best at" in out[0] and out[1].split()[-3:-1] == ["2", "5.000"]


def test_an_older_model_without_a_recorded_best_shows_a_dash(tiny_corpus, monkeypatch, capsys):
    _best_then_worse(tiny_corpus, monkeypatch, name="older")
    cfg_path = ckpt.model_path("older") / ckpt.CONFIG
    config = json.loads(cfg_path.read_text())
    for key in ("best_step", "best_val_perplexity"):
        del config["summary"][key]
    cfg_path.write_text(json.dumps(config))
    row = next(m.row() for m in list_models() if m.name == "older")
    assert row["best_step"] is None
    assert cli_main(["models"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[-3:-1] == ["—", "—"]


def test_generate_score_and_loading_use_the_best_weights_unless_asked_for_the_last(tiny_corpus, monkeypatch, capsys):
    _best_then_worse(tiny_corpus, monkeypatch)
    path = ckpt.model_path("patient")
    for weights, file in (("best", ckpt.BEST), ("last", ckpt.WEIGHTS)):
        loaded = ckpt.load_model("patient", weights=weights)
        on_disk, _ = ckpt.read_tensors(path / file, "patient")
        assert all(torch.equal(v, on_disk[k]) for k, v in loaded.model.state_dict().items())
    assert all(torch.equal(v, ckpt.load_model("patient", weights="best").model.state_dict()[k])
               for k, v in ckpt.load_model("patient").model.state_dict().items())  # best is the default

    scores = {}
    for extra in ([], ["--weights", "last"], ["--weights", "best"]):
        assert cli_main(["score", "--model", "patient", str(tiny_corpus), "--json", *extra]) == 0
        scores[tuple(extra)] = json.loads(capsys.readouterr().out)["perplexity"]
    assert scores[()] == scores[("--weights", "best")] != scores[("--weights", "last")]

    asked = []
    real = ckpt.load_model
    monkeypatch.setattr(ckpt, "load_model", lambda *a, **kw: asked.append(kw.get("weights")) or real(*a, **kw))
    for extra in ([], ["--weights", "last"]):
        assert cli_main(["generate", "--model", "patient", "--length", "5", "--greedy", "--json", *extra]) == 0
    capsys.readouterr()
    assert asked == ["best", "last"]
    with pytest.raises(SystemExit):
        cli_main(["generate", "--model", "patient", "--weights", "newest"])
    assert "--weights" in capsys.readouterr().err


def test_a_folder_without_best_weights_loads_its_last_weights(tiny_corpus):
    list(Trainer(_config(tiny_corpus, name="plain", max_steps=3, eval_every=0)).run())
    (ckpt.model_path("plain") / ckpt.BEST).unlink()
    assert ckpt.load_model("plain").name == "plain"


# -- exact resume with a schedule -----------------------------------------------------------

def test_200_plus_200_steps_equal_400_with_warmup_cosine_and_adamw(tiny_corpus):
    """A 400-step cosine run stopped at step 200 and resumed ends bit-identical to one that ran straight through
    (the schedule is a function of the step and the run's length, which the resume keeps)."""
    sched = dict(optimizer="adamw", weight_decay=0.05, schedule="cosine", warmup=30, eval_every=100,
                 checkpoint_every=70)
    first = Trainer(_config(tiny_corpus, name="halves", max_steps=400, **sched))
    for ev in first.run():
        if ev.kind == "progress" and ev.step == 200:
            first.stop()
    assert ev.kind == "summary" and ev.steps == 200 and ev.stopped
    list(Trainer(_config(tiny_corpus, name="halves", resume=True, max_steps=400, checkpoint_every=70)).run())
    list(Trainer(_config(tiny_corpus, name="straight", max_steps=400, **sched)).run())
    (pa, ta), (pb, tb) = (ckpt.load_train_state(ckpt.model_path(n)) for n in ("halves", "straight"))
    assert pa["position"]["step"] == pb["position"]["step"] == 400
    assert set(ta) == set(tb) and any(k.startswith("optim.") for k in ta)
    for key in ta:
        assert torch.equal(ta[key], tb[key]), f"{key} differs"  # bit-identical
    saved = json.loads((ckpt.model_path("halves") / ckpt.CONFIG).read_text())["train"]
    assert (saved["schedule"], saved["warmup"], saved["optimizer"]) == ("cosine", 30, "adamw")
