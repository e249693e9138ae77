"""Training charts (pyqtgraph): per-step train curves with optional smoothing, validation points, used live and in Runs."""

from __future__ import annotations

import math
import time

import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget

from ..config import MAX_LOSS  # above it exp() overflows: a diverged step has no perplexity to plot

pg.setConfigOptions(antialias=True, background="w", foreground="#333a48")

TRAIN_COLOUR = "#2b5fd9"
VAL_COLOUR = "#e08a00"
DIVERGED_COLOUR = "#c62828"
TRAIN_PEN = pg.mkPen(TRAIN_COLOUR, width=2)
VAL_PEN = pg.mkPen(VAL_COLOUR, width=2)
# Rendering one pyqtgraph plot costs ~20-25 ms of the GUI thread, so new points are drawn on a timer, one
# plot per tick (two at once would block the event loop for ~50 ms); the data itself is kept as it arrives.
# The GUI thread's Python also holds the GIL that the training thread needs between its torch ops, so
# the secondary metric plot is redrawn less often. Measured with benchmarks/bench.py --only gui.
REDRAW_MS = 250
# The train lines get a point per step: antialiased, a 10,000-point line took 128 ms to draw, without
# antialiasing 12 ms; the few validation points keep it.
TRAIN_ANTIALIAS = False
REDRAW_EVERY_S = {"main": 0.5, "metric": 1.0}  # the least time between two redraws of each plot
DEFAULT_SMOOTHING = 0.6  # TensorBoard's default weight

# The train metrics that one step's mean loss (nats per token) gives exactly; others exist for validation only.
PER_STEP = {
    "perplexity": lambda loss: math.exp(loss) if loss <= MAX_LOSS else None,
    "cross-entropy": lambda loss: loss,
    "bits-per-token": lambda loss: loss / math.log(2),
}


def per_step(metric: str, steps, losses) -> tuple[list[int], list[float]]:
    """(steps, values) of a train metric from per-step losses; ([], []) for a metric one loss cannot give."""
    fn = PER_STEP.get(metric)
    if fn is None:
        return [], []
    out_steps, out_values = [], []
    for step, loss in zip(steps, losses):
        if loss is None or not math.isfinite(loss):
            continue
        value = fn(loss)
        if value is not None and math.isfinite(value):
            out_steps.append(step)
            out_values.append(value)
    return out_steps, out_values


def ema(values, weight: float) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average, debiased so the first points are not pulled to 0."""
    if weight <= 0:
        return list(values)
    out, last, norm = [], 0.0, 0.0
    for v in values:
        last = last * weight + (1 - weight) * v
        norm = norm * weight + (1 - weight)
        out.append(last / norm)
    return out


def light_grid(plot) -> None:
    """Grid lines at the major and minor ticks only: pyqtgraph's third level of faint lines made a redraw
    of a 900x600 chart take ~37 ms instead of ~9 ms."""
    for name in ("left", "bottom"):
        plot.getAxis(name).setStyle(maxTickLevel=1)


class LogAxis(pg.AxisItem):
    """A y axis whose log mode labels 1, 2, 5 x 10^k (and 3, 4, ... on narrow ranges), not only the decades."""

    def tickValues(self, minVal, maxVal, size):  # noqa: N802,N803 (pyqtgraph's names)
        if not self.logMode or not (math.isfinite(minVal) and math.isfinite(maxVal)) or maxVal - minVal > 6:
            return super().tickValues(minVal, maxVal, size)
        for mantissas in ((1,), (1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
            ticks = [math.log10(m * 10.0 ** k) for k in range(math.floor(minVal) - 1, math.ceil(maxVal) + 1)
                     for m in mantissas]
            ticks = [t for t in ticks if minVal <= t <= maxVal]
            if len(ticks) >= 3:
                break
        if len(ticks) < 2:  # a range inside one step of the finest ladder
            return super().tickValues(minVal, maxVal, size)
        return [(1.0, ticks)]

    def tickStrings(self, values, scale, spacing):  # noqa: N802
        if not self.logMode:
            return super().tickStrings(values, scale, spacing)
        return [f"{10 ** v:.3g}" for v in values]


def new_plot(title: str = "") -> pg.PlotWidget:
    """A plot in the app's look: step on x, light grid, a log-aware y axis, downsampled long lines, no legend
    (the legend goes beside the plot, where it cannot cover the data)."""
    plot = pg.PlotWidget(axisItems={"left": LogAxis("left")})
    if title:
        plot.setTitle(title)
    plot.setLabel("bottom", "step")
    plot.showGrid(x=True, y=True, alpha=0.2)
    plot.setDownsampling(auto=True, mode="peak")
    plot.setClipToView(True)
    light_grid(plot)
    return plot


class EmptyHint:
    """Hides a plot's axes and shows a line of text while it has no points (instead of 0.1-0.9 placeholder axes)."""

    def __init__(self, plot: pg.PlotWidget, text: str):
        self.plot = plot
        self.item = pg.TextItem(text, color="#5b6477", anchor=(0.5, 0.5))
        self.item.setPos(0.5, 0.5)
        self.empty = None
        self.set_empty(True)

    def set_text(self, text: str) -> None:
        self.item.setText(text)

    def set_empty(self, empty: bool) -> None:
        shown = self.item in self.plot.getPlotItem().items  # plot.clear() removes it too
        if empty == self.empty and shown == empty:
            return
        self.empty = empty
        item = self.plot.getPlotItem()
        for axis in ("left", "bottom"):
            (item.hideAxis if empty else item.showAxis)(axis)
        if empty:
            if not shown:
                self.plot.addItem(self.item, ignoreBounds=True)
            item.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
            item.vb.setMouseEnabled(False, False)
        else:
            if shown:
                self.plot.removeItem(self.item)
            item.vb.setMouseEnabled(True, True)
            item.enableAutoRange()


def legend_html(entries) -> str:
    """A one-line legend for a label beside the plot: ``[(colour, text), ...]``."""
    return "&nbsp;&nbsp;".join(f"<span style='color:{c}'>&#9644;</span> {t}" for c, t in entries)


class SmoothingSlider(QWidget):
    """TensorBoard's smoothing slider: 0 (raw per-step values) to 0.99."""

    changed = Signal(float)

    def __init__(self, value: float = DEFAULT_SMOOTHING, parent=None):
        super().__init__(parent)
        self.slider = QSlider(Qt.Horizontal, minimum=0, maximum=99, value=round(value * 100))
        self.slider.setFixedWidth(90)
        self.slider.setToolTip("smooth the per-step train curve with an exponential moving average (as TensorBoard "
                               "does); 0: the raw values. The faint line behind it is the raw curve")
        self.label = QLabel()
        self.label.setMinimumWidth(30)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("smoothing"))
        row.addWidget(self.slider)
        row.addWidget(self.label)
        self.slider.valueChanged.connect(self._moved)
        self._moved(self.slider.value())

    def value(self) -> float:
        return self.slider.value() / 100

    def set_value(self, value: float) -> None:
        self.slider.setValue(round(value * 100))

    def _moved(self, raw: int) -> None:
        self.label.setText(f"{raw / 100:.2f}")
        self.changed.emit(raw / 100)


class TrainCurve:
    """One run's train line on a plot: the raw per-step values faint, their smoothed line on top."""

    def __init__(self, plot: pg.PlotWidget, colour: str, width: float = 2):
        raw_colour = pg.mkColor(colour)
        raw_colour.setAlpha(70)
        self.raw = plot.plot([], [], pen=pg.mkPen(raw_colour, width=1), antialias=TRAIN_ANTIALIAS)
        self.smooth = plot.plot([], [], pen=pg.mkPen(colour, width=width), antialias=TRAIN_ANTIALIAS)

    def set_data(self, steps, values, smoothing: float) -> None:
        if smoothing > 0:
            self.raw.setData(steps, values)
            self.smooth.setData(steps, ema(values, smoothing))
        else:
            self.raw.setData([], [])
            self.smooth.setData(steps, values)

    def getData(self):  # noqa: N802 (pyqtgraph's name)
        """The drawn (smoothed) line's (x, y)."""
        return self.smooth.getData()


class TrainingCharts(QWidget):
    """Two plots: perplexity (per-step train line, validation points) and a chosen other metric."""

    MAIN = "perplexity"

    def __init__(self, metric_names: list[str] = (), parent=None):
        super().__init__(parent)
        self.metric_names = [n for n in metric_names if n != self.MAIN]  # listed before any value arrives
        self.steps: list[int] = []  # the train steps and their losses, one per optimizer step
        self.losses: list[float] = []
        self.val: dict[str, tuple[list[int], list[float]]] = {}
        self.diverged: tuple[int, str] | None = None
        self._drawn_at = {"main": -math.inf, "metric": -math.inf}  # monotonic time of each plot's last redraw
        self._stale: set[str] = set()  # plots with points not drawn yet: "main", "metric"

        self.ppl_plot = new_plot("Perplexity")
        self.train_curve = TrainCurve(self.ppl_plot, TRAIN_COLOUR)
        self.val_curve = self.ppl_plot.plot([], [], pen=VAL_PEN, symbol="o", symbolSize=7, symbolBrush=VAL_COLOUR,
                                            symbolPen=VAL_COLOUR)
        self.metric_plot = new_plot()
        self.metric_train_curve = TrainCurve(self.metric_plot, TRAIN_COLOUR)
        self.metric_val_curve = self.metric_plot.plot([], [], pen=VAL_PEN, symbol="o", symbolSize=6,
                                                      symbolBrush=VAL_COLOUR, symbolPen=VAL_COLOUR)
        self.ppl_hint = EmptyHint(self.ppl_plot, "no points yet: press Start to train")
        self.metric_hint = EmptyHint(self.metric_plot, "no points yet")
        self.divergence_lines: list[pg.InfiniteLine] = []

        self.log_scale = QCheckBox("log scale")
        self.log_scale.toggled.connect(lambda on: self.ppl_plot.setLogMode(y=on))
        self.smoothing = SmoothingSlider()
        self.smoothing.changed.connect(lambda _v: self.refresh())
        self.metric_choice = QComboBox()
        self.metric_choice.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.metric_choice.setMinimumContentsLength(12)
        self.metric_choice.currentTextChanged.connect(self._refresh_metric)
        self.metric_choice.addItems(self.metric_names)
        self.legend = QLabel(legend_html([(TRAIN_COLOUR, "train (each step)"), (VAL_COLOUR, "validation")]))
        self.legend.setToolTip("train: the loss of each step's minibatch, as perplexity exp(loss); validation: "
                               "the whole held-out text")
        top, second = QHBoxLayout(), QHBoxLayout()  # two short rows: the window can be narrow
        top.addWidget(self.legend)
        top.addStretch(1)
        top.addWidget(self.log_scale)
        second.addWidget(self.smoothing)
        second.addStretch(1)
        second.addWidget(QLabel("other metric:"))
        second.addWidget(self.metric_choice)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addLayout(second)
        layout.addWidget(self.ppl_plot, 3)
        layout.addWidget(self.metric_plot, 2)

        self._redraw = QTimer(self)
        self._redraw.setSingleShot(True)
        self._redraw.setInterval(REDRAW_MS)
        self._redraw.timeout.connect(self._redraw_one)

    def clear(self) -> None:
        self.steps, self.losses = [], []
        self.val.clear()
        self.diverged = None
        self.ppl_hint.set_text("no points yet: waiting for the first step")
        self.refresh()

    def add_train_points(self, points: list[tuple[int, float]]) -> None:
        """``(step, loss)`` pairs: each optimizer step's mean loss on its minibatch."""
        for step, loss in points:
            self.steps.append(step)
            self.losses.append(loss)
        self.schedule_refresh()

    def add_validation(self, step: int, values: dict) -> None:
        for name, value in values.items():
            if value is not None and math.isfinite(value):
                steps, vals = self.val.setdefault(name, ([], []))
                steps.append(step)
                vals.append(float(value))
                if name != self.MAIN and self.metric_choice.findText(name) < 0:
                    self.metric_choice.addItem(name)
        self.schedule_refresh()

    def set_diverged(self, step: int, reason: str) -> None:
        """Mark where a run blew up: a red line at that step, labelled with why."""
        self.diverged = (step, reason)
        self.refresh()

    def point_count(self, split: str = "val", name: str = MAIN) -> int:
        if split == "train":
            return len(per_step(name, self.steps, self.losses)[0])
        return len(self.val.get(name, ((), ()))[0])

    def schedule_refresh(self) -> None:
        """Draw the new points soon; many calls in between cost one redraw per plot."""
        self._stale |= {"main", "metric"}
        if not self._redraw.isActive():
            self._redraw.start()

    def _redraw_one(self) -> None:
        """Timer tick: redraw one stale plot that is due (the one drawn longest ago), and come back for the rest.
        Points arrive every 100 ms while training, so "main first" would starve the metric plot."""
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

    def _draw(self, plot, hint, train_curve, val_curve, name: str) -> None:
        steps, values = per_step(name, self.steps, self.losses)
        val_steps, val_values = self.val.get(name, ([], []))
        hint.set_empty(not steps and not val_steps and self.diverged is None)
        train_curve.set_data(steps, values, self.smoothing.value())
        val_curve.setData(val_steps, val_values)
        for line in list(self.divergence_lines):
            if line.getViewBox() is plot.getPlotItem().vb:
                plot.removeItem(line)
                self.divergence_lines.remove(line)
        if self.diverged is not None:
            step, reason = self.diverged
            line = pg.InfiniteLine(step, angle=90, pen=pg.mkPen(DIVERGED_COLOUR, width=2, style=Qt.DashLine),
                                   label=f"diverged at step {step}", labelOpts={"color": DIVERGED_COLOUR,
                                                                                "position": 0.9})
            line.setToolTip(reason)
            plot.addItem(line)
            self.divergence_lines.append(line)

    def _refresh_main(self) -> None:
        self._stale.discard("main")
        self._drawn_at["main"] = time.monotonic()
        self._draw(self.ppl_plot, self.ppl_hint, self.train_curve, self.val_curve, self.MAIN)

    def _refresh_metric(self, name: str) -> None:
        self._stale.discard("metric")
        self._drawn_at["metric"] = time.monotonic()
        name = name or ""
        only_val = name and name not in PER_STEP
        self.metric_plot.setTitle(f"{name} (validation only)" if only_val else (name or "other metrics"))
        self.metric_hint.set_text("no points yet" if name else "no other metric")
        self._draw(self.metric_plot, self.metric_hint, self.metric_train_curve, self.metric_val_curve, name)
