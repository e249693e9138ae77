"""The training CLI from outside: stop signals, a closed stdout, plugins that exit, honest blame, resume and length errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from rnnstudio import checkpoint as ckpt
from rnnstudio.cli import main as cli_main
from cli_checks import one_line_error

PLUGIN = textwrap.dedent('''
    import sys
    from torch import nn
    import rnnstudio

    class ExitingGRU(rnnstudio.Cell):
        """A GRU whose N-th training forward calls sys.exit(7)."""
        name = "exiting-gru"
        description = "exits on purpose"
        params = (rnnstudio.Param("exit_at", "int", 0, help="forward call that exits"),)

        def __init__(self, input_size, hidden_size, num_layers=1, dropout=0.0, **options):
            super().__init__(input_size, hidden_size, num_layers, dropout, **options)
            self.rnn = nn.GRU(input_size, hidden_size, num_layers)
            self.calls = 0

        def forward(self, inputs, state):
            if self.training:
                self.calls += 1
                if self.calls == self.options["exit_at"]:
                    sys.exit(7)
            return self.rnn(inputs, state)

    class WrongWidth(ExitingGRU):
        """From its second training call on, outputs one unit too narrow (after the host's first-batch
        contract check): the error is raised in the host's code, not in this cell."""
        name = "wrong-width"

        def forward(self, inputs, state):
            out, state = self.rnn(inputs, state)
            if self.training:
                self.calls += 1
            return (out[..., 1:] if self.calls >= 2 else out), state

    class ExitingCorpus(rnnstudio.Corpus):
        name = "exiting-corpus"
        description = "exits while being read"

        def read(self):
            sys.exit("corpus gave up")

    @rnnstudio.hookimpl
    def register_cells(register):
        register(ExitingGRU)
        register(WrongWidth)

    @rnnstudio.hookimpl
    def register_corpora(register):
        register(ExitingCorpus)
''')

QUITTING_METRIC = textwrap.dedent('''
    import sys
    import rnnstudio

    class Quitter(rnnstudio.Metric):
        name = "quitter"
        description = "exits in update"
        def reset(self): pass
        def update(self, logits, targets, nll): sys.exit(3)
        def value(self): return 0.0

    @rnnstudio.hookimpl
    def register_metrics(register):
        register(Quitter)
''')


def _train_argv(corpus, name, *extra):
    return ["train", "--corpus", "text-file", "--corpus-opt", f"path={corpus}", "--hidden-size", "12",
            "--batch-size", "4", "--seq-len", "8", "--device", "cpu", "--threads", "1", "--eval-every", "0",
            "--checkpoint-minutes", "0", "--name", name, *extra]


def _popen(argv, home):
    env = {**os.environ, "RNNSTUDIO_HOME": str(home), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "rnnstudio", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _plugin(home, name="faulty.py", text=PLUGIN):
    folder = home / "data" / "plugins"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


def _step_of(name) -> int:
    meta, _ = ckpt.load_train_state(ckpt.model_path(name))
    return meta["position"]["step"]


# -- stop signals -------------------------------------------------------------------------------

def test_ctrl_c_stops_validates_saves_and_exits_130(tiny_corpus, rnnstudio_home):
    proc = _popen(_train_argv(tiny_corpus, "interrupted", "--max-steps", "100000", "--checkpoint-every", "0",
                              "--json"), rnnstudio_home)
    for line in proc.stdout:
        if json.loads(line)["event"] == "progress":
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    summary = json.loads(out.splitlines()[-1])
    assert summary["event"] == "summary" and summary["stopped"] and summary["steps"] == _step_of("interrupted")
    assert err.strip().splitlines()[-1].startswith(f"rnnstudio: stopped by SIGINT; the model is saved at step "
                                                   f"{summary['steps']} ")
    assert "Traceback" not in err


# -- stdout closed (| head -1) ------------------------------------------------------------------

def test_a_closed_stdout_keeps_training_and_saves_with_messages_on_stderr(tiny_corpus, rnnstudio_home):
    proc = _popen(_train_argv(tiny_corpus, "headless", "--max-steps", "150", "--eval-every", "50"), rnnstudio_home)
    first = proc.stdout.readline()
    proc.stdout.close()  # as `| head -1` does once it has its line
    err = proc.stderr.read()
    proc.wait(timeout=120)
    assert first.startswith("training headless on cpu")
    assert proc.returncode == 0, err
    assert "standard output was closed; training goes on" in err
    assert "Traceback" not in err and "Exception ignored" not in err
    assert err.strip().splitlines()[-1].startswith("finished after 150 steps") and "saved to" in err
    assert _step_of("headless") == 150


# -- BaseException from plugin code -------------------------------------------------------------

def test_sys_exit_in_a_cell_still_saves_the_last_completed_step(tiny_corpus, rnnstudio_home):
    _plugin(rnnstudio_home)
    proc = _popen(_train_argv(tiny_corpus, "exits", "--cell", "exiting-gru", "--cell-opt", "exit_at=13",
                              "--max-steps", "100", "--checkpoint-every", "5"), rnnstudio_home)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert err.strip() == ("rnnstudio: error: cell 'exiting-gru': the cell plugin raised called sys.exit(7) at "
                           "step 13; training stopped, the model is saved at step 12")
    assert _step_of("exits") == 12
    assert cli_main(["generate", "--model", "exits", "--length", "5"]) == 0


def test_sys_exit_in_a_metric_disables_it_and_training_finishes(tiny_corpus, rnnstudio_home, capsys):
    _plugin(rnnstudio_home, "quitter.py", QUITTING_METRIC)
    assert cli_main(_train_argv(tiny_corpus, "metric-quit", "--max-steps", "6")) == 0
    err = capsys.readouterr().err
    assert "metric 'quitter' disabled: it raised called sys.exit(3)" in err
    assert _step_of("metric-quit") == 6


def test_sys_exit_in_a_corpus_is_its_error(tiny_corpus, rnnstudio_home, capsys):
    _plugin(rnnstudio_home)
    one_line_error(capsys, ["train", "--corpus", "exiting-corpus", "--max-steps", "3", "--name", "c"],
                   "corpus 'exiting-corpus': the corpus plugin raised called sys.exit('corpus gave up')")


def test_an_error_raised_outside_the_cell_is_not_blamed_on_it(tiny_corpus, rnnstudio_home, capsys):
    _plugin(rnnstudio_home)
    err = one_line_error(capsys, _train_argv(tiny_corpus, "wrong", "--cell", "wrong-width", "--max-steps", "5"),
                         "training failed at step 2: RuntimeError", "the model is saved at step 1")
    assert "plugin raised" not in err and "intact" not in err  # no checkpoint existed before the failure
    assert _step_of("wrong") == 1


# -- resume and length -----------------------------------------------------------------------------

def test_resume_refuses_the_settings_it_keeps_and_names_them(tiny_corpus, capsys):
    assert cli_main(_train_argv(tiny_corpus, "kept", "--max-steps", "30")) == 0
    err = one_line_error(capsys, ["train", "--name", "kept", "--resume", "--cell", "lstm", "--hidden-size", "64",
                                  "--corpus", "text-file", "--max-steps", "40"],
                         "--resume keeps the saved model's data and model settings", "leave out --corpus, --cell, "
                         "--hidden-size")
    assert "--num-layers" in err and "--dropout" in err  # the kept settings are listed
    assert _step_of("kept") == 30


def test_resume_below_the_current_step_keeps_the_summary(tiny_corpus, capsys):
    assert cli_main(_train_argv(tiny_corpus, "ahead", "--max-steps", "30")) == 0
    before = ckpt.read_config(ckpt.model_path("ahead"))["summary"]
    capsys.readouterr()
    assert cli_main(["train", "--name", "ahead", "--resume", "--max-steps", "10", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert "already at step 30" in err and "validated and saved again, not trained" in err
    after = ckpt.read_config(ckpt.model_path("ahead"))["summary"]
    assert after["step"] == 30
    assert after["train_perplexity"] == before["train_perplexity"] is not None
    assert after["tokens_per_s"] == before["tokens_per_s"] > 0


@pytest.mark.parametrize("flag", ["--max-steps", "--epochs"])
def test_a_typed_zero_length_is_refused(capsys, flag):
    one_line_error(capsys, ["train", flag, "0"], f"{flag} 0 trains nothing", "to train one epoch")


def test_nan_fails_a_cell_option_range_check(capsys):
    one_line_error(capsys, ["train", "--cell", "rnn-scratch", "--cell-opt", "init_std=nan", "--max-steps", "2"],
                   "init_std must be a number, got nan")


def test_resume_refuses_a_changed_training_recipe_too(tiny_corpus, capsys):
    """The optimizer, schedule and batch layout come from the saved run (exact resume): naming one is an error,
    not a silent override."""
    assert cli_main(_train_argv(tiny_corpus, "recipe", "--max-steps", "20")) == 0
    err = one_line_error(capsys, ["train", "--name", "recipe", "--resume", "--schedule", "cosine", "--warmup", "5",
                                  "--max-steps", "40"], "and its training recipe", "leave out --schedule, --warmup")
    assert "--optimizer" in err and "--batch-size" in err and "--lr may change" in err
    assert _step_of("recipe") == 20
    assert cli_main(["train", "--name", "recipe", "--resume", "--max-steps", "30", "--lr", "0.001", "--device", "cpu",
                     "--threads", "1"]) == 0  # the length and the learning rate may change
    assert _step_of("recipe") == 30
