"""Drive the real window offscreen and save a PNG of each panel: ``python -m rnnstudio.gui.screenshots OUT_DIR``.

It trains a small model on the default corpus for 1,500 steps, generates text with it, and
grabs each page. To add a page, append ``("name.png", function)`` to ``SHOTS``; the function gets
the ``MainWindow`` and brings it into the state to photograph (the whole window is grabbed after it).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

DEMO_MODEL = "screenshot-demo"
TRAIN_STEPS = int(os.environ.get("RNNSTUDIO_SHOT_STEPS", "1500"))  # 100 steps gave gibberish samples


def wait_until(predicate, timeout_s: float, what: str) -> None:
    """Run the event loop until ``predicate()`` is true; raise TimeoutError naming ``what``."""
    from PySide6.QtCore import QCoreApplication

    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        QCoreApplication.processEvents()
        time.sleep(0.02)


def settle(seconds: float = 0.3) -> None:
    """Let pending paints and queued signals run."""
    from PySide6.QtCore import QCoreApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QCoreApplication.processEvents()
        time.sleep(0.02)


def show_tab(window, cls):
    """Bring the main window's ``cls`` tab to the front; returns that view."""
    for i in range(window.tabs.count()):
        view = window.tabs.widget(i)
        if isinstance(view, cls):
            window.show_page(view)
            return view
    raise RuntimeError(f"the window has no {cls.__name__} tab")


def run_to_end(view, start, timeout_s: float, what: str) -> None:
    """Press a view's button (``start()``, False when it did not start) and wait until its background work is done."""
    if not start():
        raise RuntimeError(f"{what} did not start")
    wait_until(lambda: not view.is_busy(), timeout_s, what)


def shot_training(window) -> None:
    """Train a GRU on the default corpus long enough for its samples to read as text (a few CPU minutes)."""
    from . import fields as F

    t = window.training
    window.show_page(t)
    t.set_corpus("python-docs")
    t.set_cell("gru")
    for key, value in {"hidden_size": 128, "length_mode": "steps", "length": TRAIN_STEPS, "eval_every": 100,
                       "sample_every": 250, "batch_size": 32, "seq_len": 35, "name": DEMO_MODEL, "device": "cpu",
                       "threads": 1}.items():  # one thread: fastest for a model this small
        F.set_value(t.fields[key], value)
    if not t.start():
        raise RuntimeError("training did not start; see the error dialog text above")
    wait_until(lambda: not t.is_training(), 1800, "training to finish")
    t.results.setCurrentWidget(t.charts_page)
    if t.charts.point_count("val") < 2:
        raise RuntimeError("the perplexity chart has fewer than two validation points")
    settle()


def shot_corpus_preview(window) -> None:
    t = window.training
    window.show_page(t)
    t.results.setCurrentIndex(1)
    t.refresh_preview()
    wait_until(lambda: t.preview_text.toPlainText() != "", 120, "the corpus preview")
    settle()


def shot_generation(window) -> None:
    from . import settings_form as SF

    g = window.generation
    window.open_in_generation(DEMO_MODEL)
    for key, value in {"prefix": "The ", "length": 400, "greedy": False, "temperature": 0.7, "seed": 1,
                       "num_samples": 1}.items():
        SF.set_editor(g.fields[key], value)
    if not g.generate():
        raise RuntimeError("generation did not start")
    wait_until(lambda: not g.is_generating(), 120, "generation to finish")
    if len(g.output.toPlainText()) <= len("The "):
        raise RuntimeError("the generation panel shows no generated text")
    settle()


def shot_models(window) -> None:
    from ..paths import models_dir

    (models_dir() / "half-copied-model").mkdir(exist_ok=True)  # shows how a broken model is listed
    window.models.refresh()
    window.models.select(DEMO_MODEL)
    window.show_page(window.models)
    settle()


# (file name, function that prepares the window); the whole window is grabbed after each.
SHOTS = [
    ("training.png", shot_training),
    ("corpus-preview.png", shot_corpus_preview),
    ("generation.png", shot_generation),
    ("models.png", shot_models),
]


def _shot(module: str, function: str = "screenshot"):
    """``rnnstudio.gui.<module>.<function>``, imported when the shot is taken."""
    return lambda window: getattr(__import__(f"{__package__}.{module}", fromlist=[function]), function)(window)


# the runs shot trains rnn and lstm runs beside the demo GRU; later shots use them
SHOTS += [("runs.png", _shot("runs_page")), ("inspector.png", _shot("inspector_page")),
          ("inspector-compare.png", _shot("inspector_page", "screenshot_compare")),
          ("explorer.png", _shot("explorer_page")), ("hood.png", _shot("hood_page"))]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m rnnstudio.gui.screenshots OUT_DIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    # a scratch home, so the run neither reads nor writes the user's models and settings
    os.environ["RNNSTUDIO_HOME"] = tempfile.mkdtemp(prefix="rnnstudio-screenshots-")
    from PySide6.QtWidgets import QMessageBox

    from .app import create_app, create_window

    def report(parent, title, text, *args, **kwargs):  # no one is there to click a dialog away
        print(f"{title}: {text}", file=sys.stderr)
        return QMessageBox.Ok

    QMessageBox.critical = report
    QMessageBox.warning = report
    app = create_app()
    window = create_window(restore=False)
    window.resize(1360, 860)
    window.show()
    settle(0.5)
    try:
        for filename, prepare in SHOTS:
            prepare(window)
            path = out / filename
            if not window.grab().save(str(path)):
                raise RuntimeError(f"could not write {path}")
            print(f"wrote {path}")
    finally:
        window.training.stop_and_join()
        window.generation.stop_and_join()
        window.close()
        app.processEvents()
    return 0


if __name__ == "__main__":
    sys.exit(main())
