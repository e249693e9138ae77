"""The training panel: corpus, model and training settings, device, controls, live charts and progress."""

from __future__ import annotations

import shlex

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QPlainTextEdit,
                               QProgressBar, QPushButton, QScrollArea, QSplitter, QTabWidget, QVBoxLayout, QWidget)

from ..config import TrainConfig, saved_settings, settings_error
from ..errors import RNNStudioError
from ..messages import event_line, visible_sample
from ..settings import info, render_error, schema
from . import fields as F
from . import settings_form as SF
from .dialogs import show_error
from .param_form import ParamForm
from .widgets import ElidedLabel, WheelGuard, guard_wheel
from .workers import Background, Job, TrainingWorker

# The app's own defaults where they differ from TrainConfig's (which suit the CLI).
GUI_DEFAULTS = {"eval_every": 100, "sample_every": 50}


def label_for(key: str) -> str:
    """The GUI's words for a setting: the schema's label, the same words its error messages use."""
    try:
        return info(TrainConfig, key).label
    except KeyError:
        return key.replace("_", " ")


# The form keys a resume takes from the saved model (besides the corpus and cell pickers and their options).
RESUME_LOCKED = tuple(k for k in saved_settings() if k not in ("corpus", "cell", "corpus_options", "cell_options",
                                                               "val_fraction"))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


class TrainingPanel(QWidget):
    """Settings on the left; Start/Pause/Stop, progress, charts, corpus preview and log on the right."""

    training_started = Signal(str)  # model name
    training_ended = Signal(str)  # model name, after it finished, stopped or failed
    model_saved = Signal(str)  # a checkpoint of this model was written
    status = Signal(str)  # a line for the window's status bar

    def __init__(self, host, parent=None):
        super().__init__(parent)
        self.setObjectName("page")
        self.host = host
        self.job: Job | None = None
        self.model_name: str | None = None
        self._error: BaseException | None = None
        self._options_by_component: dict[str, dict] = {}  # raw form values per corpus/cell name
        self._preview_token = 0
        self._background = Background(self)
        self._background.done.connect(self._preview_done)
        self._background.failed.connect(self._preview_failed)
        self._preview_timer = QTimer(self, singleShot=True, interval=400)
        self._preview_timer.timeout.connect(self.refresh_preview)

        # Every setting's widget comes from the schema (config.py); only the plugin pickers, the device list and
        # the "train for N epochs / steps / minutes" row are built here.
        d = TrainConfig(**GUI_DEFAULTS)
        f = self.fields = {s.name: SF.editor(s, getattr(d, s.name)) for s in schema(TrainConfig)
                           if s.meta.gui and s.widget not in ("options", "length", "device")
                           and s.name not in ("corpus", "cell")}
        f["length_mode"] = F.combo([("epochs", "epochs"), ("steps", "steps"), ("minutes", "minutes")], "epochs",
                                   "stop after epochs, optimizer steps, or minutes (validation included)")
        f["length"] = F.spin(1, 1, 100_000_000, "how many epochs, optimizer steps or minutes")
        f["device"] = self._device_combo()
        f["resume"].setText("continue this saved model (resume)")

        # -- corpus and model: a plugin picker, its generated form, then the core settings ------
        self.tokens_form = ParamForm()  # the chosen tokenizer's own options, under the tokens picker
        corpus_box, self.corpus_combo, self.corpus_description, self.corpus_form = self._component_box(
            "Corpus", "corpus", self._group_keys("data"))
        model_box, self.cell_combo, self.cell_description, self.cell_form = self._component_box(
            "Model", "cell", self._group_keys("model"))

        # -- training, saving, device: the schema's groups in its order ----------------
        train_box = QGroupBox("Training")
        form = QFormLayout(train_box)
        length_row = QHBoxLayout()
        length_row.addWidget(f["length"], 1)
        length_row.addWidget(f["length_mode"])
        for s in SF.gui_settings(TrainConfig, "training"):
            if s.name == "epochs":
                form.addRow("train for", length_row)
            elif s.name in f:
                form.addRow(label_for(s.name), f[s.name])
        saving_box = QGroupBox("Saving and monitoring")
        form = QFormLayout(saving_box)
        for key in self._group_keys("saving"):
            if key == "resume":
                form.addRow(f[key])
                self.resume_note = QLabel("", objectName="hint", wordWrap=True)
                self.resume_note.hide()
                form.addRow(self.resume_note)
            else:
                form.addRow(label_for(key), f[key])

        device_box = QGroupBox("Device")
        form = QFormLayout(device_box)
        for s in SF.gui_settings(TrainConfig, "device"):
            form.addRow(label_for(s.name), f[s.name])
        self._boxes = (corpus_box, model_box, train_box, saving_box, device_box)

        settings = self.settings_widget = QWidget()
        col = QVBoxLayout(settings)
        for box in self._boxes:
            col.addWidget(box)
        col.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(settings)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(settings.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width() + 4)

        # -- controls, progress and results ---------------------------------------------
        self.start_button = QPushButton("Start", objectName="primary")
        self.start_button.setToolTip("train with these settings")
        self.pause_button = QPushButton("Pause", checkable=True, enabled=False)
        self.stop_button = QPushButton("Stop", enabled=False)
        self.stop_button.setToolTip("stop after this step and save a checkpoint")
        self.copy_button = QPushButton("Copy as command")
        self.copy_button.setToolTip("copy the `rnnstudio train` command (and its torchrun form) for these settings")
        self.start_button.clicked.connect(self.start)
        self.pause_button.toggled.connect(self.set_paused)
        self.stop_button.clicked.connect(self.stop)
        self.copy_button.clicked.connect(self.copy_command)
        buttons = QHBoxLayout()
        for b in (self.start_button, self.pause_button, self.stop_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.copy_button)

        self.progress = QProgressBar()
        self.progress.setFormat("ready")
        self.progress.setValue(0)
        self.progress_label = ElidedLabel("Press Start to train on the chosen corpus.")
        self.sample_label = QLabel("", objectName="sample", wordWrap=True)
        self.sample_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.sample_label.hide()

        self._charts = None  # built on first use: pyqtgraph's import is left out of start-up
        self.charts_page = QWidget()
        QVBoxLayout(self.charts_page).setContentsMargins(0, 0, 0, 0)
        self.preview_summary = ElidedLabel("")
        self.preview_text = QPlainTextEdit(readOnly=True, objectName="preview")
        preview_page = QWidget()
        pcol = QVBoxLayout(preview_page)
        pcol.addWidget(self.preview_summary)
        pcol.addWidget(self.preview_text, 1)
        self.log = QPlainTextEdit(readOnly=True, objectName="output")
        self.log.setMaximumBlockCount(10_000)
        self.results = QTabWidget()
        self.results.addTab(self.charts_page, "Charts")
        self.results.addTab(preview_page, "Corpus preview")
        self.results.addTab(self.log, "Log")

        right = QWidget()
        rcol = QVBoxLayout(right)
        rcol.addLayout(buttons)
        rcol.addWidget(self.progress)
        rcol.addWidget(self.progress_label)
        rcol.addWidget(self.sample_label)
        rcol.addWidget(self.results, 1)

        split = QSplitter()
        split.addWidget(scroll)
        split.addWidget(right)
        split.setStretchFactor(1, 1)
        split.setSizes([scroll.minimumWidth(), 1000])
        QVBoxLayout(self).addWidget(split)

        self.corpus_combo.currentIndexChanged.connect(self._corpus_changed)
        self.cell_combo.currentIndexChanged.connect(self._cell_changed)
        self.fields["tokens"].currentIndexChanged.connect(self._tokens_changed)
        self.tokens_form.changed.connect(self.schedule_preview)
        self.corpus_form.changed.connect(self.schedule_preview)
        for key in self._group_keys("data"):
            SF.changed_signal(f[key]).connect(self.schedule_preview)
        f["resume"].toggled.connect(self._resume_toggled)
        f["name"].editingFinished.connect(lambda: f["resume"].isChecked() and self._resume_toggled(True))
        self._wheel_guard = WheelGuard(self)
        self.set_corpus(TrainConfig.corpus)
        self.set_cell(TrainConfig.cell)
        self._cell_changed()
        self._tokens_changed()
        self._corpus_changed()

    @property
    def charts(self):
        """The live charts (pyqtgraph), created on first use; the window builds them just after it shows."""
        if self._charts is None:
            from .charts import TrainingCharts

            self._charts = TrainingCharts([n for n in self.host.names("metric") if n != TrainingCharts.MAIN])
            self.charts_page.layout().addWidget(self._charts)
        return self._charts

    def _group_keys(self, group: str) -> list[str]:
        """The form keys of one schema group, in the schema's order (the pickers and their options are apart)."""
        return [s.name for s in SF.gui_settings(TrainConfig, group) if s.name in self.fields]

    # -- pickers --------------------------------------------------------------------
    def _component_box(self, title: str, kind: str, keys) -> tuple[QGroupBox, QComboBox, QLabel, ParamForm]:
        """A group with a picker of the ``kind`` plugins, the chosen one's description and form, then ``keys``."""
        picker = F.combo([(name, name) for name in self.host.names(kind)])
        description = QLabel(wordWrap=True, objectName="hint")
        form_widget = ParamForm()
        box = QGroupBox(title)
        form = QFormLayout(box)
        form.addRow(kind, picker)
        form.addRow(description)
        form.addRow(form_widget)
        for key in keys:
            form.addRow(label_for(key), self.fields[key])
            if key == "tokens":
                form.addRow(self.tokens_form)
        return box, picker, description, form_widget

    def _device_combo(self) -> QComboBox:
        from ..devices import list_devices

        box = F.combo([("auto (best available)", "auto")], tip="where to train")
        for dev in list_devices():
            label = dev.label if dev.available else f"{dev.label}: unavailable ({dev.reason})"
            box.addItem(label, dev.spec)
            index = box.count() - 1
            box.setItemData(index, dev.reason or dev.spec, Qt.ToolTipRole)
            if not dev.available:
                box.model().item(index).setEnabled(False)
        return box

    def set_corpus(self, name: str) -> None:
        index = self.corpus_combo.findData(name)
        if index >= 0:
            self.corpus_combo.setCurrentIndex(index)

    def set_cell(self, name: str) -> None:
        index = self.cell_combo.findData(name)
        if index >= 0:
            self.cell_combo.setCurrentIndex(index)

    def _switch_form(self, form: ParamForm, kind: str, name: str, label: QLabel | None) -> None:
        if form.owner:  # remember what was typed for the previous component
            self._options_by_component[form.owner] = form.raw_values()
        owner = f"{kind} {name!r}"
        cls = self.host.get(kind, name)
        form.set_params(tuple(cls.params), owner)
        form.set_values(self._options_by_component.get(owner, {}))
        if label is not None:
            label.setText(cls.description)
        self._form_changed()

    def _form_changed(self) -> None:
        """After a plugin form is rebuilt: Tab order top to bottom, labels in one column, no wheel stealing."""
        if not hasattr(self, "start_button"):
            return  # still building
        def chain(group):  # the group's widgets top to bottom, as its box shows them
            keys = dict.fromkeys("length" if s.widget == "length" else s.name for s in SF.gui_settings(TrainConfig, group))
            return [w for key in keys for w in ([self.fields["length"], self.fields["length_mode"]] if key == "length"
                                                else [*SF.focus_chain(self.fields[key]), *self.tokens_form.focus_chain()]
                                                if key == "tokens"
                                                else SF.focus_chain(self.fields[key]) if key in self.fields else [])]

        order = [self.corpus_combo, *self.corpus_form.focus_chain(), *chain("data"),
                 self.cell_combo, *self.cell_form.focus_chain(), *chain("model"),
                 *chain("training"), *chain("saving"), *chain("device"),
                 self.start_button, self.pause_button, self.stop_button, self.copy_button]
        for first, second in zip(order, order[1:]):
            QWidget.setTabOrder(first, second)
        labels = [item.widget() for form in self.settings_widget.findChildren(QFormLayout)
                  for item in (form.itemAt(i, QFormLayout.LabelRole) for i in range(form.rowCount()))
                  if item is not None and isinstance(item.widget(), QLabel)]
        width = max((lab.sizeHint().width() for lab in labels), default=0)
        for lab in labels:
            lab.setMinimumWidth(width)
        guard_wheel(self.settings_widget, self._wheel_guard)

    def _corpus_changed(self) -> None:
        name = self.corpus_combo.currentData()
        if name:
            self._switch_form(self.corpus_form, "corpus", name, self.corpus_description)
            self.schedule_preview()

    def _tokens_changed(self) -> None:
        name = SF.raw_value(self.fields["tokens"])
        if name:
            self._switch_form(self.tokens_form, "tokenizer", name, None)
            self.tokens_form.setVisible(bool(self.tokens_form.params))  # char and word have no options

    def _cell_changed(self) -> None:
        name = self.cell_combo.currentData()
        if name:
            self._switch_form(self.cell_form, "cell", name, self.cell_description)

    # -- settings -------------------------------------------------------------------
    def config(self) -> TrainConfig:
        """The TrainConfig the widgets describe; a bad entry raises RNNStudioError naming its source."""
        try:
            values = {s.name: SF.value_of(s, self.fields[s.name], TrainConfig) for s in schema(TrainConfig)
                      if s.name in self.fields}
        except RNNStudioError as exc:
            exc.source = exc.source or "training settings"
            raise
        if values["resume"] and not values["name"]:
            raise settings_error("to resume, type the saved model's name in {name} (or use Resume in the Models tab)",
                                 source="training settings")
        mode = F.get_value(self.fields["length_mode"])
        length = F.get_value(self.fields["length"])
        config = TrainConfig(
            corpus=self.corpus_combo.currentData(), corpus_options=self.corpus_form.values(),
            cell=self.cell_combo.currentData(), cell_options=self.cell_form.values(),
            tokens_options=self.tokens_form.values(), epochs=length if mode == "epochs" else 0, max_steps=length if mode == "steps" else 0,
            minutes=float(length) if mode == "minutes" else 0.0, **values)
        try:
            config.validate()
        except RNNStudioError as exc:
            exc.source = exc.source or "training settings"  # the same error, so the GUI can word it its own way
            raise
        return config

    def state(self) -> dict:
        """Everything the user set, for the settings file."""
        self._options_by_component[self.corpus_form.owner] = self.corpus_form.raw_values()
        self._options_by_component[self.cell_form.owner] = self.cell_form.raw_values()
        self._options_by_component[self.tokens_form.owner] = self.tokens_form.raw_values()
        return {"corpus": self.corpus_combo.currentData(), "cell": self.cell_combo.currentData(),
                "options": dict(self._options_by_component),
                "fields": {k: SF.raw_value(w) for k, w in self.fields.items() if k not in ("resume", "name")}}

    def restore_state(self, state: dict) -> None:
        if not isinstance(state, dict):
            return
        options = state.get("options")
        if isinstance(options, dict):
            self._options_by_component.update({k: v for k, v in options.items() if isinstance(v, dict)})
        for key, value in (state.get("fields") or {}).items():
            if key in self.fields:
                SF.set_editor(self.fields[key], value)
        device = self.fields["device"]
        if not device.model().item(device.currentIndex()).isEnabled():
            device.setCurrentIndex(0)  # the saved device is not here today: back to auto
        self.set_cell(state.get("cell") or "")
        self.set_corpus(state.get("corpus") or "")
        self.cell_form.set_values(self._options_by_component.get(self.cell_form.owner, {}))
        self.corpus_form.set_values(self._options_by_component.get(self.corpus_form.owner, {}))
        self._tokens_changed()
        self.schedule_preview()

    def prepare_resume(self, name: str) -> None:
        """Fill in a saved model's name and tick resume (the Models tab's Resume button)."""
        F.set_value(self.fields["name"], name)
        if self.fields["resume"].isChecked():
            self._resume_toggled(True)
        else:
            self.fields["resume"].setChecked(True)

    def model_renamed(self, old: str, new: str) -> None:
        """The Models tab renamed a model: the form and the panel follow."""
        if self.fields["name"].text().strip() == old:
            F.set_value(self.fields["name"], new)
        if self.model_name == old and self.job is None:
            self.model_name = new

    def _resume_toggled(self, on: bool) -> None:
        """Resume trains the saved model as it is: its corpus, cell, size and tokens come into the form, locked."""
        locked = [self.corpus_combo, self.cell_combo, self.corpus_form, self.cell_form, self.tokens_form,
                  *(self.fields[k] for k in RESUME_LOCKED if k in self.fields)]
        saved = None
        name = self.fields["name"].text().strip()
        if on and name:
            from ..checkpoint import model_path, read_config

            try:
                saved = read_config(model_path(name)).get("train") or {}
            except RNNStudioError as exc:
                self.resume_note.setText(f"cannot resume: {exc}")
                self.resume_note.show()
                saved = None
        if saved is not None:
            self.set_corpus(saved.get("corpus") or "")
            self.set_cell(saved.get("cell") or "")
            self.corpus_form.set_values(saved.get("corpus_options") or {})
            self.cell_form.set_values(saved.get("cell_options") or {})
            self._tokens_changed()
            self.tokens_form.set_values(saved.get("tokens_options") or {})
            for key in RESUME_LOCKED:
                if key in self.fields and key in saved:
                    F.set_value(self.fields[key], saved[key])
            self.resume_note.setText(f"The corpus, cell and model settings are {name}'s own and stay as saved; "
                                     f"the training settings below apply to the continued run.")
            self.resume_note.show()
        elif not on:
            self.resume_note.hide()
        for w in locked:
            w.setEnabled(saved is None)
            w.setToolTip(w.toolTip().split("\n(kept from")[0] + (f"\n(kept from the saved model {name})"
                                                                   if saved is not None else ""))

    def copy_command(self) -> str | None:
        """Put the equivalent `rnnstudio train` command, and its 2-GPU torchrun form, on the clipboard."""
        from ..config import command_for_config

        try:
            config = self.config()
        except RNNStudioError as exc:
            show_error(self, exc)
            return None
        text = (f"{shlex.join(command_for_config(config))}\n"
                f"# data-parallel on 2 GPUs:\n{shlex.join(command_for_config(config, distributed=True))}\n")
        QGuiApplication.clipboard().setText(text)
        self.status.emit("copied the train command to the clipboard")
        return text

    # -- corpus preview ---------------------------------------------------------------
    def schedule_preview(self) -> None:
        self._preview_timer.start()

    def refresh_preview(self) -> None:
        from .preview import corpus_preview

        try:
            options = self.corpus_form.values()
        except RNNStudioError as exc:
            self._preview_failed(self._preview_token, exc)
            return
        f = {k: SF.raw_value(self.fields[k]) for k in ("tokens", "preprocess", "min_freq", "max_tokens")}
        self._preview_token += 1
        self.preview_summary.setText(f"reading {self.corpus_combo.currentData()}…")
        self._background.submit(self._preview_token, corpus_preview, self.host, self.corpus_combo.currentData(),
                                options, **f)

    def _preview_done(self, token, preview) -> None:
        if token != self._preview_token:
            return  # a newer preview is on its way
        self.preview_summary.setText(f"{preview.source}: {preview.summary()}")
        self.preview_text.setPlainText(preview.head)

    def _preview_failed(self, token, exc) -> None:
        if token != self._preview_token:
            return
        self.preview_summary.setText(f"no preview: {exc}")
        self.preview_text.clear()

    # -- training -----------------------------------------------------------------------
    def is_training(self) -> bool:
        return self.job is not None

    def start(self) -> bool:
        """Start training with the current settings; a settings error opens a dialog instead."""
        if self.job is not None:
            return False
        try:
            config = self.config()
            if not config.resume:  # option errors now, before a thread starts
                config.corpus_options = self.host.corpus(config.corpus).resolve_options(config.corpus_options)
                config.cell_options = self.host.cell(config.cell).resolve_options(config.cell_options)
        except RNNStudioError as exc:
            show_error(self, exc)
            return False
        self._error = None
        self.model_name = config.name
        self.charts.clear()
        self.log.clear()
        self.sample_label.hide()
        self.progress.setRange(0, 0)  # busy until the first step
        self.progress.setFormat("loading the corpus…")
        self.progress_label.setText("reading and encoding the corpus…")
        worker = TrainingWorker(config, self.host)
        worker.started.connect(self._on_started)
        worker.progressed.connect(self._on_progress)
        worker.evaluated.connect(self._on_evaluated)
        worker.sampled.connect(self._on_sampled)
        worker.checkpointed.connect(self._on_checkpointed)
        worker.warned.connect(self._on_warned)
        worker.finished.connect(self._on_finished)
        worker.failed.connect(self._on_failed)
        worker.ended.connect(self._on_ended)
        self.job = Job(worker).start()
        self._set_running(True)
        return True

    def set_paused(self, paused: bool) -> None:
        if self.job is None:
            return
        if paused:
            self.job.worker.pause_event.set()
            self.progress_label.setText(self.progress_label.text() + " · paused")
        else:
            self.job.worker.pause_event.clear()
        self.pause_button.setText("Resume" if paused else "Pause")

    def stop(self) -> None:
        """Ask the trainer to stop after this step; it validates, saves a checkpoint and finishes."""
        if self.job is None:
            return
        self.job.stop()
        self.job.worker.pause_event.clear()
        self.stop_button.setEnabled(False)
        self.pause_button.setEnabled(False)
        self.progress_label.setText("stopping: validating and saving a checkpoint…")

    def stop_and_join(self, timeout_s: float | None = None) -> bool:
        """Stop and wait for the thread (used when the window closes). True when no thread is left."""
        if self.job is None:
            return True
        self.stop()
        job = self.job
        if not job.join(timeout_s):
            return False
        self._on_ended()
        return True

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        self.pause_button.setEnabled(running)
        if not running:
            self.pause_button.blockSignals(True)
            self.pause_button.setChecked(False)
            self.pause_button.setText("Pause")
            self.pause_button.blockSignals(False)

    def _log(self, text: str) -> None:
        self.log.appendPlainText(text)

    def _on_started(self, ev) -> None:
        self.model_name = ev.model
        self._log(event_line(ev))
        self.progress_label.setText(f"training {ev.model} on {ev.device}…")
        self.training_started.emit(ev.model)

    def log_line(self, text: str) -> None:
        """A line in the Log tab (status-bar messages land here in full)."""
        self._log(text)

    def _on_progress(self, ev, points) -> None:
        self.charts.add_train_points(points)
        if ev.total_steps:
            self.progress.setRange(0, ev.total_steps)
            self.progress.setValue(ev.step)
            self.progress.setFormat(f"step {ev.step} / {ev.total_steps}  (%p%)")
        else:
            self.progress.setRange(0, max(ev.batches, 1))
            self.progress.setValue(ev.batch)
            self.progress.setFormat(f"epoch {ev.epoch + 1}: batch {ev.batch} / {ev.batches}")
        ppl = ev.train.get("perplexity")
        ppl_text = f" · train perplexity {ppl:.2f}" if ppl is not None else ""
        paused = " · paused" if self.pause_button.isChecked() else ""
        self.progress_label.setText(
            f"epoch {ev.epoch + 1} · step {ev.step} · batch {ev.batch}/{ev.batches} · loss {ev.loss:.3f}{ppl_text} · "
            f"{ev.tokens_per_s:,.0f} tokens/s · elapsed {_duration(ev.elapsed)} · ETA {_duration(ev.eta)}{paused}")

    def _on_evaluated(self, ev) -> None:
        self.charts.add_validation(ev.step, ev.val)
        self._log(event_line(ev))

    def _on_sampled(self, ev) -> None:
        text = visible_sample(ev.text)
        self.sample_label.setText(f"sample at step {ev.step}: {text}")
        self.sample_label.show()
        self._log(event_line(ev))

    def _on_checkpointed(self, ev) -> None:
        self._log(event_line(ev))
        if self.model_name:
            self.model_saved.emit(self.model_name)

    def _on_warned(self, ev) -> None:
        self._log(event_line(ev))
        self.status.emit(f"warning: {ev.message}")

    def _on_finished(self, ev) -> None:
        state = "stopped" if ev.stopped else "finished"
        text = event_line(ev)
        self._log(text)
        self.progress_label.setText(text)
        self.progress.setFormat(f"{state} at step {ev.steps}" + ("  (%p%)" if ev.stopped else ""))
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
        if not ev.stopped:  # a stopped run keeps the bar where it stopped
            self.progress.setValue(self.progress.maximum())
        self.status.emit(text)

    def _on_failed(self, exc) -> None:
        self._error = exc
        self._log(f"error: {exc}")

    def _on_ended(self) -> None:
        job, self.job = self.job, None
        if job is None:
            return
        job.thread.wait()  # the worker called quit(); this returns at once
        self._set_running(False)
        self.charts.refresh()  # the last points, drawn now rather than at the next throttled redraw
        name = self.model_name or ""
        if self._error is not None:
            error, self._error = self._error, None
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            self.progress.setFormat("failed")
            self.progress_label.setText(f"training failed: {render_error(error, 'gui')}")
            step = getattr(error, "diverged_step", None)
            if step is not None:
                self.charts.set_diverged(step, getattr(error, "reason", ""))
            self.training_ended.emit(name)
            show_error(self, error)
            return
        self.training_ended.emit(name)
        if name:
            self.model_saved.emit(name)
