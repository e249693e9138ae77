"""Live training charts (pyqtgraph): perplexity against step, and any other metric the metric plugins report."""

from __future__ import annotations

import math
import time

import pyqtgraph as pg
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

pg.setConfigOptions(antialias=True, background="w", foreground="#333a48")

TRAIN_PEN = pg.mkPen("#2b5fd9", width=2)
# The trainer's train metrics average the steps since the last validation (d2l averages per epoch),
# so the train line steps down where an old, worse window is dropped.
TRAIN_LABEL = "train (mean since last validation)"
VAL_PEN = pg.mkPen("#e08a00", width=2)
# Rendering one pyqtgraph plot costs ~20-25 ms of the GUI thread here, so new points are drawn on a
# timer, one plot per tick (two at once would block the event loop for ~50 ms); the data itself is
# kept as it arrives. The GUI thread's Python also holds the GIL that the training thread needs between
# its torch ops, so the secondary metric plot is redrawn less often. Measured with
# benchmarks/bench.py --only gui.
REDRAW_MS = 250
# The train lines get a point per step: antialiased, a 10,000-point line took 128 ms to draw here (event
# loop blocked, worker starved of the GIL), without antialiasing 12 ms; the few validation points keep it.
TRAIN_ANTIALIAS = False
REDRAW_EVERY_S = {"main": 0.5, "metric": 1.0}  # the least time between two redraws of each plot


def light_grid(plot) -> None:
    """Grid lines at the major and minor ticks only: pyqtgraph's third level of faint lines made a redraw
    of a 900x600 chart take ~37 ms here instead of ~9 ms (/tmp profile of TrainingCharts, offscreen)."""
    for name in ("left", "bottom"):
        plot.getAxis(name).setStyle(maxTickLevel=1)


class MetricSeries:
    """Steps and values of one metric on one split."""

    def __init__(self):
        self.steps: list[int] = []
        self.values: list[float] = []

    def add(self, step: int, value) -> None:
        if value is not None and math.isfinite(value):
            self.steps.append(step)
            self.values.append(float(value))


class TrainingCharts(QWidget):
    """Two plots: perplexity (train line, validation points) and a chosen other metric."""

    MAIN = "perplexity"

    def __init__(self, metric_names: list[str] = (), parent=None):
        super().__init__(parent)
        self.metric_names = list(metric_names)  # listed before any value arrives
        self.train: dict[str, MetricSeries] = {}
        self.val: dict[str, MetricSeries] = {}
        self._drawn_at = {"main": -math.inf, "metric": -math.inf}  # monotonic time of each plot's last redraw
        self._stale: set[str] = set()  # plots with points not drawn yet: "main", "metric"

        self.ppl_plot = pg.PlotWidget()
        self.ppl_plot.setTitle("Perplexity")
        self.ppl_plot.setLabel("bottom", "step")
        self.ppl_plot.showGrid(x=True, y=True, alpha=0.2)
        self.ppl_plot.addLegend(offset=(-10, 10))
        self.train_curve = self.ppl_plot.plot([], [], pen=TRAIN_PEN, name=TRAIN_LABEL, antialias=TRAIN_ANTIALIAS)
        self.val_curve = self.ppl_plot.plot([], [], pen=VAL_PEN, symbol="o", symbolSize=7, symbolBrush="#e08a00",
                                            symbolPen="#e08a00", name="validation")

        self.metric_plot = pg.PlotWidget()
        self.metric_plot.setLabel("bottom", "step")
        self.metric_plot.showGrid(x=True, y=True, alpha=0.2)
        self.metric_plot.addLegend(offset=(-10, 10))
        self.metric_train_curve = self.metric_plot.plot([], [], pen=TRAIN_PEN, name=TRAIN_LABEL,
                                                        antialias=TRAIN_ANTIALIAS)
        self.metric_val_curve = self.metric_plot.plot([], [], pen=VAL_PEN, symbol="o", symbolSize=6,
                                                      symbolBrush="#e08a00", symbolPen="#e08a00", name="validation")

        for plot in (self.ppl_plot, self.metric_plot):  # long runs: draw what is visible, downsampled
            plot.setDownsampling(auto=True, mode="peak")
            plot.setClipToView(True)
            light_grid(plot)

        self.log_scale = QCheckBox("log scale")
        self.log_scale.toggled.connect(lambda on: self.ppl_plot.setLogMode(y=on))
        self.metric_choice = QComboBox()
        self.metric_choice.setMinimumContentsLength(14)
        self.metric_choice.currentTextChanged.connect(self._refresh_metric)

        self.metric_choice.addItems(self.metric_names)
        controls = QHBoxLayout()
        controls.addWidget(self.log_scale)
        controls.addStretch(1)
        controls.addWidget(QLabel("other metric:"))
        controls.addWidget(self.metric_choice)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(controls)
        layout.addWidget(self.ppl_plot, 3)
        layout.addWidget(self.metric_plot, 2)

        self._redraw = QTimer(self)
        self._redraw.setSingleShot(True)
        self._redraw.setInterval(REDRAW_MS)
        self._redraw.timeout.connect(self._redraw_one)

    def clear(self) -> None:
        self.train.clear()
        self.val.clear()
        chosen = self.metric_choice.currentText()
        self.metric_choice.blockSignals(True)
        self.metric_choice.clear()
        self.metric_choice.addItems(self.metric_names)
        self.metric_choice.setCurrentText(chosen)
        self.metric_choice.blockSignals(False)
        self.refresh()

    def _series(self, split: dict, name: str) -> MetricSeries:
        if name not in split:
            split[name] = MetricSeries()
            if name != self.MAIN and self.metric_choice.findText(name) < 0:
                self.metric_choice.addItem(name)
        return split[name]

    def add_train_points(self, points: list[tuple[int, dict]]) -> None:
        for step, values in points:
            for name, value in values.items():
                self._series(self.train, name).add(step, value)
        self.schedule_refresh()

    def add_validation(self, step: int, values: dict) -> None:
        for name, value in values.items():
            self._series(self.val, name).add(step, value)
        self.schedule_refresh()

    def point_count(self, split: str = "val", name: str = MAIN) -> int:
        series = (self.val if split == "val" else self.train).get(name)
        return len(series.steps) if series else 0

    def schedule_refresh(self) -> None:
        """Draw the new points soon; many calls in between cost one redraw per plot."""
        self._stale |= {"main", "metric"}
        if not self._redraw.isActive():
            self._redraw.start()

    def _redraw_one(self) -> None:
        """Timer tick: redraw one stale plot that is due (the one drawn longest ago), and come back for the rest.
        Points arrive every 50 ms while training, so "main first" would starve the metric plot."""
        now = time.monotonic()
        due = [name for name in ("main", "metric")
               if name in self._stale and now - self._drawn_at[name] >= REDRAW_EVERY_S[name]]
        if due:
            name = min(due, key=self._drawn_at.__getitem__)
            if name == "main":
                self._refresh_main()
            else:
                self._refresh_metric(self.metric_choice.currentText())
        if self._stale:
            self._redraw.start()

    def refresh(self) -> None:
        """Draw every plot now."""
        self._redraw.stop()
        self._refresh_main()
        self._refresh_metric(self.metric_choice.currentText())

    def _refresh_main(self) -> None:
        self._stale.discard("main")
        self._drawn_at["main"] = time.monotonic()
        empty = MetricSeries()
        t, v = self.train.get(self.MAIN, empty), self.val.get(self.MAIN, empty)
        self.train_curve.setData(t.steps, t.values)
        self.val_curve.setData(v.steps, v.values)

    def _refresh_metric(self, name: str) -> None:
        self._stale.discard("metric")
        self._drawn_at["metric"] = time.monotonic()
        empty = MetricSeries()
        t, v = self.train.get(name, empty), self.val.get(name, empty)
        self.metric_plot.setTitle(name or "other metrics")
        self.metric_train_curve.setData(t.steps, t.values)
        self.metric_val_curve.setData(v.steps, v.values)
