"""Choosing a saved model in a view: the names that load, a combo that keeps its choice, and a cache of loaded models."""

from __future__ import annotations

from PySide6.QtWidgets import QComboBox

from .. import checkpoint


def model_names() -> list[str]:
    """Saved models that load (broken ones are left out)."""
    return [m.name for m in checkpoint.list_models() if m.config is not None]


def fill_combo(combo: QComboBox, names: list[str]) -> None:
    """Replace a combo's items, keeping the current choice when it is still there."""
    current = combo.currentText()
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(names)
    if current in names:
        combo.setCurrentText(current)
    combo.blockSignals(False)


class ModelCache:
    """Loaded models by name, loaded on the CPU in a worker thread and reused until the model list changes."""

    def __init__(self, host=None):
        self.host = host
        self.loaded: dict[str, object] = {}

    def get(self, name: str):
        if name not in self.loaded:
            self.loaded[name] = checkpoint.load_model(name, host=self.host, device="cpu")
        return self.loaded[name]

    def clear(self) -> None:
        self.loaded.clear()
