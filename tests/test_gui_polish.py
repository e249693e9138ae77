"""The desktop app as a daily tool (pytest-qt, offscreen): window size, honest curves, resume, the GUI's own words, first launch."""

from __future__ import annotations

import math
import os
import re
import stat

import pytest

pytest.importorskip("pytestqt")
from PySide6.QtCore import QPoint, QPointF, Qt  # noqa: E402
from PySide6.QtGui import QWheelEvent  # noqa: E402
from PySide6.QtWidgets import QApplication, QMessageBox, QWidget  # noqa: E402

from rnnstudio import checkpoint, runs  # noqa: E402
from rnnstudio.config import TrainConfig  # noqa: E402
from rnnstudio.gui import fields as F  # noqa: E402
from rnnstudio.gui import platform_check  # noqa: E402
from rnnstudio.plugins import load_plugins  # noqa: E402
from rnnstudio.trainer import Trainer  # noqa: E402

import gui_training  # noqa: E402
from gui_training import joined_window  # noqa: E402

WAIT_MS = 30_000
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py, like ``errors``


@pytest.fixture
def window(qtbot, errors, monkeypatch):
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.Yes)  # never a modal in teardown
    with joined_window(qtbot, load_plugins(no_plugins=True)) as win:
        yield win


def configure(panel, corpus_path, **overrides):
    """The shared tiny settings, shorter: 12 steps, no samples."""
    gui_training.configure(panel, corpus_path, **{"length": 12, "eval_every": 4, "sample_every": 0, "name": "polish",
                                                  **overrides})


def train_directly(corpus_path, name):
    gui_training.train_directly(corpus_path, name, steps=4)


# -- 1. first launch on a bare Linux --------------------------------------------------------

def test_missing_xcb_libraries_give_one_line_naming_every_package():
    gone = {"libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-keysyms.so.1"}
    line = platform_check.platform_problem({"DISPLAY": ":0"}, "linux", load=lambda soname: soname not in gone)
    assert line is not None and "\n" not in line
    assert "sudo apt-get install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1" in line
    assert "sudo dnf install xcb-util-cursor xcb-util-wm xcb-util-keysyms" in line
    assert platform_check.platform_problem({"DISPLAY": ":0"}, "linux", load=lambda soname: True) is None
    # offscreen, Wayland and other systems never load the xcb plugin: no check
    for env, system in (({"QT_QPA_PLATFORM": "offscreen"}, "linux"), ({"WAYLAND_DISPLAY": "wayland-0"}, "linux"),
                        ({"QT_QPA_PLATFORM": "wayland"}, "linux"), ({}, "darwin"), ({}, "win32")):
        assert platform_check.platform_problem(env, system, load=lambda soname: False) is None, env
    assert platform_check.uses_xcb({"QT_QPA_PLATFORM": "xcb", "WAYLAND_DISPLAY": "w"}, "linux")


def test_the_app_prints_the_line_and_exits_before_any_qt_abort(monkeypatch, capsys):
    from rnnstudio.gui import app

    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    monkeypatch.setattr(platform_check, "loadable", lambda soname: soname != "libxcb-icccm.so.4")
    monkeypatch.setattr(app, "create_app", lambda *a: pytest.fail("the QApplication must not be created"))
    assert app.main(no_plugins=True) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "libxcb-icccm4" in err and "xcb-util-wm" in err


def test_every_listed_library_is_one_that_qts_xcb_plugin_links(tmp_path):
    """The sonames come from ldd of PySide6's libqxcb.so: each must appear in the plugin or its XcbQpa library."""
    import PySide6

    qt = os.path.join(os.path.dirname(PySide6.__file__), "Qt")
    blobs = b""
    for rel in ("plugins/platforms/libqxcb.so", "lib/libQt6XcbQpa.so.6"):
        path = os.path.join(qt, rel)
        if not os.path.exists(path):
            pytest.skip("this PySide6 has no xcb plugin")
        with open(path, "rb") as fh:
            blobs += fh.read()
    for soname, _, _ in platform_check.XCB_LIBRARIES:
        assert soname.encode() in blobs, soname


# -- 2. status text never sets the window's minimum size ----------------------------------------

def test_long_status_text_is_elided_and_never_widens_the_window(qtbot, window):
    window.resize(1000, 700)
    window.show()
    qtbot.waitExposed(window)
    window.training.charts  # built after the first paint
    QApplication.processEvents()
    before = window.minimumSizeHint().width()
    assert before <= 900  # every page fits a small laptop screen
    long = "training diverged at step 3: " + "the loss became inf " * 60
    window.training.progress_label.setText(long)
    window.show_status(long)
    QApplication.processEvents()
    assert window.minimumSizeHint().width() == before and window.minimumSizeHint().width() < 1000
    assert window.width() <= 1000
    label = window.training.progress_label
    assert label.shown_text().endswith("…") and label.toolTip() == long and label.text() == long
    assert window.statusBar().currentMessage().endswith("…") and window.statusBar().toolTip() == long
    assert long in window.training.log.toPlainText()  # the full text is in the Log
    window.resize(900, 600)  # and it can still shrink
    QApplication.processEvents()
    assert window.width() == 900


def test_stale_texts_go_away(qtbot, window, tiny_corpus):
    assert window.statusBar().currentMessage().startswith("Ready")
    configure(window.training, tiny_corpus)
    assert window.training.start()
    qtbot.waitUntil(lambda: not window.training.is_training(), timeout=WAIT_MS)
    assert "Ready" not in window.statusBar().currentMessage()
    window.statusBar().showMessage("Inspector: perplexity 3.2 over 40 tokens", 10000)
    window.tabs.setCurrentIndex(window.tabs.count() - 1)
    assert window.statusBar().currentMessage() == ""  # one tab's result never shows on another


# -- 3. honest per-step curves with smoothing ---------------------------------------------------

def test_the_train_curve_is_per_step_with_no_cliffs_at_validations(qtbot, window, tiny_corpus, errors):
    panel = window.training
    configure(panel, tiny_corpus)
    panel.charts.smoothing.set_value(0)
    assert panel.start()
    qtbot.waitUntil(lambda: not panel.is_training(), timeout=WAIT_MS)
    assert not errors
    record = runs.list_runs()[-1]
    x, y = panel.charts.train_curve.getData()
    assert list(x) == list(range(1, 13)) == record["curves"]["train"]["step"]
    # each point is exp(that step's loss), the run record's loss: not a mean since the last validation
    assert list(y) == pytest.approx([math.exp(v) for v in record["curves"]["train"]["loss"]])
    panel.charts.smoothing.set_value(0.9)
    x2, y2 = panel.charts.train_curve.getData()
    raw_x, raw_y = panel.charts.train_curve.raw.getData()
    assert list(raw_y) == pytest.approx(list(y)) and list(y2) != pytest.approx(list(y))  # raw faint, smoothed on top


def test_empty_charts_hide_their_axes_and_log_scale_has_enough_ticks(qtbot):
    from rnnstudio.gui.charts import LogAxis, TrainingCharts

    charts = TrainingCharts(["accuracy"])
    qtbot.addWidget(charts)
    item = charts.ppl_plot.getPlotItem()
    assert not item.getAxis("left").isVisible() and charts.ppl_hint.item in item.items
    charts.add_train_points([(1, 2.5), (2, 2.2)])
    charts.refresh()
    assert item.getAxis("left").isVisible() and charts.ppl_hint.item not in item.items
    assert item.legend is None and "validation" in charts.legend.text()  # the legend sits beside the plot, not on it
    axis = LogAxis("left")
    axis.setLogMode(False, True)
    ticks = axis.tickValues(math.log10(5), math.log10(30), 300)[0][1]
    assert len(ticks) >= 3 and axis.tickStrings(ticks, 1, 1) == ["5", "10", "20"]


def test_a_diverged_run_plots_its_last_points_and_the_runs_table_says_why(qtbot, window, tiny_corpus, errors):
    panel = window.training
    configure(panel, tiny_corpus, lr="1e6", clip=0.0, length=200, name="boom")
    assert panel.start()
    qtbot.waitUntil(lambda: not panel.is_training(), timeout=WAIT_MS)
    assert len(errors) == 1
    step = panel.charts.diverged[0]
    assert panel.charts.divergence_lines and f"diverged at step {step}" in errors[0][1]
    assert panel.charts.steps == list(range(1, step + 1))  # every step up to the blow-up, and the blow-up itself
    assert panel.charts.losses[-1] > 100 * panel.charts.losses[0]
    view = next(window.tabs.widget(i) for i in range(window.tabs.count()) if window.tabs.tabText(i) == "Runs")
    view.refresh()
    run_id = runs.list_runs()[-1]["id"]
    assert view.cell_text(run_id, "status") == "failed"
    assert f"diverged at step {step}" in view.cell_text(run_id, "note")
    view.set_selected([run_id])
    view.set_metric("train loss")
    assert view.point_count(run_id) == step  # the record ends on the blow-up, not thinned away


# -- 4. resume takes the saved settings and locks them ------------------------------------------

def test_resume_loads_the_saved_settings_into_the_form_and_locks_them(qtbot, window, tiny_corpus, tmp_path, errors):
    train_directly(tiny_corpus, "saved")
    other = tmp_path / "other.txt"
    other.write_text("a different text " * 300, encoding="utf-8")
    panel = window.training
    panel.set_corpus("text-file")
    panel.corpus_form.editors["path"].setText(str(other))
    panel.set_cell("lstm")
    F.set_value(panel.fields["hidden_size"], 64)
    window.resume_training("saved")
    assert panel.cell_combo.currentData() == "gru" and panel.fields["hidden_size"].value() == 8
    assert panel.corpus_form.editors["path"].text() == str(tiny_corpus)
    path_edit = panel.corpus_form.editors["path"].edit
    assert path_edit.toolTip() == str(tiny_corpus) and path_edit.cursorPosition() == len(str(tiny_corpus))
    assert not panel.cell_combo.isEnabled() and not panel.fields["hidden_size"].isEnabled()
    assert not panel.corpus_form.isEnabled() and panel.fields["lr"].isEnabled()  # training settings stay open
    assert panel.resume_note.isVisibleTo(panel) and "saved" in panel.resume_note.text()
    panel.fields["resume"].setChecked(False)
    assert panel.cell_combo.isEnabled() and panel.fields["hidden_size"].isEnabled()


# -- 5. errors in the GUI's own words -----------------------------------------------------------

def test_errors_name_the_forms_fields_and_the_cli_keeps_its_flags(qtbot, window, tiny_corpus, errors):
    train_directly(tiny_corpus, "taken")
    panel = window.training
    configure(panel, tiny_corpus, name="taken")
    assert panel.start()
    qtbot.waitUntil(lambda: not panel.is_training(), timeout=WAIT_MS)
    text = errors[-1][1]
    assert "--" not in text and "“continue this saved model”" in text and "“model name”" in text
    from rnnstudio.trainer import TrainConfig as TC

    with pytest.raises(Exception) as info:
        for _ in Trainer(TC(corpus="text-file", corpus_options={"path": str(tiny_corpus)}, name="taken",
                            hidden_size=8, device="cpu"), host=load_plugins(no_plugins=True)).run():
            pass
    assert "--resume" in str(info.value) and "--name" in str(info.value)  # the same message, in flags
    from rnnstudio.settings import render_error

    assert render_error(info.value, "gui") == text  # one message source, each interface's words


def test_the_form_labels_are_the_words_the_errors_use(window):
    from PySide6.QtWidgets import QLabel

    from rnnstudio.gui.training_page import label_for
    from rnnstudio.settings import info

    form_labels = {lab.text() for lab in window.training.settings_widget.findChildren(QLabel)}
    for key in ("lr", "hidden_size", "seq_len", "batch_size", "num_layers", "name", "eval_every"):
        assert label_for(key) == info(TrainConfig, key).label and label_for(key) in form_labels


# -- 7. keyboard and mouse ----------------------------------------------------------------------

def _tab_chain(start: QWidget, count: int) -> list[QWidget]:
    out, w = [start], start
    for _ in range(count):
        w = w.nextInFocusChain()
        while not (w.focusPolicy() & Qt.TabFocus) or not w.isEnabled() or not w.isVisibleTo(w.window()):
            w = w.nextInFocusChain()
        out.append(w)
    return out


def test_tab_order_runs_down_the_form_including_a_cells_own_options(qtbot, window):
    panel = window.training
    window.show()
    qtbot.waitExposed(window)
    panel.set_corpus("text-file")  # a corpus with a path picker
    panel.set_cell("rnn-scratch")  # a cell with options of its own
    QApplication.processEvents()
    chain = _tab_chain(panel.corpus_combo, 80)
    cell_option = panel.cell_form.editors["init_std"]
    order = [panel.corpus_combo, panel.corpus_form.editors["path"].edit, panel.fields["tokens"], panel.cell_combo,
             cell_option, panel.fields["hidden_size"], panel.fields["batch_size"], panel.fields["lr"],
             panel.fields["name"], panel.fields["threads"], panel.start_button]
    positions = [chain.index(w) for w in order]
    assert positions == sorted(positions)
    # Tab never leaves the settings column before its end
    settings_part = chain[:chain.index(panel.fields["threads"]) + 1]
    assert all(panel.settings_widget.isAncestorOf(w) for w in settings_part)


def test_the_mouse_wheel_over_a_spin_box_scrolls_the_form(qtbot, window):
    panel = window.training
    window.resize(1000, 500)
    window.show()
    qtbot.waitExposed(window)
    spin = panel.fields["batch_size"]
    value = spin.value()
    scroll = panel.settings_widget.parentWidget().parentWidget()
    bar = scroll.verticalScrollBar()
    assert bar.maximum() > 0
    bar.setValue(0)
    spin.clearFocus()
    event = QWheelEvent(QPointF(5, 5), QPointF(spin.mapToGlobal(QPoint(5, 5))), QPoint(0, 0), QPoint(0, -120),
                        Qt.NoButton, Qt.NoModifier, Qt.NoScrollPhase, False)
    QApplication.sendEvent(spin, event)
    assert spin.value() == value and not spin.hasFocus()
    assert bar.value() > 0  # the form scrolled instead


# -- 8. smaller ones -----------------------------------------------------------------------------

def test_a_stopped_run_keeps_its_progress_bar_where_it_stopped(qtbot, window, tiny_corpus, errors):
    panel = window.training
    configure(panel, tiny_corpus, length=100_000, name="halt")
    assert panel.start()
    qtbot.waitUntil(lambda: len(panel.charts.steps) >= 3, timeout=WAIT_MS)
    panel.stop()
    qtbot.waitUntil(lambda: not panel.is_training(), timeout=WAIT_MS)
    assert not errors
    assert 0 < panel.progress.value() < panel.progress.maximum() == 100_000
    assert panel.progress.format().startswith("stopped at step")


def test_form_labels_line_up_across_groups_and_help_text_has_contrast(window):
    from PySide6.QtWidgets import QFormLayout, QLabel

    panel = window.training
    widths = {item.widget().minimumWidth() for form in panel.settings_widget.findChildren(QFormLayout)
              for item in (form.itemAt(i, QFormLayout.LabelRole) for i in range(form.rowCount()))
              if item is not None and isinstance(item.widget(), QLabel)}
    assert len(widths) == 1 and widths.pop() > 0
    from rnnstudio.gui.app import stylesheet

    colour = re.search(r"QLabel#hint \{ color: #([0-9a-f]{6})", stylesheet()).group(1)

    def luminance(hex_colour):
        channels = [int(hex_colour[i:i + 2], 16) / 255 for i in (0, 2, 4)]
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    assert (1.05) / (luminance(colour) + 0.05) >= 7  # WCAG AAA on the white group boxes


def test_hidden_size_zero_becomes_the_nearest_valid_size_not_an_old_value(qtbot, window):
    from PySide6.QtCore import QEvent
    from PySide6.QtGui import QFocusEvent

    spin = window.training.fields["hidden_size"]
    spin.setValue(128)
    spin.lineEdit().setText("0")
    QApplication.sendEvent(spin, QFocusEvent(QEvent.FocusOut, Qt.TabFocusReason))
    assert spin.value() == 1  # the smallest size, not the 128 it held before


def test_sample_preview_is_plain_text_not_a_repr(qtbot, window):
    from rnnstudio.events import Sampled

    window.training._on_sampled(Sampled(10, "The cat\nsat" + " " * 40))
    text = window.training.sample_label.text()
    assert text == "sample at step 10: The cat↵sat (then 40 blank characters)" and "'" not in text
    window.training._on_sampled(Sampled(20, "The cat "))
    assert window.training.sample_label.text() == "sample at step 20: The cat "


def test_blank_pages_say_what_to_do(window):
    pages = {window.tabs.tabText(i): window.tabs.widget(i) for i in range(window.tabs.count())}
    assert "press Inspect" in pages["Inspector"].view_a.placeholderText()
    assert "press Run" in pages["Explorer"].text_view.placeholderText()
    assert "RNN model" in pages["Under the hood"].shapes.text()


def test_under_the_hood_drops_no_model_yet_once_there_is_one(qtbot, window, tiny_corpus):
    pages = {window.tabs.tabText(i): window.tabs.widget(i) for i in range(window.tabs.count())}
    hood = pages["Under the hood"]
    assert hood.shapes.text().startswith("No saved RNN model yet")
    config = TrainConfig(corpus="text-file", corpus_options={"path": str(tiny_corpus)}, cell="rnn-scratch",
                         hidden_size=8, batch_size=4, seq_len=8, max_steps=2, eval_every=0, name="rnn-m",
                         device="cpu", threads=1)
    for _ in Trainer(config, host=load_plugins(no_plugins=True)).run():
        pass
    window.models_changed.emit()
    assert hood.model.currentText() == "rnn-m" and "No saved" not in hood.shapes.text()


def test_generate_reports_tokens_per_second_marks_the_prefix_warns_and_stops_at(qtbot, window, tiny_corpus, errors,
                                                                               tmp_path):
    train_directly(tiny_corpus, "gen")
    g = window.generation
    g.refresh_models()
    g.select_model("gen")
    F.set_value(g.fields["prefix"], "the Z")  # Z: never in the corpus
    F.set_value(g.fields["length"], 40)
    F.set_value(g.fields["greedy"], True)
    assert g.generate()
    qtbot.waitUntil(lambda: not g.is_generating(), timeout=WAIT_MS)
    free_run = g.texts[0][len("the Z"):]
    stop = free_run[2]  # greedy: the same text again, so it must stop at this character's first showing
    F.set_value(g.fields["length"], 300)
    F.set_value(g.fields["stop_at"], stop)
    assert g.generate()
    qtbot.waitUntil(lambda: not g.is_generating(), timeout=WAIT_MS)
    assert not errors
    assert g.note_label.isVisibleTo(g) and "never saw" in g.note_label.text() and "'Z'" in g.note_label.text()
    assert re.fullmatch(r"generated [\d,]+ tokens \([\d,]+ tokens/s\)", g.rate_label.text()), g.rate_label.text()
    assert g.texts[0] == "the Z" + free_run[:free_run.index(stop) + 1]  # stopped where the stop text came
    from PySide6.QtGui import QTextCursor

    def weight_at(position):
        cursor = QTextCursor(g.output.document())
        cursor.setPosition(position)
        return cursor.charFormat().fontWeight()

    assert weight_at(3) > 500 and weight_at(len("the Z")) > 500  # the prefix is set apart ...
    assert weight_at(len("the Z") + 1) < 500  # ... from what the model wrote
    # a stopped generation says so, in tokens
    F.set_value(g.fields["stop_at"], "")
    F.set_value(g.fields["length"], 1_000_000)
    assert g.generate()
    qtbot.waitUntil(lambda: g.generated_tokens() > 5, timeout=WAIT_MS)
    g.stop()
    qtbot.waitUntil(lambda: not g.is_generating(), timeout=WAIT_MS)
    assert g.rate_label.text().startswith("stopped after ") and "tokens/s" in g.rate_label.text()
    # a saved text file gets the usual permissions
    out = tmp_path / "out.txt"
    g.save_output(str(out))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask


def test_the_generate_model_picker_shows_long_names_whole(qtbot, window, tiny_corpus):
    name = "a-rather-long-model-name-from-an-experiment-sweep-42"
    train_directly(tiny_corpus, name)
    g = window.generation
    g.refresh_models()
    g.select_model(name)
    index = g.model_combo.findData(name)
    assert g.model_combo.itemData(index, Qt.ToolTipRole) == name and g.model_combo.toolTip() == name
    assert g.model_combo.view().minimumWidth() >= g.model_combo.view().fontMetrics().horizontalAdvance(name)


def test_the_app_leaves_at_once_when_its_event_loop_ends(monkeypatch, capsys):
    """Closing took seconds of object-by-object teardown after the window was gone; main() ends the process
    right after the loop (settings saved and threads joined by then), with the loop's exit code."""
    from rnnstudio.gui import app

    exits = []
    monkeypatch.setattr(app.os, "_exit", exits.append)
    print("a line still in the buffer", end="")
    app.leave_now(3)
    assert exits == [3] and capsys.readouterr().out == "a line still in the buffer"
