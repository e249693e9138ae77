"""The plugin hooks: each kind of component has one hook that receives a ``register`` callback."""

import pluggy

hookspec = pluggy.HookspecMarker("rnnstudio")
hookimpl = pluggy.HookimplMarker("rnnstudio")


@hookspec
def register_corpora(register):
    """Register corpus classes by calling ``register(MyCorpus)`` for each.

    A corpus class subclasses ``rnnstudio.Corpus`` and declares ``name``,
    ``description`` and ``params``; it yields text from ``iter_text()`` (or ``read()``).
    """


@hookspec
def register_cells(register):
    """Register recurrent cell classes by calling ``register(MyCell)`` for each.

    A cell class subclasses ``rnnstudio.Cell``: ``forward(inputs, state)`` maps inputs
    ``(T, B, E)`` and a state to outputs ``(T, B, H)`` and the new state.
    """


@hookspec
def register_metrics(register):
    """Register metric classes by calling ``register(MyMetric)`` for each.

    A metric class subclasses ``rnnstudio.Metric`` and implements ``reset()``,
    ``update(logits, targets, nll)`` and ``value()``.
    """
