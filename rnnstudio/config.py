"""TrainConfig: every training setting, declared once with its help, limits and group (see settings.py)."""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .settings import SettingError, check, schema, setting, to_argv
from .recipe import RECIPES

OPTIMIZERS = ("sgd", "adam", "adamw")
DEFAULT_LR = {"sgd": 1.0, "adam": 0.005, "adamw": 0.005}
SCHEDULES = ("constant", "cosine", "linear")
FINAL_LR_RATIO = 0.1  # cosine and linear decay to a tenth of the learning rate (nanoGPT: min_lr = lr / 10)
# Above ~709.8 nats a token the perplexity exp(loss) overflows to inf: only a diverged model gets there.
# (With clipping, lr=1e6 keeps the gradients finite and the loss jumps to ~1e6 instead of NaN.)
MAX_LOSS = math.log(sys.float_info.max)
WEIGHT_CHOICES = ("best", "last")  # which of a model's two weight files to use
SEED_MAX = 2**63 - 1  # torch.manual_seed takes a 64-bit seed


class RegisteredNames:
    """The names of one kind of plugin component, as a setting's choices (the GUI's list). Listing them loads
    the plugins; a membership test only checks for a name, since the component is looked up, with a
    "did you mean", when it is made (and reading a saved model's settings never loads plugins)."""

    def __init__(self, kind: str):
        self.kind = kind

    def _names(self) -> list[str]:
        from .plugins import default_host

        return default_host().names(self.kind)

    def __iter__(self):
        return iter(self._names())

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and bool(name.strip())

    def __len__(self) -> int:
        return len(self._names())

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"RegisteredNames({self.kind!r})"


@dataclass
class TrainConfig:
    """One training run. Settings marked ``saved`` belong to the model: a resume keeps their saved values."""

    # data
    corpus: str = setting("python-docs", group="data", saved=True,  # the offline built-in default
                          help="corpus plugin")
    corpus_options: dict[str, Any] = setting(default_factory=dict, group="data", saved=True, flag="--corpus-opt",
                                             help="a corpus option; repeatable")
    tokens: str = setting("char", group="data", saved=True, choices=RegisteredNames("tokenizer"),  # d2l 8.5: chars
                          metavar="NAME", help="tokenizer plugin: what a token is (char, word, bpe, ...)")
    tokens_options: dict[str, Any] = setting(default_factory=dict, group="data", saved=True, flag="--tokens-opt",
                                             help="a tokenizer option, e.g. vocab_size=2000 for bpe; repeatable")
    preprocess: str | None = setting(None, group="data", saved=True, choices=("raw", "d2l"),
                                     # None: the corpus's own default (d2l for time-machine, raw otherwise)
                                     placeholder="corpus default", help="d2l: lowercase, non-letters to spaces (default: the corpus's own)")
    min_freq: int = setting(0, group="data", saved=True, min=0,  # d2l's Vocab drops rarer tokens
                            help="tokens seen fewer times become <unk>")
    max_tokens: int = setting(0, group="data", saved=True, min=0,  # d2l uses 10000
                              help="use only the first N tokens (0: all)")
    val_fraction: float = setting(0.1, group="data", saved=True, min=0, below=1,
                                  help="the last fraction of the tokens held out for validation")
    # model
    cell: str = setting("gru", group="model", saved=True,  # a fused cell: fast and strong out of the box
                        help="cell plugin")
    cell_options: dict[str, Any] = setting(default_factory=dict, group="model", saved=True, flag="--cell-opt",
                                           help="a cell option; repeatable")
    hidden_size: int = setting(256, group="model", saved=True, min=1, max=1_000_000,  # d2l 9.1's size
                               help="hidden units per layer")
    num_layers: int = setting(1, group="model", saved=True, min=1, max=10_000, label="layers",
                              help="stacked recurrent layers")
    dropout: float = setting(0.0, group="model", saved=True, min=0, below=1,
                             help="dropout between stacked layers (no effect with one layer)")
    # Its own setting, not --dropout's: the best rates differ. Measured (quality.py's setup, The Time Machine,
    # --max-steps 2000, 2 layers): 0.3 between layers and 0.5 here 2.244 nats/char, 0.5 at both 2.319.
    output_dropout: float = setting(0.0, group="model", saved=True, min=0, below=1, label="output dropout",
                                    help="dropout on the top layer's outputs, before the output layer")
    encoding: str = setting("onehot", group="model", saved=True, choices=("onehot", "embedding"),  # d2l's
                            help="how tokens enter the cell")
    embed_size: int = setting(0, group="model", saved=True, min=0, max=1_000_000,
                              help="embedding size for --encoding embedding (0: the hidden size)")
    # optimisation
    # d2l 8.5's 32. Measured at a 60 s budget (time machine, 2 CPU cores): 64 and 128 scored worse (2.93 and
    # 2.98 nats/char vs 2.80): fewer updates in the same time, so 32 stays.
    batch_size: int = setting(32, group="training", min=1, max=1_000_000,
                              help="streams trained side by side")
    seq_len: int = setting(35, group="training", min=1, max=1_000_000, label="sequence length",  # d2l's num_steps
                           help="steps of truncated backpropagation through time")
    epochs: int = setting(0, group="training", min=0, exclusive="length", widget="length",
                          help="stop after this many epochs (with no length given: one epoch)")
    max_steps: int = setting(0, group="training", min=0, exclusive="length", label="steps", widget="length",
                             help="stop after this many optimizer steps in total")
    minutes: float = setting(0.0, group="training", min=0, max=1e7, exclusive="length", widget="length",
                             help="stop after this many minutes in total, validation included, then validate and "
                                  "save (0: no time limit)")
    optimizer: str = setting("adam", group="training", choices=OPTIMIZERS,  # adam needs far fewer steps than sgd
                             help="sgd is d2l's")
    lr: float | None = setting(None, group="training", above=0, label="learning rate",
                               placeholder="default: adam 0.005, sgd 1", help="learning rate (default: 1 for sgd, 0.005 for adam)")
    recipe: str = setting("auto", group="training", choices=RECIPES,  # see rnnstudio/recipe.py for the measurements
                          help="auto: with --minutes, decay the learning rate over the budget and, the more epochs "
                               "the budget holds, regularise more (output dropout, then 2 layers with dropout and "
                               "weight decay; only settings left at their defaults change); manual: every setting "
                               "as given")
    schedule: str = setting("constant", group="training", choices=SCHEDULES,  # d2l's: one learning rate throughout
                            help="learning-rate schedule after the warm-up: constant, or cosine/linear decay to a "
                                 "tenth (over a time budget it follows the elapsed fraction)")
    warmup: int = setting(0, group="training", min=0, label="warm-up steps",
                          help="optimizer steps of linear warm-up to the learning rate (0: none)")
    weight_decay: float = setting(0.0, group="training", min=0, label="weight decay",  # 0: plain Adam's behaviour
                                  help="decoupled weight decay (needs --optimizer adamw)")
    clip: float = setting(1.0, group="training", min=0,  # d2l 8.5: rescale when the global norm is > 1
                          help="gradient clipping threshold θ (0: off)")
    partition: str = setting("sequential", group="training", choices=("sequential", "random"),
                             # d2l's sequential partitioning carries the state across batches
                             help="how the text is cut into batches")
    seed: int = setting(0, group="training", min=-SEED_MAX - 1, max=SEED_MAX, help="random seed")
    device: str = setting("auto", group="device", widget="device", help="auto, cpu, cuda, cuda:N or mps")
    threads: int = setting(0, group="device", min=0, label="CPU threads",
                           help="CPU threads (0: auto)")
    # bookkeeping
    name: str | None = setting(None, group="saving", label="model name",
                               placeholder="automatic: corpus-cell-time", help="model name (default: corpus-cell-time)")
    resume: bool = setting(False, group="saving", label="continue this saved model",
                           help="continue training the saved model --name with its own data, model and recipe "
                                "(the length, --lr and bookkeeping may change)")
    patience: int = setting(0, group="saving", min=0,
                            help="stop after this many validations in a row without a better perplexity (0: never)")
    eval_every: int = setting(200, group="saving", min=0, label="validate every",
                              help="steps between validations (also at every epoch end and at the end; 0: only then)")
    sample_every: int = setting(0, group="saving", min=0, label="sample every",
                                help="steps between sample previews (0: none)")
    sample_length: int = setting(60, group="saving", min=1, max=100_000, help="characters in a sample preview")
    checkpoint_every: int = setting(500, group="saving", min=0, label="checkpoint every",
                                    help="steps between checkpoints (0: only at the end)")
    checkpoint_minutes: float = setting(5.0, group="saving", min=0, label="checkpoint minutes",
                                        help="and at least this often, in minutes (0: no timer)")
    explode_factor: float = setting(3.0, group="saving", above=1,  # char-rnn: a loss above 3x the first ...
                                    help="warn when the loss stays above this multiple of the first loss")
    explode_patience: int = setting(20, group="saving", min=1,  # ... for this many steps in a row
                                    help="for this many steps in a row")
    tensorboard: str | None = setting(None, group="saving", label="TensorBoard folder", metavar="DIR",
                                      placeholder="off",  # None: no event files (the tensorboard extra is optional)
                                      help="also write TensorBoard event files to DIR/<model name> "
                                           "(pip install 'rnnstudio[tensorboard]')")
    metrics: str = setting("", group="saving", metavar="A,B", placeholder="all",  # "": every registered metric
                           help="the metric plugins to compute, comma-separated (perplexity always runs; "
                                "default: all)")
    metric_options: dict[str, Any] = setting(default_factory=dict, group="saving", flag="--metric-opt", gui=False,
                                             metavar="NAME.KEY=VALUE", help="a metric option; repeatable")
    save: bool = setting(True, group="saving", cli=False, gui=False,  # False: in memory only (benchmarks)
                         help="save the model")
    # data parallelism (set by the distributed launcher)
    rank: int = setting(0, group="training", cli=False, gui=False, min=0, help="this process's rank")
    world_size: int = setting(1, group="training", cli=False, gui=False, min=1, help="number of processes")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR.get(self.optimizer, 0.001)

    def validate(self) -> None:
        """Settings errors, raised before any file is created; messages name settings as ``{field}``."""
        check(self)
        if self.weight_decay and self.optimizer != "adamw":
            raise settings_error("{weight_decay} needs {optimizer} adamw (now {opt})", opt=self.optimizer)
        if self.minutes and self.world_size > 1:  # each rank's clock differs: the ranks could not agree when to stop
            raise settings_error("{minutes} is for one process; under torchrun use {max_steps} or {epochs}")
        if self.name is not None:
            from .checkpoint import check_name

            check_name(self.name)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def saved_settings() -> tuple[str, ...]:
    """The data and model settings saved with a model (a resume takes them, and the rest of the recipe, from it)."""
    return tuple(s.name for s in schema(TrainConfig) if s.meta.saved)


# What a --resume may change: the run's length, the learning rate (lowered after a divergence), bookkeeping and
# the device. Everything else (the data and model settings and the rest of the training recipe: optimizer,
# schedule, warm-up, batch size, sequence length, clipping, ...) comes from the saved run, so that 200 + 200
# steps equal 400.
RESUME_MAY_CHANGE = ("epochs", "max_steps", "minutes", "lr", "patience", "device", "threads", "eval_every",
                     "sample_every", "sample_length", "checkpoint_every", "checkpoint_minutes", "explode_factor",
                     "explode_patience", "metrics", "metric_options", "save", "rank", "world_size", "tensorboard",
                     "name", "resume")


def resume_keeps() -> tuple[str, ...]:
    """The settings a resume takes from the saved run (giving one on the command line is an error)."""
    return tuple(s.name for s in schema(TrainConfig) if s.name not in RESUME_MAY_CHANGE)


def settings_error(template: str, **values: Any) -> SettingError:
    """A training-settings error naming settings as ``{field}``: flags in the CLI, labels in the GUI."""
    return SettingError(template, config=TrainConfig, **values)


def command_for_config(config: TrainConfig, *, distributed: bool = False, nproc: int = 2) -> list[str]:
    """The ``rnnstudio train ...`` argv that reproduces ``config`` (only non-default settings are listed).

    ``distributed`` gives the ``torchrun --standalone --nproc_per_node=N -m rnnstudio train ... --distributed`` form.
    """
    args = to_argv(config)
    if distributed:
        return ["torchrun", "--standalone", f"--nproc_per_node={nproc}", "-m", "rnnstudio", "train", *args, "--distributed"]
    return ["rnnstudio", "train", *args]


@dataclass
class SamplingConfig:
    """How to generate text from a model (the ``generate`` options and the Generate panel)."""

    length: int = setting(100, group="generation", min=0, max=10_000_000,
                          help="tokens to generate after the prefix")
    greedy: bool = setting(False, group="generation",  # exactly d2l's predict_ch8
                           help="argmax at every step (d2l's predict_ch8)")
    temperature: float = setting(1.0, group="generation", above=0, max=100, many=True,  # <1 sharper, >1 more adventurous
                                 help="one or more, e.g. 0.5 1.0 (or 0.5,1.0)")
    top_k: int = setting(0, group="generation", min=0, label="top-k",
                         help="keep only the k most likely tokens (0: all)")
    top_p: float = setting(1.0, group="generation", above=0, max=1, label="top-p",
                           help="keep the smallest set of tokens whose probability reaches p (1: all)")
    seed: int | None = setting(None, group="generation", min=-SEED_MAX - 1, max=SEED_MAX,
                               help="the same seed gives the same text (default: a random one)")
    num_samples: int = setting(1, group="generation", min=1, flag="--samples", label="samples",
                               help="continuations generated side by side, as one batch")
    weights: str = setting("best", group="generation", choices=WEIGHT_CHOICES,  # the best generalises best
                           help="best: the best-by-validation weights; last: the last step's")
    stop_at: str | None = setting(None, group="generation", label="stop at", placeholder="e.g. \\n or a full stop",
                                  help=r"stop a sample once its text ends with this, e.g. '\n\n'")

    def validate(self) -> None:
        """Types and ranges from the schema; greedy decoding ignores the temperature."""
        check(replace(self, temperature=1.0) if self.greedy else self)
