"""Built-in observers: a TensorBoard exporter, switched on by the ``tensorboard`` setting (``--tensorboard DIR``)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import rnnstudio

EXTRA = "pip install 'rnnstudio[tensorboard]'"
TRAIN_POINTS = 5000  # a longer run writes its training scalars every k-th step (an add_scalar costs ~50 us)


def _log_dir(config) -> Path:
    return Path(os.path.expanduser(config.tensorboard))


class TensorBoardExport(rnnstudio.Observer):
    """Scalars ``train/loss``, ``train/<metric>`` and ``train/tokens_per_s`` every step (every k-th step past
    ``TRAIN_POINTS`` steps) and ``val/<metric>`` at every validation, the samples and warnings as text, in
    ``DIR/<model name>``: a resume adds to the same curves."""

    name = "tensorboard"
    description = "Writes TensorBoard event files when --tensorboard DIR is given (view: tensorboard --logdir DIR)."

    @classmethod
    def wanted(cls, config) -> bool:
        if not config.tensorboard:
            return False
        if importlib.util.find_spec("tensorboard") is None:
            raise rnnstudio.RNNStudioError(f"TensorBoard export needs the tensorboard package: {EXTRA}")
        folder = _log_dir(config)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise rnnstudio.RNNStudioError(f"cannot write TensorBoard files to {folder} "
                                           f"({exc.strerror or exc}); pick another folder") from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise rnnstudio.RNNStudioError(f"cannot write TensorBoard files to {folder} (permission denied); "
                                           f"pick another folder")
        return True

    def __init__(self, config):
        super().__init__(config)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = None
        self.every = 1
        self.folder = _log_dir(config)
        self._SummaryWriter = SummaryWriter

    def observe(self, event) -> None:
        kind = event.kind
        if kind == "started":
            self.writer = self._SummaryWriter(log_dir=str(self.folder / event.model), max_queue=100)
            if event.total_steps:
                self.every = max(1, (event.total_steps - event.step) // TRAIN_POINTS)
            settings = json.dumps({k: v for k, v in self.config.to_json().items() if v not in (None, {}, "")},
                                  indent=1, default=str)
            self.writer.add_text("settings", f"```\n{settings}\n```", event.step)
            return
        w = self.writer
        if w is None:
            return
        if kind == "progress":
            if event.step % self.every and event.step != event.total_steps:
                return
            w.add_scalar("train/loss", event.loss, event.step)
            for name, value in event.train.items():
                w.add_scalar(f"train/{name}", value, event.step)
            w.add_scalar("train/tokens_per_s", event.tokens_per_s, event.step)
        elif kind == "evaluated":
            for name, value in event.val.items():
                w.add_scalar(f"val/{name}", value, event.step)
            w.flush()  # a validation is a moment someone looks at the curves
        elif kind == "sample":
            w.add_text("sample", event.text, event.step)
        elif kind == "warning":
            w.add_text("warnings", event.message, event.step)

    def close(self, status: str, error: str | None = None) -> None:
        if self.writer is not None:
            if error:
                self.writer.add_text("warnings", f"the run {status}: {error}")
            self.writer.close()
            self.writer = None


@rnnstudio.hookimpl
def register_observers(register):
    register(TensorBoardExport)
