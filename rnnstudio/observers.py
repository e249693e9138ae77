"""Observers: plugin classes that receive a training run's events; one that raises is disabled, never the run."""

from __future__ import annotations

from typing import Any, ClassVar, Iterator

from .errors import RNNStudioError
from .events import Event, Warned


class Observer:
    """Receives the events of one training run (``rnnstudio.events``), in the order the trainer yields them.

    Declare ``name`` and a one-line ``description``, register the class with ``register_observers``, and
    override what you need:

    - ``wanted(config)`` (a classmethod) runs before the run writes anything, with the settings given for
      this run (on a resume, before the saved model's settings are merged in). Return False to sit this run
      out; raise ``RNNStudioError`` for something the user must fix (a missing package, a folder that cannot
      be written): the run then stops before it starts, with that message.
    - ``__init__(config)`` runs when the run has started (at its ``Started`` event), with its final
      ``TrainConfig``. ``self.config`` holds it.
    - ``observe(event)`` runs for every event, ``Started`` first and ``Finished`` last. Treat events as read-only.
    - ``close(status, error)`` runs once at the end: status is ``finished``, ``stopped`` (the user stopped it,
      the model is saved), ``failed`` (``error`` says why) or ``interrupted`` (the consumer went away).

    Observers run only in the main process of a distributed run (rank 0), between the trainer's steps.
    An observer that raises (SystemExit included) is disabled for the rest of the run with a warning event
    naming it; training, checkpoints and the other observers go on (on a run that fails, a ``close`` that
    raises is ignored: the run's own error is the news). Observers take no ``params``: they read the
    ``TrainConfig`` (a new setting is one field of it).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params: ClassVar[tuple] = ()

    @classmethod
    def wanted(cls, config) -> bool:
        return True

    def __init__(self, config):
        self.config = config

    def observe(self, event: Event) -> None:
        """One event; dispatch on ``event.kind`` (``started``, ``progress``, ``evaluated``, ``sample``, ...)."""

    def close(self, status: str, error: str | None = None) -> None:
        """The run ended with ``status``; flush and close what the observer holds."""

    @classmethod
    def describe(cls) -> dict:
        return {"name": cls.name, "description": cls.description, "params": []}


def _failure_text(exc: BaseException) -> str:
    from .plugins import describe_failure

    return describe_failure(exc)


class ObserverSession:
    """The observers of one run: builds them at ``Started``, delivers events, and fences each one off."""

    def __init__(self, classes: list[type[Observer]], config):
        self.warnings: list[str] = []
        self.active: dict[str, Observer] = {}
        self.closed = False
        self.classes = []
        for cls in classes:
            try:
                if cls.wanted(config):
                    self.classes.append(cls)
            except RNNStudioError as exc:
                raise RNNStudioError(str(exc), source=exc.source or f"observer {cls.name!r}") from None
            except (Exception, SystemExit) as exc:
                self._disabled(cls.name, "wanted()", exc)

    def _disabled(self, name: str, where: str, exc: BaseException) -> None:
        self.active.pop(name, None)
        self.warnings.append(f"observer {name!r} disabled: its {where} raised {_failure_text(exc)}")

    def start(self, config) -> None:
        for cls in self.classes:
            try:
                self.active[cls.name] = cls(config)
            except (Exception, SystemExit) as exc:
                self._disabled(cls.name, "constructor", exc)

    def deliver(self, event: Event) -> None:
        for name, observer in list(self.active.items()):
            try:
                observer.observe(event)
            except (Exception, SystemExit) as exc:
                self._disabled(name, f"observe({event.kind})", exc)

    def close(self, status: str, error: str | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        for name, observer in list(self.active.items()):
            try:
                observer.close(status, error)
            except (Exception, SystemExit) as exc:
                self._disabled(name, "close()", exc)
        self.active.clear()

    def pending(self, step: int) -> Iterator[Warned]:
        """The warnings about disabled observers, as events; the observers still active see them too."""
        while self.warnings:
            warning = Warned(step, self.warnings.pop(0))
            self.deliver(warning)
            yield warning


def observer_classes(host) -> list[type[Observer]]:
    """The registered observers, in registration order (the run records come first: they are a core plugin)."""
    registry = getattr(host, "registry", {}).get("observer", {})
    return [reg.cls for reg in registry.values()]


def observe_run(trainer, events: Iterator[Event]) -> Iterator[Event]:
    """Pass the trainer's events through, delivering each to the observers first. Only rank 0 observes."""
    if getattr(trainer.config, "rank", 0) != 0:
        yield from events
        return
    session = ObserverSession(observer_classes(trainer.host), trainer.config)
    step = 0
    try:
        for event in events:
            step = getattr(event, "step", step)
            if event.kind == "started":
                session.start(trainer.config)  # the final settings (a resume has merged the saved ones)
            session.deliver(event)
            if event.kind == "summary":  # close first, so that Finished stays the last event
                session.close("stopped" if event.stopped else "finished")
                yield from session.pending(step)
                yield event
                continue
            yield event
            yield from session.pending(step)
    except GeneratorExit:
        session.close("interrupted")
        raise
    except RNNStudioError as exc:
        session.close("failed", str(exc))
        raise
    except BaseException as exc:
        session.close("failed", f"{type(exc).__name__}: {exc}")
        raise
    else:
        session.close("finished")
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()  # the trainer's own cleanup (the model lock) runs now, not at garbage collection

