"""Extra pages of the main window, listed in one place: add a view with one line here.

Each entry is ``(title, factory)``. ``factory(window)`` gets the ``MainWindow`` (use ``window.host``,
``window.training``, ``window.generation``, ``window.models``, and the signals ``window.models_changed``
and ``window.training.training_ended``) and returns the page's QWidget. Import heavy modules inside
the factory so that start-up stays fast. A factory that raises is skipped with a status-bar message.

Example::

    def _inspector(window):
        from .inspector_page import InspectorPage
        return InspectorPage(window.host)

    PAGES.append(("Inspector", _inspector))

At run time ``MainWindow.add_page(title, widget)`` adds a page too.
"""

from __future__ import annotations

from typing import Callable

PAGES: list[tuple[str, Callable]] = []


def _lazy(module: str) -> Callable:
    """A factory that imports ``rnnstudio.gui.<module>`` only when the window is built and calls its ``page(window)``."""

    def factory(window):
        from importlib import import_module

        return import_module(f"{__package__}.{module}").page(window)

    return factory


def attach_view(window, view, refresh: str):
    """Wire a page into the window: ``view.<refresh>()`` runs whenever models change, and its ``status``
    signal shows in the status bar. Returns the view, so a ``page(window)`` factory can end with it."""
    window.models_changed.connect(getattr(view, refresh))
    view.status.connect(window.show_status)
    return view


# the pages that look inside a model
PAGES += [("Inspector", _lazy("inspector_view")), ("Explorer", _lazy("explorer_view")), ("Runs", _lazy("runs_view")),
          ("Under the hood", _lazy("hood_view"))]
