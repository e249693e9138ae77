""""Copy as command" without Qt: the argv built from a TrainConfig parses back to the same TrainConfig."""

from __future__ import annotations

import dataclasses

import pytest

from rnnstudio.cli import _resolve_component_options, build_parser, train_config_from_args
from rnnstudio.config import command_for_config
from rnnstudio.plugins import load_plugins
from rnnstudio.trainer import TrainConfig


def parse_back(argv: list[str], host) -> TrainConfig:
    args = build_parser().parse_args(argv)
    config = train_config_from_args(args)
    _resolve_component_options(host, config)
    return config


CONFIGS = [
    TrainConfig(),
    TrainConfig(corpus="text-file", corpus_options={"path": "/tmp/some file.txt", "encoding": "latin-1",
                                                    "errors": "replace"},
                cell="rnn-scratch", cell_options={"init_std": 0.05}, tokens="word", preprocess="d2l", min_freq=2,
                max_tokens=5000, hidden_size=64, num_layers=2, dropout=0.25, encoding="embedding", embed_size=32,
                batch_size=8, seq_len=16, max_steps=123, optimizer="sgd", lr=0.5, clip=0.0, partition="random",
                seed=7, device="cpu", threads=2, name="my-model", eval_every=50, sample_every=25,
                checkpoint_every=100, checkpoint_minutes=2.5),
    TrainConfig(epochs=3, name="resumed", resume=True),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_command_parses_back_to_the_same_config(config):
    host = load_plugins(no_plugins=True)
    config = dataclasses.replace(config)
    config.corpus_options = host.corpus(config.corpus).resolve_options(config.corpus_options)
    config.cell_options = host.cell(config.cell).resolve_options(config.cell_options)
    argv = command_for_config(config)
    assert argv[:2] == ["rnnstudio", "train"]
    assert parse_back(argv[1:], host) == config


def test_distributed_form_is_the_torchrun_launch():
    config = TrainConfig(hidden_size=64, max_steps=10)
    argv = command_for_config(config, distributed=True)
    assert argv[:6] == ["torchrun", "--standalone", "--nproc_per_node=2", "-m", "rnnstudio", "train"]
    assert argv[-1] == "--distributed"
    args = build_parser().parse_args(argv[5:])
    assert args.distributed and train_config_from_args(args) == config


def test_defaults_give_the_bare_command():
    assert command_for_config(TrainConfig()) == ["rnnstudio", "train"]
