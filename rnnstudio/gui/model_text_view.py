"""The base of the pages that run a saved model over a pasted or opened text in the background (Inspector, Explorer)."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from ..errors import RNNStudioError
from .dialogs import open_text, show_error
from .model_choice import ModelCache, model_names
from .workers import Background

SAMPLE_TEXT = ("The Time Traveller (for so it will be convenient to speak of him) was expounding a recondite "
               "matter to us. \"It is simple,\" he said; for i in range(10): print(i)\n")


class ModelTextView(QWidget):
    """A text box with an Open file… button, and one background job at a time over it.

    A subclass builds its widgets and places them with ``lay_out(rows, body)``, fills its model picker(s) in
    ``list_models(names)``, and calls ``start(button, model, message, *args)`` from its button's slot:
    ``compute(*args)`` runs in a daemon thread, then ``show_done(result)`` runs on the GUI thread. Only the newest
    request's outcome is shown (an older one that finishes late is dropped); a failure re-enables the button, emits
    ``failed`` and shows a dialog.
    """

    failed = Signal(object)
    status = Signal(str)

    def __init__(self, host=None, input_height: int = 110, parent=None):
        super().__init__(parent)
        self.setObjectName("page")
        self.host = host
        self.models = ModelCache(host)
        self.busy = False
        self._token = 0  # the newest request's number
        self._button: QPushButton | None = None  # disabled while a request runs
        self.background = Background()
        self.background.done.connect(self._done)
        self.background.failed.connect(self._failed)
        self.open_button = QPushButton("Open file…")
        self.open_button.clicked.connect(self.open_file)
        self.input = QPlainTextEdit(SAMPLE_TEXT)
        self.input.setPlaceholderText("Paste text here, or open a file")
        self.input.setMaximumHeight(input_height)

    def lay_out(self, rows: list, body: QWidget) -> None:
        """The page from top to bottom: the ``rows`` of controls, the text box, then ``body`` in the space left;
        then the saved models are listed."""
        col = QVBoxLayout(self)
        for row in rows:
            col.addLayout(row)
        col.addWidget(self.input)
        col.addWidget(body, 1)
        self.refresh_models()

    def refresh_models(self) -> None:
        """Forget the loaded models and list the saved ones again (the window calls this whenever models change)."""
        self.models.clear()
        self.list_models(model_names())

    def list_models(self, names: list[str]) -> None:
        """Offer ``names`` in the model picker(s)."""
        raise NotImplementedError

    def set_text(self, text: str) -> None:
        self.input.setPlainText(text)

    def open_file(self, path: str | None = None) -> None:
        text = open_text(self, path)
        if text is not None:
            self.set_text(text)

    def is_busy(self) -> bool:
        return self.busy

    def start(self, button: QPushButton, model: str, message: str, *args) -> bool:
        """Run ``compute(*args)`` in the background; False (with a dialog) when no ``model`` is chosen."""
        if not model:
            show_error(self, RNNStudioError("no saved model yet; train one first"))
            return False
        self._token += 1
        self.busy = True
        self._button = button
        button.setEnabled(False)
        self.status.emit(message)
        self.background.submit(self._token, self.compute, *args)
        return True

    def compute(self, *args):
        """The work, in a daemon thread: touch no widgets here."""
        raise NotImplementedError

    def show_done(self, result) -> None:
        """Show ``compute``'s result (on the GUI thread)."""
        raise NotImplementedError

    def _idle(self, token) -> bool:
        """Back to idle after request ``token``; False when a newer request has started since."""
        if token != self._token:
            return False  # an older request finished after a newer one started
        self.busy = False
        self._button.setEnabled(True)
        return True

    def _done(self, token, result) -> None:
        if self._idle(token):
            self.show_done(result)

    def _failed(self, token, exc) -> None:
        if self._idle(token):
            self.failed.emit(exc)
            show_error(self, exc)
