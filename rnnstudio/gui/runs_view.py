"""The Runs view: overlay the metric curves of selected training runs in one chart, with their final metrics."""

from __future__ import annotations

import math

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QFileDialog, QHBoxLayout, QHeaderView,
                               QLabel, QPushButton, QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from .. import runs
from ..errors import RNNStudioError
from . import charts  # the app's pyqtgraph look: white background, dark axes, light grid
from .dialogs import show_error

COLUMNS = ("run", "cell", "corpus", "size", "steps", "val ppl", "best val ppl", "train ppl", "tokens/s", "device",
           "time", "status")
PALETTE = ("#2b5fd9", "#e08a00", "#1a9850", "#d73027", "#7b3294", "#00a6ca", "#8c510a", "#de77ae", "#4d4d4d",
           "#66bd63")
SELECT_LATEST = 4  # runs ticked when the view opens


def _num(x, spec=".3f") -> str:
    return "-" if not isinstance(x, (int, float)) or not math.isfinite(x) else format(x, spec)


class RunsView(QWidget):
    """Tick runs in the table to overlay their curves; pick the metric; export the table as CSV."""

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
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh)
        self.csv_button = QPushButton("Export CSV…")
        self.csv_button.clicked.connect(lambda: self.export_csv())
        top = QHBoxLayout()
        for w in (QLabel("Curve"), self.metric_choice, self.log_scale, refresh, self.csv_button):
            top.addWidget(w)
        top.addStretch(1)
        self.folder_label = QLabel("", objectName="hint")

        self.plot = pg.PlotWidget()
        self.plot.setLabel("bottom", "step")
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        charts.light_grid(self.plot)
        self.legend = self.plot.addLegend(offset=(-10, 10))
        self.curves: dict[str, pg.PlotDataItem] = {}

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemChanged.connect(self._item_changed)

        split = QSplitter(Qt.Vertical)
        split.addWidget(self.plot)
        split.addWidget(self.table)
        split.setSizes([480, 260])
        col = QVBoxLayout(self)
        col.addLayout(top)
        col.addWidget(split, 1)
        col.addWidget(self.folder_label)
        self.refresh()

    def refresh(self) -> None:
        """Read the runs folder again: ticks are kept, and runs that are new since the last look are ticked."""
        ticked = set(self.selected_ids())
        known = {r["id"] for r in self.records}
        self.records = runs.list_runs()
        self.folder_label.setText(f"{len(self.records)} runs in {runs.paths.runs_dir()}")
        self.table.blockSignals(True)
        self.table.setRowCount(len(self.records))
        latest = {r["id"] for r in self.records[-SELECT_LATEST:] if r.get("status") != "broken"}
        for i, rec in enumerate(self.records):
            row = runs.run_row(rec)
            if rec.get("status") == "broken":
                cells = [row["id"], f"BROKEN: {rec.get('error')}"] + [""] * (len(COLUMNS) - 2)
            else:
                cells = [row["model"], str(row["cell"]), str(row["corpus"]),
                         f"{row['num_layers']} x {row['hidden_size']}", str(row["steps"] or "-"),
                         _num(row["val_perplexity"]), _num(row["best_val_perplexity"]), _num(row["train_perplexity"]),
                         _num(row["tokens_per_s"], ",.0f"), str(row["device"]), _num(row["seconds"], ".1f") + " s",
                         str(row["status"])]
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if j == 0:
                    item.setData(Qt.UserRole, rec["id"])
                    item.setToolTip(f"{rec['id']}\nstarted {rec.get('started')}")
                    if rec.get("status") != "broken":
                        item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
                        on = rec["id"] in latest if not known else (rec["id"] in ticked or rec["id"] not in known)
                        item.setCheckState(Qt.Checked if on else Qt.Unchecked)
                self.table.setItem(i, j, item)
        self.table.blockSignals(False)
        current = self.metric_choice.currentText()
        names = runs.curve_names([r for r in self.records if r.get("status") != "broken"])
        self.metric_choice.blockSignals(True)
        self.metric_choice.clear()
        self.metric_choice.addItems(names)
        default = current if current in names else ("val perplexity" if "val perplexity" in names else "")
        if default:
            self.metric_choice.setCurrentText(default)
        self.metric_choice.blockSignals(False)
        self.redraw()

    def selected_ids(self) -> list[str]:
        out = []
        for i in range(self.table.rowCount()):
            item = self.table.item(i, 0)
            if item is not None and item.checkState() == Qt.Checked:
                out.append(item.data(Qt.UserRole))
        return out

    def set_selected(self, ids) -> None:
        ids = set(ids)
        self.table.blockSignals(True)
        for i in range(self.table.rowCount()):
            item = self.table.item(i, 0)
            if item is not None and item.flags() & Qt.ItemIsUserCheckable:
                item.setCheckState(Qt.Checked if item.data(Qt.UserRole) in ids else Qt.Unchecked)
        self.table.blockSignals(False)
        self.redraw()

    def set_metric(self, name: str) -> None:
        self.metric_choice.setCurrentText(name)
        self.redraw()

    def _item_changed(self, item) -> None:
        if item.column() == 0:
            self.redraw()

    def redraw(self) -> None:
        metric = self.metric_choice.currentText()
        self.plot.clear()
        self.legend.clear()
        self.curves = {}
        if not metric:
            return
        self.plot.setTitle(metric)
        self.plot.setLabel("left", metric)
        by_id = {r["id"]: r for r in self.records}
        for n, run_id in enumerate(self.selected_ids()):
            rec = by_id.get(run_id)
            if rec is None:
                continue
            steps, values = runs.curve(rec, metric)
            colour = PALETTE[n % len(PALETTE)]
            is_val = metric.startswith("val")
            label = f"{rec.get('model')} ({(rec.get('config') or {}).get('cell')})"
            self.curves[run_id] = self.plot.plot(steps, values, pen=pg.mkPen(colour, width=2), name=label,
                                                 symbol="o" if is_val else None, symbolSize=5, symbolBrush=colour,
                                                 symbolPen=colour)

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
    from ..trainer import TrainConfig, Trainer
    from .inspector_view import page_of
    from .screenshots import DEMO_MODEL, settle

    from ..checkpoint import model_path

    for cell in ("rnn", "lstm"):
        name = f"{DEMO_MODEL}-{cell}"
        if model_path(name).exists():
            continue  # a rerun over the same folder
        config = TrainConfig(corpus="python-docs", cell=cell, hidden_size=64, max_steps=100, eval_every=10,
                             batch_size=32, seq_len=35, device="cpu", name=name)
        for _ in Trainer(config, host=window.host).run():
            pass
    window.models_changed.emit()
    view = page_of(window, RunsView)
    window.show_page(view)
    view.set_metric("val perplexity")
    if len(view.selected_ids()) < 3 or not all(view.point_count(i) >= 2 for i in view.selected_ids()):
        raise RuntimeError("the runs view does not show three runs with curves")
    settle()
