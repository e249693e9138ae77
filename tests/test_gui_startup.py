"""The app shows its main window before torch is imported, then loads the plugins and builds every tab (offscreen).

What is imported when is checked in a fresh process through ``sys.modules``; nothing here is timed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

pytest.importorskip("pytestqt")
from PySide6.QtWidgets import QApplication  # noqa: E402

from rnnstudio import paths  # noqa: E402
from rnnstudio.gui import app  # noqa: E402
from rnnstudio.gui.main_window import LOADING, MainWindow  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py
TABS = ["Training", "Generate", "Models", "Inspector", "Explorer", "Runs", "Under the hood", "Plugins"]

# Runs the real entry point (`rnnstudio gui --no-plugins`). When the main window is first shown it records
# which heavy modules are imported; when its tabs are built it opens each one, then prints a report and quits.
PROBE = r"""
import json, sys
from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication, QMainWindow

HEAVY = ("torch", "numpy", "pyqtgraph", "rnnstudio.sampling", "rnnstudio.gui.training_page")
report = {}

def heavy():
    return sorted(m for m in HEAVY if m in sys.modules)

def finish(window, failure=None):
    if failure is None:
        report["heavy_when_loaded"] = heavy()
        report["tabs"] = [window.tabs.tabText(i) for i in range(window.tabs.count())]
        report["status"] = window.statusBar().currentMessage()  # before a tab change clears it
        opened = []
        for i in range(window.tabs.count()):
            window.tabs.setCurrentIndex(i)
            QApplication.processEvents()
            opened.append(window.tabs.currentWidget().objectName() != "loading")
        report["opened"] = opened
        report["corpus"] = window.training.corpus_combo.currentData()
        report["start_enabled"] = window.training.start_button.isEnabled()
    report["failure"] = failure
    print("REPORT " + json.dumps(report), flush=True)
    QApplication.instance().quit()

class Shown(QObject):
    def eventFilter(self, obj, event):
        if event.type() == QEvent.Show and isinstance(obj, QMainWindow) and "heavy_when_shown" not in report:
            report["heavy_when_shown"] = heavy()
            report["tabs_when_shown"] = [obj.tabs.tabText(i) for i in range(obj.tabs.count())]
            report["loaded_when_shown"] = obj.is_loaded()
            obj.loaded.connect(lambda: finish(obj))
            obj.load_failed.connect(lambda text: finish(obj, text))
        return False

qapp = QApplication(sys.argv[:1])
watcher = Shown()
qapp.installEventFilter(watcher)
QTimer.singleShot(110_000, qapp.quit)  # never hang the test run
from rnnstudio.cli import main
sys.exit(main(["gui", "--no-plugins"]))
"""


def test_the_window_is_shown_before_torch_is_imported_and_then_every_tab_is_built(rnnstudio_home):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "RNNSTUDIO_HOME": str(rnnstudio_home)}
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, (proc.returncode, proc.stdout, proc.stderr)
    report = json.loads(lines[-1][len("REPORT "):])
    assert report["heavy_when_shown"] == [], report  # no torch, numpy, pyqtgraph or tab module yet
    assert report["loaded_when_shown"] is False
    assert report["tabs_when_shown"][:3] == ["Training", "Generate", "Models"]  # the titles are there at once
    assert report["failure"] is None, report
    assert {"torch", "rnnstudio.sampling", "rnnstudio.gui.training_page"} <= set(report["heavy_when_loaded"])
    assert report["tabs"] == TABS and all(report["opened"]), report
    assert report["corpus"] == "python-docs" and report["start_enabled"]
    assert report["status"].startswith("Ready")


@pytest.fixture
def shell(qtbot):
    window = MainWindow(restore=False)
    qtbot.addWidget(window)
    yield window
    if window.is_loaded():
        assert window.training.stop_and_join(timeout_s=30)
        assert window.generation.stop_and_join(timeout_s=30)


def test_the_shell_loads_in_the_background_and_its_tabs_work(qtbot, shell, tiny_corpus, errors):
    assert not shell.is_loaded()
    assert all(shell.tabs.widget(i).text() == LOADING for i in range(shell.tabs.count()))
    shell.show_status("a line before the Log exists")
    shell.show()
    with qtbot.waitSignal(shell.loaded, timeout=60_000):
        shell.load_in_background(no_plugins=True)
    assert shell.is_loaded() and [shell.tabs.tabText(i) for i in range(shell.tabs.count())] == TABS
    assert "a line before the Log exists" in shell.training.log.toPlainText()
    for i in range(shell.tabs.count()):
        shell.tabs.setCurrentIndex(i)
        QApplication.processEvents()
        assert shell.tabs.currentWidget().objectName() != "loading"
    from gui_training import configure

    panel = shell.training
    configure(panel, tiny_corpus, length=4, eval_every=0, sample_every=0, name="after-loading")
    assert panel.start()
    qtbot.waitUntil(lambda: not panel.is_training(), timeout=60_000)
    shell.models.refresh()
    assert [row["name"] for row in shell.models.rows] == ["after-loading"]
    assert errors == []


def test_closing_or_terminating_while_loading_saves_nothing_and_builds_nothing(qtbot, shell):
    shell.show()
    quits = []
    app.terminate(shell, lambda: quits.append(True))  # SIGTERM before the tabs exist
    assert quits == [True]
    shell.load_in_background(no_plugins=True)
    assert shell.close()
    qtbot.waitUntil(lambda: not any(t.name == "rnnstudio-background" for t in threading.enumerate()), timeout=60_000)
    QApplication.processEvents()  # the loader's result arrives after the close
    assert not shell.is_loaded()
    assert not (paths.config_dir() / "gui-settings.json").exists()


def test_a_failed_load_is_said_in_the_window(qtbot, shell, monkeypatch):
    from rnnstudio.gui import main_window

    def broken(no_plugins=False):
        raise ImportError("libtorch_cpu.so: cannot open shared object file")

    monkeypatch.setattr(main_window, "load_heavy_parts", broken)
    with qtbot.waitSignal(shell.load_failed, timeout=60_000) as failed:
        shell.load_in_background()
    assert "libtorch_cpu.so" in failed.args[0] and not shell.is_loaded()
    assert "libtorch_cpu.so" in shell.tabs.widget(0).text()
    assert "libtorch_cpu.so" in shell.statusBar().toolTip()  # the full line (the bar elides it)
