"""The Plugins page (every plugin: distribution, version, source, components, failures, disabled) and the failure notice."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import metadata

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (QFrame, QHBoxLayout, QHeaderView, QLabel, QPushButton, QToolButton, QTreeWidget,
                               QTreeWidgetItem, QVBoxLayout, QWidget)

COLUMNS = ("Plugin", "Status", "Distribution", "Version", "Source", "Components")
FAILED = QColor("#a31515")
DISABLED = QColor("#6b7280")


@dataclass
class PluginEntry:
    """One plugin as the page shows it."""

    name: str
    source: str  # the host's source id: builtin:cells, entrypoint:NAME, user:/path/file.py, ...
    origin: str  # built-in, installed, user folder, program
    distribution: str = ""
    version: str = ""
    components: list[str] = field(default_factory=list)  # "cell gru", "page Word counts"
    failures: list[str] = field(default_factory=list)
    disabled: bool = False

    @property
    def status(self) -> str:
        if self.disabled:
            return "disabled"
        if self.failures:
            return "loaded, with errors" if self.components else "failed"
        return "loaded"


def _split(source: str) -> tuple[str, str]:
    kind, _, rest = source.partition(":")
    return kind, rest


def _provenance(host, source: str) -> tuple[str, str]:
    """(distribution, version) of a plugin: the host's record when it keeps one, else the installed metadata."""
    info = getattr(host, "provenance", None)
    if callable(info):
        try:
            found = info(source)
        except Exception:  # noqa: BLE001 - the page shows what it can
            found = None
        if found:
            return tuple(found)[:2]
    kind, rest = _split(source)
    if kind == "builtin":
        from .. import __version__

        return "rnnstudio", __version__
    if kind == "entrypoint":
        try:
            for ep in metadata.entry_points(group="rnnstudio", name=rest):
                dist = getattr(ep, "dist", None)
                if dist is not None:
                    return dist.metadata["Name"] or "", dist.version or ""
        except Exception:  # noqa: BLE001
            pass
    return "", ""


def _display(source: str) -> tuple[str, str]:
    kind, rest = _split(source)
    if kind == "builtin":
        return rest, "built-in"
    if kind == "entrypoint":
        return rest, "installed"
    if kind == "user":
        return os.path.basename(rest) or rest, "user folder"
    return rest or source, "program"


def plugin_entries(host) -> list[PluginEntry]:
    """Every plugin the host loaded, failed to load, or was told to skip, in loading order."""
    order: list[str] = []
    for source in [*getattr(host, "plugins", []), *(f.plugin for f in host.failures)]:
        if source not in order:
            order.append(source)
    disabled = [d if isinstance(d, str) else getattr(d, "source", str(d)) for d in getattr(host, "disabled", ()) or ()]
    for source in disabled:
        if source not in order:
            order.append(source)
    entries = {}
    for source in order:
        name, origin = _display(source)
        dist, version = _provenance(host, source)
        entries[source] = PluginEntry(name, source, origin, dist, version, disabled=source in disabled)
    for kind, regs in host.registry.items():
        for reg in regs.values():
            if reg.source in entries:
                entries[reg.source].components.append(f"{kind} {reg.name}")
    for page in getattr(host, "pages", ()):
        if page.source in entries:
            entries[page.source].components.append(f"page {page.title}")
    for failure in host.failures:
        entries[failure.plugin].failures.append(failure.error)
    return list(entries.values())


class PluginsPage(QWidget):
    """A tree: one row per plugin, its components and failures as children (failed plugins open)."""

    status = Signal(str)

    def __init__(self, host, parent=None):
        super().__init__(parent)
        self.host = host
        self.summary = QLabel(objectName="hint", wordWrap=True)
        self.tree = QTreeWidget(columnCount=len(COLUMNS), alternatingRowColors=True, uniformRowHeights=False)
        self.tree.setHeaderLabels(COLUMNS)
        header = self.tree.header()
        for i in range(len(COLUMNS) - 1):
            header.setSectionResizeMode(i, QHeaderView.ResizeToContents)
        header.setStretchLastSection(True)
        hint = QLabel("Plugins load when the app starts: restart it after installing, removing or editing one. "
                      "`rnnstudio plugins` lists the same in a terminal.", objectName="hint", wordWrap=True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addWidget(self.tree, 1)
        layout.addWidget(hint)
        self.refresh()

    def refresh(self) -> None:
        self.tree.clear()
        entries = plugin_entries(self.host)
        failed = [e for e in entries if e.failures]
        self.summary.setText(f"{len(entries)} plugins, {sum(1 for e in entries if e.status == 'loaded')} loaded"
                             + (f"; {len(failed)} with failures (in red below)" if failed else "")
                             + (f"; {sum(1 for e in entries if e.disabled)} disabled"
                                if any(e.disabled for e in entries) else ""))
        for entry in entries:
            components = ", ".join(entry.components) or "none"
            item = QTreeWidgetItem([entry.name, entry.status, entry.distribution or "—", entry.version or "—",
                                    f"{entry.origin}: {entry.source.partition(':')[2] or entry.source}", components])
            item.setData(0, Qt.UserRole, entry.source)
            item.setToolTip(4, entry.source)
            item.setToolTip(5, components)
            colour = DISABLED if entry.disabled else FAILED if entry.failures else None
            for text in entry.failures:
                child = QTreeWidgetItem(["", "error", "", "", "", text])
                child.setToolTip(5, text)
                child.setForeground(1, QBrush(FAILED))
                child.setForeground(5, QBrush(FAILED))
                item.addChild(child)
            for component in entry.components:
                item.addChild(QTreeWidgetItem(["", "", "", "", "", component]))
            if colour is not None:
                item.setForeground(0, QBrush(colour))
                item.setForeground(1, QBrush(colour))
            self.tree.addTopLevelItem(item)
            item.setExpanded(bool(entry.failures))

    def entry_rows(self) -> list[tuple[str, str, str, str]]:
        """(plugin, status, distribution, version) of each top-level row, as shown."""
        rows = []
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            rows.append(tuple(item.text(c) for c in range(4)))
        return rows


class PluginNotice(QFrame):
    """A banner above the tabs while some plugins failed at start-up; it stays until the Plugins page is seen."""

    show_requested = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("pluginNotice")
        self.setStyleSheet("QFrame#pluginNotice { background: #fff4e5; border-bottom: 1px solid #e0b070; }"
                           "QFrame#pluginNotice QLabel { color: #6b3000; }")
        self.label = QLabel(wordWrap=True)
        self.label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        show = QPushButton("Show plugins")
        show.clicked.connect(self.show_requested)
        close = QToolButton(text="✕", toolTip="Hide this notice (the Plugins page keeps the details)", autoRaise=True)
        close.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 4, 6, 4)
        layout.addWidget(self.label, 1)
        layout.addWidget(show)
        layout.addWidget(close)
        self.hide()

    def update_from(self, host) -> None:
        failed = [e for e in plugin_entries(host) if e.failures]
        if not failed:
            self.hide()
            return
        names = ", ".join(e.name for e in failed[:4]) + (f" and {len(failed) - 4} more" if len(failed) > 4 else "")
        self.label.setText(f"{len(failed)} plugin{'s' if len(failed) > 1 else ''} failed to load ({names}). "
                           "Everything else works; the Plugins page says what went wrong.")
        self.label.setToolTip("\n".join(f"{e.source}: {'; '.join(e.failures)}" for e in failed))
        self.show()
