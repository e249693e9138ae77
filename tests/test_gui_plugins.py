"""GUI pages as a hook, the Plugins page, and the notice of plugins that failed at start-up (pytest-qt, offscreen)."""

from __future__ import annotations

import sys
import types
from importlib import metadata

import pytest

pytest.importorskip("PySide6")

import rnnstudio  # noqa: E402
from rnnstudio import plugins  # noqa: E402
from rnnstudio.plugins import load_plugins  # noqa: E402


def page_plugin(title="Word counts", factory=None):
    def make_page(context):
        from PySide6.QtWidgets import QLabel

        label = QLabel(f"{len(context.host.names('cell'))} cells")
        label.setObjectName("word-counts")
        context.models_changed.connect(lambda: label.setText("models changed"))
        context.show_status("word counts ready")
        return label

    class Plugin:
        @rnnstudio.hookimpl
        def register_pages(self, register):
            register(title, factory or make_page)

    return Plugin()


def failing_plugin():
    class Plugin:
        @rnnstudio.hookimpl
        def register_cells(self, register):
            raise RuntimeError("cell registry on fire")

    return Plugin()


def tab_titles(window):
    return [window.tabs.tabText(i) for i in range(window.tabs.count())]


def make_window(qtbot, host):
    from rnnstudio.gui.main_window import MainWindow

    window = MainWindow(host, restore=False)
    qtbot.addWidget(window)
    window.show()
    return window


def test_a_plugin_page_appears_as_a_tab_and_gets_the_context(qtbot):
    window = make_window(qtbot, load_plugins(no_plugins=True, extra=[("test:pages", page_plugin())]))
    titles = tab_titles(window)
    assert "Word counts" in titles and titles[-1] == "Plugins"  # plugin pages come before the Plugins page
    page = window.tabs.widget(titles.index("Word counts"))
    assert page.objectName() == "word-counts" and page.text() == f"{len(window.host.names('cell'))} cells"
    window.models_changed.emit()  # the refresh signal of the contract
    assert page.text() == "models changed"
    assert not window.notice.isVisible()  # nothing failed


def test_a_page_that_fails_is_a_failure_of_its_plugin_and_the_app_starts(qtbot):
    def broken(context):
        raise ValueError("no widget today")

    host = load_plugins(no_plugins=True, extra=[("test:broken-page", page_plugin("Broken", broken)),
                                                ("test:not-a-widget", page_plugin("Nothing", lambda c: 42))])
    window = make_window(qtbot, host)
    assert "Broken" not in tab_titles(window) and "Nothing" not in tab_titles(window)
    errors = {f.plugin: f.error for f in host.failures}
    assert errors["test:broken-page"] == "page 'Broken' could not be built: ValueError: no widget today"
    assert errors["test:not-a-widget"] == "page 'Nothing' could not be built: returned int, not a QWidget"
    assert window.notice.isVisible()


def test_register_pages_checks_its_arguments():
    host = load_plugins(no_plugins=True, extra=[("test:untitled", page_plugin("  ")),
                                                ("test:no-factory", page_plugin("X", factory="not callable"))])
    assert host.pages == []
    errors = {f.plugin: f.error for f in host.failures}
    assert "needs a title" in errors["test:untitled"] and "needs a factory" in errors["test:no-factory"]


def test_the_notice_shows_until_the_plugins_page_is_opened(qtbot):
    window = make_window(qtbot, load_plugins(no_plugins=True, extra=[("test:on-fire", failing_plugin())]))
    assert window.notice.isVisible()
    assert "1 plugin failed to load (on-fire)" in window.notice.label.text()
    window.show_page(window.training)  # other tabs leave it up
    assert window.notice.isVisible()
    window.show_page(window.plugins_page)
    assert not window.notice.isVisible()


def test_the_notice_button_opens_the_plugins_page(qtbot):
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QPushButton

    window = make_window(qtbot, load_plugins(no_plugins=True, extra=[("test:on-fire", failing_plugin())]))
    (button,) = [b for b in window.notice.findChildren(QPushButton) if b.text() == "Show plugins"]
    qtbot.mouseClick(button, Qt.LeftButton)
    assert window.tabs.currentWidget() is window.plugins_page and not window.notice.isVisible()


def test_the_plugins_page_lists_every_plugin_with_its_components_and_failures(qtbot):
    host = load_plugins(no_plugins=True, extra=[("test:pages", page_plugin()), ("test:on-fire", failing_plugin())])
    window = make_window(qtbot, host)
    page = window.plugins_page
    rows = {row[0]: row for row in page.entry_rows()}
    assert rows["cells"][1:] == ("loaded", "rnnstudio", rnnstudio.__version__)
    assert rows["runs"][1] == "loaded" and rows["on-fire"][1] == "failed"
    tree = page.tree
    items = {tree.topLevelItem(i).text(0): tree.topLevelItem(i) for i in range(tree.topLevelItemCount())}
    cells = items["cells"]
    assert "cell gru" in cells.text(5) and not cells.isExpanded()
    assert items["observers"].text(5) == "observer tensorboard"
    assert items["runs"].text(5) == "observer run-records"
    assert items["pages"].text(5) == "page Word counts"
    fire = items["on-fire"]
    assert fire.isExpanded() and fire.child(0).text(1) == "error"
    assert "register_cells raised RuntimeError: cell registry on fire" in fire.child(0).text(5)
    assert "1 with failures" in page.summary.text()


def test_an_installed_plugin_shows_its_distribution_and_version(qtbot, monkeypatch, tmp_path):
    module = types.ModuleType("rnnstudio_test_gui_ep")
    module.plugin = page_plugin("From a package")
    sys.modules["rnnstudio_test_gui_ep"] = module
    info = tmp_path / "rnnstudio_wordcounts-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rnnstudio-wordcounts\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text("[rnnstudio]\nwordcounts = rnnstudio_test_gui_ep:plugin\n")
    dist = metadata.PathDistribution(info)
    monkeypatch.setattr(metadata, "entry_points",
                        lambda group=None, **kw: [ep for ep in dist.entry_points if ep.group == group
                                                  and all(getattr(ep, k) == v for k, v in kw.items())])
    try:
        host = plugins.load_plugins(user_dir=tmp_path / "no-user-plugins")
        window = make_window(qtbot, host)
        rows = {row[0]: row for row in window.plugins_page.entry_rows()}
        assert rows["wordcounts"][1:] == ("loaded", "rnnstudio-wordcounts", "1.2.3")
        assert "From a package" in tab_titles(window)
    finally:
        del sys.modules["rnnstudio_test_gui_ep"]


def test_a_disabled_plugin_is_listed_as_disabled(qtbot):
    host = load_plugins(no_plugins=True)
    host.disabled = ["entrypoint:skipped-one"]  # what --disable skipped-one leaves on the host
    window = make_window(qtbot, host)
    rows = {row[0]: row for row in window.plugins_page.entry_rows()}
    assert rows["skipped-one"][1] == "disabled"
    assert "1 disabled" in window.plugins_page.summary.text() and not window.notice.isVisible()
