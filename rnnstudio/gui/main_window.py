"""The main window: Training, Generate and Models tabs, the pages of ``pages.py``, and a plugin-failure notice."""

from __future__ import annotations

from PySide6.QtCore import QByteArray, Qt, QTimer, Signal
from PySide6.QtWidgets import QMainWindow, QTabWidget, QVBoxLayout, QWidget

from . import pages
from .dialogs import confirm
from .generation_page import GenerationPanel
from .models_page import ModelsPanel
from .plugins_page import PluginNotice
from .settings import load_settings, save_settings
from .training_page import TrainingPanel


class MainWindow(QMainWindow):
    """Owns the panels, wires them together, remembers settings, and stops threads cleanly on close."""

    models_changed = Signal()  # a model was saved, renamed, deleted or exported

    def __init__(self, host, *, settings_path=None, restore: bool = True, parent=None):
        super().__init__(parent)
        self.host = host
        self.settings_path = settings_path
        self.setWindowTitle("RNN Studio")
        self.tabs = QTabWidget(documentMode=True)
        self.notice = PluginNotice()  # shown while plugins failed at start-up, until the Plugins page is seen
        central = QWidget()
        column = QVBoxLayout(central)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        column.addWidget(self.notice)
        column.addWidget(self.tabs, 1)
        self.setCentralWidget(central)

        self.training = TrainingPanel(host)
        self.generation = GenerationPanel(host)
        self.models = ModelsPanel()
        self.add_page("Training", self.training)
        self.add_page("Generate", self.generation)
        self.add_page("Models", self.models)
        for title, factory in pages.PAGES:
            try:
                self.add_page(title, factory(self))
            except Exception as exc:  # a broken page must not stop the app
                self.show_status(f"page {title!r} failed to load: {type(exc).__name__}: {exc}", 15000)
        pages.add_plugin_pages(self)  # the plugins' pages, then the Plugins page (self.plugins_page)
        self.notice.update_from(host)
        self.notice.show_requested.connect(lambda: self.show_page(self.plugins_page))
        self.tabs.currentChanged.connect(
            lambda _i: self.notice.hide() if self.tabs.currentWidget() is self.plugins_page else None)

        for panel in (self.training, self.generation, self.models):
            panel.status.connect(self.show_status)
        self.training.training_started.connect(self.generation.set_training_model)
        self.training.training_started.connect(lambda name: self.show_status(f"training {name}…", log=False))
        self.training.training_ended.connect(lambda _name: self.generation.set_training_model(None))
        self.training.training_ended.connect(lambda _name: self.models_changed.emit())
        self.training.model_saved.connect(lambda _name: self.models_changed.emit())
        self.models.models_changed.connect(self.models_changed)
        self.models_changed.connect(self.models.refresh)
        self.models_changed.connect(self.generation.refresh_models)
        self.models.open_requested.connect(self.open_in_generation)
        self.models.resume_requested.connect(self.resume_training)
        self.models.renamed.connect(self.training.model_renamed)
        self.tabs.currentChanged.connect(lambda _i: self.statusBar().clearMessage())  # one tab's news, not another's

        self.resize(1280, 820)
        self.settings_warning = None
        if restore:
            self.restore_settings()
        self.show_status(self.settings_warning or "Ready: press Start to train on the default corpus.", 0, log=False)
        QTimer.singleShot(0, self, lambda: self.training.charts)  # after the first paint: a faster start

    def show_status(self, text: str, timeout_ms: int = 10000, *, log: bool = True) -> None:
        """A status-bar line, elided to the window's width (it never widens the window); the full text is the
        status bar's tooltip and goes to the Training tab's Log."""
        bar = self.statusBar()
        width = max(bar.width() - 40, 200)
        bar.showMessage(bar.fontMetrics().elidedText(text.replace("\n", " "), Qt.ElideRight, width), timeout_ms)
        bar.setToolTip(text)
        if log and text:
            self.training.log_line(text)

    def add_page(self, title: str, widget: QWidget) -> int:
        """Add a tab; returns its index. Other views plug in here (see ``pages.py``)."""
        return self.tabs.addTab(widget, title)

    def show_page(self, widget: QWidget) -> None:
        self.tabs.setCurrentWidget(widget)

    def open_in_generation(self, name: str) -> None:
        self.generation.refresh_models()
        self.generation.select_model(name)
        self.show_page(self.generation)

    def resume_training(self, name: str) -> None:
        self.training.prepare_resume(name)
        self.show_page(self.training)
        self.show_status(f"press Start to continue training {name}", log=False)

    # -- settings -------------------------------------------------------------------
    def restore_settings(self) -> None:
        data, self.settings_warning = load_settings(self.settings_path)
        try:
            self.training.restore_state(data.get("training", {}))
            self.generation.restore_state(data.get("generation", {}))
            geometry = data.get("geometry")
            if isinstance(geometry, str):
                self.restoreGeometry(QByteArray.fromBase64(geometry.encode("ascii")))
            if isinstance(data.get("tab"), int) and 0 <= data["tab"] < 3:
                self.tabs.setCurrentIndex(data["tab"])
        except Exception as exc:  # hand-edited or old settings must never stop the app
            self.settings_warning = f"ignored part of the saved settings ({type(exc).__name__}: {exc})"

    def settings_state(self) -> dict:
        return {"version": 1, "training": self.training.state(), "generation": self.generation.state(),
                "geometry": bytes(self.saveGeometry().toBase64()).decode("ascii"),
                "tab": self.tabs.currentIndex()}

    def save_settings(self) -> None:
        try:
            save_settings(self.settings_state(), self.settings_path)
        except OSError as exc:
            self.show_status(f"could not save the settings: {exc}")

    # -- closing --------------------------------------------------------------------
    def closeEvent(self, event) -> None:
        if self.training.is_training():
            if not confirm(self, "Training is running",
                           "Stop the training and close? The model is saved at the current step."):
                event.ignore()
                return
            self.show_status("stopping: validating and saving a checkpoint…", 0, log=False)
        self.training.stop_and_join()
        self.generation.stop_and_join()
        self.save_settings()
        event.accept()
