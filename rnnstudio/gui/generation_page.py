"""The generation panel: pick a model, set the sampling options, and stream text into the output view."""

from __future__ import annotations

import os
import time

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QFont, QGuiApplication, QKeySequence, QShortcut, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import (QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                               QPlainTextEdit, QPushButton, QSplitter, QVBoxLayout, QWidget)

from ..errors import RNNStudioError
from ..fileio import atomic_write_text
from ..sampling import SamplingConfig, unescape
from ..settings import render_error, schema
from . import fields as F
from . import settings_form as SF
from .dialogs import show_error
from .widgets import ElidedLabel
from .workers import GenerationWorker, Job


# The app's own defaults where they differ from SamplingConfig's (which suit the CLI).
GUI_DEFAULTS = {"length": 200}


def prefix_format() -> QTextCharFormat:
    """How the prefix is set apart from what the model wrote."""
    fmt = QTextCharFormat()
    fmt.setBackground(QColor("#dde6fa"))
    fmt.setFontWeight(QFont.Bold)
    return fmt


class GenerationPanel(QWidget):
    """Settings on the left; the streamed output with Generate, Stop, Copy and Save on the right."""

    status = Signal(str)

    def __init__(self, host, parent=None):
        super().__init__(parent)
        self.setObjectName("page")
        self.host = host
        self.job: Job | None = None
        self.training_model: str | None = None  # the model being trained right now, listed first
        self._error: BaseException | None = None
        self.texts: list[str] = []

        d = SamplingConfig()
        self.model_combo = QComboBox()
        self.model_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setMinimumContentsLength(16)  # a long name is elided in the box, whole in the list
        self.model_combo.currentIndexChanged.connect(
            lambda _i: self.model_combo.setToolTip(self.model_combo.currentText()))
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh_models)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_combo, 1)
        model_row.addWidget(self.refresh_button)
        # The prefix is the panel's own; every sampling setting's widget comes from the schema (config.py).
        d = SamplingConfig(**GUI_DEFAULTS)
        f = self.fields = {"prefix": F.line("", "default: the corpus's sample prefix",
                                            "text the model reads before it continues")}
        f.update({s.name: SF.editor(s, getattr(d, s.name)) for s in schema(SamplingConfig) if s.meta.gui})
        box = QGroupBox("Model and sampling")
        form = QFormLayout(box)
        form.addRow("model", model_row)
        form.addRow("prefix", f["prefix"])
        for s in schema(SamplingConfig):
            if s.name in f:
                form.addRow(f[s.name]) if s.kind == "bool" else form.addRow(s.label, f[s.name])
        hint = QLabel("Ctrl+Enter generates.", objectName="hint")
        form.addRow(hint)
        f["greedy"].toggled.connect(self._mode_changed)
        left = QWidget()
        lcol = QVBoxLayout(left)
        lcol.addWidget(box)
        lcol.addStretch(1)

        self.generate_button = QPushButton("Generate", objectName="primary")
        self.stop_button = QPushButton("Stop", enabled=False)
        self.copy_button = QPushButton("Copy")
        self.save_button = QPushButton("Save…")
        self.generate_button.clicked.connect(self.generate)
        self.stop_button.clicked.connect(self.stop)
        self.copy_button.clicked.connect(self.copy_output)
        self.save_button.clicked.connect(self.save_output)
        buttons = QHBoxLayout()
        for b in (self.generate_button, self.stop_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        for b in (self.copy_button, self.save_button):
            buttons.addWidget(b)
        self.output = QPlainTextEdit(readOnly=True, objectName="output")
        self.output.setPlaceholderText("Generated text appears here as it is produced; the prefix is highlighted.")
        self.rate_label = ElidedLabel("", objectName="hint")
        self.note_label = ElidedLabel("", objectName="warning")
        self.note_label.hide()
        right = QWidget()
        rcol = QVBoxLayout(right)
        rcol.addLayout(buttons)
        rcol.addWidget(self.note_label)
        rcol.addWidget(self.output, 1)
        rcol.addWidget(self.rate_label)

        split = QSplitter()
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(1, 1)
        split.setSizes([420, 780])
        QVBoxLayout(self).addWidget(split)

        for keys in ("Ctrl+Return", "Ctrl+Enter"):
            QShortcut(QKeySequence(keys), self, activated=self.generate)
        self._mode_changed()
        self.refresh_models()

    # -- models -----------------------------------------------------------------------
    def refresh_models(self) -> None:
        """Saved models (broken ones left out), with the model being trained first."""
        from ..checkpoint import list_models

        current = self.model_combo.currentData()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        names = [m.name for m in list_models() if m.error is None]
        if self.training_model:
            self.model_combo.addItem(f"{self.training_model} (training: latest checkpoint)", self.training_model)
        for name in names:
            if name != self.training_model:
                self.model_combo.addItem(name, name)
        for i in range(self.model_combo.count()):
            self.model_combo.setItemData(i, self.model_combo.itemText(i), Qt.ToolTipRole)
        metrics = self.model_combo.view().fontMetrics()
        widest = max((metrics.horizontalAdvance(self.model_combo.itemText(i)) for i in range(self.model_combo.count())),
                     default=0)
        self.model_combo.view().setMinimumWidth(widest + 40)  # the list shows whole names
        if not self.model_combo.count():
            self.model_combo.addItem("no saved models yet: train one first", None)
        self.select_model(current)
        self.model_combo.blockSignals(False)

    def select_model(self, name: str | None) -> None:
        index = self.model_combo.findData(name) if name else -1
        if index >= 0:
            self.model_combo.setCurrentIndex(index)
        self.model_combo.setToolTip(self.model_combo.currentText())

    def set_training_model(self, name: str | None) -> None:
        self.training_model = name or None
        self.refresh_models()

    def _mode_changed(self) -> None:
        sampling = not self.fields["greedy"].isChecked()
        for key in ("temperature", "top_k", "top_p", "seed"):
            self.fields[key].setEnabled(sampling)

    # -- settings ---------------------------------------------------------------------
    def sampling_config(self) -> SamplingConfig:
        try:
            values = {s.name: SF.value_of(s, self.fields[s.name], SamplingConfig) for s in schema(SamplingConfig)
                      if s.name in self.fields}
            cfg = SamplingConfig(**{**values, "stop_at": unescape(values["stop_at"] or "") or None})
            cfg.validate()
        except RNNStudioError as exc:
            exc.source = exc.source or "generation settings"
            raise
        return cfg

    def state(self) -> dict:
        return {"model": self.model_combo.currentData(), "fields": {k: SF.raw_value(w) for k, w in self.fields.items()}}

    def restore_state(self, state: dict) -> None:
        if not isinstance(state, dict):
            return
        for key, value in (state.get("fields") or {}).items():
            if key in self.fields:
                SF.set_editor(self.fields[key], value)
        self.select_model(state.get("model"))

    # -- generating -------------------------------------------------------------------
    def is_generating(self) -> bool:
        return self.job is not None

    def generate(self) -> bool:
        if self.job is not None:
            return False
        name = self.model_combo.currentData()
        try:
            if not name:
                raise RNNStudioError("there is no saved model to generate from; train one in the Training tab first",
                                     source="generation")
            if name == self.training_model:
                from ..checkpoint import model_path
                from ..trainer import TrainConfig

                if not model_path(name).is_dir():
                    d = TrainConfig()
                    raise RNNStudioError(f"{name} has no checkpoint yet; one is written every {d.checkpoint_every} "
                                         f"steps or {d.checkpoint_minutes:g} minutes and when training stops",
                                         source="generation")
            cfg = self.sampling_config()
        except RNNStudioError as exc:
            show_error(self, exc)
            return False
        prefix = self.fields["prefix"].text() or None
        self._error = None
        self.texts = []
        self.prefix = None
        self._stopped = False
        self._started_at = time.monotonic()
        self.output.clear()
        self.note_label.hide()
        self.rate_label.setText("")
        worker = GenerationWorker(name, prefix, cfg, "cpu", self.host)
        worker.progressed.connect(self._on_progress)
        worker.warned.connect(self._on_warned)
        worker.failed.connect(self._on_failed)
        worker.ended.connect(self._on_ended)
        self.job = Job(worker).start()
        self.generate_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.status.emit(f"generating with {name}…")
        return True

    def stop(self) -> None:
        if self.job is not None:
            self._stopped = True
            self.job.stop()

    def stop_and_join(self, timeout_s: float | None = None) -> bool:
        if self.job is None:
            return True
        self.job.stop()
        if not self.job.join(timeout_s):
            return False
        self._on_ended()
        return True

    def output_text(self) -> str:
        if len(self.texts) <= 1:
            return self.texts[0] if self.texts else ""
        return "\n\n".join(f"--- sample {i + 1} ---\n{t}" for i, t in enumerate(self.texts))

    def _on_warned(self, message: str) -> None:
        """A warning (e.g. prefix tokens the model never saw) stays above the output until the next run."""
        self.note_label.setText(f"warning: {message}")
        self.note_label.show()
        self.status.emit(f"warning: {message}")

    def _on_progress(self, texts) -> None:
        if self.prefix is None:  # the first update is the prefix alone
            self.prefix = texts[0] if texts else ""
        if len(texts) == 1 and len(self.texts) == 1 and texts[0].startswith(self.texts[0]):
            added = texts[0][len(self.texts[0]):]  # one sample: append only what is new
            cursor = self.output.textCursor()
            cursor.movePosition(QTextCursor.End)
            cursor.insertText(added, QTextCharFormat())
            self.texts = texts
        else:
            self.texts = texts
            self._render()
        self.output.moveCursor(QTextCursor.End)
        tokens = self.generated_tokens()
        seconds = time.monotonic() - self._started_at
        self.rate_label.setText(f"{tokens:,} tokens · {tokens / seconds:,.0f} tokens/s" if seconds > 0 else "")

    def generated_tokens(self) -> int:
        return self.job.worker.steps if self.job is not None else getattr(self, "_tokens", 0)

    def _render(self) -> None:
        """All samples, each with its prefix highlighted."""
        self.output.clear()
        cursor = self.output.textCursor()
        plain, marked = QTextCharFormat(), prefix_format()
        for i, text in enumerate(self.texts):
            if len(self.texts) > 1:
                cursor.insertText(("\n\n" if i else "") + f"--- sample {i + 1} ---\n", plain)
            head = self.prefix if self.prefix and text.startswith(self.prefix) else ""
            cursor.insertText(head, marked)
            cursor.insertText(text[len(head):], plain)

    def _on_failed(self, exc) -> None:
        self._error = exc

    def _on_ended(self) -> None:
        job, self.job = self.job, None
        if job is None:
            return
        job.thread.wait()
        self.generate_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        self._tokens = job.worker.steps
        seconds = job.worker.seconds or (time.monotonic() - self._started_at)
        rate = f"{self._tokens / seconds:,.0f} tokens/s" if seconds > 0 else "-"
        if self._error is not None:
            error, self._error = self._error, None
            self.status.emit(f"generation failed: {render_error(error, 'gui')}")
            show_error(self, error)
        else:
            done = "stopped after" if self._stopped else "generated"
            samples = f" in each of {len(self.texts)} samples" if len(self.texts) > 1 else ""
            text = f"{done} {self._tokens:,} tokens{samples} ({rate})"
            self.rate_label.setText(text)
            self.status.emit(text)

    def copy_output(self) -> None:
        QGuiApplication.clipboard().setText(self.output_text())
        self.status.emit("copied the output to the clipboard")

    def save_output(self, path: str | None = None) -> None:
        if not path:
            path, _ = QFileDialog.getSaveFileName(self, "Save the generated text", "generated.txt",
                                                  "Text files (*.txt);;All files (*)")
        if not path:
            return
        try:
            atomic_write_text(path, self.output_text() + "\n")
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(path, 0o666 & ~umask)  # a text file for the user: the usual mode, not a temp file's 0600
        except OSError as exc:
            show_error(self, RNNStudioError(f"could not save to {path} ({exc.strerror or exc})", source="generation"))
            return
        self.status.emit(f"saved the output to {path}")
