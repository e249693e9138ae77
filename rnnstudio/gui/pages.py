"""Pages of the main window: the built-in views listed in ``PAGES``, the plugins' pages, then the Plugins page.

Built-in pages are ``(title, factory)`` entries of ``PAGES``: ``factory(window)`` gets the ``MainWindow`` (use
``window.host``, ``window.training``, ``window.generation``, ``window.models``, and the signals
``window.models_changed`` and ``window.training.training_ended``) and returns the page's QWidget. A factory that
raises is skipped with a status-bar message. At start-up the app imports these pages' modules in its loading thread,
while the window already shows: a page module may import anything, but it makes no Qt object at import time.

Plugin pages (the ``register_pages`` hook) have a smaller, stable contract. A plugin calls
``register(title, factory)``; when the window is built, on the GUI thread and after the built-in pages,
``factory(context)`` gets a ``PageContext`` and returns a ``QWidget``, shown as a tab titled ``title``::

    @rnnstudio.hookimpl
    def register_pages(register):
        register("Word counts", make_page)

    def make_page(context):
        from PySide6.QtWidgets import QLabel     # Qt only inside the factory: plugins load without a display

        label = QLabel(f"{len(context.host.names('corpus'))} corpora")
        context.models_changed.connect(lambda: label.setText("a model changed"))
        return label

The tab owns the widget from then on. Refresh on the context's signals; touch widgets only on the GUI thread
(long work goes in a ``QThread``, whose results come back as signals). A factory that raises (SystemExit too)
or returns something other than a QWidget is listed as a failure of its plugin on the Plugins page, and the
app starts without that tab.

At run time ``MainWindow.add_page(title, widget)`` adds a page too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

PAGES: list[tuple[str, Callable]] = []


@dataclass(frozen=True)
class PageContext:
    """What a plugin page's factory receives."""

    host: Any  # the PluginHost: registered components (``host.names("cell")``, ``host.cell(name)``, ...)
    window: Any  # the main window: the parent for dialogs
    models_changed: Any  # Signal(): a model was saved, renamed, deleted or exported
    training_started: Any  # Signal(str): training of this model name began
    training_ended: Any  # Signal(str): it finished, stopped or failed
    show_status: Callable[..., None]  # show_status(text, timeout_ms=10000): a status-bar line (also in the Log)


def _lazy(module: str) -> Callable:
    """A factory that imports ``rnnstudio.gui.<module>`` only when the window is built and calls its ``page(window)``."""

    def factory(window):
        from importlib import import_module

        return import_module(f"{__package__}.{module}").page(window)

    factory.module = f"{__package__}.{module}"
    return factory


def import_page_modules() -> None:
    """Import the built-in pages' modules ahead of building them (the app does it off the GUI thread, where an
    import is safe and a widget is not). A module that fails here is left to its factory, which reports it."""
    from importlib import import_module

    for _title, factory in PAGES:
        module = getattr(factory, "module", None)
        if module:
            try:
                import_module(module)
            except Exception:  # noqa: BLE001 - add_page reports it when the window is built
                pass


def attach_view(window, view, refresh: str):
    """Wire a page into the window: ``view.<refresh>()`` runs whenever models change, and its ``status``
    signal shows in the status bar. Returns the view, so a ``page(window)`` factory can end with it."""
    window.models_changed.connect(getattr(view, refresh))
    view.status.connect(window.show_status)
    return view


# the pages that look inside a model
PAGES += [("Inspector", _lazy("inspector_page")), ("Explorer", _lazy("explorer_page")), ("Runs", _lazy("runs_page")),
          ("Under the hood", _lazy("hood_page"))]


def add_plugin_pages(window) -> None:
    """Add the plugins' pages (``host.pages``), then the Plugins page; a page that fails joins the host's failures."""
    from PySide6.QtWidgets import QWidget

    from ..plugins import PluginFailure, contained

    host = window.host
    context = PageContext(host=host, window=window, models_changed=window.models_changed,
                          training_started=window.training.training_started,
                          training_ended=window.training.training_ended, show_status=window.show_status)
    for page in getattr(host, "pages", ()):
        failed: list[str] = []
        widget = None
        with contained(failed.append):
            widget = page.factory(context)
        if not failed and not isinstance(widget, QWidget):
            failed.append(f"returned {type(widget).__name__}, not a QWidget")
        if failed:
            host.failures.append(PluginFailure(page.source, f"page {page.title!r} could not be built: {failed[0]}"))
            continue
        window.add_page(page.title, widget)
    from .plugins_page import PluginsPage

    window.plugins_page = PluginsPage(host)
    window.add_page("Plugins", window.plugins_page)
