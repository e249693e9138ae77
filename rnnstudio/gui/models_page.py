"""The models view: saved models with their corpus, cell, size, validation perplexity and date; open, resume,
rename, delete and export them."""

from __future__ import annotations

import math
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QFileDialog, QHBoxLayout, QHeaderView, QLabel,
                               QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from .. import checkpoint
from ..errors import RNNStudioError
from .dialogs import ask_text, confirm, show_error

COLUMNS = ("name", "corpus", "cell", "size", "parameters", "steps", "val perplexity", "best step",
           "best val perplexity", "date")  # the last weights' step and perplexity, then the best weights'


def _ppl(x) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) and math.isfinite(x) else "-"


def _corpus_options(info) -> tuple[str, str]:
    """(column text, tooltip) for a model's corpus: which file, not only which plugin."""
    train = (info.config or {}).get("train") or {}
    corpus, options = train.get("corpus"), train.get("corpus_options") or {}
    if not corpus or not isinstance(options, dict) or not options:
        return "", ""
    path = options.get("path")
    if isinstance(path, str) and path:
        return f"{corpus}: {Path(path).name}", path
    text = ", ".join(f"{k}={v}" for k, v in options.items())
    return f"{corpus} ({text})", text


class ModelsPanel(QWidget):
    """A table of ``checkpoint.list_models()``; broken models are listed with their error."""

    open_requested = Signal(str)  # generate with this model
    resume_requested = Signal(str)  # continue training this model
    models_changed = Signal()
    renamed = Signal(str, str)  # old name, new name
    status = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("page")
        self.rows: list[dict] = []
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.doubleClicked.connect(self.open_selected)
        self.table.itemSelectionChanged.connect(self._selection_changed)

        self.buttons = {}
        row = QHBoxLayout()
        for key, label, slot, tip in (
            ("refresh", "Refresh", self.refresh, "read the models folder again"),
            ("open", "Open in Generate", self.open_selected, "generate text with this model"),
            ("resume", "Resume training", self.resume_selected, "continue training this model where it stopped"),
            ("rename", "Rename…", self.rename_selected, "give the model a new name"),
            ("export", "Export…", self.export_selected, "copy the model folder, or save it as a .zip"),
            ("delete", "Delete…", self.delete_selected, "delete the model folder (asks first)"),
        ):
            b = QPushButton(label)
            b.setToolTip(tip)
            b.clicked.connect(slot)
            row.addWidget(b)
            self.buttons[key] = b
        row.addStretch(1)
        self.folder_label = QLabel("", objectName="hint")
        self.folder_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        col = QVBoxLayout(self)
        col.addLayout(row)
        col.addWidget(self.table, 1)
        col.addWidget(self.folder_label)
        self.refresh()

    def refresh(self) -> None:
        from ..paths import models_dir

        selected = self.selected_name()
        infos = checkpoint.list_models()
        self.rows = [m.row() for m in infos]
        corpus_tips = [_corpus_options(m) for m in infos]
        self.table.clearSpans()
        self.table.setRowCount(len(self.rows))
        for i, r in enumerate(self.rows):
            if r.get("error"):
                cells = [r["name"], f"BROKEN: {r['error']}"] + [""] * (len(COLUMNS) - 2)
            else:
                ppl = r.get("val_perplexity")
                corpus, tip = corpus_tips[i]
                cells = [r["name"], corpus or str(r.get("corpus") or "-"), str(r.get("cell") or "-"),
                         f"{r.get('num_layers')} x {r.get('hidden_size')}",
                         f"{r['parameters']:,}" if isinstance(r.get("parameters"), int) else "-",
                         str(r.get("steps") if r.get("steps") is not None else "-"),
                         _ppl(ppl),
                         "—" if r.get("best_step") is None else str(r["best_step"]),  # older models: not recorded
                         "—" if r.get("best_step") is None else _ppl(r.get("best_val_perplexity")),
                         (r.get("date") or "-").replace("T", " ")[:19]]
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if r.get("error"):
                    item.setForeground(Qt.darkRed)
                    item.setToolTip(r["error"])
                elif j == 1 and corpus_tips[i][1]:
                    item.setToolTip(corpus_tips[i][1])
                self.table.setItem(i, j, item)
            if r.get("error"):
                self.table.setSpan(i, 1, 1, len(COLUMNS) - 1)
        self.folder_label.setText(f"models folder: {models_dir()}")
        self.select(selected)
        self._selection_changed()

    def select(self, name: str | None) -> None:
        for i, r in enumerate(self.rows):
            if r["name"] == name:
                self.table.selectRow(i)
                return

    def selected_row(self) -> dict | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return self.rows[rows[0].row()]

    def selected_name(self) -> str | None:
        r = self.selected_row() if self.rows else None
        return r["name"] if r else None

    def _selection_changed(self) -> None:
        r = self.selected_row() if self.rows else None
        ok = r is not None and not r.get("error")
        for key in ("open", "resume"):
            self.buttons[key].setEnabled(ok)
        for key in ("rename", "export", "delete"):
            self.buttons[key].setEnabled(r is not None)

    # -- actions ----------------------------------------------------------------------
    def open_selected(self) -> None:
        r = self.selected_row()
        if r is not None and not r.get("error"):
            self.open_requested.emit(r["name"])

    def resume_selected(self) -> None:
        r = self.selected_row()
        if r is not None and not r.get("error"):
            self.resume_requested.emit(r["name"])

    def rename_selected(self) -> None:
        name = self.selected_name()
        if not name:
            return
        text = name
        while True:  # a bad name shows why and asks again, with what was typed
            new, ok = ask_text(self, "Rename model", f"New name for {name}:", text)
            new = new.strip()
            if not ok or not new or new == name:
                return
            try:
                checkpoint.rename_model(name, new)
            except (RNNStudioError, OSError) as exc:
                show_error(self, exc if isinstance(exc, RNNStudioError)
                           else RNNStudioError(f"{exc.strerror or exc}", source="models folder"))
                text = new
                continue
            break
        from .. import runs

        runs.rename_model_runs(name, new)  # the run history follows the model
        self.status.emit(f"renamed {name} to {new}")
        self.renamed.emit(name, new)
        self.refresh()
        self.models_changed.emit()
        self.select(new)

    def delete_selected(self) -> None:
        name = self.selected_name()
        if name and confirm(self, "Delete model", f"Delete the model {name!r} and all its files? This cannot be undone."):
            self._run(lambda: checkpoint.delete_model(name), f"deleted {name}")

    def export_selected(self, dest: str | None = None) -> None:
        name = self.selected_name()
        if not name:
            return
        if not dest:
            dest, _ = QFileDialog.getSaveFileName(self, f"Export {name}", f"{name}.zip",
                                                  "Zip archive (*.zip);;Folder (no extension) (*)")
        if dest:
            self._run(lambda: checkpoint.export_model(name, dest), f"exported {name} to {dest}")

    def _run(self, action, done: str) -> None:
        try:
            action()
        except (RNNStudioError, OSError) as exc:
            if isinstance(exc, OSError):
                exc = RNNStudioError(f"{exc.strerror or exc}", source="models folder")
            show_error(self, exc)
        else:
            self.status.emit(done)
        self.refresh()
        self.models_changed.emit()
