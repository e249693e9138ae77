"""The built-in plugins pass the public conformance checks that plugin authors run (rnnstudio.testing)."""

from __future__ import annotations

import pytest
import torch

import rnnstudio
from rnnstudio import testing
from rnnstudio.plugins import load_plugins

HOST = load_plugins(no_plugins=True)


@pytest.mark.parametrize("name", HOST.names("cell"))
def test_builtin_cells_pass_check_cell(name):
    testing.check_cell(HOST.cell(name))


@pytest.mark.parametrize("name", HOST.names("metric"))
def test_builtin_metrics_pass_check_metric(name):
    testing.check_metric(HOST.metric(name))


@pytest.mark.parametrize("name", HOST.names("tokenizer"))
def test_builtin_tokenizers_pass_check_tokenizer(name):
    options = {"vocab_size": 60} if any(p.name == "vocab_size" for p in HOST.get("tokenizer", name).params) else {}
    testing.check_tokenizer(HOST.get("tokenizer", name), options=options)


def test_builtin_corpora_pass_check_corpus(tmp_path):
    text = tmp_path / "a.txt"
    text.write_text("some text to learn from. " * 20, encoding="utf-8")
    testing.check_corpus(HOST.corpus("text-file"), options={"path": str(text)})
    testing.check_corpus(HOST.corpus("time-machine"), options={"path": str(text)})
    testing.check_corpus(HOST.corpus("python-docs"))


class Transposed(rnnstudio.Cell):
    name = "transposed"
    description = "batch-first outputs"

    def __init__(self, input_size, hidden_size, num_layers=1, dropout=0.0, **options):
        super().__init__(input_size, hidden_size, num_layers, dropout, **options)
        self.rnn = torch.nn.RNN(input_size, hidden_size, num_layers)

    def forward(self, inputs, state):
        out, state = self.rnn(inputs, state)
        return out.transpose(0, 1).contiguous(), state


class StatefulOnModule(Transposed):
    name = "forgets-state"
    description = "ignores the state it is given"

    def forward(self, inputs, state):
        return self.rnn(inputs)


class BadStep(Transposed):
    name = "bad-step"
    description = "step disagrees with forward"

    def forward(self, inputs, state):
        return self.rnn(inputs, state)

    def step(self, x, state):
        out, state = self.rnn(x[None], state)
        return out[0] * 2, state


class Frozen(BadStep):
    name = "frozen"
    description = "no trainable weights"

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.rnn.requires_grad_(False)

    step = None


class BadUnitsOver(BadStep):
    name = "bad-units-over"
    description = "hidden_units_over reports the final state at every step"

    step = None

    def hidden_units_over(self, x, state):
        out, final = self.rnn(x, state)
        return {"h": final[None].expand(len(x), *final.shape)}, final


@pytest.mark.parametrize("cls, match", [
    (Transposed, "outputs are .* expected \\(T, B, H\\)"),
    (BadUnitsOver, "hidden_units_over\\(\\)\\['h'\\] at step 0"),
    (StatefulOnModule, "two parts"),
    (BadStep, "step\\(\\) against forward\\(\\)"),
    (Frozen, "gets no gradient"),
])
def test_check_cell_catches_broken_cells(cls, match):
    with pytest.raises(AssertionError, match=match):
        testing.check_cell(cls)


class Last(rnnstudio.Metric):
    name = "last-batch"
    description = "only the last batch: does not accumulate"

    def reset(self):
        self.v = 0.0

    def update(self, logits, targets, nll):
        self.v = float(nll.mean())

    def value(self):
        return self.v


class NoReset(Last):
    name = "no-reset"
    description = "reset forgets to clear"

    def __init__(self, **options):
        self.total, self.n = 0.0, 0
        super().__init__(**options)

    def reset(self):
        pass

    def update(self, logits, targets, nll):
        self.total += float(nll.sum())
        self.n += nll.numel()

    def value(self):
        return self.total / self.n


@pytest.mark.parametrize("cls, match", [(Last, "must accumulate"), (NoReset, "reset\\(\\) does not clear")])
def test_check_metric_catches_broken_metrics(cls, match):
    with pytest.raises(AssertionError, match=match):
        testing.check_metric(cls)


def test_check_corpus_catches_bytes():
    class Bytes(rnnstudio.Corpus):
        name = "bytes"
        description = "bytes"

        def iter_text(self):
            yield b"abc"

    with pytest.raises(AssertionError, match="piece 1 is a bytes"):
        testing.check_corpus(Bytes)


def test_loaders_and_train_briefly(tmp_path):
    path = tmp_path / "tiny_plugin.py"
    path.write_text(
        "import rnnstudio\n"
        "class Tiny(rnnstudio.Corpus):\n"
        "    name = 'tiny'\n"
        "    description = 'a tiny text'\n"
        "    def read(self): return 'abcabcabd ' * 50\n"
        "@rnnstudio.hookimpl\n"
        "def register_corpora(register):\n"
        "    register(Tiny)\n")
    host = testing.load_plugin_file(path)
    assert host.failures == [] and host.source_of("corpus", "tiny") == f"user:{path}"
    summary = testing.train_briefly(host, corpus="tiny", steps=2)
    assert summary.steps == 2
