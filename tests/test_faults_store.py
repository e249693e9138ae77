"""Reliability, part 4: the model store from the outside. Each fault drives the real `rnnstudio` command in a
subprocess and checks the exit code, one line on stderr with no traceback, and that nothing is lost."""

from __future__ import annotations

import csv
import errno
import json
import os
import resource
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rnnstudio import checkpoint as ckpt
from rnnstudio import paths, runs
from rnnstudio.cli import main as cli_main
from rnnstudio.errors import RNNStudioError
from cli_checks import one_line_error
from store_cases import HOSTILE_FOLDERS, assert_one_line_error, make_hostile_folders, run_cli, train_good

TRAIN = ["--corpus", "text-file", "--hidden-size", "16", "--batch-size", "4", "--seq-len", "8", "--device", "cpu",
         "--threads", "1", "--eval-every", "0"]


@pytest.fixture
def good(tiny_corpus) -> Path:
    return train_good(tiny_corpus)


# -- malformed model folders: listed as broken, never hiding the others, and one-line errors ------------------

def test_models_lists_every_hostile_folder_as_broken_and_the_good_one_intact(good):
    names = make_hostile_folders(good)
    proc = run_cli("models")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()[1:]}
    assert set(lines) == {"good", *names}
    assert "BROKEN" not in lines["good"] and "gru" in lines["good"]
    for name in names:
        assert "BROKEN" in lines[name] and HOSTILE_FOLDERS[name][1] in lines[name], lines[name]
    rows = {r["name"]: r for r in json.loads(run_cli("models", "--json").stdout)}
    assert rows["good"]["error"] is None and rows["good"]["steps"] == 6
    assert all(rows[name]["error"] for name in names)


def test_models_reads_no_torch():
    code = ("import sys; from rnnstudio.cli import main; main(['models']); "
            "assert 'torch' not in sys.modules, 'rnnstudio models imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=60)


@pytest.mark.parametrize("name", sorted(HOSTILE_FOLDERS))
def test_generate_and_score_on_a_hostile_folder_give_one_line_errors(good, name, capsys, tiny_corpus):
    make_hostile_folders(good, [name])
    expected = HOSTILE_FOLDERS[name][1]
    # --weights last: the folders break weights.safetensors, and the default is the (intact) best weights
    one_line_error(capsys, ["--no-plugins", "generate", "--model", name, "--length", "3", "--weights", "last"],
                   f"'{name}'", expected)
    one_line_error(capsys, ["--no-plugins", "score", "--model", name, str(tiny_corpus), "--weights", "last"],
                   f"'{name}'", expected)


def test_hostile_shapes_are_refused_from_the_header_before_any_allocation(good, tiny_corpus):
    """hidden_size 20000 would allocate ~5 GB and 10,000 layers would take minutes: both are refused from the
    safetensors header, so the whole process stays small."""
    make_hostile_folders(good, ["cfg-hidden-20000"])
    layers = good.parent / "cfg-layers-10000"
    shutil.copytree(good, layers)
    config = json.loads((layers / "config.json").read_text())
    config["model"]["num_layers"] = config["train"]["num_layers"] = 10_000
    (layers / "config.json").write_text(json.dumps(config))
    for name, expected in (("cfg-hidden-20000", "(12, 20000)"), ("cfg-layers-10000", "10000 layers of 16 imply")):
        assert_one_line_error(run_cli("generate", "--model", name, "--length", "3"), "does not match", expected)
        assert_one_line_error(run_cli("score", "--model", name, str(tiny_corpus)), "does not match")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child so far, in KiB
    assert peak_kib < 1_500_000, f"a child used {peak_kib / 1024:.0f} MiB"


RESUME_BREAKAGES = {
    "batch -5": ({"position": {"batch": -5}}, "field position.batch must be >= 0"),
    "step string": ({"position": {"step": "12"}}, "field position.step must be an integer"),
    "best_val string": ({"position": {"best_val": "low"}}, "field position.best_val must be a number"),
    "first_loss string": ({"position": {"first_loss": "x"}}, "field position.first_loss must be a number"),
    "hidden count": ({"hidden": "one"}, "field hidden must be an integer"),
    "optimizer list": ({"optimizer": []}, "field optimizer must be a JSON object"),
    "newer": ({"format_version": 99}, "saved by a newer RNN Studio"),
    "format string": ({"format_version": "1"}, "field format_version must be an integer"),
}


def _rewrite_state(folder: Path, meta_patch: dict | None = None, tensors_patch=None) -> None:
    from safetensors.torch import save_file

    tensors, metadata = ckpt.read_tensors(folder / ckpt.STATE, folder.name)
    meta = json.loads(metadata["json"])
    for key, value in (meta_patch or {}).items():
        if isinstance(value, dict) and isinstance(meta.get(key), dict):
            meta[key].update(value)
        else:
            meta[key] = value
    if tensors_patch:
        tensors_patch(tensors)
    save_file(tensors, str(folder / ckpt.STATE), metadata={**metadata, "json": json.dumps(meta)})


@pytest.mark.parametrize("case", sorted(RESUME_BREAKAGES))
def test_resume_with_a_malformed_training_state_names_the_field(good, case, capsys):
    patch, expected = RESUME_BREAKAGES[case]
    _rewrite_state(good, patch)
    before = (good / ckpt.WEIGHTS).read_bytes()
    one_line_error(capsys, ["--no-plugins", "train", "--name", "good", "--resume", "--max-steps", "8"], "'good'",
                   expected)
    assert (good / ckpt.WEIGHTS).read_bytes() == before  # nothing lost


def test_resume_with_a_hidden_state_of_the_wrong_shape_blames_the_file_not_the_cell(good):
    import torch

    _rewrite_state(good, tensors_patch=lambda t: t.update({"hidden.0": torch.zeros(1, 4, 7)}))
    err = assert_one_line_error(run_cli("train", "--name", "good", "--resume", "--max-steps", "8"),
                                "'good'", "hidden state of shape")
    assert "plugin" not in err and "does not belong to this model" in err  # not "the cell plugin raised"
    assert cli_main(["--no-plugins", "generate", "--model", "good", "--length", "3", "--seed", "1"]) == 0


def test_resume_of_a_hostile_config_is_refused_before_anything_is_built(good):
    make_hostile_folders(good, ["cfg-hidden-20000"])
    config = json.loads((good.parent / "cfg-hidden-20000" / "config.json").read_text())
    config["train"]["hidden_size"] = 20000
    (good.parent / "cfg-hidden-20000" / "config.json").write_text(json.dumps(config))
    assert_one_line_error(run_cli("train", "--name", "cfg-hidden-20000", "--resume", "--max-steps", "8"),
                          "train_state.safetensors does not match its config", "(12, 20000)")
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < 1_500_000


# -- messages that blame the right thing ---------------------------------------------------------------------

def test_an_unreadable_config_says_unreadable_not_corrupt(good, monkeypatch, capsys):
    from rnnstudio.store import format as store_format

    real_open = os.open

    def denied(path, flags, *args):
        if Path(path).name == "config.json":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(store_format.os, "open", denied)
    err = one_line_error(capsys, ["--no-plugins", "generate", "--model", "good"], "cannot read config.json",
                         "Permission denied", "permissions")
    assert "corrupt" not in err and "retrain" not in err


def test_a_weights_file_that_is_a_folder_is_named_as_such_when_reading_and_writing(good, capsys):
    (good / ckpt.WEIGHTS).unlink()
    (good / ckpt.WEIGHTS).mkdir()
    assert "folder" in one_line_error(capsys, ["--no-plugins", "generate", "--model", "good", "--weights", "last"],
                                      "'good'")
    (good / ckpt.WEIGHTS).rmdir()
    shutil.copy(good / ckpt.BEST, good / ckpt.WEIGHTS)
    (good / ckpt.BEST).unlink()
    (good / ckpt.BEST).mkdir()
    (good / ckpt.BEST / "x").write_text("keeps the folder non-empty")
    err = assert_one_line_error(run_cli("train", "--name", "good", "--resume", "--max-steps", "8"), "'good'",
                                "is a folder")
    assert "disk space" not in err


# -- names -------------------------------------------------------------------------------------------------

def test_a_name_with_a_trailing_newline_or_a_nul_is_refused(tiny_corpus, capsys):
    assert_one_line_error(run_cli("train", *TRAIN, "--corpus-opt", f"path={tiny_corpus}", "--max-steps", "2",
                                  "--name", "trail\n"), "invalid model name 'trail\\n'")
    assert not paths.models_dir().exists() or not any("trail" in p.name for p in paths.models_dir().iterdir())
    for name in ("trail\n", "a\x00b", "x\n\n"):
        with pytest.raises(RNNStudioError, match="invalid model name"):
            ckpt.model_path(name)
    one_line_error(capsys, ["--no-plugins", "generate", "--model", "a\x00b"], "NUL")
    one_line_error(capsys, ["--no-plugins", "train", *TRAIN, "--corpus-opt", f"path={tiny_corpus}", "--name",
                            "a\x00b"], "invalid model name")


# -- disk faults -------------------------------------------------------------------------------------------

def test_disk_full_on_the_first_checkpoint_is_one_line_in_process(tiny_corpus, monkeypatch, capsys):
    """safetensors reports ENOSPC as its own SafetensorError ("... (os error 28)"), not as an OSError."""
    from safetensors import SafetensorError

    from rnnstudio.store import writer

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x00" * 10)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(writer, "save_file", full)
    err = one_line_error(capsys, ["--no-plugins", "train", *TRAIN, "--corpus-opt", f"path={tiny_corpus}",
                                  "--max-steps", "3", "--name", "full"],
                         "No space left on device", "no model folder was created", "free some disk space")
    assert "SafetensorError" not in err
    assert not (paths.models_dir() / "full").exists()
    assert [p.name for p in paths.models_dir().iterdir() if not p.name.endswith((".lock", ".json"))] == []


@pytest.fixture
def tiny_disk(tmp_path):
    """A 48 KiB tmpfs (root only); skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k,nr_inodes=200", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.parametrize("fill", [False, True], ids=["room-for-the-lock-only", "zero-bytes-left"])
def test_a_real_full_disk_gives_one_line_and_leaves_no_half_model(tiny_corpus, tiny_disk, monkeypatch, fill):
    home = tiny_disk / "home"
    home.mkdir()
    if fill:  # take every free block, so even the run record cannot be written
        fd = os.open(tiny_disk / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\x00" * 4096):
                pass
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        finally:
            os.close(fd)
    monkeypatch.setenv("RNNSTUDIO_HOME", str(home))
    proc = run_cli("train", *TRAIN, "--corpus-opt", f"path={tiny_corpus}", "--hidden-size", "64", "--max-steps", "3",
                   "--name", "big")
    assert_one_line_error(proc, "No space left on device")
    models = home / "data" / "models"
    assert not (models / "big").exists()
    assert not models.exists() or [p.name for p in models.iterdir() if ".new-" in p.name] == []


# -- the model lock ----------------------------------------------------------------------------------------

_CONTENDER = """
import sys, time
from rnnstudio.store.lock import ModelLock  # torch-free: the interpreter starts in a blink
from rnnstudio.errors import RNNStudioError
go, hold_until = float(sys.argv[2]), float(sys.argv[3])
time.sleep(max(0.0, go - time.time() - 0.02))
while time.time() < go:
    pass
tried = time.time()
try:
    lock = ModelLock(sys.argv[1]).acquire()
except RNNStudioError as exc:
    print("refused", tried, flush=True)
else:
    print("held", tried, flush=True)
    time.sleep(max(0.0, hold_until - time.time()))
    lock.release()
"""


def test_two_processes_started_together_never_both_hold_the_lock():
    """Six pairs of torch-free interpreters, each pair racing for one model's lock at the same instant."""
    paths.models_dir().mkdir(parents=True)
    go = time.time() + 4
    hold_until = go + 2
    pairs = [[subprocess.Popen([sys.executable, "-c", _CONTENDER, f"race{n}", str(go), str(hold_until)],
                               stdout=subprocess.PIPE, text=True) for _ in range(2)] for n in range(6)]
    for n, pair in enumerate(pairs):
        outs = [p.communicate(timeout=60)[0].split() for p in pair]
        assert all(float(tried) < hold_until for _, tried in outs), "a contender started too late to race"
        assert sorted(verdict for verdict, _ in outs) == ["held", "refused"], (n, outs)


def test_two_real_trainings_started_together_one_trains_one_is_refused(tiny_corpus):
    go = time.time() + 8  # both wait, torch loaded, for the same moment, then run the real command line
    start = ("import sys, time, torch; from rnnstudio.cli import main; time.sleep(max(0.0, float(sys.argv[1]) - "
             "time.time())); sys.exit(main(sys.argv[2:]))")
    argv = [sys.executable, "-c", start, str(go), "train", *TRAIN, "--corpus-opt", f"path={tiny_corpus}",
            "--max-steps", "200", "--name", "twin"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = sorted((p.wait(timeout=240), p.stderr.read().strip()) for p in procs)
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    (ok, _), (refused, err) = results
    assert ok == 0 and refused == 2, results
    assert err.startswith("rnnstudio: error: model 'twin' is already being trained by") and "\n" not in err
    assert ckpt.load_model("twin").config["summary"]["step"] == 200


# -- run records -------------------------------------------------------------------------------------------

RECORD_BREAKAGES = {
    "final-list": ("final", [1, 2], "field final must be a JSON object"),
    "config-string": ("config", "gru", "field config must be a JSON object"),
    "no-id": ("id", None, None),  # the file's name is the id: still listed, not broken
    "pid-huge": ("pid", 10**30, None),
    "pid-negative": ("pid", -5, None),
    "started-number": ("started", 5, "field started must be text"),
    "speed-string": ("final.tokens_per_s", "fast", "field final.tokens_per_s must be a number"),
    "ppl-string": ("final.val_perplexity", "low", "field final.val_perplexity must be a number"),
    "curves-list": ("curves", [], "field curves must be a JSON object"),
    "curve-strings": ("curves.val.perplexity", ["a"], "field curves.val.perplexity must be a list of numbers"),
}


def _broken_records(good_record: Path) -> None:
    for name, (dotted, value, _) in RECORD_BREAKAGES.items():
        record = json.loads(good_record.read_text())
        *parents, last = dotted.split(".")
        target = record
        for key in parents:
            target = target[key]
        if value is None:
            target.pop(last, None)
        else:
            target[last] = value
        if name.startswith("pid"):
            record["status"] = "running"
        (good_record.parent / f"{name}.json").write_text(json.dumps(record))
    (good_record.parent / "nested.json").write_text("[" * 100_000)
    (good_record.parent / "null.json").write_text("null")


def test_runs_json_and_csv_list_every_record_with_bad_ones_as_broken(good, tmp_path):
    (record,) = runs.list_runs()
    _broken_records(Path(record["path"]))
    expected_broken = {n for n, (_, _, msg) in RECORD_BREAKAGES.items() if msg} | {"nested", "null"}
    table = run_cli("runs")
    assert table.returncode == 0 and table.stderr == "", table.stderr
    lines = {line.split()[0]: line for line in table.stdout.splitlines()[1:]}
    assert set(lines) == {record["id"], *RECORD_BREAKAGES, "nested", "null"}
    assert "BROKEN" not in lines[record["id"]] and "finished" in lines[record["id"]]
    for name in expected_broken:
        assert "BROKEN" in lines[name], lines[name]
    for name, (_, _, msg) in RECORD_BREAKAGES.items():
        if msg:
            assert msg in lines[name], lines[name]
    assert "BROKEN" not in lines["no-id"] and "BROKEN" not in lines["pid-huge"]

    rows = {r["id"]: r for r in json.loads(run_cli("runs", "--json").stdout)}
    assert rows[record["id"]]["steps"] == 6 and {r for r in rows if rows[r]["status"] == "broken"} == expected_broken

    out = tmp_path / "runs.csv"
    done = run_cli("runs", "--csv", str(out))
    assert done.returncode == 0 and done.stderr.strip() == f"wrote {len(rows)} runs to {out}"
    csv_rows = {r["id"]: r for r in csv.DictReader(out.open())}
    assert set(csv_rows) == set(rows) and csv_rows[record["id"]]["steps"] == "6"


def test_runs_csv_writes_through_a_symlink_and_dash_is_stdout(good, tmp_path):
    target = tmp_path / "real.csv"
    target.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    assert run_cli("runs", "--csv", str(link)).returncode == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text().startswith("id,model,status")
    assert stat.S_IMODE(target.stat().st_mode) & 0o044  # the user's file keeps readable permissions

    dash = run_cli("runs", "--csv", "-")
    assert dash.returncode == 0 and dash.stdout == target.read_text()
    assert dash.stderr.strip() == "wrote 1 runs to standard output"

    # a link to this process's stdout, as /dev/stdout is: written through, never replaced
    stdout_link = tmp_path / "stdout"
    stdout_link.symlink_to("/proc/self/fd/1")
    through = run_cli("runs", "--csv", str(stdout_link))
    assert through.returncode == 0 and through.stdout == target.read_text() and stdout_link.is_symlink()

    assert_one_line_error(run_cli("runs", "--csv", str(tmp_path)), "is a folder")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert_one_line_error(run_cli("runs", "--csv", str(fifo), timeout=60), "a pipe that nobody reads")
    assert_one_line_error(run_cli("runs", "--csv", "-", "--json"), "pick one")


# -- a model folder deleted during training ------------------------------------------------------------------

def test_a_model_folder_deleted_during_training_is_written_again_complete(tiny_corpus):
    argv = [sys.executable, "-m", "rnnstudio", "train", *TRAIN, "--corpus-opt", f"path={tiny_corpus}",
            "--max-steps", "400", "--checkpoint-every", "20", "--name", "vanishing", "--json"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    folder = paths.models_dir() / "vanishing"
    deleted = 0
    try:
        for line in proc.stdout:
            event = json.loads(line)
            if event["event"] == "checkpoint" and deleted < 3:
                shutil.rmtree(folder, ignore_errors=True)  # the user deletes the folder, more than once
                deleted += 1
        code = proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        err = proc.stderr.read()
        proc.stderr.close()
    assert code == 0, err
    assert deleted == 3
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["best.safetensors", "config.json", "tokenizer.json", "train_state.safetensors", "vocab.json",
         "weights.safetensors"])
    assert ckpt.load_model("vanishing").config["summary"]["step"] == 400
    assert [m.error for m in ckpt.list_models()] == [None]
    assert run_cli("generate", "--model", "vanishing", "--length", "5", "--seed", "1").returncode == 0
