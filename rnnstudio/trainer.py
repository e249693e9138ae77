"""The trainer: turns a TrainConfig into a stream of plain events. It knows nothing of Qt or the CLI."""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from . import checkpoint as ckpt
from .data import PREPROCESSINGS, TOKENIZERS, BatchPlan, EncodedCorpus, Vocab, encode_stream, eval_batches, train_val_split
from .devices import resolve_device
from .errors import RNNStudioError
from .model import ModelConfig, RNNLanguageModel, count_parameters, detach_state, state_tensors
from .sampling import SamplingConfig, generate_text

OPTIMIZERS = ("sgd", "adam")
DEFAULT_LR = {"sgd": 1.0, "adam": 0.005}
# Above ~709.8 nats a token the perplexity exp(loss) overflows to inf: only a diverged model gets there.
# (With clipping, lr=1e6 keeps the gradients finite and the loss jumps to ~1e6 instead of NaN.)
MAX_LOSS = math.log(sys.float_info.max)


@dataclass
class TrainConfig:
    """One training run. Model and data fields are saved with the model; resume reuses them."""

    # data
    corpus: str = "python-docs"  # the offline built-in default
    corpus_options: dict[str, Any] = field(default_factory=dict)
    tokens: str = "char"  # char-level as in d2l 8.5; "word" for word-level models
    preprocess: str | None = None  # None: the corpus's own default (d2l for time-machine, raw otherwise)
    min_freq: int = 0  # d2l's Vocab: drop tokens seen fewer times (they become <unk>)
    max_tokens: int = 0  # keep only the first N tokens (d2l uses 10000); 0 keeps all
    val_fraction: float = 0.1  # the last 10% of tokens are held out for validation
    # model
    cell: str = "gru"  # a fused cell: fast and strong out of the box
    cell_options: dict[str, Any] = field(default_factory=dict)
    hidden_size: int = 256  # d2l 9.1's size
    num_layers: int = 1
    dropout: float = 0.0
    encoding: str = "onehot"  # d2l's input encoding
    embed_size: int = 0  # for encoding="embedding"; 0 means hidden_size
    # optimisation
    batch_size: int = 32  # d2l 8.5
    seq_len: int = 35  # d2l 8.5's num_steps
    epochs: int = 0  # stop after this many epochs; 0: no epoch limit
    max_steps: int = 0  # stop after this many optimizer steps in total; 0: no step limit (1 epoch if both 0)
    optimizer: str = "adam"  # adam reaches a good perplexity in far fewer steps than d2l's sgd
    lr: float | None = None  # None: 1.0 for sgd (d2l), 0.005 for adam
    clip: float = 1.0  # d2l 8.5: rescale when the global gradient norm is > 1; 0 turns it off
    partition: str = "sequential"  # d2l's sequential partitioning carries the state across batches
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # torch CPU threads; 0: auto, every core (one left free in the GUI; see auto_threads)
    # bookkeeping
    name: str | None = None  # model folder name; None: derived from corpus, cell and time
    resume: bool = False
    eval_every: int = 200  # steps between validations (also at every epoch end and at the end)
    sample_every: int = 0  # steps between sample previews; 0: none
    sample_length: int = 60
    checkpoint_every: int = 500  # steps between checkpoints
    checkpoint_minutes: float = 5.0  # and at least this often, in minutes
    explode_factor: float = 3.0  # char-rnn: warn when the loss is above 3x the first loss ...
    explode_patience: int = 20  # ... for this many steps in a row
    save: bool = True  # False: train in memory only (benchmarks)
    # data parallelism (set by the distributed launcher)
    rank: int = 0
    world_size: int = 1

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR.get(self.optimizer, 0.001)

    def validate(self) -> None:
        """Settings errors, raised before any file is created."""
        checks = [
            (self.tokens in TOKENIZERS, f"--tokens must be one of {', '.join(TOKENIZERS)}, got {self.tokens!r}"),
            (self.preprocess is None or self.preprocess in PREPROCESSINGS,
             f"--preprocess must be one of {', '.join(PREPROCESSINGS)}, got {self.preprocess!r}"),
            (self.min_freq >= 0, f"min-freq must be >= 0, got {self.min_freq}"),
            (self.max_tokens >= 0, f"max-tokens must be >= 0, got {self.max_tokens}"),
            (0 <= self.val_fraction < 1, f"val-fraction must be in [0, 1), got {self.val_fraction}"),
            (self.hidden_size >= 1, f"hidden size must be at least 1, got {self.hidden_size}"),
            (self.num_layers >= 1, f"number of layers must be at least 1, got {self.num_layers}"),
            (0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}"),
            (self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}"),
            (self.seq_len >= 1, f"sequence length must be at least 1, got {self.seq_len}"),
            (self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}"),
            (self.max_steps >= 0, f"max-steps must be >= 0, got {self.max_steps}"),
            (self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (self.learning_rate > 0 and math.isfinite(self.learning_rate),
             f"learning rate must be a positive number, got {self.learning_rate}"),
            (self.clip >= 0, f"clip must be >= 0 (0 turns clipping off), got {self.clip}"),
            (self.partition in ("sequential", "random"), f"--partition must be sequential or random, got {self.partition!r}"),
            (self.threads >= 0, f"threads must be >= 0, got {self.threads}"),
            (self.eval_every >= 0 and self.sample_every >= 0 and self.checkpoint_every >= 0,
             "eval/sample/checkpoint intervals must be >= 0"),
            (self.checkpoint_minutes >= 0, f"checkpoint-minutes must be >= 0, got {self.checkpoint_minutes}"),
        ]
        for ok, message in checks:
            if not ok:
                raise RNNStudioError(message)
        if self.name is not None:
            ckpt.check_name(self.name)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# -- events -------------------------------------------------------------------------------

@dataclass
class Event:
    def to_json(self) -> dict:
        return {"event": self.kind, **asdict(self)}

    kind = "event"


@dataclass
class Started(Event):
    kind = "started"
    model: str
    device: str
    vocab_size: int
    train_tokens: int
    val_tokens: int
    steps_per_epoch: int
    total_steps: int  # 0 when unbounded
    parameters: int
    step: int  # > 0 when resuming
    epoch: int
    path: str


@dataclass
class Progress(Event):
    kind = "progress"
    step: int
    total_steps: int
    epoch: int
    batch: int
    batches: int
    loss: float
    tokens_per_s: float
    elapsed: float
    eta: float | None
    train: dict[str, float]


@dataclass
class Evaluated(Event):
    kind = "evaluated"
    step: int
    epoch: int
    val: dict[str, float]
    best: bool


@dataclass
class Sampled(Event):
    kind = "sample"
    step: int
    text: str


@dataclass
class Checkpointed(Event):
    kind = "checkpoint"
    step: int
    path: str


@dataclass
class Warned(Event):
    kind = "warning"
    step: int
    message: str


@dataclass
class Finished(Event):
    kind = "summary"
    model: str
    path: str | None
    steps: int
    epochs: int
    stopped: bool
    train_perplexity: float | None
    val_perplexity: float | None
    tokens_per_s: float
    seconds: float
    device: str
    train: dict[str, float]
    val: dict[str, float]


# -- evaluation ---------------------------------------------------------------------------

class MetricSet:
    """The metric plugins for one split; a metric that raises is disabled with a warning."""

    def __init__(self, classes: dict[str, type], warn):
        self.metrics = {}
        self.warn = warn
        for name, cls in classes.items():
            try:
                self.metrics[name] = cls()
            except Exception as exc:
                warn(f"metric {name!r} disabled: it raised {type(exc).__name__}: {exc}")

    def _guard(self, name, fn):
        try:
            return fn()
        except Exception as exc:
            self.metrics.pop(name, None)
            self.warn(f"metric {name!r} disabled: it raised {type(exc).__name__}: {exc}")
            return None

    def reset(self):
        for name, m in list(self.metrics.items()):
            self._guard(name, m.reset)

    def update(self, logits, targets, nll):
        for name, m in list(self.metrics.items()):
            self._guard(name, lambda m=m: m.update(logits, targets, nll))

    def values(self) -> dict[str, float]:
        out = {}
        for name, m in list(self.metrics.items()):
            v = self._guard(name, m.value)
            if v is not None:
                try:
                    out[name] = float(v)
                except (TypeError, ValueError):
                    self.metrics.pop(name, None)
                    self.warn(f"metric {name!r} disabled: value() returned {v!r}, not a number")
        return out


@torch.no_grad()
def evaluate(model, ids: torch.Tensor, batch_size: int, seq_len: int, metrics: MetricSet, device,
             *, rank: int = 0, world_size: int = 1) -> dict[str, float]:
    """Metrics over every next-token prediction of ``ids``, state carried along each row."""
    was = model.training
    model.eval()
    metrics.reset()
    state = None
    try:
        for X, Y, fresh in eval_batches(ids, batch_size, seq_len, rank=rank, world_size=world_size):
            X, Y = X.to(device), Y.to(device)
            if fresh or state is None:
                state = model.begin_state(X.shape[0], device)
            logits, state = model.forward_flat(X, state)
            y = model.flat_targets(Y)
            nll = F.cross_entropy(logits.float(), y, reduction="none")
            metrics.update(logits, y, nll)
    finally:
        model.train(was)
    return metrics.values()


# -- the training loop --------------------------------------------------------------------

def auto_threads(device) -> int:
    """threads=0 on a CPU. In the main thread (the CLI): torch's default, every core; on a quiet 2-core
    machine a hidden-512 GRU trains ~1.4x faster with 2 threads than with 1. In a background thread (the
    GUI's worker): at most ``cores - 1``, so the event loop keeps a core; OpenMP threads spin at every
    barrier, and one descheduled by the GUI thread stalls the whole step."""
    if torch.device(device).type != "cpu" or threading.current_thread() is threading.main_thread():
        return torch.get_num_threads()
    return max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) - 1))


def _load_corpus(host, config: TrainConfig, vocab: Vocab | None) -> tuple[EncodedCorpus, Any]:
    corpus_cls = host.corpus(config.corpus)
    source = f"corpus {config.corpus!r}"
    try:
        corpus = corpus_cls(**config.corpus_options)
        preprocess = config.preprocess or corpus_cls.default_preprocess
        encoded = encode_stream(corpus.iter_text, tokenizer=config.tokens, preprocess=preprocess,
                                min_freq=config.min_freq, max_tokens=config.max_tokens, vocab=vocab)
    except RNNStudioError as exc:
        raise RNNStudioError(str(exc), source=exc.source or source) from None
    except MemoryError:
        raise RNNStudioError("the corpus does not fit in memory; use --max-tokens to train on a part of it",
                             source=source) from None
    except Exception as exc:
        raise RNNStudioError(f"the corpus plugin raised {type(exc).__name__}: {exc}", source=source) from None
    if len(encoded.ids) == 0 or not any(c.strip() for c in encoded.counts if isinstance(c, str)):
        raise RNNStudioError("the corpus is empty or only whitespace; give it some text to learn from", source=source)
    return encoded, corpus


def _sample_prefix(preferred: str, vocab: Vocab, train_ids: torch.Tensor) -> str:
    """The corpus's preferred preview prefix when the vocabulary knows all its tokens, else the text's first words."""
    if preferred and not vocab.unknown_tokens(preferred):
        return preferred
    n = 3 if vocab.tokenizer == "word" else 8
    return vocab.decode(train_ids[:n].tolist()) or vocab.idx_to_token[min(1, len(vocab) - 1)]


def _model_name(config: TrainConfig) -> str:
    return config.name or f"{config.corpus}-{config.cell}-{time.strftime('%Y%m%d-%H%M%S')}"


class Trainer:
    """``for event in Trainer(config).run(): ...`` — stop or pause from any thread with the two events."""

    def __init__(self, config: TrainConfig, *, host=None, stop_event: threading.Event | None = None,
                 pause_event: threading.Event | None = None):
        from .plugins import default_host

        self.config = config
        self.host = host or default_host()
        self.stop_event = stop_event or threading.Event()
        self.pause_event = pause_event or threading.Event()
        self.model: RNNLanguageModel | None = None
        self.vocab: Vocab | None = None
        self.name = _model_name(config)
        self._first_loss: float | None = None  # the explosion check's reference, kept across a resume

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> Iterator[Event]:
        """The training events; a run that saves is also recorded under runs/ (see runs.py)."""
        from .runs import record_run

        return record_run(self, self._run_events())

    # The body is one generator so that GUI and CLI consume the same events.
    def _run_events(self) -> Iterator[Event]:
        cfg = self.config
        saved = None
        if cfg.resume:
            if not cfg.name:
                raise RNNStudioError("--resume needs --name MODEL")
            path = ckpt.model_path(cfg.name)
            saved = ckpt.read_config(path)
            keep = {k: getattr(cfg, k) for k in ("epochs", "max_steps", "device", "threads", "eval_every",
                                                  "sample_every", "checkpoint_every", "checkpoint_minutes",
                                                  "save", "rank", "world_size")}
            if cfg.lr is not None:
                keep["lr"] = cfg.lr  # a resume may lower the learning rate, e.g. after a divergence
            cfg = TrainConfig.from_json({**saved.get("train", {}), **keep, "name": cfg.name, "resume": True})
            self.config = cfg
        cfg.validate()
        device = resolve_device(cfg.device)
        threads = cfg.threads or auto_threads(device)
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        metric_classes = {n: self.host.metric(n) for n in self.host.names("metric")}
        cell_cls = self.host.cell(cfg.cell)
        cell_cls.resolve_options(cfg.cell_options)  # option errors before any work

        vocab = ckpt.read_vocab(ckpt.model_path(cfg.name)) if saved else None
        encoded, corpus = _load_corpus(self.host, cfg, vocab)
        vocab = encoded.vocab
        self.vocab = vocab
        if len(vocab) <= 2 and not saved:
            raise RNNStudioError(
                f"the vocabulary has only {len(vocab) - 1} token(s) besides <unk>; a language model needs text "
                f"with at least two different tokens (lower --min-freq, or use more varied text)",
                source=f"corpus {cfg.corpus!r}")
        train_ids, val_ids = train_val_split(encoded.ids, cfg.val_fraction)
        first_plan = BatchPlan(train_ids, cfg.batch_size, cfg.seq_len, cfg.partition, seed=cfg.seed, epoch=0,
                               rank=cfg.rank, world_size=cfg.world_size)
        if len(first_plan) == 0:
            need = cfg.batch_size * cfg.world_size * cfg.seq_len + cfg.seq_len + 1
            raise RNNStudioError(
                f"the training text has {len(train_ids)} tokens, fewer than one batch needs "
                f"(about {need} = batch_size {cfg.batch_size} x seq_len {cfg.seq_len}); "
                f"use a smaller --batch-size or --seq-len, or more text", source=f"corpus {cfg.corpus!r}")

        mcfg = ModelConfig(cell=cfg.cell, vocab_size=len(vocab), hidden_size=cfg.hidden_size,
                           num_layers=cfg.num_layers, dropout=cfg.dropout, encoding=cfg.encoding,
                           embed_size=cfg.embed_size, cell_options=dict(cfg.cell_options))
        torch.manual_seed(cfg.seed)
        try:
            model = RNNLanguageModel(mcfg, cell_cls).to(device)
        except RNNStudioError:
            raise
        except torch.cuda.OutOfMemoryError:
            raise _out_of_memory(cfg, device) from None
        except Exception as exc:
            raise RNNStudioError(f"the cell plugin could not be built: {type(exc).__name__}: {exc}",
                                 source=f"cell {cfg.cell!r}") from None
        self.model = model
        params = list(model.parameters())
        if cfg.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=cfg.learning_rate)
        else:
            opt = torch.optim.Adam(params, lr=cfg.learning_rate)

        step, epoch, batch_start, hidden = 0, 0, 0, None
        best_val = math.inf
        if saved:
            meta, tensors = ckpt.load_train_state(ckpt.model_path(cfg.name))
            try:
                hidden_list = ckpt.restore_train_state(meta, tensors, model, opt)
                pos = meta["position"]
                step, epoch, batch_start = pos["step"], pos["epoch"], pos["batch"]
            except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
                raise RNNStudioError(
                    f"{ckpt.STATE} is corrupt or does not match the model ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}); restore it from a backup, or train a new "
                    f"model (generate still works from weights.safetensors)", source=f"model {cfg.name!r}") from None
            for group in opt.param_groups:
                group["lr"] = cfg.learning_rate
            best_val = pos.get("best_val", math.inf)
            self._first_loss = pos.get("first_loss")
            if hidden_list:
                hidden_list = [h.to(device) for h in hidden_list]
                hidden = tuple(hidden_list) if len(hidden_list) > 1 else hidden_list[0]
            hidden = self.scatter_state(hidden, saved.get("train", {}).get("world_size", 1))

        steps_per_epoch = len(first_plan)
        total = cfg.max_steps or (cfg.epochs * steps_per_epoch if cfg.epochs else 0)
        if not cfg.max_steps and not cfg.epochs:
            total = steps_per_epoch
        is_main = cfg.rank == 0
        writer = None
        lock = None
        sample_prefix = _sample_prefix(type(corpus).sample_prefix, vocab, train_ids)
        config_json = {
            "format_version": ckpt.FORMAT_VERSION,
            "name": self.name,
            "model": mcfg.to_json(),
            "data": {"corpus": cfg.corpus, "corpus_options": cfg.corpus_options, "tokenizer": cfg.tokens,
                     "preprocess": cfg.preprocess or type(corpus).default_preprocess, "min_freq": cfg.min_freq,
                     "max_tokens": cfg.max_tokens, "val_fraction": cfg.val_fraction,
                     "sample_prefix": sample_prefix, "source": corpus.describe_source()},
            "train": {**cfg.to_json(), "name": self.name, "resume": False},
            "summary": dict(saved.get("summary", {})) if saved else {"parameters": count_parameters(model)},
        }
        if cfg.save and is_main:
            lock = ckpt.ModelLock(self.name).acquire()
        try:
            if cfg.save and is_main:
                writer = ckpt.ModelWriter.create(self.name, config_json, vocab, resume=bool(saved))
            yield Started(self.name, str(device), len(vocab), len(train_ids), len(val_ids), steps_per_epoch,
                          total, count_parameters(model), step, epoch, str(writer.path) if writer else "")
            yield from self._loop(model, opt, vocab, train_ids, val_ids, metric_classes, writer, device,
                                  step, epoch, batch_start, hidden, best_val, total, steps_per_epoch,
                                  sample_prefix)
        finally:
            if lock:
                lock.release()

    def _loop(self, model, opt, vocab, train_ids, val_ids, metric_classes, writer, device, step, epoch,
              batch_start, hidden, best_val, total, steps_per_epoch, sample_prefix):
        cfg = self.config
        warnings_out: list[str] = []
        train_metrics = MetricSet(metric_classes, warnings_out.append)
        val_metrics = self.make_metric_set(metric_classes, warnings_out.append, split="val")
        params = [p for p in model.parameters() if p.requires_grad]
        cell_source = f"cell {cfg.cell!r}"
        tokens_done = 0
        run_steps = 0  # steps taken by this process (a resumed run starts at its checkpoint's step)
        train_time = 0.0
        start = time.perf_counter()
        last_ckpt_time = time.monotonic()
        first_loss = self._first_loss  # None on a fresh run: the first step's loss becomes the reference
        explode_run = 0
        last_val: dict[str, float] = {}
        last_train: dict[str, float] = {}
        stopped = False
        batch = batch_start
        state = hidden
        model.train()
        forward = self.training_forward(model)  # under torchrun: DDP's forward, so its gradient hooks fire

        def flush_warnings():
            while warnings_out:
                yield Warned(step, warnings_out.pop(0))

        def position():
            return {"step": step, "epoch": epoch, "batch": batch, "best_val": best_val, "first_loss": first_loss}

        def summary():
            return {"step": step, "epoch": epoch, "val_perplexity": last_val.get("perplexity"),
                    "train_perplexity": last_train.get("perplexity"), "device": str(device),
                    "tokens_per_s": tokens_done / train_time if train_time else 0.0}

        def save(best=False):
            nonlocal last_ckpt_time
            last_ckpt_time = time.monotonic()
            h = state_tensors(state) if (state is not None and cfg.partition == "sequential") else None
            h = self.gather_state(h)  # under torchrun every rank takes part; only rank 0 writes
            if not all(bool(torch.isfinite(p).all()) for p in params):  # never checkpoint broken weights
                raise diverged(step, "the weights became NaN or inf")
            if writer is None:
                return None
            writer.save(model, opt, position(), h, summary(), best=best)  # disk errors: RNNStudioError
            return Checkpointed(step, str(writer.path))

        def diverged(at_step, reason):
            clip = f"--clip, now {cfg.clip:g}" if cfg.clip > 0 else "--clip 1"
            return RNNStudioError(
                f"training diverged at step {at_step}: {reason}. Lower the learning rate (--lr, now "
                f"{cfg.learning_rate:g}) or clip gradients harder ({clip}); the last good checkpoint is untouched",
                source=f"model {self.name!r}")

        def run_eval():
            nonlocal best_val, last_val
            try:
                last_val = evaluate(model, val_ids, cfg.batch_size, cfg.seq_len, val_metrics, device,
                                    rank=cfg.rank, world_size=cfg.world_size) if len(val_ids) > 1 else {}
            except RNNStudioError:
                raise
            except torch.cuda.OutOfMemoryError:
                raise _out_of_memory(cfg, device) from None
            except Exception as exc:  # metrics are guarded by MetricSet, so this is the cell
                raise RNNStudioError(f"the cell plugin raised {type(exc).__name__} during validation: {exc}; "
                                     f"training stopped, the last checkpoint is intact", source=cell_source) from None
            last_val = self.reduce_metrics(last_val, val_metrics)
            ppl = last_val.get("perplexity", math.inf)
            improved = ppl < best_val
            if improved:
                best_val = ppl
            return Evaluated(step, epoch, dict(last_val), improved)

        train_metrics.reset()
        # a resumed run that already reached its length only re-validates and saves
        already_done = bool((cfg.max_steps and step >= cfg.max_steps) or (cfg.epochs and epoch >= cfg.epochs))
        while not already_done:
            plan = BatchPlan(train_ids, cfg.batch_size, cfg.seq_len, cfg.partition, seed=cfg.seed, epoch=epoch,
                             rank=cfg.rank, world_size=cfg.world_size)
            if batch == 0:
                state = None  # d2l: a fresh state at the start of every epoch
            while batch < len(plan):
                if self.should_stop():
                    stopped = True
                    break
                while self.pause_event.is_set() and not self.stop_event.is_set():
                    time.sleep(0.05)
                t0 = time.perf_counter()
                X, Y = plan[batch]
                X, Y = X.to(device, non_blocking=True), Y.to(device, non_blocking=True)
                if state is None or cfg.partition == "random":
                    state = model.begin_state(X.shape[0], device)
                else:
                    state = detach_state(state)
                try:
                    logits, new_state = forward(X, state)
                    y = model.flat_targets(Y)
                    nll = F.cross_entropy(logits, y, reduction="none")
                    loss = nll.mean()
                    loss_value = self.reduce_loss(loss.detach())  # the global mean under data parallelism
                    if not math.isfinite(loss_value) or loss_value > MAX_LOSS:
                        raise _Diverged(f"the loss became {loss_value:.4g}, so the perplexity is infinite"
                                        if math.isfinite(loss_value) else f"the loss became {loss_value}")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    self.sync_gradients(model)
                    if cfg.clip > 0:
                        norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip)
                    else:
                        norm = torch.sqrt(sum((p.grad.float() ** 2).sum() for p in params if p.grad is not None))
                    if not torch.isfinite(norm):
                        raise _Diverged(f"the gradient norm became {float(norm)}")
                    opt.step()
                except _Diverged as exc:
                    raise diverged(step + 1, exc) from None
                except RNNStudioError:
                    raise
                except torch.cuda.OutOfMemoryError:
                    raise _out_of_memory(cfg, device) from None
                except Exception as exc:
                    raise RNNStudioError(f"the cell plugin raised {type(exc).__name__}: {exc}; training stopped, "
                                         f"the last checkpoint is intact", source=cell_source) from None
                state = new_state
                step += 1
                batch += 1
                tokens_done += X.numel() * cfg.world_size
                train_metrics.update(logits.detach(), y, nll.detach())
                train_time += time.perf_counter() - t0

                if first_loss is None:
                    first_loss = loss_value
                elif loss_value > cfg.explode_factor * first_loss:
                    explode_run += 1
                    if explode_run == cfg.explode_patience:
                        warnings_out.append(
                            f"the loss ({loss_value:.3g}) has been above {cfg.explode_factor:g}x the first loss "
                            f"({first_loss:.3g}) for {explode_run} steps; it may be exploding: lower --lr or clip")
                else:
                    explode_run = 0
                last_train = train_metrics.values()
                rate = tokens_done / train_time if train_time else 0.0
                remaining = (total - step) if total else None
                run_steps += 1
                eta = remaining * train_time / run_steps if remaining else None
                yield Progress(step, total, epoch, batch, len(plan), loss_value, rate,
                               time.perf_counter() - start, eta, dict(last_train))
                yield from flush_warnings()

                done = bool(cfg.max_steps and step >= cfg.max_steps)
                if cfg.eval_every and step % cfg.eval_every == 0 and not done:
                    ev = run_eval()
                    train_metrics.reset()
                    yield ev
                    if ev.best and writer is not None and writer.created:
                        writer.save_best(model, step, summary())
                if cfg.sample_every and step % cfg.sample_every == 0 and self.is_main:
                    yield Sampled(step, self._sample(model, vocab, sample_prefix))
                minutes_due = cfg.checkpoint_minutes and (time.monotonic() - last_ckpt_time) >= cfg.checkpoint_minutes * 60
                if not done and ((cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or minutes_due):
                    ev = save()
                    if ev:
                        yield ev
                yield from flush_warnings()
                if done:
                    break
            if stopped or (cfg.max_steps and step >= cfg.max_steps):
                break
            epoch += 1
            batch = 0
            if cfg.epochs and epoch >= cfg.epochs:
                break
            if not cfg.epochs and not cfg.max_steps:
                break
            if not cfg.eval_every or step % cfg.eval_every:
                ev = run_eval()  # d2l reports at every epoch end
                train_metrics.reset()
                yield ev
                if ev.best and writer is not None and writer.created:
                    writer.save_best(model, step, summary())

        ev = run_eval()
        best_now = ev.best
        yield ev
        if step > 0:
            ck = save(best=best_now)
            if ck:
                yield ck
        yield from flush_warnings()
        rate = tokens_done / train_time if train_time else 0.0
        yield Finished(self.name, str(writer.path) if writer else None, step, epoch, stopped,
                       last_train.get("perplexity"), last_val.get("perplexity"), rate,
                       time.perf_counter() - start, str(device), dict(last_train), dict(last_val))

    # -- hooks for data parallelism (see distributed.py); single-process defaults ----------
    @property
    def is_main(self) -> bool:
        return self.config.rank == 0

    def sync_gradients(self, model) -> None:
        """Average gradients across ranks; nothing to do in one process (DDP does it during backward)."""

    def training_forward(self, model):
        """What the training step calls: ``(X, state) -> (logits (T*B, V), state)``."""
        return model.forward_flat

    def should_stop(self) -> bool:
        """Checked before every step; under torchrun all ranks must agree."""
        return self.stop_event.is_set()

    def reduce_loss(self, loss: torch.Tensor) -> float:
        """This step's mean loss as a number; under torchrun the mean over all ranks."""
        return loss.item()

    def make_metric_set(self, classes: dict[str, type], warn, *, split: str) -> MetricSet:
        return MetricSet(classes, warn)

    def reduce_metrics(self, values: dict[str, float], metrics: MetricSet | None = None) -> dict[str, float]:
        """Validation values over the whole split; in one process they already are."""
        return values

    def gather_state(self, hidden: list[torch.Tensor] | None) -> list[torch.Tensor] | None:
        """The hidden state to checkpoint; under torchrun the rows of every rank."""
        return hidden

    def scatter_state(self, hidden, saved_world_size: int):
        """A resumed hidden state; it only fits the batch layout when the number of processes is unchanged."""
        return hidden if saved_world_size == self.config.world_size else None

    def _sample(self, model, vocab, prefix) -> str:
        try:
            return generate_text(model, vocab, prefix, SamplingConfig(length=self.config.sample_length, greedy=True))[0]
        except RNNStudioError as exc:
            return f"(no sample: {exc})"
        except Exception as exc:
            raise RNNStudioError(f"the cell plugin raised {type(exc).__name__} while sampling: {exc}; training "
                                 f"stopped, the last checkpoint is intact", source=f"cell {self.config.cell!r}") from None


class _Diverged(Exception):
    pass


def _out_of_memory(cfg: TrainConfig, device) -> RNNStudioError:
    return RNNStudioError(
        f"out of GPU memory at batch size {cfg.batch_size}, hidden size {cfg.hidden_size}; "
        f"use a smaller --batch-size, --hidden-size or --seq-len", source=f"device {device}")


def train(config: TrainConfig, **kw) -> Iterator[Event]:
    """Shorthand: ``for event in train(TrainConfig(...)): ...``."""
    return Trainer(config, **kw).run()
