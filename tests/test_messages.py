"""One message source: the CLI's output and the GUI's Log tab say the same line for the same trainer event."""

from __future__ import annotations

import pytest

from rnnstudio.cli import _consume
from rnnstudio.events import Checkpointed, Evaluated, Finished, Sampled, Started, Warned
from rnnstudio.messages import event_line

EVENTS = [
    Started("demo", "cpu", 40, 9000, 1000, 70, 140, 12345, 0, 0, "/tmp/demo"),
    Evaluated(100, 1, {"perplexity": 3.25, "accuracy": 0.5}, True),
    Sampled(100, "the cat  \n\n"),
    Checkpointed(100, "/tmp/demo"),
    Warned(120, "the loss is rising"),
    Finished("demo", "/tmp/demo", 140, 2, False, 3.5, 3.25, 25000.0, 5.6, "cpu", {}, {}),
]


class FakeTrainer:
    def run(self):
        yield from EVENTS

    def stop(self):
        pass


def test_the_cli_prints_the_shared_lines(capsys):
    assert _consume(FakeTrainer(), False) == 0
    out = capsys.readouterr()
    printed = out.out + out.err
    for event in EVENTS:
        assert event_line(event).rstrip() in printed


def test_the_gui_log_shows_the_same_lines(qtbot):
    pytest.importorskip("PySide6")
    from rnnstudio.gui.training_page import TrainingPanel
    from rnnstudio.plugins import load_plugins

    panel = TrainingPanel(load_plugins(no_plugins=True))
    qtbot.addWidget(panel)
    panel._on_started(EVENTS[0])
    panel._on_checkpointed(EVENTS[3])
    panel._on_warned(EVENTS[4])
    log = panel.log.toPlainText()
    for event in (EVENTS[0], EVENTS[3], EVENTS[4]):
        assert event_line(event) in log


def test_sample_lines_show_newlines_and_count_trailing_blanks():
    assert event_line(EVENTS[2]) == "sample at step 100: the cat (then 4 blank characters)"
