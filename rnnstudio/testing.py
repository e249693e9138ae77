"""Test helpers for plugin authors, also a pytest plugin: an isolated home, plugin loaders, conformance checks.

Installed with RNN Studio, pytest loads this module by itself (the ``pytest11`` entry point), so a plugin's
tests get the ``rnnstudio_home`` fixture with no conftest. The checks raise ``AssertionError`` saying what
broke the contract that docs/plugins.md describes::

    from rnnstudio.testing import check_cell, load_plugin
    import rnnstudio_mgu

    def test_mgu():
        check_cell(rnnstudio_mgu.MGU)
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

try:  # the fixture needs pytest; the checks do not
    import pytest
except ImportError:  # pragma: no cover - rnnstudio.testing used outside pytest
    pytest = None

__all__ = ["rnnstudio_home", "load_plugin", "load_plugin_file", "load_installed", "train_briefly",
           "check_cell", "check_corpus", "check_metric", "check_tokenizer"]


# -- fixtures and loaders -------------------------------------------------------------------------

def _home(tmp_path, monkeypatch):
    home = tmp_path / "rnnstudio-home"
    monkeypatch.setenv("RNNSTUDIO_HOME", str(home))
    for name in ("RNNSTUDIO_NO_PLUGINS", "RNNSTUDIO_DISABLE", "RNNSTUDIO_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    from . import plugins

    plugins.set_default_host(None)
    return home


if pytest is not None:
    @pytest.fixture
    def rnnstudio_home(tmp_path, monkeypatch):
        """A fresh RNN Studio home (models, runs, user plugins, cache, settings) under ``tmp_path``:
        the test never touches the user's real folders. Yields its path."""
        yield _home(tmp_path, monkeypatch)
        from . import plugins

        plugins.set_default_host(None)


def load_plugin(plugin: Any, *, source: str = "test:plugin"):
    """A plugin host with the built-ins and ``plugin`` (a module or an object with hookimpls), and no
    installed or user plugins. Check ``host.failures`` to see what the host refused."""
    from .plugins import load_plugins

    return load_plugins(no_plugins=True, extra=[(source, plugin)])


def load_plugin_file(path: str | Path):
    """A plugin host with the built-ins and one plugin file, loaded as the user folder's files are."""
    from .plugins import _load_user_plugin

    path = Path(path)
    return load_plugin(_load_user_plugin(path), source=f"user:{path}")


def load_installed(**kw):
    """The plugin host as ``rnnstudio`` builds it: built-ins and installed entry points (and user files)."""
    from .plugins import load_plugins

    return load_plugins(**kw)


def train_briefly(host, *, steps: int = 3, **settings):
    """Train a tiny model in memory with ``host`` for ``steps`` steps; returns the summary event.
    ``settings`` are TrainConfig fields (corpus, cell, corpus_options, ...)."""
    from .trainer import TrainConfig, Trainer

    base = dict(hidden_size=8, batch_size=2, seq_len=8, max_steps=steps, save=False, eval_every=0, sample_every=0)
    events = list(Trainer(TrainConfig(**{**base, **settings}), host=host).run())
    assert events and events[-1].kind == "summary", events[-1:]
    return events[-1]


# -- conformance checks ---------------------------------------------------------------------------

def _close(a, b, what: str, atol: float = 1e-5) -> None:
    import torch

    if isinstance(a, tuple) or isinstance(b, tuple):
        assert isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b), f"{what}: {type(a)} vs {type(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{what}[{i}]", atol)
        return
    assert a.shape == b.shape, f"{what}: shapes {tuple(a.shape)} and {tuple(b.shape)}"
    assert torch.allclose(a, b, atol=atol, rtol=1e-4), f"{what}: largest difference {float((a - b).abs().max()):.3g}"


def _state_sum(state):
    return sum(s.sum() for s in state) if isinstance(state, tuple) else state.sum()


def check_cell(cls, *, options: dict | None = None, input_size: int = 7, hidden_size: int = 6,
               num_layers: int = 2, seed: int = 0) -> None:
    """A cell keeps the contract: outputs (T, B, H) and a state like the one given; feeding a sequence in
    two parts with the state carried equals feeding it whole; ``step`` equals ``forward`` on T=1;
    ``forward_tokens`` equals ``forward`` on one-hot rows; ``hidden_units`` gives (L, B, H) views, and
    ``hidden_units_over`` (if any) gives them after every step;
    every parameter gets a finite gradient; the weights survive a safetensors save and load."""
    import torch
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    from .components import Cell
    from .contracts import cell_call_problem

    assert isinstance(cls, type) and issubclass(cls, Cell), f"{cls!r} is not a subclass of rnnstudio.Cell"
    assert cls.name and cls.description, f"{cls.__name__} needs a name and a one-line description"
    options = cls.resolve_options(options or {})
    T, B = 5, 3
    torch.manual_seed(seed)
    cell = cls(input_size=input_size, hidden_size=hidden_size, num_layers=num_layers, dropout=0.0, **options)
    cell.eval()
    state = cell.begin_state(B, "cpu")
    x = torch.randn(T, B, input_size)
    result = cell(x, state)
    problem = cell_call_problem(result, state, T, B, hidden_size)
    assert problem is None, f"cell {cls.name!r}: {problem}"
    outputs, new_state = result

    with torch.no_grad():
        first, mid = cell(x[:2], state)
        second, end = cell(x[2:], mid)
        _close(torch.cat([first, second]), outputs.detach(), f"cell {cls.name!r}: outputs fed in two parts")
        _close(end, tuple(s.detach() for s in new_state) if isinstance(new_state, tuple) else new_state.detach(),
               f"cell {cls.name!r}: the state after two parts")
        if callable(getattr(cell, "step", None)):
            h, step_state = cell.step(x[0], state)
            once, once_state = cell(x[:1], state)
            _close(h, once[0], f"cell {cls.name!r}: step() against forward() on T=1")
            _close(step_state, once_state, f"cell {cls.name!r}: step()'s state against forward()'s")
        if callable(getattr(cell, "forward_tokens", None)):
            ids = torch.randint(0, input_size, (T, B))
            by_ids, ids_state = cell.forward_tokens(ids, state)
            onehot, onehot_state = cell(torch.nn.functional.one_hot(ids, input_size).float(), state)
            _close(by_ids, onehot, f"cell {cls.name!r}: forward_tokens() against forward() on one-hot rows")
            _close(ids_state, onehot_state, f"cell {cls.name!r}: forward_tokens()'s state")
        if callable(getattr(cell, "hidden_units_over", None)):  # the explorer's chunked read (inference only)
            tokens = callable(getattr(cell, "forward_tokens", None))
            ids = torch.randint(0, input_size, (T, B))
            inputs = ids if tokens else x
            per_step, over_state = cell.hidden_units_over(inputs, state)
            _, expected_state = cell.forward_tokens(ids, state) if tokens else cell(x, state)
            _close(over_state, expected_state, f"cell {cls.name!r}: hidden_units_over()'s state against forward()'s")
            step_state = state
            for t in range(T):  # every step's units equal hidden_units of the state after that step
                _, step_state = (cell.forward_tokens(ids[t:t + 1], step_state) if tokens
                                 else cell(x[t:t + 1], step_state))
                for key, view in cell.hidden_units(step_state).items():
                    assert key in per_step, f"cell {cls.name!r}: hidden_units_over() lacks {key!r}"
                    assert tuple(per_step[key].shape) == (T, num_layers, B, hidden_size), (
                        f"cell {cls.name!r}: hidden_units_over()[{key!r}] is {tuple(per_step[key].shape)}, "
                        f"expected (T, num_layers, B, H) = ({T}, {num_layers}, {B}, {hidden_size})")
                    _close(per_step[key][t], view, f"cell {cls.name!r}: hidden_units_over()[{key!r}] at step {t}")
        for key, view in cell.hidden_units(new_state).items():
            assert tuple(view.shape) == (num_layers, B, hidden_size), (
                f"cell {cls.name!r}: hidden_units()[{key!r}] is {tuple(view.shape)}, expected "
                f"(num_layers, B, H) = ({num_layers}, {B}, {hidden_size})")

    cell.train()
    cell.zero_grad()
    outputs, new_state = cell(x, cell.begin_state(B, "cpu"))
    params = dict(cell.named_parameters())
    assert params, f"cell {cls.name!r} has no parameters to train"
    total = outputs.sum() + _state_sum(new_state)
    assert total.requires_grad, f"cell {cls.name!r}: every parameter gets no gradient (none is trainable)"
    total.backward()
    for name, p in params.items():
        assert p.grad is not None, f"cell {cls.name!r}: parameter {name} gets no gradient"
        assert torch.isfinite(p.grad).all(), f"cell {cls.name!r}: parameter {name}'s gradient is not finite"
    assert any(float(p.grad.abs().sum()) > 0 for p in params.values()), f"cell {cls.name!r}: every gradient is 0"

    cell.eval()
    weights = {k: v.detach().contiguous() for k, v in cell.state_dict().items()}
    blob = st_save(weights)  # how the model store writes weights: shared or odd tensors fail here
    torch.manual_seed(seed + 1)
    again = cls(input_size=input_size, hidden_size=hidden_size, num_layers=num_layers, dropout=0.0, **options)
    again.load_state_dict(st_load(blob))
    again.eval()
    with torch.no_grad():
        _close(again(x, state)[0], cell(x, state)[0], f"cell {cls.name!r}: outputs after a save and load")
    json.dumps(cls.describe())


def check_corpus(cls, *, options: dict | None = None, max_pieces: int = 100_000) -> None:
    """A corpus gives ``str`` pieces and some text, the same text twice, and sensible declarations
    (``default_preprocess``, ``sample_prefix``, ``describe_source()``, a JSON-able ``fingerprint()``)."""
    from .components import Corpus

    assert isinstance(cls, type) and issubclass(cls, Corpus), f"{cls!r} is not a subclass of rnnstudio.Corpus"
    assert cls.name and cls.description, f"{cls.__name__} needs a name and a one-line description"
    assert cls.default_preprocess in ("raw", "d2l"), f"corpus {cls.name!r}: default_preprocess must be raw or d2l"
    assert isinstance(cls.sample_prefix, str), f"corpus {cls.name!r}: sample_prefix must be a str"
    corpus = cls(**(options or {}))

    def text() -> str:
        pieces = list(itertools.islice(corpus.iter_text(), max_pieces))
        for i, piece in enumerate(pieces, 1):
            assert isinstance(piece, str), f"corpus {cls.name!r}: piece {i} is a {type(piece).__name__}, not str"
        return "".join(pieces)

    first = text()
    assert first.strip(), f"corpus {cls.name!r} gave no text"
    assert text() == first, f"corpus {cls.name!r} gave a different text the second time"
    source = corpus.describe_source()
    assert isinstance(source, str) and source.strip(), f"corpus {cls.name!r}: describe_source() must name the source"
    json.dumps(corpus.fingerprint())  # None, or JSON-able data
    json.dumps(cls.describe())


def _metric_inputs(seed: int, n: int = 40, vocab: int = 9):
    import torch

    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, vocab, generator=g)
    targets = torch.randint(0, vocab, (n,), generator=g)
    nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    return logits, targets, nll


def _char_vocab(size: int):
    from .vocab import UNK, Vocab

    return Vocab([UNK, *"abcdefghijklmnopqrstuvwxyz"[: size - 1]], "char")


def check_metric(cls, *, options: dict | None = None, seed: int = 0) -> None:
    """A metric gives a finite number, accumulates (two halves equal the whole), really resets, and, when
    it has ``state()``/``merge()``, merges two shares into the value of the whole. ``use_vocab`` is given
    a small character vocabulary first when the metric has it."""
    from .components import Metric

    assert isinstance(cls, type) and issubclass(cls, Metric), f"{cls!r} is not a subclass of rnnstudio.Metric"
    assert cls.name and cls.description, f"{cls.__name__} needs a name and a one-line description"
    assert isinstance(cls.on_train, bool), f"metric {cls.name!r}: on_train must be True or False"
    logits, targets, nll = _metric_inputs(seed)

    def fresh():
        m = cls(**(options or {}))
        if callable(getattr(m, "use_vocab", None)):
            m.use_vocab(_char_vocab(logits.shape[1]))
        m.reset()
        return m

    whole = fresh()
    whole.update(logits, targets, nll)
    value = float(whole.value())
    assert math.isfinite(value), f"metric {cls.name!r}: value() is {value} on ordinary inputs"
    halves = fresh()
    halves.update(logits[:15], targets[:15], nll[:15])
    halves.update(logits[15:], targets[15:], nll[15:])
    assert math.isclose(float(halves.value()), value, rel_tol=1e-6, abs_tol=1e-9), (
        f"metric {cls.name!r}: two halves give {float(halves.value())}, the whole {value}: it must accumulate")
    other = _metric_inputs(seed + 1)
    whole.reset()
    whole.update(*other)
    again = fresh()
    again.update(*other)
    assert math.isclose(float(whole.value()), float(again.value()), rel_tol=1e-6, abs_tol=1e-9), (
        f"metric {cls.name!r}: reset() does not clear what update() accumulated")
    if callable(getattr(whole, "state", None)) and callable(getattr(whole, "merge", None)):
        a, b = fresh(), fresh()
        a.update(logits[:15], targets[:15], nll[:15])
        b.update(logits[15:], targets[15:], nll[15:])
        a.merge(json.loads(json.dumps(b.state())))
        assert math.isclose(float(a.value()), value, rel_tol=1e-6, abs_tol=1e-9), (
            f"metric {cls.name!r}: merge(state()) of two shares gives {float(a.value())}, the whole {value}")


def check_tokenizer(cls, *, options: dict | None = None, text: str | None = None) -> None:
    """A tokenizer learns (``fit``), splits into ``str`` tokens, joins them back to the same text (or, for a
    tokenizer that normalises whitespace, to a text that splits the same way), and its ``state()``
    survives JSON and ``load_state`` into a fresh instance that splits identically."""
    from .components import Tokenizer

    assert isinstance(cls, type) and issubclass(cls, Tokenizer), f"{cls!r} is not a subclass of rnnstudio.Tokenizer"
    assert cls.name and cls.description, f"{cls.__name__} needs a name and a one-line description"
    text = text or ("The cat sat on the mat. The dog sat on the log.\nA cat and a dog: friends? " * 30)
    tok = cls(**(options or {}))
    tok.fit(lambda: iter(text[i: i + 500] for i in range(0, len(text), 500)))
    tokens = tok.split(text)
    assert isinstance(tokens, list) and tokens, f"tokenizer {cls.name!r}: split() gave {type(tokens).__name__} {tokens!r:.60}"
    assert all(isinstance(t, str) and t for t in tokens), f"tokenizer {cls.name!r}: every token must be a non-empty str"
    joined = tok.join(tokens)
    assert isinstance(joined, str)
    assert joined == text or tok.split(joined) == tokens, (
        f"tokenizer {cls.name!r}: join(split(text)) neither gives the text back nor splits into the same tokens")
    state = json.loads(json.dumps(tok.state()))
    fresh = cls(**(options or {}))
    fresh.load_state(state)
    assert fresh.split(text) == tokens, f"tokenizer {cls.name!r}: a fresh one with load_state(state()) splits differently"
    json.dumps(cls.describe())
