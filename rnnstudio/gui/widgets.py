"""Small widgets the panels share: a label that elides instead of widening the window, and a wheel guard for forms."""

from __future__ import annotations

from PySide6.QtCore import QCoreApplication, QEvent, QObject, QSize, Qt
from PySide6.QtWidgets import QAbstractScrollArea, QAbstractSpinBox, QComboBox, QLabel, QSizePolicy, QWidget


class ElidedLabel(QLabel):
    """One line of status text: too long for its width, it ends in "…"; the full text is its tooltip.

    Its minimum width is small, so a long message (a divergence, a path) never sets the window's minimum size.
    """

    def __init__(self, text: str = "", parent=None, **kwargs):
        super().__init__(parent, **kwargs)
        self._full = ""
        self.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.setText(text)

    def full_text(self) -> str:
        return self._full

    def setText(self, text: str) -> None:  # noqa: N802 (Qt's name)
        self._full = text
        self.setToolTip(text if text else "")
        self._elide()

    def text(self) -> str:
        return self._full

    def shown_text(self) -> str:
        """What is drawn now (elided to the width)."""
        return super().text()

    def _elide(self) -> None:
        width = max(self.contentsRect().width(), 0)
        line = self._full.replace("\n", " ")
        super().setText(self.fontMetrics().elidedText(line, Qt.ElideRight, width) if width else line)

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._elide()

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(40, super().minimumSizeHint().height())

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(200, super().sizeHint().height())


class WheelGuard(QObject):
    """Spin boxes and combos ignore the mouse wheel unless they have focus, so the wheel scrolls the form."""

    def eventFilter(self, obj, event) -> bool:  # noqa: N802
        if event.type() == QEvent.Wheel and isinstance(obj, (QAbstractSpinBox, QComboBox)) and not obj.hasFocus():
            parent = obj.parentWidget()
            while parent is not None and not isinstance(parent, QAbstractScrollArea):
                parent = parent.parentWidget()
            if parent is not None:  # scroll the form, as if the wheel were over its background
                QCoreApplication.sendEvent(parent.verticalScrollBar(), event)
            return True
        return False


def guard_wheel(root: QWidget, guard: WheelGuard) -> None:
    """Install ``guard`` on every spin box and combo under ``root`` (and make them take focus by click or Tab only)."""
    for w in root.findChildren(QAbstractSpinBox) + root.findChildren(QComboBox):
        if not w.property("wheel_guarded"):
            w.setFocusPolicy(Qt.StrongFocus)
            w.installEventFilter(guard)
            w.setProperty("wheel_guarded", True)
