"""Shared test helper: small models trained in-process on a text file, on the CPU."""

from __future__ import annotations

from pathlib import Path

from rnnstudio.trainer import TrainConfig, Trainer


def train_on_file(corpus: Path, name: str, host=None, **settings) -> None:
    """Train and save the model ``name`` on the text file ``corpus``; ``settings`` are ``TrainConfig`` fields."""
    config = TrainConfig(corpus="text-file", corpus_options={"path": str(corpus)}, name=name,
                         **{"device": "cpu", **settings})
    for _ in Trainer(config, host=host).run():
        pass
