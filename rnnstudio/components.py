"""Base classes for the kinds of plugin component: corpora, cells, metrics and tokenizers."""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Iterable, Iterator, Sequence

import torch
from torch import nn

from .params import Param, resolve_options


class Component:
    """What every component declares: a unique ``name``, a one-line ``description`` and its ``params``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()

    @classmethod
    def resolve_options(cls, given: dict[str, Any] | None = None) -> dict[str, Any]:
        """Defaults overlaid with the user's options, checked against ``params``."""
        return resolve_options(tuple(cls.params), dict(given or {}), f"{cls.name!r}")

    @classmethod
    def describe(cls) -> dict:
        return {"name": cls.name, "description": cls.description, "params": [p.to_json() for p in cls.params]}


class Corpus(Component):
    """A source of text. Subclasses implement ``iter_text`` (streamed) or ``read`` (whole).

    ``options`` holds the resolved values of ``params``. Raise ``RNNStudioError`` for a
    problem the user can fix (a missing file, bad bytes).
    """

    #: "raw" keeps the text as it is; "d2l" lowercases and turns each run of non-letters into a space.
    default_preprocess: ClassVar[str] = "raw"
    #: Text the trainer's sample preview starts from.
    sample_prefix: ClassVar[str] = "The "

    def __init__(self, **options: Any):
        self.options = type(self).resolve_options(options)

    def iter_text(self) -> Iterator[str]:
        """Yield the text in pieces. Pieces may split a word; the data pipeline handles that."""
        yield self.read()

    def read(self) -> str:
        """The whole text. Subclasses override this or ``iter_text``."""
        raise NotImplementedError(f"corpus {self.name!r} implements neither read() nor iter_text()")

    def describe_source(self) -> str:
        """A short human description of where the text comes from (for previews and model lists)."""
        return self.name

    def fingerprint(self):
        """JSON-able data that changes whenever the text does, found without reading the text (for files:
        ``rnnstudio.files_fingerprint(paths)``). With one, the encoded corpus is cached and later runs skip
        tokenizing; None (the default) encodes the text afresh every run."""
        return None


class Cell(nn.Module, Component):
    """A recurrent layer stack mapping inputs ``(T, B, E)`` and a state to outputs ``(T, B, H)`` and a new state.

    The core owns the input encoding and the output projection; a cell owns only the recurrence.
    The state is whatever ``begin_state`` returns (a tensor or a tuple of tensors), always passed
    in and returned, never stored on the module.

    Two optional methods make a cell faster; the core uses them when present:
    ``step(x, state) -> (h, state)`` runs one time step for generation (x (N, E), h the top layer's
    (N, H)), and ``forward_tokens(idx, state)`` is ``forward`` on one-hot inputs given as token ids
    (T, B), so a cell can gather weight rows instead of multiplying by one-hot vectors.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0, **options: Any):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        self.options = type(self).resolve_options(options)

    def begin_state(self, batch_size: int, device: torch.device | str = "cpu"):
        """The initial state: by default zeros of shape (num_layers, B, H)."""
        return torch.zeros(self.num_layers, batch_size, self.hidden_size, device=device)

    def forward(self, inputs: torch.Tensor, state):  # (T, B, E), state -> (T, B, H), state
        raise NotImplementedError

    def hidden_units(self, state) -> dict[str, torch.Tensor]:
        """Named views of a state for inspection, each (num_layers, B, H). LSTM adds its cell ``c``."""
        if isinstance(state, tuple):
            return {"h": state[0]}
        return {"h": state}


class Metric(Component):
    """Accumulates over a stream of predictions and reports one number.

    ``update`` gets ``logits`` (N, V), ``targets`` (N,) and the per-token negative
    log-likelihood ``nll`` (N,) in nats, all detached. ``value`` reports what has been
    accumulated since the last ``reset``.

    Optional, for data-parallel training: ``state()`` returns the accumulated numbers as a
    small JSON-like dict and ``merge(state)`` adds another process's state, so validation
    reports the value over the whole split. Without them a metric reports rank 0's share.

    Optional: ``use_vocab(vocab)`` is called with the model's ``Vocab`` before the first update (for
    metrics per character: ``vocab.char_lengths()``).
    """

    #: True when a larger value is better (accuracy); False for perplexity or loss.
    higher_is_better: ClassVar[bool] = False
    #: True: ``update`` also runs on every training batch (the value joins the train curves). False (the
    #: default): only at validation and in ``score``, so a slow metric never slows training down.
    on_train: ClassVar[bool] = False

    def __init__(self, **options: Any):
        self.options = type(self).resolve_options(options)
        self.reset()

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, logits: torch.Tensor, targets: torch.Tensor, nll: torch.Tensor) -> None:
        raise NotImplementedError

    def value(self) -> float:
        raise NotImplementedError


class Tokenizer(Component):
    """Cuts text into tokens (strings) and joins tokens back into text. The core numbers the tokens
    (``<unk>`` is 0) and keeps that vocabulary; a tokenizer only decides what a token is.

    A tokenizer that learns from the corpus (BPE) does it in ``fit``; what it learned comes back from
    ``state()`` as JSON and is given to ``load_state`` when a saved model is opened (``tokenizer.json``).
    """

    #: What a token is called in score's output: "characters", "words", "tokens".
    unit: ClassVar[str] = "tokens"
    #: The text between two joined tokens: "" when tokens are pieces of the text, " " for words.
    separator: ClassVar[str] = ""
    #: True when every character is one token: the core then encodes in one vectorised pass.
    one_token_per_character: ClassVar[bool] = False
    #: True when a token never spans whitespace, so the corpus may be cut into pieces at whitespace only.
    #: False: pieces may be cut anywhere (characters).
    whole_words: ClassVar[bool] = True

    def __init__(self, **options: Any):
        self.options = type(self).resolve_options(options)

    def fit(self, pieces: Callable[[], Iterable[str]]) -> None:
        """Learn from the training text before it is encoded; ``pieces()`` iterates over it afresh each call.
        The default learns nothing."""

    def split(self, text: str) -> list[str]:
        """The tokens of ``text``, in order."""
        raise NotImplementedError(f"tokenizer {self.name!r} does not implement split()")

    def join(self, tokens: Sequence[str]) -> str:
        """The text of a sequence of tokens (generation decodes with this)."""
        return self.separator.join(tokens)

    def learnt_tokens(self) -> list[str] | None:
        """Every token a fitted tokenizer can produce, so each gets an id whether the corpus shows it or not;
        None (the default): the vocabulary is the tokens seen in the corpus."""
        return None

    def state(self) -> dict:
        """What ``fit`` learned, as JSON-able data (saved as ``tokenizer.json``); {} when nothing."""
        return {}

    def load_state(self, state: dict) -> None:
        """Restore what ``state()`` returned. Raise ``ValueError`` for data that is not a valid state."""
