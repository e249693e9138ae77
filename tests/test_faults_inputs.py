"""Reliability, part 3: bad corpora and settings, faulty plugins, divergence and plugin security."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import rnnstudio
from rnnstudio import checkpoint as ckpt
from rnnstudio import paths
from rnnstudio.cli import main as cli_main
from rnnstudio.errors import RNNStudioError
from rnnstudio.model import RNNLanguageModel
from rnnstudio.plugins import load_plugins
from rnnstudio.trainer import TrainConfig, Trainer
from cli_checks import one_line_error as _one_line_error

TINY = dict(cell="gru", hidden_size=16, batch_size=4, seq_len=8, eval_every=0, device="cpu", threads=1, seed=1)
TINY_FLAGS = ["--hidden-size", "16", "--batch-size", "4", "--seq-len", "8", "--max-steps", "5", "--device", "cpu",
              "--threads", "1", "--eval-every", "0"]
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _config(corpus="text-file", corpus_options=None, **kw) -> TrainConfig:
    return TrainConfig(corpus=corpus, corpus_options=corpus_options or {}, **{**TINY, **kw})



def _nothing_written(home: Path) -> None:
    assert not paths.models_dir().exists()
    assert [p for p in home.rglob("*") if p.is_file()] == []


# -- bad corpora ------------------------------------------------------------------------

def _file(content: bytes):
    def make(folder: Path) -> Path:
        path = folder / "corpus.txt"
        path.write_bytes(content)
        return path
    return make


def _folder_without_txt(folder: Path) -> Path:
    (folder / "texts").mkdir()
    (folder / "texts" / "notes.md").write_text("plenty of text, but not in a .txt file " * 50)
    return folder / "texts"


def _unreadable(folder: Path) -> Path:
    path = _file(b"some text " * 100)(folder)
    path.chmod(0)
    return path


BAD_CORPORA = {
    "empty": (_file(b""), ["corpus.txt", "empty or only whitespace", "give it some text"]),
    "whitespace": (_file(b"  \n\t\n   \r\n"), ["empty or only whitespace"]),
    "binary": (_file(b"PK\x03\x04" + bytes(range(256)) * 4), ["binary file", "NUL byte", "plain text file"]),
    "invalid-utf8": (_file(b"hello caf\xe9 au lait " * 10),
                     ["corpus.txt", "invalid utf-8 at byte offset 9", "encoding=latin-1", "errors=replace"]),
    "no-txt-folder": (_folder_without_txt, ["texts", "no .txt files"]),
    "missing": (lambda folder: folder / "nowhere.txt", ["nowhere.txt", "no such file", "path"]),
    "unreadable": (_unreadable, ["permission denied", "permissions"]),
    "one-token": (_file(b"a" * 5000), ["only 1 token", "at least two different tokens"]),
    "smaller-than-a-batch": (_file(b"abcdefghij" * 3), ["fewer than one batch", "--batch-size", "--seq-len"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CORPORA))
def test_bad_corpus_gives_a_specific_one_line_error_and_writes_nothing(case, tmp_path, rnnstudio_home, capsys,
                                                                       monkeypatch):
    if case == "unreadable" and ROOT:  # root reads a chmod 000 file, so say the permission check fails
        from rnnstudio.builtin_plugins import corpora

        monkeypatch.setattr(corpora.os, "access", lambda path, mode: False)
    make, expected = BAD_CORPORA[case]
    path = make(tmp_path)
    err = _one_line_error(capsys, ["train", "--corpus", "text-file", "--corpus-opt", f"path={path}", *TINY_FLAGS,
                                   "--name", "bad"], *expected)
    assert "corpus 'text-file'" in err
    _nothing_written(rnnstudio_home)
    # The GUI runs the same core and gets the same message.
    with pytest.raises(RNNStudioError) as info:
        list(Trainer(_config(corpus_options={"path": str(path)}, max_steps=5, name="bad")).run())
    assert all(text in str(info.value) for text in expected)


def test_invalid_utf8_offset_is_exact_across_read_chunks(tmp_path, monkeypatch):
    from rnnstudio import textfiles

    monkeypatch.setattr(textfiles, "CHUNK_BYTES", 7)  # so two-byte characters straddle reads
    path = tmp_path / "mixed.txt"
    good = "abcé".encode() * 5  # 5 bytes each
    path.write_bytes(good + b"\xff" + b"tail")
    corpus = load_plugins(no_plugins=True).corpus("text-file")
    with pytest.raises(RNNStudioError, match=f"invalid utf-8 at byte offset {len(good)};"):
        "".join(corpus(path=str(path)).iter_text())
    # Each suggested fix works.
    assert "".join(corpus(path=str(path), errors="replace").iter_text()) == "abcé" * 5 + "\ufffdtail"
    assert "".join(corpus(path=str(path), encoding="latin-1").iter_text()).endswith("\xfftail")


MEMORY_PROBE = textwrap.dedent("""
    import ctypes, gc, json, sys
    from rnnstudio.data import encode_stream
    from rnnstudio.plugins import load_plugins

    def status(field):
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(field))

    text_file = load_plugins(no_plugins=True).corpus("text-file")
    results = []
    for path in sys.argv[1:]:
        corpus = text_file(path=path)
        gc.collect()
        ctypes.CDLL(None).malloc_trim(0)  # hand freed heap back, so each measurement starts level
        before = status("VmRSS:")
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset the peak-RSS counter to the current RSS
        encoded = encode_stream(corpus.iter_text, tokenizer="char", preprocess="raw")
        results.append({"extra": status("VmHWM:") - before, "tokens": len(encoded.ids),
                        "dtype": str(encoded.ids.dtype)})
        del encoded
    print(json.dumps(results))
""")


def _write_corpus(path: Path, lines: int) -> int:
    line = "line {:07d}: the quick brown fox jumps over the lazy dog, again and again.\n"
    with open(path, "w", encoding="utf-8") as fh:
        for start in range(0, lines, 10_000):
            fh.write("".join(line.format(i) for i in range(start, start + 10_000)))
    return path.stat().st_size


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS reset")
def test_large_corpus_streams_into_compact_ids(tmp_path):
    small, big = tmp_path / "small.txt", tmp_path / "big.txt"
    sizes = [_write_corpus(small, 130_000), _write_corpus(big, 270_000)]
    assert sizes[1] > 20_000_000
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(small), str(big)], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)
    for size, result in zip(sizes, results):
        assert result["tokens"] == size  # ASCII: one token a byte
        assert result["dtype"] == "torch.uint8"  # one byte a token for a character vocabulary
    extra = [r["extra"] for r in results]
    # Far from holding the text several times: the peak is the 1-byte ids plus a fixed-size
    # window of the stream, so each extra byte of text costs about one byte of memory.
    assert extra[1] < 2.5 * sizes[1], f"peak grew by {extra[1] / sizes[1]:.2f}x the file size"
    slope = (extra[1] - extra[0]) / (sizes[1] - sizes[0])
    assert slope < 1.5, f"each byte of text costs {slope:.2f} bytes of peak memory"


# -- bad settings -----------------------------------------------------------------------

BAD_SETTINGS = {
    "hidden-size-0": (["--hidden-size", "0"], ["--hidden-size must be an integer >= 1"]),
    "negative-lr": (["--lr", "-0.5"], ["--lr must be a finite number > 0"]),
    "nan-lr": (["--lr", "nan"], ["--lr must be a finite number > 0"]),
    "seq-len-longer-than-corpus": (["--seq-len", "100000"], ["fewer than one batch", "--seq-len"]),
    "absent-cuda": (["--device", "cuda:7"], ["'cuda:7' is not available", "--device"]),
    "absent-mps": (["--device", "mps"], ["'mps' is not available", "--device cpu"]),
    "unknown-device": (["--device", "tpu"], ["unknown device 'tpu'"]),
    "dropout-1": (["--dropout", "1"], ["--dropout must be a finite number >= 0 and < 1"]),
    "no-layers": (["--num-layers", "0"], ["--num-layers must be an integer >= 1"]),
    "bad-name": (["--name", "../escape"], ["invalid model name"]),
    "unknown-cell": (["--cell", "gur"], ["unknown cell 'gur'", "Did you mean 'gru'"]),
    "resume-missing": (["--resume", "--name", "ghost"], ["no model named 'ghost'"]),
}


@pytest.mark.parametrize("case", sorted(BAD_SETTINGS))
def test_bad_setting_is_refused_before_any_file_is_created(case, tiny_corpus, rnnstudio_home, capsys):
    extra, expected = BAD_SETTINGS[case]
    if case == "absent-mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    if case == "absent-cuda" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    flags = [*TINY_FLAGS, "--name", "settings"]
    flags = flags[:-2] + extra if "--name" in extra else flags + extra
    _one_line_error(capsys, ["train", "--corpus", "text-file", "--corpus-opt", f"path={tiny_corpus}", *flags],
                    *expected)
    _nothing_written(rnnstudio_home)


def test_out_of_gpu_memory_suggests_smaller_sizes(tiny_corpus, monkeypatch, rnnstudio_home):
    def oom(self, idx, state=None):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(RNNLanguageModel, "forward_flat", oom)
    with pytest.raises(RNNStudioError) as info:
        list(Trainer(_config(corpus_options={"path": str(tiny_corpus)}, max_steps=5, name="oom")).run())
    msg = str(info.value)
    assert "out of GPU memory" in msg and "--batch-size" in msg and "--hidden-size" in msg
    assert not (paths.models_dir() / "oom").exists()


def test_out_of_gpu_memory_during_validation_too(tiny_corpus, monkeypatch):
    from rnnstudio import trainer

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(trainer, "evaluate", oom)
    with pytest.raises(RNNStudioError, match="out of GPU memory.*--batch-size"):
        list(Trainer(_config(corpus_options={"path": str(tiny_corpus)}, max_steps=5, eval_every=2)).run())


# -- faulty plugins ---------------------------------------------------------------------

class FlakyCell(rnnstudio.Cell):
    """A GRU that raises on its N-th training forward, or in eval mode, or while being built."""

    name = "flaky"
    description = "a cell that fails on purpose"
    params = (rnnstudio.Param("fail_at", "int", 0, help="raise on this forward call (0: never)"),
              rnnstudio.Param("fail_in_eval", "bool", False, help="raise in eval mode"),
              rnnstudio.Param("fail_init", "bool", False, help="raise in __init__"))

    def __init__(self, input_size, hidden_size, num_layers=1, dropout=0.0, **options):
        super().__init__(input_size, hidden_size, num_layers, dropout, **options)
        if self.options["fail_init"]:
            raise ValueError("cannot build me")
        self.rnn = nn.GRU(input_size, hidden_size, num_layers)
        self.calls = 0

    def forward(self, inputs, state):
        if self.training:
            self.calls += 1
            if self.calls == self.options["fail_at"]:
                raise RuntimeError("kaboom in the recurrence")
        elif self.options["fail_in_eval"]:
            raise IndexError("kaboom in eval")
        return self.rnn(inputs, state)


class PoisonCell(FlakyCell):
    """A GRU with a spare parameter that turns NaN on the N-th call without touching the loss."""

    name = "poison"

    def __init__(self, *args, **options):
        super().__init__(*args, **options)
        self.spare = nn.Parameter(torch.zeros(1))

    def forward(self, inputs, state):
        self.calls += 1
        if self.calls == self.options["fail_at"]:
            with torch.no_grad():
                self.spare.fill_(float("nan"))
        return self.rnn(inputs, state)


class BadMetric(rnnstudio.Metric):
    name = "bad-metric"
    description = "a metric that raises"

    def reset(self):
        pass

    def update(self, logits, targets, nll):
        raise ZeroDivisionError("metric bug")

    def value(self):
        return 0.0


class BrokenCorpus(rnnstudio.Corpus):
    name = "broken-corpus"
    description = "a corpus that raises"
    params = (rnnstudio.Param("in_init", "bool", False, help="raise in __init__"),)

    def __init__(self, **options):
        super().__init__(**options)
        if self.options["in_init"]:
            raise KeyError("no such source")

    def iter_text(self):
        yield "some text " * 10
        raise ConnectionError("the source went away")


class FaultyPlugins:
    @rnnstudio.hookimpl
    def register_cells(self, register):
        register(FlakyCell)
        register(PoisonCell)

    @rnnstudio.hookimpl
    def register_metrics(self, register):
        register(BadMetric)

    @rnnstudio.hookimpl
    def register_corpora(self, register):
        register(BrokenCorpus)


@pytest.fixture
def host():
    return load_plugins(no_plugins=True, extra=[("test:faults", FaultyPlugins())])


def test_cell_that_raises_stops_training_naming_it_and_saves_the_last_completed_step(host, tiny_corpus):
    config = _config(corpus_options={"path": str(tiny_corpus)}, cell="flaky", cell_options={"fail_at": 26},
                     max_steps=100, checkpoint_every=10, name="flaky")
    events = Trainer(config, host=host).run()
    snapshot = None
    with pytest.raises(RNNStudioError) as info:
        for event in events:
            if event.kind == "checkpoint":
                folder = Path(event.path)
                snapshot = {p.name: p.read_bytes() for p in folder.iterdir()}
    msg = str(info.value)
    assert "cell 'flaky'" in msg and "RuntimeError: kaboom in the recurrence at step 26" in msg
    assert msg.endswith("the model is saved at step 25")  # steps 21-25 are not lost
    assert snapshot is not None and {p.name: p.read_bytes() for p in folder.iterdir()} != snapshot
    loaded = ckpt.load_model("flaky", host=host)
    assert loaded.config["summary"]["step"] == 25
    assert not ckpt.ModelLock("flaky").busy()  # the lock is released on the way out


@pytest.mark.parametrize("options, expected, saved", [
    ({"fail_in_eval": True}, "IndexError: kaboom in eval during validation at step 3", True),
    ({"fail_init": True}, "could not be built", False)])
def test_cell_that_fails_in_validation_or_construction_is_named(host, tiny_corpus, options, expected, saved):
    config = _config(corpus_options={"path": str(tiny_corpus)}, cell="flaky", cell_options=options, max_steps=6,
                     eval_every=3, name="flaky")
    with pytest.raises(RNNStudioError) as info:
        list(Trainer(config, host=host).run())
    assert "cell 'flaky'" in str(info.value) and expected in str(info.value)
    assert (paths.models_dir() / "flaky").exists() == saved  # the 3 steps taken before validation are kept


def test_metric_that_raises_is_disabled_with_a_warning_and_training_goes_on(host, tiny_corpus):
    events = list(Trainer(_config(corpus_options={"path": str(tiny_corpus)}, max_steps=12, eval_every=4,
                                  name="metric"), host=host).run())
    warnings = [e.message for e in events if e.kind == "warning"]
    assert warnings and all("metric 'bad-metric' disabled" in w and "ZeroDivisionError" in w for w in warnings)
    summary = events[-1]
    assert summary.kind == "summary" and summary.steps == 12
    assert "bad-metric" not in summary.val and summary.val["perplexity"] > 0


@pytest.mark.parametrize("options, expected", [({}, "ConnectionError: the source went away"),
                                               ({"in_init": True}, "KeyError")])
def test_corpus_plugin_that_raises_is_named(host, options, expected):
    with pytest.raises(RNNStudioError) as info:
        list(Trainer(_config(corpus="broken-corpus", corpus_options=options, max_steps=5), host=host).run())
    assert "corpus 'broken-corpus'" in str(info.value) and expected in str(info.value)
    assert not paths.models_dir().exists()


USER_PLUGIN = textwrap.dedent("""
    import rnnstudio
    from torch import nn

    class Boom(rnnstudio.Cell):
        name = "boom"
        description = "raises on the first forward"

        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            self.lin = nn.Linear(1, 1)

        def forward(self, inputs, state):
            raise ValueError("user cell bug")

    class Gone(rnnstudio.Corpus):
        name = "gone"
        description = "raises when read"

        def read(self):
            raise FileNotFoundError("where did it go")

    @rnnstudio.hookimpl
    def register_cells(register):
        register(Boom)

    @rnnstudio.hookimpl
    def register_corpora(register):
        register(Gone)
""")


def test_user_plugin_faults_from_the_cli(tiny_corpus, rnnstudio_home, capsys):
    folder = paths.user_plugins_dir()
    folder.mkdir(parents=True)
    (folder / "faulty.py").write_text(USER_PLUGIN)
    _one_line_error(capsys, ["train", "--corpus", "text-file", "--corpus-opt", f"path={tiny_corpus}", "--cell",
                             "boom", *TINY_FLAGS, "--name", "boom"], "cell 'boom'", "ValueError: user cell bug")
    _one_line_error(capsys, ["train", "--corpus", "gone", *TINY_FLAGS, "--name", "gone"],
                    "corpus 'gone'", "FileNotFoundError: where did it go")
    assert not paths.models_dir().exists() or [p for p in paths.models_dir().iterdir() if p.suffix != ".lock"] == []


# -- divergence -------------------------------------------------------------------------

@pytest.mark.parametrize("clip", [0.0, 1.0])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_huge_learning_rate_is_caught_within_one_step(tiny_corpus, clip, optimizer):
    config = _config(corpus_options={"path": str(tiny_corpus)}, lr=1e6, clip=clip, optimizer=optimizer,
                     max_steps=50, checkpoint_every=5, name="diverge")
    steps = []
    with pytest.raises(RNNStudioError) as info:
        for event in Trainer(config).run():
            steps += [event.step] if event.kind == "progress" else []
    msg = str(info.value)
    # the first update blows up; the next step's loss shows it, and that step is reported (for the charts)
    # when its loss is still a number
    assert steps in ([1], [1, 2])
    assert "diverged at step 2" in msg and "Lower the learning rate (--lr, now 1e+06)" in msg and "--clip" in msg
    assert not (paths.models_dir() / "diverge").exists()  # no checkpoint of a broken model was ever written


def test_divergence_on_resume_leaves_the_last_good_checkpoint_untouched(tiny_corpus, capsys):
    base = ["train", "--corpus", "text-file", "--corpus-opt", f"path={tiny_corpus}", "--hidden-size", "16",
            "--batch-size", "4", "--seq-len", "8", "--device", "cpu", "--threads", "1", "--name", "steady"]
    assert cli_main(base + ["--max-steps", "20", "--checkpoint-every", "10"]) == 0
    folder = paths.models_dir() / "steady"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    resume = ["train", "--name", "steady", "--resume", "--device", "cpu", "--threads", "1", "--max-steps", "40",
              "--checkpoint-every", "5"]
    _one_line_error(capsys, resume + ["--lr", "1e6"], "diverged at step 22", "Lower the learning rate")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    # Following the advice: resume with a lower learning rate from the untouched checkpoint.
    assert cli_main(resume + ["--lr", "0.001"]) == 0
    config = json.loads((folder / "config.json").read_text())
    assert config["train"]["lr"] == 0.001 and config["summary"]["step"] == 40


def test_nan_weights_are_never_checkpointed(host, tiny_corpus):
    config = _config(corpus_options={"path": str(tiny_corpus)}, cell="poison", cell_options={"fail_at": 5},
                     max_steps=20, checkpoint_every=5, name="poisoned")
    with pytest.raises(RNNStudioError, match="diverged at step 5: the weights became NaN or inf"):
        list(Trainer(config, host=host).run())
    assert not (paths.models_dir() / "poisoned").exists()


def test_exploding_loss_warns_and_training_goes_on(tiny_corpus):
    config = _config(corpus_options={"path": str(tiny_corpus)}, lr=10.0, clip=0.0, max_steps=15,
                     explode_patience=3, save=False)
    events = list(Trainer(config).run())
    warnings = [e.message for e in events if e.kind == "warning" and "exploding" in e.message]
    assert warnings and "above 3x the first loss" in warnings[0] and "for 3 steps" in warnings[0]
    assert events[-1].kind == "summary" and events[-1].steps == 15


def test_explosion_reference_survives_a_resume(tiny_corpus):
    """After a resume the check still compares with the run's very first loss, not a low, trained one."""
    config = _config(corpus_options={"path": str(tiny_corpus)}, max_steps=40, name="ref")
    first = next(e.loss for e in list(Trainer(config).run()) if e.kind == "progress")
    meta, _ = ckpt.load_train_state(paths.models_dir() / "ref")
    assert meta["position"]["first_loss"] == first
    resumed = Trainer(_config(corpus_options={"path": str(tiny_corpus)}, max_steps=45, name="ref", resume=True))
    events = list(resumed.run())
    assert events[0].step == 40 and events[-1].steps == 45
    meta, _ = ckpt.load_train_state(paths.models_dir() / "ref")
    assert meta["position"]["first_loss"] == first


# -- plugin security --------------------------------------------------------------------

MARKER_PLUGIN = textwrap.dedent("""
    from pathlib import Path
    Path({marker!r}).touch()  # proof that this file's code ran
""")


def _user_plugin(tmp_path) -> tuple[Path, Path]:
    folder = paths.user_plugins_dir()
    folder.mkdir(parents=True, exist_ok=True)
    marker = tmp_path / "plugin-ran"
    path = folder / "marker.py"
    path.write_text(MARKER_PLUGIN.format(marker=str(marker)))
    path.chmod(0o644)
    return path, marker


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_world_writable_or_foreign_plugin_files_are_refused(tmp_path, monkeypatch):
    path, marker = _user_plugin(tmp_path)
    load_plugins()
    assert marker.exists()  # a safe file runs: the marker works
    marker.unlink()
    path.chmod(0o666)
    host = load_plugins()
    assert any("refused" in f.error and "world-writable" in f.error for f in host.failures)
    assert not marker.exists()
    path.chmod(0o644)
    if ROOT:
        os.chown(path, 65534, -1)  # nobody
    else:
        from rnnstudio import plugins

        real = os.getuid()
        monkeypatch.setattr(plugins.os, "getuid", lambda: real + 1)
    host = load_plugins()
    assert any("refused" in f.error and "owned by another user" in f.error for f in host.failures)
    assert not marker.exists()


def test_no_plugins_is_a_safe_mode(tmp_path, monkeypatch, capsys):
    _, marker = _user_plugin(tmp_path)
    assert cli_main(["--no-plugins", "plugins", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert all(s.startswith("builtin:") for s in info["plugins"]) and not marker.exists()
    monkeypatch.setenv("RNNSTUDIO_NO_PLUGINS", "1")
    load_plugins()
    assert not marker.exists()


def test_reliability_docs_list_every_fault_with_its_test():
    readme = (Path(__file__).resolve().parent.parent / "docs" / "reliability.md").read_text(encoding="utf-8")
    section = readme.split("<!-- section:reliability -->")[1].split("<!-- /section:reliability -->")[0]
    assert "runs with your rights" in section
    here = Path(__file__).resolve().parent
    named = set()
    for line in section.splitlines():
        for cell in line.split("`"):
            if cell.startswith("test_faults") and "::" in cell:
                named.add(cell)
    assert len(named) >= 20
    for ref in named:  # every test the table names exists
        file, test = ref.split("::")
        assert f"def {test.split('[')[0]}(" in (here / file).read_text(encoding="utf-8"), ref
