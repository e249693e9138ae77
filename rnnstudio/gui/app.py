"""Start the desktop app: ``rnnstudio`` (or ``rnnstudio gui``) calls ``main()``."""

from __future__ import annotations

import os
import signal
import sys
from importlib import resources

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import QApplication


def resource_bytes(name: str) -> bytes:
    """A file shipped in the ``rnnstudio.resources`` package (the repository's ``resources/`` folder)."""
    return resources.files("rnnstudio.resources").joinpath(name).read_bytes()


def app_icon() -> QIcon:
    pixmap = QPixmap()
    pixmap.loadFromData(resource_bytes("icon.png"), "PNG")
    return QIcon(pixmap)


def stylesheet() -> str:
    return resource_bytes("style.qss").decode("utf-8")


def create_app(argv: list[str] | None = None) -> QApplication:
    """The QApplication with the app's name, icon and stylesheet (an existing one is reused, e.g. in tests)."""
    app = QApplication.instance() or QApplication(argv if argv is not None else sys.argv[:1])
    # Training runs in a worker thread that needs the GIL back after every torch op; while this thread
    # runs Python (chart drawing), CPython hands the GIL over only every switch interval (5 ms by
    # default). 1 ms keeps the worker's waits short (bench.py --only gui: GUI/CLI tokens/s).
    sys.setswitchinterval(0.001)
    app.setApplicationName("RNN Studio")
    app.setOrganizationName("rnnstudio")
    app.setWindowIcon(app_icon())
    app.setStyleSheet(stylesheet())
    return app


def create_window(*, no_plugins: bool = False, restore: bool = True):
    """The main window over the plugin host (built-ins only with ``no_plugins``), its tabs built before it returns."""
    from .main_window import MainWindow, load_heavy_parts

    window = MainWindow(load_heavy_parts(no_plugins), restore=restore)
    window.setWindowIcon(app_icon())
    return window


def start_window(*, no_plugins: bool = False, restore: bool = True):
    """The app's start-up: the main window is shown first, as a shell, and the plugins and torch load in a
    thread after its first paint; its tabs are built when they are in (``MainWindow.loaded``)."""
    from .main_window import MainWindow

    window = MainWindow(restore=restore)
    window.setWindowIcon(app_icon())
    window.show()
    QTimer.singleShot(0, window, lambda: window.load_in_background(no_plugins=no_plugins))
    return window


def terminate(window, quit_app) -> None:
    """SIGTERM or SIGHUP (``kill``, a logout): stop training as Stop does (it validates and saves),
    save the settings and quit, without asking (while the tabs are still loading there is nothing to save)."""
    if window.is_loaded():
        window.training.stop_and_join()
        window.generation.stop_and_join()
        window.save_settings()
    quit_app()


def install_terminate_handlers(window, quit_app) -> dict:
    """Route SIGTERM and SIGHUP to ``terminate``; returns the previous handlers."""
    sigs = [s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]
    return {s: signal.signal(s, lambda *_: terminate(window, quit_app)) for s in sigs}


def main(no_plugins: bool = False) -> int:
    from .platform_check import platform_problem

    problem = platform_problem()
    if problem:  # Qt would abort with a message naming only the first missing library
        print(problem, file=sys.stderr)
        return 2
    app = create_app()
    app.setAttribute(Qt.AA_DontShowIconsInMenus, False)
    window = start_window(no_plugins=no_plugins)
    # Ctrl+C in the terminal closes the window the normal way (asking first while training);
    # the idle timer gives Python a chance to run its signal handler inside Qt's event loop.
    signal.signal(signal.SIGINT, lambda *_: window.close())
    install_terminate_handlers(window, app.quit)
    tick = QTimer(interval=250)
    tick.timeout.connect(lambda: None)
    tick.start()
    code = app.exec()
    return leave_now(code)


def leave_now(code: int) -> int:
    """End the process as soon as the event loop is done. By then the settings are saved and every
    worker thread is joined; what is left is tearing down Qt, pyqtgraph and torch object by object,
    which took 2-5 s after the window had closed (a window that seems to hang on close)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
    return code  # not reached


if __name__ == "__main__":
    sys.exit(main())
