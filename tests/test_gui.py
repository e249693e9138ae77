"""GUI tests (pytest-qt, offscreen): real widgets, real worker threads, tiny models so each run takes moments."""

from __future__ import annotations

import json
import types
import zipfile

import pytest

pytest.importorskip("pytestqt")
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QCheckBox, QComboBox, QFileDialog, QLineEdit, QMessageBox, QSpinBox  # noqa: E402

import rnnstudio  # noqa: E402
from rnnstudio import checkpoint  # noqa: E402
from rnnstudio.errors import RNNStudioError  # noqa: E402
from rnnstudio.gui import fields as F
from rnnstudio.gui import settings_form as SF  # noqa: E402
from rnnstudio.gui import workers  # noqa: E402
from rnnstudio.gui.main_window import MainWindow  # noqa: E402
from rnnstudio.gui.param_form import PathEdit  # noqa: E402
from rnnstudio.plugins import load_plugins  # noqa: E402
from rnnstudio.trainer import TrainConfig  # noqa: E402

from gui_training import configure, joined_window, train_directly  # noqa: E402

WAIT_MS = 30_000
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py, like ``errors``


class SixCorpus(rnnstudio.Corpus):
    name = "six-params"
    description = "A test corpus with one parameter of every type."
    params = (
        rnnstudio.Param("repeat", "int", 3, min=1, max=50, help="times to repeat"),
        rnnstudio.Param("scale", "float", 0.5, min=0.0, help="a float"),
        rnnstudio.Param("upper", "bool", False, help="uppercase it"),
        rnnstudio.Param("word", "choice", "cat", choices=("cat", "dog"), help="which word"),
        rnnstudio.Param("suffix", "str", "!", help="text after each word"),
        rnnstudio.Param("extra", "path", None, help="a file to append"),
    )

    def read(self) -> str:
        text = f"the {self.options['word']} sat{self.options['suffix']} " * self.options["repeat"] * 50
        return text.upper() if self.options["upper"] else text


def _six_plugin():
    plugin = types.ModuleType("six_params_plugin")

    @rnnstudio.hookimpl
    def register_corpora(register):
        register(SixCorpus)

    plugin.register_corpora = register_corpora
    return plugin


@pytest.fixture
def host():
    return load_plugins(no_plugins=True, extra=[("test:six-params", _six_plugin())])


@pytest.fixture
def window(qtbot, host, errors):
    with joined_window(qtbot, host) as win:
        yield win


def test_start_shows_progress_and_finishes(qtbot, window, tiny_corpus, errors):
    panel = window.training
    configure(panel, tiny_corpus)
    updates = []
    panel.progress.valueChanged.connect(updates.append)
    qtbot.mouseClick(panel.start_button, Qt.LeftButton)
    assert panel.is_training()
    assert not panel.start_button.isEnabled() and panel.stop_button.isEnabled()
    qtbot.waitUntil(lambda: not panel.is_training(), timeout=WAIT_MS)
    assert errors == []
    assert updates and max(updates) == 20
    assert panel.progress.value() == panel.progress.maximum() == 20
    assert panel.progress_label.text().startswith("finished after 20 steps")
    assert panel.charts.steps == list(range(1, 21))  # an honest per-step series: one point per optimizer step
    assert panel.charts.point_count("val") >= 4  # steps 5, 10, 15 and the end
    # redraws are throttled, but when training ends every point is on the curves
    assert len(panel.charts.val_curve.getData()[0]) == panel.charts.point_count("val")
    assert len(panel.charts.train_curve.getData()[0]) == panel.charts.point_count("train")
    assert "sample at step" in panel.sample_label.text()
    assert panel.start_button.isEnabled() and not panel.stop_button.isEnabled()
    assert checkpoint.load_model("gui-model").name == "gui-model"
    # the Models tab and the generation picker both learned about the new model
    assert [r["name"] for r in window.models.rows] == ["gui-model"]
    assert window.generation.model_combo.findData("gui-model") >= 0


def test_stop_mid_training_leaves_a_loadable_checkpoint(qtbot, window, tiny_corpus, errors):
    panel = window.training
    configure(panel, tiny_corpus, length=1_000_000, name="stopped-model")
    assert panel.start()
    qtbot.waitUntil(lambda: panel.charts.point_count("train") > 0, timeout=WAIT_MS)
    assert window.generation.model_combo.findData("stopped-model") >= 0  # listed while it trains
    qtbot.mouseClick(panel.pause_button, Qt.LeftButton)
    assert panel.job.worker.pause_event.is_set() and panel.pause_button.text() == "Resume"
    qtbot.mouseClick(panel.pause_button, Qt.LeftButton)
    assert not panel.job.worker.pause_event.is_set()
    qtbot.mouseClick(panel.stop_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not panel.is_training(), timeout=WAIT_MS)
    assert errors == []
    assert "stopped after" in panel.progress_label.text()
    loaded = checkpoint.load_model("stopped-model")
    steps = loaded.config["summary"]["step"]
    assert 0 < steps < 1_000_000
    # and Resume continues it from the saved step
    window.resume_training("stopped-model")
    F.set_value(panel.fields["length"], steps + 3)
    assert panel.start()
    qtbot.waitUntil(lambda: not panel.is_training(), timeout=WAIT_MS)
    assert errors == []
    assert checkpoint.load_model("stopped-model").config["summary"]["step"] == steps + 3


def test_generate_streams_text(qtbot, window, tiny_corpus, errors, monkeypatch):
    monkeypatch.setattr(workers, "UPDATE_INTERVAL", 0.0)  # every token reaches the view
    train_directly(tiny_corpus, "gen-model")
    gen = window.generation
    gen.refresh_models()
    gen.select_model("gen-model")
    F.set_value(gen.fields["prefix"], "the ")
    F.set_value(gen.fields["length"], 120)
    SF.set_editor(gen.fields["seed"], 0)  # a fixed seed
    snapshots = []
    gen.output.textChanged.connect(lambda: snapshots.append(gen.output.toPlainText()))
    window.show()
    window.show_page(gen)
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5000)
    gen.fields["prefix"].setFocus()
    qtbot.keyClick(gen.fields["prefix"], Qt.Key_Return, Qt.ControlModifier)  # Ctrl+Enter generates
    assert gen.is_generating()
    qtbot.waitUntil(lambda: not gen.is_generating(), timeout=WAIT_MS)
    assert errors == []
    text = gen.output.toPlainText()
    assert text.startswith("the ") and len(text.replace("<unk>", "?")) == len("the ") + 120  # one char per token
    lengths = sorted({len(s) for s in snapshots})
    assert len(lengths) > 10  # it streamed: the view grew step by step
    assert all(text.startswith(s) for s in snapshots if s)
    out = tiny_corpus.parent / "out.txt"
    gen.save_output(str(out))
    assert out.read_text(encoding="utf-8") == text + "\n"


def test_generate_several_samples(qtbot, window, tiny_corpus, errors):
    train_directly(tiny_corpus, "multi-gen")
    gen = window.generation
    gen.refresh_models()
    gen.select_model("multi-gen")
    for key, value in {"prefix": "the ", "length": 30, "num_samples": 3, "seed": 5}.items():
        SF.set_editor(gen.fields[key], value)
    assert gen.generate()
    qtbot.waitUntil(lambda: not gen.is_generating(), timeout=WAIT_MS)
    assert errors == []
    text = gen.output.toPlainText()
    assert [line for line in text.splitlines() if line.startswith("--- sample")] == [
        "--- sample 1 ---", "--- sample 2 ---", "--- sample 3 ---"]
    assert len(gen.texts) == 3 and all(t.startswith("the ") for t in gen.texts)


def test_generate_stop_interrupts(qtbot, window, tiny_corpus, errors):
    train_directly(tiny_corpus, "long-gen")
    gen = window.generation
    gen.refresh_models()
    gen.select_model("long-gen")
    F.set_value(gen.fields["length"], 1_000_000)
    assert gen.generate()
    qtbot.waitUntil(lambda: len(gen.output.toPlainText()) > 20, timeout=WAIT_MS)
    qtbot.mouseClick(gen.stop_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not gen.is_generating(), timeout=WAIT_MS)
    assert errors == []
    assert 20 < len(gen.output.toPlainText()) < 1_000_000


def test_bad_parameters_show_an_error_and_the_app_keeps_running(qtbot, window, tiny_corpus, errors):
    panel = window.training
    configure(panel, tiny_corpus)
    F.set_value(panel.fields["lr"], "fast")
    qtbot.mouseClick(panel.start_button, Qt.LeftButton)
    assert not panel.is_training()
    assert len(errors) == 1 and errors[0][0] == "Error in training settings" and "'fast'" in errors[0][1]

    # a missing file is found by the corpus plugin inside the worker thread
    F.set_value(panel.fields["lr"], "")
    panel.corpus_form.editors["path"].setText(str(tiny_corpus.parent / "missing.txt"))
    assert panel.start()
    qtbot.waitUntil(lambda: not panel.is_training(), timeout=WAIT_MS)
    assert len(errors) == 2
    title, text = errors[1]
    assert title == "Error in corpus 'text-file'" and "missing.txt" in text
    assert panel.start_button.isEnabled() and "failed" in panel.progress.format()

    # a cell option out of range, caught by the generated form
    panel.set_cell("rnn-scratch")
    panel.cell_form.editors["init_std"].setText("-1")
    panel.corpus_form.editors["path"].setText(str(tiny_corpus))
    assert not panel.start()
    assert errors[2][0] == "Error in cell 'rnn-scratch'" and "init_std" in errors[2][1]

    # the app still trains after all that
    panel.cell_form.editors["init_std"].setText("0.01")
    assert panel.start()
    qtbot.waitUntil(lambda: not panel.is_training(), timeout=WAIT_MS)
    assert len(errors) == 3


def test_plugin_with_all_six_param_types_gets_a_working_form(qtbot, window, tmp_path, monkeypatch, errors):
    panel = window.training
    assert panel.corpus_combo.findData("six-params") >= 0
    panel.set_corpus("six-params")
    form = panel.corpus_form
    kinds = {name: type(w) for name, w in form.editors.items()}
    assert kinds == {"repeat": QSpinBox, "scale": QLineEdit, "upper": QCheckBox, "word": QComboBox,
                     "suffix": QLineEdit, "extra": PathEdit}
    assert form.values() == {"repeat": 3, "scale": 0.5, "upper": False, "word": "cat", "suffix": "!", "extra": None}
    assert form.editors["repeat"].maximum() == 50 and form.editors["repeat"].minimum() == 1
    assert form.editors["word"].toolTip().startswith("which word")

    picked = tmp_path / "extra.txt"
    picked.write_text("x", encoding="utf-8")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(picked), ""))
    qtbot.mouseClick(form.editors["extra"].file_button, Qt.LeftButton)
    form.editors["repeat"].setValue(7)
    form.editors["scale"].setText("2.5")
    form.editors["upper"].setChecked(True)
    form.editors["word"].setCurrentIndex(form.editors["word"].findData("dog"))
    form.editors["suffix"].setText("?")
    expected = {"repeat": 7, "scale": 2.5, "upper": True, "word": "dog", "suffix": "?", "extra": str(picked)}
    assert form.values() == expected
    assert panel.config().corpus_options == expected

    form.editors["scale"].setText("lots")
    with pytest.raises(RNNStudioError) as info:
        form.values()
    assert info.value.source == "corpus 'six-params'" and "scale" in str(info.value)

    # typed values survive switching to another corpus and back
    form.editors["scale"].setText("1.5")
    panel.set_corpus("python-docs")
    panel.set_corpus("six-params")
    assert panel.corpus_form.values()["scale"] == 1.5 and panel.corpus_form.values()["word"] == "dog"

    # and the plugin trains from the GUI
    F.set_value(panel.fields["hidden_size"], 8)
    F.set_value(panel.fields["batch_size"], 2)
    F.set_value(panel.fields["seq_len"], 8)
    F.set_value(panel.fields["length_mode"], "steps")
    F.set_value(panel.fields["length"], 3)
    F.set_value(panel.fields["device"], "cpu")
    F.set_value(panel.fields["threads"], 1)
    assert panel.start()
    qtbot.waitUntil(lambda: not panel.is_training(), timeout=WAIT_MS)
    assert errors == []


def test_closing_during_training_stops_saves_and_joins(qtbot, window, tiny_corpus, monkeypatch, errors):
    panel = window.training
    configure(panel, tiny_corpus, length=1_000_000, name="closing-model")
    assert panel.start()
    job = panel.job
    qtbot.waitUntil(lambda: panel.charts.point_count("train") > 0, timeout=WAIT_MS)

    answers = [QMessageBox.No, QMessageBox.Yes]
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: answers.pop(0))
    assert not window.close()  # "No": the window stays and training goes on
    assert panel.is_training() and job.is_running()
    assert window.close()  # "Yes": stop, save, join
    assert answers == []
    assert not panel.is_training() and not job.thread.isRunning()
    assert errors == []
    loaded = checkpoint.load_model("closing-model")
    assert loaded.config["summary"]["step"] > 0
    assert not checkpoint.ModelLock("closing-model").busy()


def test_settings_are_remembered_and_a_corrupt_file_is_ignored(qtbot, host, errors, tiny_corpus):
    first = MainWindow(host)
    qtbot.addWidget(first)
    configure(first.training, tiny_corpus, hidden_size=48)
    F.set_value(first.generation.fields["temperature"], 0.6)
    assert first.close()
    saved = json.loads((rnnstudio.config_dir() / "gui-settings.json").read_text(encoding="utf-8"))
    assert saved["training"]["fields"]["hidden_size"] == 48

    second = MainWindow(host)
    qtbot.addWidget(second)
    assert second.training.fields["hidden_size"].value() == 48
    assert second.training.corpus_combo.currentData() == "text-file"
    assert second.training.corpus_form.editors["path"].text() == str(tiny_corpus)
    assert second.generation.fields["temperature"].value() == pytest.approx(0.6)
    second.close()

    (rnnstudio.config_dir() / "gui-settings.json").write_text("{not json", encoding="utf-8")
    with pytest.warns(UserWarning, match="corrupt settings"):
        third = MainWindow(host)
    qtbot.addWidget(third)
    assert "corrupt settings" in third.statusBar().currentMessage()
    assert third.training.fields["hidden_size"].value() == TrainConfig().hidden_size
    third.close()
    assert json.loads((rnnstudio.config_dir() / "gui-settings.json").read_text(encoding="utf-8"))["version"] == 1


def test_models_view_lists_renames_exports_and_deletes(qtbot, window, tiny_corpus, tmp_path, monkeypatch, errors):
    train_directly(tiny_corpus, "alpha")
    broken = checkpoint.paths.models_dir() / "broken"
    broken.mkdir(parents=True)
    models = window.models
    models.refresh()
    rows = {r["name"]: r for r in models.rows}
    assert set(rows) == {"alpha", "broken"}
    assert rows["alpha"]["corpus"] == "text-file" and rows["alpha"]["cell"] == "gru"
    assert "config.json is missing" in rows["broken"]["error"]
    assert models.table.item(1, 1).text().startswith("BROKEN")

    assert models.table.item(0, 1).text() == "text-file: tiny.txt"  # which file, not only which plugin
    assert models.table.item(0, 1).toolTip() == str(tiny_corpus)

    models.select("alpha")
    F.set_value(window.training.fields["name"], "alpha")
    answers, asked = [("bad/name", True), ("beta", True)], []

    def ask_text(parent, title, label, text=""):
        asked.append(text)
        return answers.pop(0)

    monkeypatch.setattr("rnnstudio.gui.models_page.ask_text", ask_text)
    qtbot.mouseClick(models.buttons["rename"], Qt.LeftButton)
    # a bad name shows why, then the dialog comes back with what was typed, so it can be fixed
    assert len(errors) == 1 and asked == ["alpha", "bad/name"]
    errors.clear()
    assert {r["name"] for r in models.rows} == {"beta", "broken"}
    assert checkpoint.load_model("beta").config["name"] == "beta"
    assert window.generation.model_combo.findData("beta") >= 0
    # the history and the Training form follow the rename
    from rnnstudio import runs

    assert [r["model"] for r in runs.list_runs()] == ["beta"]
    assert window.training.fields["name"].text() == "beta"

    models.select("beta")
    models.export_selected(str(tmp_path / "beta.zip"))
    with zipfile.ZipFile(tmp_path / "beta.zip") as zf:
        assert "beta/weights.safetensors" in zf.namelist()

    qtbot.mouseClick(models.buttons["open"], Qt.LeftButton)
    assert window.tabs.currentWidget() is window.generation
    assert window.generation.model_combo.currentData() == "beta"

    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.No)
    models.select("beta")
    qtbot.mouseClick(models.buttons["delete"], Qt.LeftButton)
    assert (checkpoint.paths.models_dir() / "beta").is_dir()
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.Yes)
    models.select("beta")
    qtbot.mouseClick(models.buttons["delete"], Qt.LeftButton)
    assert {r["name"] for r in models.rows} == {"broken"}
    assert errors == []


def test_copy_as_command_puts_both_forms_on_the_clipboard(qtbot, window, tiny_corpus, errors):
    from PySide6.QtGui import QGuiApplication

    configure(window.training, tiny_corpus)
    qtbot.mouseClick(window.training.copy_button, Qt.LeftButton)
    text = QGuiApplication.clipboard().text()
    lines = text.splitlines()
    assert lines[0].startswith("rnnstudio train --corpus text-file")
    assert f"path={tiny_corpus}" in lines[0] and "--hidden-size 8" in lines[0]
    assert lines[2].startswith("torchrun --standalone --nproc_per_node=2 -m rnnstudio train")
    assert lines[2].endswith("--distributed")


def test_device_selector_disables_unavailable_devices(window):
    from rnnstudio.devices import list_devices

    box = window.training.fields["device"]
    assert box.itemData(0) == "auto"
    for dev in list_devices():
        index = next(i for i in range(box.count()) if box.itemData(i) == dev.spec)
        assert box.model().item(index).isEnabled() == dev.available
        if not dev.available:
            assert dev.reason in box.itemText(index)


def test_corpus_preview_counts_the_text(qtbot, window, tiny_corpus):
    panel = window.training
    configure(panel, tiny_corpus)
    panel.refresh_preview()
    qtbot.waitUntil(lambda: panel.preview_text.toPlainText() != "", timeout=WAIT_MS)
    assert panel.preview_text.toPlainText() == tiny_corpus.read_text(encoding="utf-8")[:2000]
    summary = panel.preview_summary.text()
    assert "9,600 tokens" in summary and "train 8,640 / validation 960" in summary
    assert "' ' 2,400" in summary  # the most frequent character


def test_app_resources_and_window_start(qtbot):
    from rnnstudio.gui.app import app_icon, create_app, create_window, stylesheet

    app = create_app()
    assert not app_icon().isNull()
    assert "QPushButton" in stylesheet()
    win = create_window(no_plugins=True)
    qtbot.addWidget(win)
    win.show()
    assert win.training.corpus_combo.currentData() == "python-docs"  # a first-time user can press Start
    assert [win.tabs.tabText(i) for i in range(3)] == ["Training", "Generate", "Models"]
    win.close()


def test_live_charts_redraw_both_plots_while_points_keep_arriving(qtbot):
    """Training sends points every 50 ms; the secondary metric plot must still be drawn during the run,
    not only at its end (it used to starve behind the perplexity plot)."""
    from PySide6.QtCore import QTimer

    from rnnstudio.gui.charts import TrainingCharts

    charts = TrainingCharts(["cross-entropy", "accuracy"])
    qtbot.addWidget(charts)
    assert charts.metric_choice.currentText() == "cross-entropy"
    step = [0]

    def feed():
        step[0] += 1
        charts.add_train_points([(step[0], 3.0 / step[0] + 1)])

    timer = QTimer()
    timer.setInterval(50)
    timer.timeout.connect(feed)
    timer.start()
    def drawn(curve) -> int:
        xs = curve.getData()[0]
        return 0 if xs is None else len(xs)

    try:
        qtbot.waitUntil(lambda: drawn(charts.metric_train_curve) > 0, timeout=5000)
        assert drawn(charts.train_curve) > 0
    finally:
        timer.stop()
