"""Reliability, part 2: crash-safe writes, corrupt and hostile model files, disk faults and the training lock."""

from __future__ import annotations

import ast
import errno
import json
import os
import pathlib
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import rnnstudio
from rnnstudio import checkpoint as ckpt
from rnnstudio import fileio, paths
from rnnstudio.store import writer as store_writer
from rnnstudio.cli import main as cli_main
from rnnstudio.errors import RNNStudioError
from rnnstudio.trainer import TrainConfig, Trainer
from cli_checks import one_line_error as _one_line_error

TINY = dict(cell="gru", hidden_size=16, batch_size=4, seq_len=8, eval_every=0, device="cpu", threads=1, seed=1)


def _config(corpus, **kw) -> TrainConfig:
    return TrainConfig(corpus="text-file", corpus_options={"path": str(corpus)}, **{**TINY, **kw})


def _train(config: TrainConfig):
    return list(Trainer(config).run())


def _models() -> Path:
    return paths.models_dir()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}



@pytest.fixture
def good_model(tiny_corpus):
    """A small trained model named 'good' (20 steps, checkpointed at 10 and 20)."""
    _train(_config(tiny_corpus, name="good", max_steps=20, checkpoint_every=10))
    return _models() / "good"


# -- crash-safe writes ------------------------------------------------------------------

def test_periodic_step_and_time_checkpoints_and_a_separate_best(tiny_corpus):
    events = _train(_config(tiny_corpus, name="periodic", max_steps=60, checkpoint_every=20, eval_every=10))
    assert [e.step for e in events if e.kind == "checkpoint"] == [20, 40, 60]
    best_steps = [e.step for e in events if e.kind == "evaluated" and e.best]
    folder = _models() / "periodic"
    _, meta = ckpt.read_tensors(folder / ckpt.BEST, "periodic")
    assert int(meta["step"]) == best_steps[-1]  # best.safetensors holds the best validation's weights
    best = ckpt.load_model("periodic", which=ckpt.BEST)
    assert best.model is not None
    # Time-based checkpoints: with a tiny interval every step is due, without any step interval.
    events = _train(_config(tiny_corpus, name="timed", max_steps=4, checkpoint_every=0, checkpoint_minutes=1e-9))
    assert [e.step for e in events if e.kind == "checkpoint"] == [1, 2, 3, 4]


def test_atomic_write_keeps_the_old_file_when_a_write_fails_midway(tmp_path, monkeypatch):
    target = tmp_path / "weights.safetensors"
    target.write_bytes(b"old and good")

    def half_then_full_disk(tmp):
        with open(tmp, "wb") as fh:
            fh.write(b"new but ha")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        fileio.atomic_write(target, half_then_full_disk)
    assert target.read_bytes() == b"old and good"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.safetensors"]  # no temp file left behind

    def boom(src, dst):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(fileio.os, "replace", boom)
    with pytest.raises(OSError):
        fileio.atomic_write_bytes(target, b"new and complete")
    assert target.read_bytes() == b"old and good"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.safetensors"]


def _failing_save_file(monkeypatch, fail_on_call: int, error: OSError):
    """Make the n-th safetensors write inside a checkpoint write half a file and then fail."""
    real = store_writer.save_file
    calls = {"n": 0}

    def save_file(tensors, filename, metadata=None):
        calls["n"] += 1
        if calls["n"] == fail_on_call:
            Path(filename).write_bytes(b"\x00" * 100)
            raise error
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(store_writer, "save_file", save_file)
    return real


@pytest.mark.parametrize("fail_on_call", [1, 2, 3])
def test_disk_full_during_a_checkpoint_leaves_a_loadable_model(good_model, tiny_corpus, monkeypatch, fail_on_call):
    before = _snapshot(good_model)
    real = _failing_save_file(monkeypatch, fail_on_call, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(RNNStudioError) as info:
        _train(_config(tiny_corpus, name="good", resume=True, max_steps=40, checkpoint_every=10))
    msg = str(info.value)
    assert "No space left on device" in msg and "previous checkpoint is intact" in msg and "'good'" in msg
    after = _snapshot(good_model)
    assert sorted(after) == sorted(before)  # no temp files
    if fail_on_call == 1:  # the very first file of the checkpoint: nothing changed at all
        assert after == before
    monkeypatch.setattr(store_writer, "save_file", real)  # the disk has room again
    loaded = ckpt.load_model("good")
    assert loaded.config["summary"]["step"] in (20, 30)
    resumed = _train(_config(tiny_corpus, name="good", resume=True, max_steps=40, checkpoint_every=10))
    assert resumed[-1].steps == 40


def test_failed_first_save_leaves_no_model_folder(tiny_corpus, monkeypatch):
    _failing_save_file(monkeypatch, 2, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(RNNStudioError, match="No space left"):
        _train(_config(tiny_corpus, name="fresh", max_steps=10, checkpoint_every=5))
    assert [p.name for p in _models().iterdir() if p.suffix != ".lock"] == []  # no folder, no staging folder
    assert not ckpt.ModelLock("fresh").busy()


def test_permission_denied_during_a_checkpoint_is_a_clear_error(good_model, tiny_corpus, monkeypatch):
    before = _snapshot(good_model)
    _failing_save_file(monkeypatch, 1, PermissionError(errno.EACCES, "Permission denied"))
    with pytest.raises(RNNStudioError, match="Permission denied.*check the folder's permissions"):
        _train(_config(tiny_corpus, name="good", resume=True, max_steps=30, checkpoint_every=10))
    assert _snapshot(good_model) == before


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write to a read-only folder")
def test_read_only_models_folder(tiny_corpus, capsys):
    models = _models()
    models.mkdir(parents=True)
    models.chmod(0o555)
    try:
        _one_line_error(capsys, ["train", "--corpus", "text-file", "--corpus-opt", f"path={tiny_corpus}",
                                 "--hidden-size", "16", "--batch-size", "4", "--seq-len", "8", "--max-steps", "5",
                                 "--device", "cpu", "--name", "ro"], "cannot write to the models folder")
        assert list(models.iterdir()) == []
    finally:
        models.chmod(0o755)


def test_read_only_file_system_is_a_clear_error_before_training(good_model, tiny_corpus, monkeypatch, capsys):
    """Simulated, so it runs as root too: the lock file is the first thing written, and it fails."""
    before = _snapshot(good_model)
    import filelock

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self.lock_file))

    monkeypatch.setattr(filelock.FileLock, "acquire", read_only)
    common = ["--device", "cpu", "--threads", "1", "--max-steps", "30"]
    _one_line_error(capsys, ["train", "--name", "good", "--resume", *common],
                    "cannot write to the models folder", "Read-only file system")
    _one_line_error(capsys, ["train", "--corpus", "text-file", "--corpus-opt", f"path={tiny_corpus}",
                             "--hidden-size", "16", "--batch-size", "4", "--seq-len", "8", "--name", "new", *common],
                    "cannot write to the models folder")
    assert _snapshot(good_model) == before and sorted(p.name for p in _models().iterdir() if p.suffix != ".lock") == ["good"]


# -- corrupt model files ----------------------------------------------------------------

def _break(good: Path, name: str, how) -> Path:
    broken = good.parent / name
    shutil.copytree(good, broken)
    how(broken)
    return broken


def _truncate(path: Path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _newer_config(folder: Path):
    config = json.loads((folder / "config.json").read_text())
    config["format_version"] = ckpt.FORMAT_VERSION + 1
    (folder / "config.json").write_text(json.dumps(config))


BREAKAGES = {
    "truncated-weights": (lambda f: _truncate(f / "weights.safetensors"), "weights.safetensors is corrupt"),
    "garbage-weights": (lambda f: (f / "weights.safetensors").write_bytes(os.urandom(3000)), "corrupt"),
    "empty-weights": (lambda f: (f / "weights.safetensors").write_bytes(b""), "corrupt"),
    "missing-weights": (lambda f: (f / "weights.safetensors").unlink(), "weights.safetensors is missing"),
    "missing-vocab": (lambda f: (f / "vocab.json").unlink(), "vocab.json is missing"),
    "corrupt-vocab": (lambda f: (f / "vocab.json").write_text("{\"tokens\": 7"), "vocab.json is corrupt"),
    "newer-format": (_newer_config, "newer RNN Studio"),
    "corrupt-config": (lambda f: (f / "config.json").write_text("{not json"), "config.json is corrupt"),
}


def test_corrupt_model_files_name_the_model_and_others_are_still_listed(good_model, capsys):
    for name, (how, _) in BREAKAGES.items():
        _break(good_model, name, how)
    for name, (_, expected) in BREAKAGES.items():
        with pytest.raises(RNNStudioError) as info:
            ckpt.load_model(name, weights="last")  # the breakages hit weights.safetensors, the last weights
        assert f"{name!r}" in str(info.value) and expected in str(info.value)
        _one_line_error(capsys, ["generate", "--model", name, "--length", "5", "--weights", "last"], f"{name!r}",
                        expected)
    listed = {m.name: m for m in ckpt.list_models()}
    assert set(listed) == {"good", *BREAKAGES}
    assert listed["good"].error is None and listed["good"].config["summary"]["step"] == 20
    for name in ("missing-weights", "missing-vocab", "newer-format", "corrupt-config"):
        assert name in listed[name].error
    assert cli_main(["models"]) == 0
    out = capsys.readouterr().out
    assert any(line.startswith("good ") and "BROKEN" not in line for line in out.splitlines())
    assert out.count("BROKEN") == len(BREAKAGES)  # the header check flags truncated and garbage weights too
    assert cli_main(["generate", "--model", "good", "--length", "5", "--seed", "1"]) == 0


def test_weights_from_another_architecture_are_refused(good_model, tiny_corpus):
    _train(_config(tiny_corpus, name="wider", hidden_size=24, max_steps=2))
    shutil.copy(_models() / "wider" / "weights.safetensors", good_model / "weights.safetensors")
    with pytest.raises(RNNStudioError, match="'good'.*does not match its config"):
        ckpt.load_model("good", weights="last")


def test_corrupt_training_state_on_resume_names_the_model(good_model, tiny_corpus, capsys):
    resume = ["train", "--name", "good", "--resume", "--max-steps", "30", "--device", "cpu", "--threads", "1"]
    state = good_model / "train_state.safetensors"
    original = state.read_bytes()
    _truncate(state)
    _one_line_error(capsys, resume, "'good'", "train_state.safetensors is corrupt")
    # A well-formed file that lacks what a resume needs (here: no RNG or optimizer tensors).
    tensors, metadata = ckpt.read_tensors(state.with_name("weights.safetensors"), "good")
    from safetensors.torch import save_file

    save_file({f"model.{k}": v for k, v in tensors.items()}, str(state),
              metadata={"format": "rnnstudio-train-state", "json": json.dumps({"position": {}, "optimizer": {}})})
    _one_line_error(capsys, resume, "'good'", "train_state.safetensors metadata field position.step is missing")
    # A training state from a newer RNN Studio.
    save_file({"x": torch.zeros(1)}, str(state), metadata={
        "format": "rnnstudio-train-state", "json": json.dumps({"format_version": ckpt.FORMAT_VERSION + 1})})
    _one_line_error(capsys, resume, "'good'", "saved by a newer RNN Studio", "upgrade")
    state.write_bytes(original)
    assert cli_main(resume) == 0


# -- hostile files: a pickle must never run ---------------------------------------------

class _Payload:
    """Unpickling this creates ``marker``: stands in for arbitrary code a hostile file would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_hostile_pickles_are_refused_and_never_run(good_model, tiny_corpus, tmp_path, capsys):
    # The payload is live: plain unpickling runs it.
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Payload(proof)))
    assert proof.exists()

    marker = tmp_path / "pwned"
    raw = pickle.dumps({"weights": _Payload(marker)})
    torch_file = tmp_path / "evil.pt"
    torch.save({"state": _Payload(marker)}, torch_file)
    assert not marker.exists()
    # Where the training state is stored, where the weights are, and as the .pt files other tools write.
    (good_model / "train_state.safetensors").write_bytes(raw)
    shutil.copy(torch_file, good_model / "weights.safetensors")
    (good_model / "best.safetensors").write_bytes(raw)
    for name in ("train_state.pt", "model.pt", "optimizer.pt", "checkpoint.pth"):
        shutil.copy(torch_file, good_model / name)

    for which in (ckpt.WEIGHTS, ckpt.BEST):
        with pytest.raises(RNNStudioError, match="'good'.*not a safetensors file"):
            ckpt.load_model("good", which=which)
    with pytest.raises(RNNStudioError, match="'good'.*train_state.safetensors is corrupt"):
        _train(_config(tiny_corpus, name="good", resume=True, max_steps=30))
    _one_line_error(capsys, ["generate", "--model", "good", "--length", "5"], "not a safetensors file")
    _one_line_error(capsys, ["train", "--name", "good", "--resume", "--max-steps", "30", "--device", "cpu"],
                    "train_state.safetensors")
    assert cli_main(["models", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["name"] == "good"
    assert not marker.exists()


def _unsafe_loads(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
        attr = node.func.attr
        kwargs = {k.arg: k.value for k in node.keywords}
        if owner in ("pickle", "cPickle", "dill", "joblib", "marshal") and attr in ("load", "loads"):
            found.append(f"{owner}.{attr} at line {node.lineno}")
        if owner == "torch" and attr == "load":
            wo = kwargs.get("weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                found.append(f"torch.load without weights_only=True at line {node.lineno}")
        if attr == "load" and isinstance(kwargs.get("allow_pickle"), ast.Constant) and kwargs["allow_pickle"].value:
            found.append(f"load(allow_pickle=True) at line {node.lineno}")
    return found


def test_the_app_never_unpickles():
    root = Path(rnnstudio.__file__).resolve().parent.parent
    files = sorted((root / "rnnstudio").rglob("*.py")) + sorted((root / "plugins").rglob("*.py"))
    assert len(files) > 10
    problems = {str(f.relative_to(root)): _unsafe_loads(ast.parse(f.read_text(encoding="utf-8"))) for f in files}
    assert {k: v for k, v in problems.items() if v} == {}
    # The checker itself catches what it is meant to.
    assert len(_unsafe_loads(ast.parse("import torch, pickle\ntorch.load(f)\npickle.loads(b)\n"
                                       "torch.load(f, weights_only=False)\nnp.load(f, allow_pickle=True)"))) == 4


# -- one trainer per model --------------------------------------------------------------

_HOLDER = ("import sys, time; from rnnstudio.checkpoint import ModelLock; lock = ModelLock(sys.argv[1]).acquire(); "
           "print('held', flush=True); time.sleep(60)")


def test_lock_refuses_a_live_owner_and_clears_a_stale_one(tiny_corpus, capsys):
    argv = ["train", "--corpus", "text-file", "--corpus-opt", f"path={tiny_corpus}", "--hidden-size", "16",
            "--batch-size", "4", "--seq-len", "8", "--max-steps", "5", "--device", "cpu", "--threads", "1",
            "--eval-every", "0", "--name", "locked"]
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, "locked"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        _one_line_error(capsys, argv, f"already being trained by process {holder.pid}")
        assert not (_models() / "locked").exists()
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the OS drops its lock
        holder.wait()
    # Its owner is gone: the lock (and the pid file it left) count for nothing, training goes ahead.
    assert (_models() / ".locked.owner.json").exists()
    assert cli_main(argv) == 0
    assert (_models() / "locked" / "weights.safetensors").exists() and not ckpt.ModelLock("locked").busy()
    # A torn or hostile owner file never breaks the lock or its message.
    for junk in ("{", "[" * 100_000, '{"pid": -1, "host": 5}', '{"pid": 99999999999999999999}', "null"):
        with ckpt.ModelLock("locked"):
            (_models() / ".locked.owner.json").write_text(junk)
            assert ckpt.ModelLock("locked").busy()
            with pytest.raises(RNNStudioError, match="already being trained by another process"):
                ckpt.ModelLock("locked").acquire()
        assert not ckpt.ModelLock("locked").busy()


def test_second_trainer_for_the_same_model_is_refused_while_the_first_runs(tiny_corpus):
    first = Trainer(_config(tiny_corpus, name="busy", max_steps=50, checkpoint_every=10)).run()
    assert next(first).kind == "started"  # holds the lock now
    with pytest.raises(RNNStudioError, match="'busy' is already being trained"):
        _train(_config(tiny_corpus, name="busy", max_steps=60))
    rest = list(first)
    assert rest[-1].kind == "summary" and rest[-1].steps == 50
