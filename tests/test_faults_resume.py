"""Reliability, part 1: exact resume (in-process and via the CLI) and a real SIGKILL in the middle of training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from rnnstudio import checkpoint as ckpt
from rnnstudio import runs
from rnnstudio.cli import main as cli_main
from rnnstudio.trainer import TrainConfig, Trainer

# Tiny and single-threaded: the runs are short, and a thread count never changes the arithmetic.
TINY = dict(cell="gru", hidden_size=16, num_layers=2, dropout=0.3, batch_size=4, seq_len=8, eval_every=100,
            device="cpu", threads=1, seed=3)


def _config(corpus, **kw) -> TrainConfig:
    return TrainConfig(corpus="text-file", corpus_options={"path": str(corpus)}, **{**TINY, **kw})


def _train(config: TrainConfig):
    return list(Trainer(config).run())


def _state(name: str):
    meta, tensors = ckpt.load_train_state(ckpt.model_path(name))
    return meta["position"], tensors


def _assert_same_state(name_a: str, name_b: str, tol: float = 1e-6):
    """Same position, and every tensor of train_state (weights, Adam moments and steps, RNG, hidden) equal."""
    pos_a, ta = _state(name_a)
    pos_b, tb = _state(name_b)
    assert pos_a.pop("elapsed") >= 0 and pos_b.pop("elapsed") >= 0  # wall time: the only field that differs
    assert pos_a == pos_b
    assert set(ta) == set(tb)
    assert any(k.startswith("optim.") for k in ta) and "rng.torch" in ta
    for key in ta:
        diff = (ta[key].double() - tb[key].double()).abs().max().item() if ta[key].numel() else 0.0
        assert diff <= tol, f"{key} differs by {diff}"
    return pos_a


@pytest.mark.parametrize("partition", ["sequential", "random"])
def test_200_plus_200_steps_equal_400_straight_with_dropout(tiny_corpus, partition):
    first = _train(_config(tiny_corpus, name="halves", max_steps=200, partition=partition, checkpoint_every=70))
    assert first[-1].kind == "summary" and first[-1].steps == 200
    resumed = _train(_config(tiny_corpus, name="halves", resume=True, max_steps=400, checkpoint_every=70))
    started = resumed[0]
    assert started.kind == "started" and started.step == 200
    progress = [e.step for e in resumed if e.kind == "progress"]
    assert progress[0] == 201 and progress[-1] == 400  # the counters continue, they do not restart
    _train(_config(tiny_corpus, name="straight", max_steps=400, partition=partition, checkpoint_every=70))

    pos = _assert_same_state("halves", "straight")
    assert pos["step"] == 400 and pos["epoch"] >= 1  # 400 steps cross an epoch boundary on this corpus
    a, b = ckpt.load_model("halves"), ckpt.load_model("straight")
    for (key, wa), wb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(wa, wb), key
    assert a.config["summary"]["step"] == 400


def test_resume_restores_optimizer_and_rng_state(tiny_corpus):
    _train(_config(tiny_corpus, name="opt", max_steps=30, eval_every=0))
    meta, tensors = ckpt.load_train_state(ckpt.model_path("opt"))
    loaded = ckpt.load_model("opt")
    opt = torch.optim.Adam(loaded.model.parameters(), lr=0.005)
    torch.manual_seed(12345)  # anything but the saved RNG state
    hidden = ckpt.restore_train_state(meta, tensors, loaded.model, opt)
    assert torch.equal(torch.get_rng_state(), tensors["rng.torch"])
    restored = opt.state_dict()["state"]
    assert len(restored) == len(list(loaded.model.parameters()))
    for idx, st in restored.items():
        assert int(st["step"]) == 30
        assert torch.equal(st["exp_avg"], tensors[f"optim.{idx}.exp_avg"])
        assert torch.equal(st["exp_avg_sq"], tensors[f"optim.{idx}.exp_avg_sq"])
        assert st["exp_avg"].abs().sum() > 0  # real running moments, not a fresh optimizer
    assert len(hidden) == 1 and hidden[0].shape == (2, 4, 16)  # the GRU state carried across batches


def test_cli_resume_continues_counters(tiny_corpus, capsys):
    common = ["train", "--corpus", "text-file", "--corpus-opt", f"path={tiny_corpus}", "--hidden-size", "16",
              "--batch-size", "4", "--seq-len", "8", "--device", "cpu", "--threads", "1", "--name", "cli",
              "--eval-every", "0", "--json"]
    assert cli_main(common + ["--max-steps", "20"]) == 0
    capsys.readouterr()
    assert cli_main(["train", "--name", "cli", "--resume", "--max-steps", "45", "--device", "cpu",
                     "--threads", "1", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["event"] == "started" and lines[0]["step"] == 20
    assert lines[-1]["event"] == "summary" and lines[-1]["steps"] == 45
    pos, _ = _state("cli")
    assert pos["step"] == 45
    # A second fresh run into the same name is refused rather than overwriting it.
    assert cli_main(common + ["--max-steps", "5"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_sigkill_mid_training_loses_only_steps_since_last_checkpoint(tiny_corpus, rnnstudio_home, capsys):
    every = 25
    cmd = [sys.executable, "-m", "rnnstudio", "train", "--corpus", "text-file", "--corpus-opt",
           f"path={tiny_corpus}", "--cell", "gru", "--hidden-size", "16", "--num-layers", "2", "--dropout", "0.3",
           "--batch-size", "4", "--seq-len", "8", "--seed", "3", "--device", "cpu", "--threads", "1",
           "--eval-every", "0", "--max-steps", "100000", "--checkpoint-every", str(every),
           "--checkpoint-minutes", "0", "--name", "killed", "--json"]
    env = {**os.environ, "RNNSTUDIO_HOME": str(rnnstudio_home)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    last_checkpoint = 0
    try:
        deadline = time.monotonic() + 120
        for line in proc.stdout:
            event = json.loads(line)
            if event["event"] == "checkpoint":
                last_checkpoint = event["step"]
            if last_checkpoint >= 2 * every:
                break
            assert time.monotonic() < deadline, "training never reached its second checkpoint"
        # A second process for the same model is refused while the first one trains.
        assert cli_main(["train", "--name", "killed", "--resume", "--max-steps", "500", "--device", "cpu"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"rnnstudio: error: model 'killed' is already being trained by process {proc.pid}; "
                              f"wait for it to finish") and "\n" not in err
        time.sleep(0.3)  # let it get some way past the checkpoint, possibly into the next write
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert last_checkpoint >= 2 * every
    # Its run record could not be closed; readers see it as interrupted, not as still running.
    (record,) = [r for r in runs.list_runs() if r.get("model") == "killed"]
    assert record["status"] == "interrupted" and "killed" in record["error"]

    # The folder loads, is listed without error, and holds a checkpoint no older than the last one reported.
    loaded = ckpt.load_model("killed")
    assert loaded.config["summary"]["step"] >= last_checkpoint
    assert [m.error for m in ckpt.list_models()] == [None]
    pos, _ = _state("killed")
    saved_step = pos["step"]
    assert saved_step >= last_checkpoint and saved_step % every == 0
    assert not ckpt.ModelLock("killed").busy()  # the OS dropped the killed process's lock

    target = saved_step + 15
    resumed = _train(_config(tiny_corpus, name="killed", resume=True, max_steps=target, eval_every=0))
    assert resumed[0].step == saved_step and resumed[-1].steps == target
    assert not ckpt.ModelLock("killed").busy()
    # Resuming after the kill lands exactly where an uninterrupted run does.
    _train(_config(tiny_corpus, name="unbroken", max_steps=target, eval_every=0, checkpoint_every=every,
                   checkpoint_minutes=0))
    _assert_same_state("killed", "unbroken")
    leftovers = [p.name for p in (rnnstudio_home / "data" / "models" / "killed").iterdir() if p.name.startswith(".")]
    assert leftovers == []  # half-written temp files from the kill are cleaned up on resume
