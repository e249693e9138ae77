"""The Runs view: an experiment table of every training run (sortable, filterable) whose ticked or selected rows overlay their curves."""

from __future__ import annotations

import math
import re

import pyqtgraph as pg
from PySide6.QtCore import QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QColor, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QFileDialog, QHBoxLayout, QHeaderView,
                               QLabel, QLineEdit, QPushButton, QSplitter, QTableView, QVBoxLayout, QWidget)

from .. import runs
from ..config import DEFAULT_LR
from ..errors import RNNStudioError
from . import charts
from .dialogs import show_error
from .widgets import ElidedLabel

# (header, run_row key or a function of the row, how to show it); the sort uses the raw value.
COLUMNS = ("run", "started", "status", "cell", "corpus", "hidden", "layers", "optimizer", "lr", "batch", "seq len",
           "steps", "tokens/s", "best val ppl", "val ppl", "train ppl", "device", "time", "note")
PALETTE = ("#2b5fd9", "#e08a00", "#1a9850", "#d73027", "#7b3294", "#00a6ca", "#8c510a", "#de77ae", "#4d4d4d",
           "#66bd63")
SELECT_LATEST = 4  # runs ticked when the view opens
SORT_ROLE = Qt.UserRole + 1
ID_ROLE = Qt.UserRole
DIVERGED_AT = re.compile(r"diverged at step (\d+)")


def _num(x, spec=".3f") -> str:
    return "-" if not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x) else format(x, spec)


def _cells(rec: dict) -> list[tuple[str, object]]:
    """(text, sort value) for each column of one run."""
    row = runs.run_row(rec)
    if rec.get("status") == "broken":
        blank = [("", None)] * (len(COLUMNS) - 3)
        return [(str(row["id"]), row["id"]), ("", None), ("broken", "broken"), *blank, (f"{rec.get('error')}", None)]
    lr = row["lr"] if row["lr"] is not None else DEFAULT_LR.get(row["optimizer"])
    note = row["error"] or ""
    return [
        (str(row["model"]), str(row["model"])),
        ((row["started"] or "")[:19].replace("T", " "), row["started"] or ""),
        (str(row["status"]), str(row["status"])),
        (str(row["cell"]), str(row["cell"])), (str(row["corpus"]), str(row["corpus"])),
        (str(row["hidden_size"]), row["hidden_size"]), (str(row["num_layers"]), row["num_layers"]),
        (str(row["optimizer"]), str(row["optimizer"])),
        (_num(lr, "g") + ("" if row["lr"] is not None else " (default)"), lr),
        (str(row["batch_size"]), row["batch_size"]), (str(row["seq_len"]), row["seq_len"]),
        (str(row["steps"] if row["steps"] is not None else "-"), row["steps"]),
        (_num(row["tokens_per_s"], ",.0f"), row["tokens_per_s"]),
        (_num(row["best_val_perplexity"]), row["best_val_perplexity"]),
        (_num(row["val_perplexity"]), row["val_perplexity"]),
        (_num(row["train_perplexity"]), row["train_perplexity"]),
        (str(row["device"]), str(row["device"])),
        (_num(row["seconds"], ".1f") + " s", row["seconds"]),
        (note, note),
    ]


class RunsProxy(QSortFilterProxyModel):
    """Sorts on the raw values (numbers as numbers; a missing value last) and filters on any column's text."""

    def lessThan(self, left, right) -> bool:  # noqa: N802 (Qt's name)
        a, b = left.data(SORT_ROLE), right.data(SORT_ROLE)
        if a is None or b is None:
            return a is not None  # values before blanks
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return a < b
        return str(a) < str(b)


def train_curve(record: dict, metric: str) -> tuple[list[int], list[float]]:
    """A run's curve as the Training tab draws it: train perplexity and the other loss-based metrics per step."""
    split, _, name = metric.partition(" ")
    if split == "train" and name in charts.PER_STEP:
        steps, losses = runs.curve(record, "train loss")
        return charts.per_step(name, steps, losses)
    return runs.curve(record, metric)


def curve_names(records: list[dict]) -> list[str]:
    names = runs.curve_names(records)
    if "train loss" in names:  # the loss gives each step's perplexity too
        names += [f"train {n}" for n in charts.PER_STEP if f"train {n}" not in names]
    return names


class RunsView(QWidget):
    """Tick or select runs in the table to overlay their curves; sort by any column; filter; export as CSV."""

    status = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("page")
        self.records: list[dict] = []
        self.metric_choice = QComboBox()
        self.metric_choice.setMinimumContentsLength(18)
        self.metric_choice.currentIndexChanged.connect(lambda _i: self.redraw())
        self.log_scale = QCheckBox("log scale")
        self.log_scale.toggled.connect(lambda on: self.plot.setLogMode(y=on))
        self.smoothing = charts.SmoothingSlider()
        self.smoothing.changed.connect(lambda _v: self.redraw())
        self.filter = QLineEdit(placeholderText="filter runs: any text in a row, e.g. lstm or adam")
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self._filter_changed)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh)
        self.csv_button = QPushButton("Export CSV…")
        self.csv_button.clicked.connect(lambda: self.export_csv())
        top = QHBoxLayout()
        for w in (QLabel("Curve"), self.metric_choice, self.smoothing, self.log_scale):
            top.addWidget(w)
        top.addStretch(1)
        top.addWidget(refresh)
        top.addWidget(self.csv_button)
        self.folder_label = ElidedLabel("", objectName="hint")

        self.plot = charts.new_plot()
        self.hint = charts.EmptyHint(self.plot, "no runs yet: train a model, and its run shows here")
        self.curves: dict[str, pg.PlotDataItem] = {}

        self.model = QStandardItemModel(0, len(COLUMNS))
        self.model.setHorizontalHeaderLabels(COLUMNS)
        self.proxy = RunsProxy()
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.proxy.setFilterKeyColumn(-1)
        self.proxy.setFilterCaseSensitivity(Qt.CaseInsensitive)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(1, Qt.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().hide()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.Interactive)
        header.setStretchLastSection(True)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.ElideRight)
        self.model.itemChanged.connect(self._item_changed)
        self.table.selectionModel().selectionChanged.connect(lambda *_: self.redraw())

        split = QSplitter(Qt.Vertical)
        split.addWidget(self.plot)
        split.addWidget(self.table)
        split.setSizes([460, 280])
        col = QVBoxLayout(self)
        col.addLayout(top)
        col.addWidget(split, 1)
        row = QHBoxLayout()
        row.addWidget(self.filter, 1)
        row.addWidget(self.folder_label, 1)
        col.addLayout(row)
        self.refresh()

    # -- the table --------------------------------------------------------------------------
    def refresh(self) -> None:
        """Read the runs folder again: ticks are kept, and runs that are new since the last look are ticked."""
        ticked = set(self.selected_ids())
        known = {r["id"] for r in self.records}
        self.records = runs.list_runs()
        self.folder_label.setText(f"{len(self.records)} runs in {runs.paths.runs_dir()}")
        latest = {r["id"] for r in self.records[-SELECT_LATEST:] if r.get("status") != "broken"}
        self.model.blockSignals(True)
        self.model.removeRows(0, self.model.rowCount())
        for rec in self.records:
            items = []
            for j, (text, value) in enumerate(_cells(rec)):
                item = QStandardItem(text)
                item.setData(value, SORT_ROLE)
                item.setEditable(False)
                if text:
                    item.setToolTip(text)
                items.append(item)
            first = items[0]
            first.setData(rec["id"], ID_ROLE)
            first.setToolTip(f"{rec['id']}\nstarted {rec.get('started')}\ntick or select to overlay its curve")
            if rec.get("error"):
                items[-1].setToolTip(rec["error"])
                items[-1].setForeground(QColor("#a32020"))
                items[2].setToolTip(rec["error"])
            if rec.get("status") != "broken":
                first.setCheckable(True)
                on = rec["id"] in latest if not known else (rec["id"] in ticked or rec["id"] not in known)
                first.setCheckState(Qt.Checked if on else Qt.Unchecked)
            self.model.appendRow(items)
        self.model.blockSignals(False)
        self.proxy.invalidate()
        self.table.resizeColumnsToContents()
        for j in range(len(COLUMNS) - 1):  # long values (a corpus path) are elided, full text in the tooltip
            self.table.setColumnWidth(j, min(self.table.columnWidth(j), 180))
        current = self.metric_choice.currentText()
        names = curve_names([r for r in self.records if r.get("status") != "broken"])
        self.metric_choice.blockSignals(True)
        self.metric_choice.clear()
        self.metric_choice.addItems(names)
        default = current if current in names else ("val perplexity" if "val perplexity" in names else "")
        if default:
            self.metric_choice.setCurrentText(default)
        self.metric_choice.blockSignals(False)
        self.redraw()
        self.table.resizeColumnToContents(0)  # room for the tick box and the colour swatch

    def row_count(self) -> int:
        """Rows shown (after the filter)."""
        return self.proxy.rowCount()

    def shown_ids(self) -> list[str]:
        """Run ids in the table's order (sorted and filtered)."""
        return [self.proxy.index(i, 0).data(ID_ROLE) for i in range(self.proxy.rowCount())]

    def cell_text(self, run_id: str, column: str) -> str:
        j = COLUMNS.index(column)
        for i in range(self.model.rowCount()):
            if self.model.item(i, 0).data(ID_ROLE) == run_id:
                return self.model.item(i, j).text()
        raise KeyError(run_id)

    def _items(self):
        return [self.model.item(i, 0) for i in range(self.model.rowCount())]

    def selected_ids(self) -> list[str]:
        """The ticked runs, oldest first."""
        return [item.data(ID_ROLE) for item in self._items() if item.isCheckable() and item.checkState() == Qt.Checked]

    def highlighted_ids(self) -> list[str]:
        """The runs selected in the table (drawn thicker; overlaid even when not ticked)."""
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        return [self.proxy.index(r.row(), 0).data(ID_ROLE) for r in rows]

    def set_selected(self, ids) -> None:
        ids = set(ids)
        self.model.blockSignals(True)
        for item in self._items():
            if item.isCheckable():
                item.setCheckState(Qt.Checked if item.data(ID_ROLE) in ids else Qt.Unchecked)
        self.model.blockSignals(False)
        self.redraw()

    def set_checked(self, run_id: str, on: bool) -> None:
        for item in self._items():
            if item.data(ID_ROLE) == run_id:
                item.setCheckState(Qt.Checked if on else Qt.Unchecked)

    def set_metric(self, name: str) -> None:
        self.metric_choice.setCurrentText(name)
        self.redraw()

    def _filter_changed(self, text: str) -> None:
        self.proxy.setFilterFixedString(text)

    def _item_changed(self, item) -> None:
        if item.column() == 0:
            self.redraw()

    # -- the chart ---------------------------------------------------------------------------
    def redraw(self) -> None:
        metric = self.metric_choice.currentText()
        self.plot.clear()
        self.curves = {}
        by_id = {r["id"]: r for r in self.records}
        highlighted = set(self.highlighted_ids())
        shown = list(dict.fromkeys(self.selected_ids() + [i for i in self.highlighted_ids() if i in by_id]))
        colours = {}
        for n, run_id in enumerate(shown):
            colours[run_id] = PALETTE[n % len(PALETTE)]
        for item in self._items():  # the table is the legend: a swatch beside each overlaid run
            self.model.blockSignals(True)
            run_id = item.data(ID_ROLE)
            item.setData(QColor(colours[run_id]) if run_id in colours else None, Qt.DecorationRole)
            self.model.blockSignals(False)
        self.table.viewport().update()
        if not metric or not shown:
            self.hint.set_text("no runs yet: train a model, and its run shows here" if not self.records
                               else "tick or select runs in the table to overlay their curves")
            self.hint.set_empty(True)
            return
        self.hint.set_empty(False)
        self.plot.setTitle(metric)
        self.plot.setLabel("left", metric)
        is_val = metric.startswith("val")
        for run_id in shown:
            rec = by_id.get(run_id)
            if rec is None or rec.get("status") == "broken":
                continue
            colour = colours[run_id]
            width = 4 if run_id in highlighted else 2
            steps, values = train_curve(rec, metric)
            if is_val:
                self.curves[run_id] = self.plot.plot(steps, values, pen=pg.mkPen(colour, width=width), symbol="o",
                                                     symbolSize=5, symbolBrush=colour, symbolPen=colour)
            else:
                curve = charts.TrainCurve(self.plot, colour, width)
                curve.set_data(steps, values, self.smoothing.value())
                self.curves[run_id] = curve
            diverged = DIVERGED_AT.search(rec.get("error") or "")
            if diverged:
                line = pg.InfiniteLine(int(diverged.group(1)), angle=90,
                                       pen=pg.mkPen(colour, width=2, style=Qt.DashLine),
                                       label="diverged", labelOpts={"color": charts.DIVERGED_COLOUR, "position": 0.9})
                line.setToolTip(rec.get("error"))
                self.plot.addItem(line)

    def point_count(self, run_id: str) -> int:
        curve = self.curves.get(run_id)
        if curve is None:
            return 0
        x, _ = curve.getData()
        return 0 if x is None else len(x)

    def export_csv(self, path: str | None = None) -> str | None:
        """Write the ticked runs (all runs when none is ticked) as CSV."""
        if not path:
            path, _ = QFileDialog.getSaveFileName(self, "Export runs as CSV", "runs.csv", "CSV (*.csv)")
            if not path:
                return None
        ticked = set(self.selected_ids())
        chosen = [r for r in self.records if r["id"] in ticked] or self.records
        try:
            runs.export_csv(chosen, path)
        except RNNStudioError as exc:
            show_error(self, exc)
            return None
        self.status.emit(f"wrote {len(chosen)} runs to {path}")
        return str(path)


def page(window):
    """The main window's tab (see ``pages.py``): refreshed whenever models change or a training run ends."""
    from .pages import attach_view

    return attach_view(window, RunsView(), "refresh")


def screenshot(window) -> None:
    """For ``screenshots.py``: train the demo's settings with the rnn and lstm cells too, then overlay all three."""
    from ..checkpoint import model_path
    from ..trainer import TrainConfig, Trainer
    from .screenshots import DEMO_MODEL, settle, show_tab

    for cell in ("rnn", "lstm"):
        name = f"{DEMO_MODEL}-{cell}"
        if model_path(name).exists():
            continue  # a rerun over the same folder
        config = TrainConfig(corpus="python-docs", cell=cell, hidden_size=64, max_steps=100, eval_every=10,
                             batch_size=32, seq_len=35, device="cpu", name=name)
        for _ in Trainer(config, host=window.host).run():
            pass
    window.models_changed.emit()
    view = show_tab(window, RunsView)
    view.set_metric("val perplexity")
    if len(view.selected_ids()) < 3 or not all(view.point_count(i) >= 2 for i in view.selected_ids()):
        raise RuntimeError("the runs view does not show three runs with curves")
    settle()
