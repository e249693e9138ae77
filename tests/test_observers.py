"""Observers: plugins receive the trainer's events; one that raises is disabled, never the run; TensorBoard export."""

from __future__ import annotations

import sys

import pytest

import rnnstudio
from rnnstudio import paths, runs
from rnnstudio.cli import main as cli_main
from rnnstudio.errors import RNNStudioError
from rnnstudio.plugins import load_plugins
from rnnstudio.trainer import TrainConfig, Trainer


def config(path, name, **kw):
    base = dict(corpus="text-file", corpus_options={"path": str(path)}, cell="gru", hidden_size=16, batch_size=4,
                seq_len=16, max_steps=9, eval_every=3, checkpoint_every=4, device="cpu", name=name)
    return TrainConfig(**{**base, **kw})


def observer_plugin(*classes):
    class Plugin:
        @rnnstudio.hookimpl
        def register_observers(self, register):
            for cls in classes:
                register(cls)

    return Plugin()


class Recording(rnnstudio.Observer):
    """Keeps what it saw, class-wide (the trainer builds the instance)."""

    name = "recording"
    description = "keeps every event it sees"
    seen: list = []
    closed: list = []

    def observe(self, event):
        type(self).seen.append(event)

    def close(self, status, error=None):
        type(self).closed.append((status, error))


@pytest.fixture
def recording():
    Recording.seen, Recording.closed = [], []
    return Recording


def test_run_records_are_the_first_observer():
    host = load_plugins(no_plugins=True)
    assert host.names("observer")[:2] == ["run-records", "tensorboard"]
    assert host.source_of("observer", "run-records") == "builtin:runs"
    assert host.failures == []


def test_an_observer_sees_every_event_in_order_and_is_closed(tiny_corpus, recording):
    host = load_plugins(no_plugins=True, extra=[("test:rec", observer_plugin(recording))])
    events = list(Trainer(config(tiny_corpus, "seen"), host=host).run())
    assert [e.kind for e in recording.seen] == [e.kind for e in events]
    assert recording.seen[0].kind == "started" and recording.seen[-1].kind == "summary"
    assert recording.closed == [("finished", None)]
    assert [r["model"] for r in runs.list_runs()] == ["seen"]  # the run records still record


def test_a_stopped_run_closes_its_observers_as_stopped(tiny_corpus, recording):
    host = load_plugins(no_plugins=True, extra=[("test:rec", observer_plugin(recording))])
    trainer = Trainer(config(tiny_corpus, "stopper", max_steps=50), host=host)
    for event in trainer.run():
        if event.kind == "progress" and event.step == 2:
            trainer.stop()
    assert recording.closed == [("stopped", None)]


def test_a_failed_run_closes_its_observers_with_the_error(tiny_corpus, recording):
    host = load_plugins(no_plugins=True, extra=[("test:rec", observer_plugin(recording))])
    cfg = config(tiny_corpus, "boom", optimizer="sgd", lr=1e12, clip=0, max_steps=200, checkpoint_every=0)
    with pytest.raises(RNNStudioError, match="diverged") as info:
        list(Trainer(cfg, host=host).run())
    assert recording.closed == [("failed", str(info.value))]


class Raises(rnnstudio.Observer):
    name = "raises"
    description = "raises at its third progress event"
    count = 0

    def observe(self, event):
        if event.kind == "progress":
            type(self).count += 1
            if type(self).count == 3:
                raise ValueError("observer bug")


class ExitsInInit(rnnstudio.Observer):
    name = "exits"
    description = "calls sys.exit() when built"

    def __init__(self, config):
        sys.exit(3)


class RaisesOnClose(rnnstudio.Observer):
    name = "bad-close"
    description = "raises when closed"

    def close(self, status, error=None):
        raise OSError("disk gone")


def test_a_raising_observer_is_disabled_with_a_warning_and_training_goes_on(tiny_corpus, recording):
    Raises.count = 0
    host = load_plugins(no_plugins=True, extra=[
        ("test:bad", observer_plugin(Raises, ExitsInInit, RaisesOnClose)), ("test:rec", observer_plugin(recording))])
    events = list(Trainer(config(tiny_corpus, "sturdy"), host=host).run())
    warnings = [e.message for e in events if e.kind == "warning"]
    assert any("observer 'raises' disabled" in w and "ValueError: observer bug" in w for w in warnings), warnings
    assert any("observer 'exits' disabled" in w and "sys.exit(3)" in w for w in warnings), warnings
    assert any("observer 'bad-close' disabled" in w and "OSError: disk gone" in w for w in warnings), warnings
    assert Raises.count == 3  # disabled at once: no more events after it raised
    assert events[-1].kind == "summary" and events[-1].steps == 9 and events[-1].path
    assert [e.step for e in events if e.kind == "checkpoint"] == [4, 8, 9]  # no save was skipped
    assert recording.seen[-1].kind == "summary" and recording.closed == [("finished", None)]
    assert any(e.kind == "warning" and "'raises'" in e.message for e in recording.seen)  # others hear of it
    (record,) = runs.list_runs()
    assert record["status"] == "finished" and record["final"]["steps"] == 9


def test_an_observer_that_refuses_the_settings_stops_the_run_before_any_file(tiny_corpus):
    class Picky(rnnstudio.Observer):
        name = "picky"
        description = "refuses every run"

        @classmethod
        def wanted(cls, config):
            raise rnnstudio.RNNStudioError("picky needs a setting you did not give")

    host = load_plugins(no_plugins=True, extra=[("test:picky", observer_plugin(Picky))])
    with pytest.raises(RNNStudioError, match="observer 'picky': picky needs a setting"):
        list(Trainer(config(tiny_corpus, "never"), host=host).run())
    assert not (paths.models_dir() / "never").exists() and runs.list_runs() == []


def test_a_run_that_does_not_save_is_not_recorded(tiny_corpus, recording):
    host = load_plugins(no_plugins=True, extra=[("test:rec", observer_plugin(recording))])
    list(Trainer(config(tiny_corpus, "bench", save=False, max_steps=2), host=host).run())
    assert runs.list_runs() == [] and recording.closed == [("finished", None)]


# -- TensorBoard ---------------------------------------------------------------------------

def test_tensorboard_event_files_read_back_with_tensorboards_reader(tiny_corpus, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logdir = tmp_path / "tb"
    events = list(Trainer(config(tiny_corpus, "tb-model", tensorboard=str(logdir), sample_every=5,
                                 sample_length=10)).run())
    acc = EventAccumulator(str(logdir / "tb-model"))
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    assert {"train/loss", "train/perplexity", "val/perplexity", "val/accuracy"} <= set(scalars), scalars
    losses = {e.step: e.loss for e in events if e.kind == "progress"}
    assert {s.step: s.value for s in acc.Scalars("train/loss")} == pytest.approx(losses, rel=1e-6)
    val = {e.step: e.val["perplexity"] for e in events if e.kind == "evaluated"}
    assert {s.step: s.value for s in acc.Scalars("val/perplexity")} == pytest.approx(val, rel=1e-6)
    assert "sample/text_summary" in acc.Tags()["tensors"]


def test_tensorboard_resume_adds_to_the_same_run_folder(tiny_corpus, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logdir = tmp_path / "tb"
    list(Trainer(config(tiny_corpus, "again", tensorboard=str(logdir), max_steps=4)).run())
    list(Trainer(TrainConfig(name="again", resume=True, max_steps=8, tensorboard=str(logdir), device="cpu")).run())
    acc = EventAccumulator(str(logdir / "again"))
    acc.Reload()
    assert [s.step for s in acc.Scalars("train/loss")] == list(range(1, 9))


def test_tensorboard_thins_the_training_scalars_of_a_long_run(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from rnnstudio.events import Finished, Progress, Started

    cls = load_plugins(no_plugins=True).get("observer", "tensorboard")
    monkeypatch.setattr(sys.modules[cls.__module__], "TRAIN_POINTS", 10)
    observer = cls(TrainConfig(tensorboard=str(tmp_path)))
    observer.observe(Started("long", "cpu", 5, 100, 10, 10, 105, 1000, 0, 0, ""))
    for step in range(1, 106):
        observer.observe(Progress(step, 105, 0, step, 10, 1.0, 5.0, 1.0, None, {"perplexity": 2.0}))
    observer.observe(Finished("long", None, 105, 1, False, 2.0, None, 5.0, 1.0, "cpu", {}, {}))
    observer.close("finished")
    acc = EventAccumulator(str(tmp_path / "long"))
    acc.Reload()
    assert [s.step for s in acc.Scalars("train/loss")] == [*range(10, 101, 10), 105]  # every 10th, and the last


def test_training_without_tensorboard_writes_no_event_files(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    list(Trainer(config(tiny_corpus, "plain", max_steps=2)).run())
    assert not list(tmp_path.rglob("events.out.tfevents.*"))


def test_a_missing_tensorboard_package_is_one_line_naming_the_extra(tiny_corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    code = cli_main(["train", "--corpus", "text-file", "--corpus-opt", f"path={tiny_corpus}", "--hidden-size", "8",
                     "--max-steps", "2", "--device", "cpu", "--name", "notb", "--tensorboard", str(tmp_path / "tb")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err
    assert "tensorboard package" in err and "pip install 'rnnstudio[tensorboard]'" in err
    assert not (paths.models_dir() / "notb").exists()


def test_an_unwritable_tensorboard_folder_is_a_clear_error(tiny_corpus, tmp_path):
    pytest.importorskip("tensorboard")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RNNStudioError, match="cannot write TensorBoard files to .*pick another folder"):
        list(Trainer(config(tiny_corpus, "nowhere", tensorboard=str(blocker / "tb"))).run())

