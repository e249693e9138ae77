"""The main window: Training, Generate and Models tabs, the pages of ``pages.py``, and a plugin-failure notice.

Given a plugin host, the window builds its tabs at once. Without one (the app's start-up) it is only a shell:
the tab titles over a "Loading…" page, the saved size and place. ``load_in_background()`` then imports torch
and loads the plugins in a daemon thread, and ``build(host)`` makes the tabs on the GUI thread once that is done,
so the window is on screen about a second before the heavy parts are.
"""

from __future__ import annotations

from PySide6.QtCore import QByteArray, Qt, QTimer, Signal
from PySide6.QtWidgets import QLabel, QMainWindow, QTabWidget, QVBoxLayout, QWidget

from . import pages
from .dialogs import confirm
from .plugins_page import PluginNotice
from .settings import load_settings, save_settings

CORE_TABS = ("Training", "Generate", "Models")
LOADING = "Loading the plugins and PyTorch…"


def load_heavy_parts(no_plugins: bool = False):
    """The plugin host, with torch, pyqtgraph and the tabs' modules imported: the slow part of start-up.

    Runs in a plain thread at start-up: it imports modules and creates no Qt object (plugins load without a
    display, as for the CLI); the widgets are made on the GUI thread by ``MainWindow.build``."""
    from ..plugins import default_host, load_plugins, set_default_host

    if no_plugins:
        set_default_host(load_plugins(no_plugins=True))
    host = default_host()  # the built-in cells are torch.nn.Modules: this imports torch
    from .. import trainer  # noqa: F401  (Start's first import)
    from . import charts, generation_page, models_page, training_page  # noqa: F401  (charts: pyqtgraph)

    pages.import_page_modules()
    return host


class MainWindow(QMainWindow):
    """Owns the panels, wires them together, remembers settings, and stops threads cleanly on close."""

    models_changed = Signal()  # a model was saved, renamed, deleted or exported
    loaded = Signal()  # the tabs are built (at once when given a host; after load_in_background() otherwise)
    load_failed = Signal(str)  # load_in_background() could not load the plugins or torch

    def __init__(self, host=None, *, settings_path=None, restore: bool = True, parent=None):
        super().__init__(parent)
        self.host = None  # the plugin host, once the tabs are built
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
        self.resize(1280, 820)

        self._log_backlog: list[str] = []  # status lines shown before the Log existed
        self._closed = False
        self._loader = None
        self.saved_settings, self.settings_warning = load_settings(self.settings_path) if restore else ({}, None)
        self._restore_geometry()
        for title in (*CORE_TABS, *(title for title, _ in pages.PAGES)):
            placeholder = QLabel(LOADING, alignment=Qt.AlignCenter)
            placeholder.setObjectName("loading")
            self.add_page(title, placeholder)
        self._restore_tab()
        if host is not None:
            self.build(host)
        else:
            self.show_status(LOADING, 0, log=False)

    def is_loaded(self) -> bool:
        return self.host is not None

    def load_in_background(self, no_plugins: bool = False) -> None:
        """Load the plugins (and torch) in a daemon thread, then ``build`` the tabs on the GUI thread.

        A daemon thread, not a QThread: an import cannot be interrupted, and the app may close meanwhile."""
        from .workers import Background

        self._loader = Background()
        self._loader.done.connect(lambda _token, host: self._on_heavy_parts(host))
        self._loader.failed.connect(lambda _token, exc: self._on_load_failed(exc))
        self._loader.submit("load", load_heavy_parts, no_plugins)

    def _on_heavy_parts(self, host) -> None:
        if self._closed:
            return
        try:
            self.build(host)
        except Exception as exc:  # noqa: BLE001 - say it in the window rather than die with a blank one
            self._on_load_failed(exc)

    def _on_load_failed(self, exc) -> None:
        if self._closed:
            return
        text = f"could not load the plugins and PyTorch: {type(exc).__name__}: {exc}"
        for i in range(self.tabs.count()):
            widget = self.tabs.widget(i)
            if widget.objectName() == "loading":
                widget.setText(text)
        self.show_status(text, 0, log=False)
        self.load_failed.emit(text)

    def build(self, host) -> None:
        """Make the tabs over ``host`` (torch is imported by then), restore their saved settings, emit ``loaded``."""
        from .generation_page import GenerationPanel
        from .models_page import ModelsPanel
        from .training_page import TrainingPanel

        if self.host is not None:
            raise RuntimeError("the window's tabs are built already")
        self.training = TrainingPanel(host)
        self.generation = GenerationPanel(host)
        self.models = ModelsPanel()
        self.host = host  # from here on the window counts as loaded: the pages' factories read window.host
        self.tabs.setUpdatesEnabled(False)  # one repaint when the real tabs are in, not one per tab
        try:
            self._add_tabs(host)
        finally:
            self.tabs.setUpdatesEnabled(True)
        self._restore_panels()
        self._restore_tab()
        self.show_status(self.settings_warning or "Ready: press Start to train on the default corpus.", 0, log=False)
        if host.failures:
            from .plugins_page import plugin_entries

            names = ", ".join(e.name for e in plugin_entries(host) if e.failures)
            self.show_status(f"some plugins failed to load ({names}); see the Plugins page", 20000)
        QTimer.singleShot(0, self, lambda: self.training.charts)  # after the first paint: a faster start
        self.loaded.emit()

    def _add_tabs(self, host) -> None:
        """The placeholders out; the panels, the pages and the Plugins page in, wired together."""
        placeholders = [self.tabs.widget(i) for i in range(self.tabs.count())]
        self.tabs.clear()
        for placeholder in placeholders:
            placeholder.deleteLater()
        self.add_page("Training", self.training)
        self.add_page("Generate", self.generation)
        self.add_page("Models", self.models)
        for line in self._log_backlog:
            self.training.log_line(line)
        self._log_backlog.clear()
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

    def show_status(self, text: str, timeout_ms: int = 10000, *, log: bool = True) -> None:
        """A status-bar line, elided to the window's width (it never widens the window); the full text is the
        status bar's tooltip and goes to the Training tab's Log."""
        bar = self.statusBar()
        width = max(bar.width() - 40, 200)
        bar.showMessage(bar.fontMetrics().elidedText(text.replace("\n", " "), Qt.ElideRight, width), timeout_ms)
        bar.setToolTip(text)
        if log and text:
            if self.is_loaded():
                self.training.log_line(text)
            else:
                self._log_backlog.append(text)

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
    def _restore_geometry(self) -> None:
        geometry = self.saved_settings.get("geometry")
        if isinstance(geometry, str):
            try:
                self.restoreGeometry(QByteArray.fromBase64(geometry.encode("ascii")))
            except Exception as exc:  # hand-edited or old settings must never stop the app
                self.settings_warning = f"ignored part of the saved settings ({type(exc).__name__}: {exc})"

    def _restore_tab(self) -> None:
        tab = self.saved_settings.get("tab")
        if isinstance(tab, int) and 0 <= tab < len(CORE_TABS):
            self.tabs.setCurrentIndex(tab)

    def _restore_panels(self) -> None:
        try:
            self.training.restore_state(self.saved_settings.get("training", {}))
            self.generation.restore_state(self.saved_settings.get("generation", {}))
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
        if not self.is_loaded():  # closed while loading: nothing to stop, and no settings to overwrite
            self._closed = True
            event.accept()
            return
        if self.training.is_training():
            if not confirm(self, "Training is running",
                           "Stop the training and close? The model is saved at the current step."):
                event.ignore()
                return
            self.show_status("stopping: validating and saving a checkpoint…", 0, log=False)
        self.training.stop_and_join()
        self.generation.stop_and_join()
        self.save_settings()
        self._closed = True
        event.accept()
