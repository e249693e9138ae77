"""Shared test helper for the GUI tests: a main window whose threads are always joined, tiny settings, tiny models."""

from __future__ import annotations

from contextlib import contextmanager

from rnnstudio.gui import fields as F
from rnnstudio.gui.main_window import MainWindow
from rnnstudio.plugins import load_plugins
from tiny_models import train_on_file


@contextmanager
def joined_window(qtbot, host):
    """A main window with no restored settings; on the way out its training and generation threads are stopped
    and joined."""
    win = MainWindow(host, restore=False)
    qtbot.addWidget(win)
    yield win
    # teardown: never leave a thread running
    assert win.training.stop_and_join(timeout_s=30)
    assert win.generation.stop_and_join(timeout_s=30)


def configure(panel, corpus_path, **overrides):
    """Tiny settings: the text-file corpus on a temp file, an 8-unit GRU, 4x8 batches, 20 steps on the CPU."""
    panel.set_corpus("text-file")
    panel.corpus_form.editors["path"].setText(str(corpus_path))
    values = {"hidden_size": 8, "batch_size": 4, "seq_len": 8, "length_mode": "steps", "length": 20,
              "eval_every": 5, "sample_every": 10, "device": "cpu", "threads": 1, "name": "gui-model"}
    values.update(overrides)
    for key, value in values.items():
        F.set_value(panel.fields[key], value)


def train_directly(corpus_path, name, steps=5, **kw):
    """A saved model made without the GUI (for the generation and models tests)."""
    train_on_file(corpus_path, name, host=load_plugins(no_plugins=True), hidden_size=8, batch_size=4, seq_len=8,
                  max_steps=steps, eval_every=0, threads=1, **kw)
