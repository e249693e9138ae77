"""The trainer's events: plain dataclasses that the CLI, the GUI, the run records and observers consume."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Event:
    def to_json(self) -> dict:
        return {"event": self.kind, **asdict(self)}

    kind = "event"


@dataclass
class Started(Event):
    kind = "started"
    model: str
    device: str
    vocab_size: int
    train_tokens: int
    val_tokens: int
    steps_per_epoch: int
    total_steps: int  # 0 when unbounded
    parameters: int
    step: int  # > 0 when resuming
    epoch: int
    path: str


@dataclass
class Progress(Event):
    kind = "progress"
    step: int
    total_steps: int
    epoch: int
    batch: int
    batches: int
    loss: float
    tokens_per_s: float
    elapsed: float
    eta: float | None
    train: dict[str, float]


@dataclass
class Evaluated(Event):
    kind = "evaluated"
    step: int
    epoch: int
    val: dict[str, float]
    best: bool


@dataclass
class Sampled(Event):
    kind = "sample"
    step: int
    text: str


@dataclass
class Checkpointed(Event):
    kind = "checkpoint"
    step: int
    path: str


@dataclass
class Warned(Event):
    kind = "warning"
    step: int
    message: str


@dataclass
class Finished(Event):
    kind = "summary"
    model: str
    path: str | None
    steps: int
    epochs: int
    stopped: bool
    train_perplexity: float | None
    val_perplexity: float | None
    tokens_per_s: float
    seconds: float
    device: str
    train: dict[str, float]
    val: dict[str, float]
