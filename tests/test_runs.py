"""Run records: every training run is recorded, listed by `rnnstudio runs` and exported to CSV."""

from __future__ import annotations

import csv
import json

import pytest

from rnnstudio import paths, runs
from rnnstudio.cli import main as cli_main
from rnnstudio.trainer import Progress, TrainConfig, Trainer


def config(path, name, **kw):
    base = dict(corpus="text-file", corpus_options={"path": str(path)}, cell="gru", hidden_size=16, batch_size=4,
                seq_len=16, max_steps=8, eval_every=3, checkpoint_every=0, device="cpu", name=name)
    return TrainConfig(**{**base, **kw})


def test_runs_are_recorded_listed_and_exported(tiny_corpus, tmp_path, capsys):
    for name, cell in (("r-gru", "gru"), ("r-rnn", "rnn-scratch")):
        events = list(Trainer(config(tiny_corpus, name, cell=cell)).run())
    summary = events[-1]
    records = runs.list_runs()
    assert [r["model"] for r in records] == ["r-gru", "r-rnn"]
    rec = records[1]
    assert rec["status"] == "finished" and rec["config"]["cell"] == "rnn-scratch" and rec["device"] == "cpu"
    assert rec["final"]["steps"] == 8 and rec["final"]["val_perplexity"] == pytest.approx(summary.val_perplexity)
    assert rec["final"]["tokens_per_s"] == pytest.approx(summary.tokens_per_s)
    train = rec["curves"]["train"]
    assert train["step"] == list(range(1, 9)) and len(train["loss"]) == 8
    assert rec["curves"]["val"]["step"] == [3, 6, 8]
    assert rec["curves"]["val"]["perplexity"][-1] == pytest.approx(summary.val_perplexity)
    assert runs.curve(rec, "val perplexity")[0] == [3, 6, 8]
    assert "val perplexity" in runs.curve_names(records) and "train loss" in runs.curve_names(records)
    assert not list(paths.runs_dir().glob(".*.tmp"))  # atomic writes leave no temp files

    assert cli_main(["runs", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["cell"] for r in rows] == ["gru", "rnn-scratch"] and rows[0]["steps"] == 8
    out = tmp_path / "runs.csv"
    assert cli_main(["runs", "--csv", str(out)]) == 0
    with open(out, newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    assert [t["model"] for t in table] == ["r-gru", "r-rnn"]
    assert float(table[1]["val_perplexity"]) == pytest.approx(summary.val_perplexity)
    assert cli_main(["runs"]) == 0
    assert "r-rnn" in capsys.readouterr().out


def test_stopped_interrupted_unsaved_and_broken_runs(tiny_corpus, capsys):
    trainer = Trainer(config(tiny_corpus, "stopper", max_steps=50))
    for event in trainer.run():
        if event.kind == "progress" and event.step == 3:
            trainer.stop()
    gen = Trainer(config(tiny_corpus, "quitter", max_steps=50)).run()
    for event in gen:
        if event.kind == "progress" and event.step == 2:
            break
    gen.close()  # the consumer walked away (a GUI closing its window)
    list(Trainer(config(tiny_corpus, "bench", save=False, max_steps=2)).run())
    (paths.runs_dir() / "garbage.json").write_text("{not json", encoding="utf-8")

    by_model = {r.get("model", r["id"]): r for r in runs.list_runs()}
    assert by_model["stopper"]["status"] == "stopped" and by_model["stopper"]["final"]["steps"] == 3
    assert by_model["quitter"]["status"] == "interrupted" and by_model["quitter"]["ended"]
    assert "bench" not in by_model  # in-memory runs (benchmarks) are not recorded
    assert by_model["garbage"]["status"] == "broken" and "unreadable" in by_model["garbage"]["error"]
    assert cli_main(["runs"]) == 0
    assert "BROKEN" in capsys.readouterr().out


def test_recorder_thins_long_curves():
    rec = runs.RunRecorder({"cell": "gru"})

    class Started:
        kind, model, device, parameters, vocab_size, train_tokens, val_tokens, step, path = (
            "started", "long", "cpu", 1, 2, 3, 4, 0, "")
        total_steps = 0  # unbounded: sample every 10 steps, thinning as the curve grows

    rec.observe(Started())
    for step in range(1, 100_001):
        rec.observe(Progress(step, 0, 0, step, 10, 1.0 / step, 100.0, 1.0, None, {"perplexity": 2.0}))
    steps = rec.record["curves"]["train"]["step"]
    assert len(steps) <= runs.MAX_POINTS and steps[0] >= 10 and steps[-1] >= 99_000
    assert steps == sorted(steps) and rec.every > 10
    rec.close()
    assert runs.load_run(rec.record["id"])["status"] == "interrupted"  # no summary event came


def test_an_unwritable_runs_folder_never_stops_training(tiny_corpus, rnnstudio_home):
    from rnnstudio.trainer import TrainConfig, Trainer

    (rnnstudio_home / "data").mkdir(parents=True, exist_ok=True)
    (rnnstudio_home / "data" / "runs").write_text("a file where the runs folder should be")
    cfg = TrainConfig(corpus="text-file", corpus_options={"path": str(tiny_corpus)}, hidden_size=8, batch_size=4,
                      seq_len=8, max_steps=3, name="norun", eval_every=0)
    events = list(Trainer(cfg).run())
    assert events[-1].kind == "summary" and events[-1].steps == 3


def test_a_live_run_reads_as_running(tiny_corpus):
    """The record of a training that is still going (here, in this process) is not mistaken for a killed one."""
    gen = Trainer(config(tiny_corpus, "alive", max_steps=50)).run()
    try:
        for event in gen:
            if event.kind == "progress" and event.step == 2:
                break
        (record,) = [r for r in runs.list_runs() if r.get("model") == "alive"]
        assert record["status"] == "running" and record["error"] is None
    finally:
        gen.close()
    (record,) = [r for r in runs.list_runs() if r.get("model") == "alive"]
    assert record["status"] == "interrupted"
