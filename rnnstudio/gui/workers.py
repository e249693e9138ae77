"""Long work off the GUI thread: QObject workers moved to QThreads, and the Job handle that starts and joins them.

Stop and pause are ``threading.Event`` flags the loops check every step (a queued slot would never
run while the loop is busy). Progress is coalesced so the GUI gets at most ~20 updates a second.
"""

from __future__ import annotations

import threading
import time
import warnings

from PySide6.QtCore import QCoreApplication, QEventLoop, QObject, QThread, Signal, Slot

from ..errors import RNNStudioError

UPDATE_INTERVAL = 0.05  # seconds between coalesced generation updates: <= 20 a second
# Training progress: <= 10 updates a second. The labels' repaints run on the other core, which on this
# 2-vCPU VM shares the training core's execution units (a busy neighbour slowed training by up to 35%).
PROGRESS_INTERVAL = 0.1


class Worker(QObject):
    """Base worker: ``work()`` runs in the thread; any exception becomes ``failed``; ``ended`` always comes last."""

    failed = Signal(object)  # an RNNStudioError whose .source names where it came from
    ended = Signal()
    source = "background task"

    def __init__(self):
        super().__init__()
        self.stop_event = threading.Event()

    def work(self) -> None:
        raise NotImplementedError

    @Slot()
    def run(self) -> None:
        try:
            self.work()
        except RNNStudioError as exc:
            self.failed.emit(exc)
        except Exception as exc:  # a plugin or library bug: report it, keep the app alive
            self.failed.emit(RNNStudioError(f"{type(exc).__name__}: {exc}", source=self.source))
        finally:
            self.ended.emit()
            # quit() from this thread: a queued finished->quit would deadlock a GUI thread that waits on us
            QThread.currentThread().quit()


class Job:
    """One worker in its own QThread. Keep the Job until ``join()`` returns: a running QThread must never be destroyed."""

    def __init__(self, worker: Worker):
        self.worker = worker
        self.thread = QThread()
        self.thread.setObjectName(type(worker).__name__)
        worker.moveToThread(self.thread)
        self.thread.started.connect(worker.run)

    def start(self) -> "Job":
        self.thread.start()
        return self

    def is_running(self) -> bool:
        return self.thread.isRunning()

    def stop(self) -> None:
        """Ask the worker to stop after its current step (thread-safe)."""
        self.worker.stop_event.set()

    def join(self, timeout_s: float | None = None) -> bool:
        """Wait for the thread to end, still delivering the worker's queued signals. True when it ended."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self.thread.wait(20):
            QCoreApplication.processEvents(QEventLoop.ExcludeUserInputEvents)
            if deadline is not None and time.monotonic() > deadline:
                return False
        QCoreApplication.processEvents(QEventLoop.ExcludeUserInputEvents)
        return True


class TrainingWorker(Worker):
    """Iterates ``Trainer(config).run()`` and re-emits its events as signals named after them."""

    started = Signal(object)  # trainer.Started
    progressed = Signal(object, object)  # the latest trainer.Progress, [(step, loss)] since the last signal
    evaluated = Signal(object)  # trainer.Evaluated
    sampled = Signal(object)  # trainer.Sampled
    checkpointed = Signal(object)  # trainer.Checkpointed
    warned = Signal(object)  # trainer.Warned
    finished = Signal(object)  # trainer.Finished
    source = "training"

    def __init__(self, config, host=None):
        super().__init__()
        self.config = config
        self.host = host
        self.pause_event = threading.Event()

    def work(self) -> None:
        from ..trainer import Trainer

        trainer = Trainer(self.config, host=self.host, stop_event=self.stop_event, pause_event=self.pause_event)
        signals = {"started": self.started, "evaluated": self.evaluated, "sample": self.sampled,
                   "checkpoint": self.checkpointed, "warning": self.warned, "summary": self.finished}
        self._points: list[tuple[int, float]] = []  # (step, that step's mean loss) not sent yet
        self._latest = None  # the newest Progress not sent yet
        last_emit = 0.0
        try:
            for event in trainer.run():
                if event.kind == "progress":
                    self._points.append((event.step, event.loss))
                    self._latest = event
                    now = time.monotonic()
                    if now - last_emit >= PROGRESS_INTERVAL:
                        self._flush()
                        last_emit = now
                    continue
                self._flush()  # the GUI sees the steps before the event that follows them
                signal = signals.get(event.kind)
                if signal is not None:
                    signal.emit(event)
        finally:
            self._flush()  # also before a failure: a diverged run plots its last steps

    def _flush(self) -> None:
        if self._latest is not None:
            self.progressed.emit(self._latest, self._points)
            self._points, self._latest = [], None


class GenerationWorker(Worker):
    """Loads a saved model and streams ``sampling.stream(...)``; emits each sample's text so far."""

    progressed = Signal(object)  # list[str]: every sample's full text so far
    warned = Signal(str)
    finished = Signal(object)  # list[str]: the final texts
    source = "generation"

    def __init__(self, model_name: str, prefix: str | None, sampling, device: str = "cpu", host=None):
        super().__init__()
        self.model_name, self.prefix, self.sampling, self.device, self.host = model_name, prefix, sampling, device, host
        self.steps = 0  # tokens generated per sample so far (read by the GUI thread for tokens/s)
        self.seconds = 0.0  # time spent generating, without loading the model

    def work(self) -> None:
        from ..checkpoint import load_model
        from ..devices import resolve_device
        from ..sampling import stream

        self.sampling.validate()
        loaded = load_model(self.model_name, host=self.host, device=resolve_device(self.device),
                            weights=self.sampling.weights)
        prefix = self.prefix or loaded.config.get("data", {}).get("sample_prefix", "The ")
        texts = [prefix] * self.sampling.num_samples
        self.progressed.emit(list(texts))
        start = time.monotonic()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pieces_iter = stream(loaded.model, loaded.vocab, prefix, self.sampling)
            first = next(pieces_iter, None)
        for w in caught:
            self.warned.emit(str(w.message))
        last_emit = time.monotonic()
        if first is not None:
            texts = [t + p for t, p in zip(texts, first)]
            self.steps = 1
            for pieces in pieces_iter:
                if self.stop_event.is_set():
                    break
                texts = [t + p for t, p in zip(texts, pieces)]
                self.steps += 1
                now = time.monotonic()
                if now - last_emit >= UPDATE_INTERVAL:
                    self.progressed.emit(list(texts))
                    last_emit = now
        self.seconds = time.monotonic() - start
        self.progressed.emit(list(texts))
        self.finished.emit(list(texts))


class Background(QObject):
    """Runs a plain function in a daemon thread and delivers its result on the GUI thread.

    For short reads that cannot be interrupted (a corpus preview may wait on a download): a daemon
    thread never blocks the app from closing, and it owns no Qt objects.
    """

    done = Signal(object, object)  # (token, result)
    failed = Signal(object, object)  # (token, exception)

    def submit(self, token, fn, *args, **kwargs) -> None:
        def target():
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                self._emit(self.failed, token, exc)
            else:
                self._emit(self.done, token, result)

        threading.Thread(target=target, name="rnnstudio-background", daemon=True).start()

    @staticmethod
    def _emit(signal, token, value) -> None:
        try:
            signal.emit(token, value)
        except RuntimeError:  # the receiver is gone: the window was closed meanwhile
            pass
