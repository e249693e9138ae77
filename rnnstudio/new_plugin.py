"""``rnnstudio new-plugin NAME``: writes a ready plugin package (pyproject with the entry point, hooks, tests)."""

from __future__ import annotations

import re
from pathlib import Path

from . import __version__
from .errors import RNNStudioError
from .fileio import atomic_write_text

NAME_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")

PYPROJECT = '''[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "rnnstudio-{name}"
version = "0.1.0"
description = "An RNN Studio plugin: the {name} corpus, cell and metric."
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["rnnstudio>={version}"]

[project.optional-dependencies]
test = ["pytest>=7"]

# RNN Studio finds the plugin through this entry point: `rnnstudio plugins` lists it once installed.
[project.entry-points.rnnstudio]
{name} = "{module}"

[tool.setuptools]
packages = ["{module}"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

README = '''# rnnstudio-{name}

An [RNN Studio](https://pypi.org/project/rnnstudio/) plugin with a corpus (`{name}-text`), a cell (`{name}-rnn`)
and a metric (`{name}-top-k`) to start from. The plugin guide (docs/plugins.md in RNN Studio) documents
every hook and base-class attribute.

    pip install -e .            # then: rnnstudio plugins
    rnnstudio train --corpus {name}-text --cell {name}-rnn --metrics {name}-top-k --max-steps 200
    pip install -e '.[test]' && pytest
'''

MODULE = '''"""rnnstudio-{name}: a corpus, a cell and a metric for RNN Studio, to change into your own."""

from __future__ import annotations

import torch
from torch import nn

import rnnstudio


class {camel}Text(rnnstudio.Corpus):
    name = "{name}-text"
    description = "A sentence repeated: replace read() with your own source of text."
    params = (rnnstudio.Param("repeat", "int", 300, min=1, help="How many times the sentence repeats."),)

    def read(self) -> str:
        return "the quick brown fox jumps over the lazy dog. " * self.options["repeat"]

    def describe_source(self) -> str:
        return f"a sentence, {{self.options['repeat']}} times"


class {camel}RNN(rnnstudio.Cell):
    name = "{name}-rnn"
    description = "An Elman RNN with ReLU, one nn.RNNCell per layer."

    def __init__(self, input_size, hidden_size, num_layers=1, dropout=0.0, **options):
        super().__init__(input_size, hidden_size, num_layers, dropout, **options)
        self.layers = nn.ModuleList(
            nn.RNNCell(input_size if i == 0 else hidden_size, hidden_size, nonlinearity="relu")
            for i in range(num_layers))

    def forward(self, inputs, state):  # (T, B, E), (L, B, H) -> (T, B, H), (L, B, H)
        h = list(state.unbind(0))
        outputs = []
        for x in inputs:
            for i, layer in enumerate(self.layers):
                h[i] = x = layer(x, h[i])
            outputs.append(x)
        return torch.stack(outputs), torch.stack(h)


class {camel}TopK(rnnstudio.Metric):
    name = "{name}-top-k"
    description = "How often the next token is among the model's k likeliest."
    params = (rnnstudio.Param("k", "int", 5, min=1, help="How many guesses count."),)
    higher_is_better = True
    on_train = False  # validation and score only: training batches stay fast

    def reset(self):
        self.hits = 0
        self.count = 0

    def update(self, logits, targets, nll):  # (N, V), (N,), (N,)
        k = min(self.options["k"], logits.shape[-1])
        self.hits += int((logits.topk(k, dim=-1).indices == targets[:, None]).any(dim=-1).sum())
        self.count += int(targets.numel())

    def value(self):
        return self.hits / self.count if self.count else float("nan")

    def state(self):  # for data-parallel validation: each rank's counts, added by merge()
        return {{"hits": self.hits, "count": self.count}}

    def merge(self, state):
        self.hits += state["hits"]
        self.count += state["count"]


@rnnstudio.hookimpl
def register_corpora(register):
    register({camel}Text)


@rnnstudio.hookimpl
def register_cells(register):
    register({camel}RNN)


@rnnstudio.hookimpl
def register_metrics(register):
    register({camel}TopK)
'''

TESTS = '''"""The plugin's tests, with RNN Studio's public helpers (rnnstudio.testing; pytest loads its fixtures)."""

from rnnstudio.testing import check_cell, check_corpus, check_metric, load_installed, load_plugin, train_briefly

import {module} as plugin


def test_the_components_keep_rnn_studios_contracts():
    check_corpus(plugin.{camel}Text)
    check_cell(plugin.{camel}RNN)
    check_metric(plugin.{camel}TopK, options={{"k": 3}})


def test_it_registers_and_trains():
    host = load_plugin(plugin)
    assert host.failures == []
    summary = train_briefly(host, corpus="{name}-text", cell="{name}-rnn", metrics="{name}-top-k", steps=3)
    assert 0.0 <= summary.val["{name}-top-k"] <= 1.0


def test_rnnstudio_finds_the_installed_package(rnnstudio_home):
    host = load_installed()
    assert host.source_of("cell", "{name}-rnn") == "entrypoint:{name}"
    assert host.provenance("entrypoint:{name}")[0] == "rnnstudio-{name}"
'''


def write_plugin(name: str, folder: str | Path) -> list[Path]:
    """Write the package for plugin ``name`` into ``folder`` (new or empty); returns the files written."""
    if not NAME_RE.match(name or ""):
        raise RNNStudioError(f"plugin name {name!r}: use lowercase letters, digits and single hyphens, starting with "
                             f"a letter (e.g. mgu or my-cells)")
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise RNNStudioError(f"{folder} already exists and is not an empty folder; choose a new --dir")
    module = "rnnstudio_" + name.replace("-", "_")
    camel = "".join(part.capitalize() for part in name.split("-"))
    fill = {"name": name, "module": module, "camel": camel, "version": __version__}
    files = {
        "pyproject.toml": PYPROJECT, "README.md": README, f"{module}/__init__.py": MODULE,
        "tests/test_plugin.py": TESTS,
    }
    written = []
    try:
        for rel, template in files.items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, template.format(**fill))
            written.append(path)
    except OSError as exc:
        raise RNNStudioError(f"cannot write the plugin into {folder}: {exc.strerror or exc}") from None
    return written
