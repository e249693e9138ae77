"""The core checks what plugin components give it: a cell's output and state shapes, a corpus's pieces."""

from __future__ import annotations

import pytest
import torch

import rnnstudio
from rnnstudio.errors import RNNStudioError
from rnnstudio.plugins import load_plugins
from rnnstudio.trainer import TrainConfig, Trainer


class GoodGRU(rnnstudio.Cell):
    name = "contract-gru"
    description = "a correct cell to derive the broken ones from"

    def __init__(self, input_size, hidden_size, num_layers=1, dropout=0.0, **options):
        super().__init__(input_size, hidden_size, num_layers, dropout, **options)
        self.rnn = torch.nn.GRU(input_size, hidden_size, num_layers)

    def forward(self, inputs, state):
        return self.rnn(inputs, state)


class BatchFirst(GoodGRU):
    name = "batch-first"
    description = "returns (B, T, H)"

    def forward(self, inputs, state):
        out, state = self.rnn(inputs, state)
        return out.transpose(0, 1), state


class LosesLayers(GoodGRU):
    name = "loses-layers"
    description = "returns the top layer's state only"

    def forward(self, inputs, state):
        out, state = self.rnn(inputs, state)
        return out, state[-1]


class OutputOnly(GoodGRU):
    name = "output-only"
    description = "returns the outputs without the state"

    def forward(self, inputs, state):
        return self.rnn(inputs, state)[0]


def _corpus(name, pieces):
    class Pieces(rnnstudio.Corpus):
        description = "yields what it is given"

        def iter_text(self):
            yield from pieces

    Pieces.name = name
    return Pieces


def _plugin(*classes):
    class Plugin:
        @rnnstudio.hookimpl
        def register_cells(self, register):
            for cls in classes:
                if issubclass(cls, rnnstudio.Cell):
                    register(cls)

        @rnnstudio.hookimpl
        def register_corpora(self, register):
            for cls in classes:
                if issubclass(cls, rnnstudio.Corpus):
                    register(cls)

    return Plugin()


TEXT = "the cat sat on the mat. " * 40
PLUGIN = _plugin(GoodGRU, BatchFirst, LosesLayers, OutputOnly, _corpus("plain", [TEXT]),
                 _corpus("bytes-corpus", [TEXT, TEXT.encode()]), _corpus("none-corpus", [None]))


def _train(cell="contract-gru", corpus="plain"):
    host = load_plugins(no_plugins=True, extra=[("test:contracts", PLUGIN)])
    cfg = TrainConfig(corpus=corpus, cell=cell, hidden_size=5, batch_size=4, seq_len=6, max_steps=2, save=False,
                      eval_every=0, sample_every=0)
    return list(Trainer(cfg, host=host).run())


def test_a_correct_cell_trains():
    assert _train()[-1].steps == 2


@pytest.mark.parametrize("cell, expected", [
    ("batch-first", "outputs are (2, 3, 5), expected (T, B, H) = (3, 2, 5) (batch-first"),
    ("loses-layers", "the new state is (2, 5), expected the shape of the state it was given (1, 2, 5)"),
    ("output-only", "forward must return (outputs, state), got (3, 2, 5)"),
])
def test_a_cell_that_breaks_the_contract_is_refused_naming_the_plugin(cell, expected):
    with pytest.raises(RNNStudioError) as info:
        _train(cell=cell)
    message = str(info.value)
    assert expected in message
    assert message.startswith(f"cell {cell!r} (test:contracts)")
    assert "\n" not in message


@pytest.mark.parametrize("corpus, kind", [("bytes-corpus", "bytes"), ("none-corpus", "NoneType")])
def test_a_corpus_piece_that_is_not_str_is_refused_naming_the_plugin(corpus, kind):
    with pytest.raises(RNNStudioError) as info:
        _train(corpus=corpus)
    message = str(info.value)
    assert message.startswith(f"corpus {corpus!r} (test:contracts)")
    assert f"gave a {kind} as piece" in message and "must give str" in message
    assert ("decode bytes" in message) == (kind == "bytes")


class FailsInTraining(GoodGRU):
    name = "fails-in-training"
    description = "passes the first-batch check, then raises"
    calls = 0

    def forward(self, inputs, state):
        type(self).calls += 1
        if type(self).calls > 1:
            raise ValueError("broken recurrence")
        return super().forward(inputs, state)


def test_a_failure_before_any_checkpoint_never_claims_one_is_intact(rnnstudio_home):
    FailsInTraining.calls = 0
    host = load_plugins(no_plugins=True, extra=[("test:fails", _plugin(FailsInTraining, _corpus("plain", [TEXT])))])
    cfg = TrainConfig(corpus="plain", cell="fails-in-training", hidden_size=5, batch_size=4, seq_len=6, max_steps=3,
                      eval_every=0, sample_every=0, name="never-saved")
    with pytest.raises(RNNStudioError) as info:
        list(Trainer(cfg, host=host).run())
    message = str(info.value)
    assert "broken recurrence" in message and "no checkpoint was saved" in message
    assert "intact" not in message
