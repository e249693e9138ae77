"""The main window: Training, Generate and Models tabs plus any pages listed in ``pages.PAGES``."""

from __future__ import annotations

from PySide6.QtCore import QByteArray, QTimer, Signal
from PySide6.QtWidgets import QMainWindow, QTabWidget, QWidget

from . import pages
from .dialogs import confirm
from .generation_panel import GenerationPanel
from .models_panel import ModelsPanel
from .settings import load_settings, save_settings
from .training_panel import TrainingPanel


class MainWindow(QMainWindow):
    """Owns the panels, wires them together, remembers settings, and stops threads cleanly on close."""

    models_changed = Signal()  # a model was saved, renamed, deleted or exported

    def __init__(self, host, *, settings_path=None, restore: bool = True, parent=None):
        super().__init__(parent)
        self.host = host
        self.settings_path = settings_path
        self.setWindowTitle("RNN Studio")
        self.tabs = QTabWidget(documentMode=True)
        self.setCentralWidget(self.tabs)

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
                self.statusBar().showMessage(f"page {title!r} failed to load: {type(exc).__name__}: {exc}", 15000)

        for panel in (self.training, self.generation, self.models):
            panel.status.connect(lambda text: self.statusBar().showMessage(text, 10000))
        self.training.training_started.connect(self.generation.set_training_model)
        self.training.training_ended.connect(lambda _name: self.generation.set_training_model(None))
        self.training.training_ended.connect(lambda _name: self.models_changed.emit())
        self.training.model_saved.connect(lambda _name: self.models_changed.emit())
        self.models.models_changed.connect(self.models_changed)
        self.models_changed.connect(self.models.refresh)
        self.models_changed.connect(self.generation.refresh_models)
        self.models.open_requested.connect(self.open_in_generation)
        self.models.resume_requested.connect(self.resume_training)

        self.resize(1280, 820)
        self.settings_warning = None
        if restore:
            self.restore_settings()
        self.statusBar().showMessage(self.settings_warning or "Ready: press Start to train on the default corpus.")
        QTimer.singleShot(0, self, lambda: self.training.charts)  # after the first paint: a faster start

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
        self.statusBar().showMessage(f"press Start to continue training {name}", 10000)

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
            self.statusBar().showMessage(f"could not save the settings: {exc}", 10000)

    # -- closing --------------------------------------------------------------------
    def closeEvent(self, event) -> None:
        if self.training.is_training():
            if not confirm(self, "Training is running",
                           "Stop the training and close? The model is saved at the current step."):
                event.ignore()
                return
            self.statusBar().showMessage("stopping: validating and saving a checkpoint…")
        self.training.stop_and_join()
        self.generation.stop_and_join()
        self.save_settings()
        event.accept()
