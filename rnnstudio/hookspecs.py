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


@hookspec
def register_tokenizers(register):
    """Register tokenizer classes by calling ``register(MyTokenizer)`` for each.

    A tokenizer class subclasses ``rnnstudio.Tokenizer`` and implements ``split(text)``; one that
    learns from the corpus also implements ``fit(pieces)``, ``state()`` and ``load_state(state)``.
    """


@hookspec
def register_observers(register):
    """Register observer classes by calling ``register(MyObserver)`` for each.

    An observer class subclasses ``rnnstudio.Observer``: it receives every event of a training
    run (``observe(event)``) and ``close(status, error)`` at its end. One that raises is disabled
    with a warning; the run goes on.
    """


@hookspec
def register_pages(register):
    """Register pages of the desktop app by calling ``register(title, factory)`` for each.

    ``factory(context)`` is called once, on the GUI thread, when the main window is built. It gets a
    ``rnnstudio.gui.pages.PageContext`` (``host``, ``window``, the signals ``models_changed``,
    ``training_started`` and ``training_ended``, and ``show_status(text)``) and returns a ``QWidget``,
    shown as a tab titled ``title``. Import Qt inside the factory: plugins load without a display.
    """
