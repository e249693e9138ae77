"""Error, confirmation and file dialogs, in one place so tests can stub them."""

from __future__ import annotations

from PySide6.QtWidgets import QDialog, QFileDialog, QInputDialog, QMessageBox, QWidget

from ..errors import RNNStudioError
from ..settings import render_error


def error_title(exc: BaseException) -> str:
    source = getattr(exc, "source", None)
    return f"Error in {source}" if source else "RNN Studio error"


def error_text(exc: BaseException) -> str:
    """The message in the GUI's words: settings errors name the form's fields, not the command line's flags."""
    if isinstance(exc, RNNStudioError):
        return render_error(exc, "gui")
    return f"{type(exc).__name__}: {exc}"


def show_error(parent: QWidget | None, exc: BaseException) -> None:
    """A modal dialog naming the error's source; the app keeps running afterwards."""
    QMessageBox.critical(parent, error_title(exc), error_text(exc))


def confirm(parent: QWidget | None, title: str, text: str) -> bool:
    answer = QMessageBox.question(parent, title, text, QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
    return answer == QMessageBox.Yes


def ask_text(parent: QWidget | None, title: str, label: str, text: str = "") -> tuple[str, bool]:
    """A line of text (e.g. a new name) in a dialog wide enough for its title and a long name."""
    dialog = QInputDialog(parent)
    dialog.setWindowTitle(title)
    dialog.setLabelText(label)
    dialog.setTextValue(text)
    dialog.setMinimumWidth(max(420, dialog.fontMetrics().horizontalAdvance(text) + 80))
    ok = dialog.exec() == QDialog.Accepted
    return dialog.textValue(), ok


def read_text_file(path: str) -> str:
    """A user's text file as UTF-8 (bad bytes replaced); pipes, devices and folders are refused with one line."""
    from ..textfiles import read_text_file as read_checked

    return read_checked(path, "utf-8", "replace")


def open_text(parent, path: str | None = None) -> str | None:
    """Ask for a text file (unless ``path`` is given) and read it; errors go to a dialog. None: nothing read."""
    if not path:
        path, _ = QFileDialog.getOpenFileName(parent, "Open a text file", "", "Text files (*.txt);;All files (*)")
        if not path:
            return None
    try:
        return read_text_file(path)
    except RNNStudioError as exc:
        show_error(parent, exc)
        return None
