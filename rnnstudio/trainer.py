"""The trainer: turns a TrainConfig into a stream of plain events. It knows nothing of Qt or the CLI."""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from . import checkpoint as ckpt
from .corpus_cache import encode_corpus
from .data import BatchPlan, EncodedCorpus, Vocab, train_val_split
from .devices import resolve_device
from .errors import RNNStudioError
from .contracts import checked_pieces, plugin_label, probe_cell
from .metric_selection import choose_metrics
from .metric_selection import factories as metric_factories
from .plugins import describe_failure
from .model import ModelConfig, RNNLanguageModel, count_parameters, detach_state, state_tensors
from .sampling import SamplingConfig, generate_text
from .threads import ThreadTuner, check_threads, max_auto_threads

# The settings live in config.py; they are re-exported here for the loop and for older imports.
from .config import DEFAULT_LR, MAX_LOSS, OPTIMIZERS, RESUME_MAY_CHANGE, TrainConfig, settings_error  # noqa: E402,F401


# The events live in events.py; re-exported here for older imports.
from .events import Checkpointed, Evaluated, Event, Finished, Progress, Sampled, Started, Warned  # noqa: E402,F401


# The metric set and the validation pass live in evaluation.py; re-exported here for the loop and older imports.
from .evaluation import MetricSet, evaluate  # noqa: E402,F401


# -- the training loop --------------------------------------------------------------------

def thread_tuner(config: TrainConfig, device: torch.device) -> ThreadTuner | None:
    """Set torch's CPU threads: ``--threads N`` forces N; 0 (auto) on a CPU times 1 against N threads while
    training (see ThreadTuner) and returns the tuner the loop reports step times to."""
    check_threads(config.threads)
    if config.threads:
        torch.set_num_threads(config.threads)
        return None
    if device.type != "cpu":
        return None
    if config.world_size > 1:  # DDP couples the ranks' step times, so one rank cannot time its own choice
        torch.set_num_threads(max_auto_threads())
        return None
    return ThreadTuner(max_auto_threads())


def _load_corpus(host, config: TrainConfig, vocab: Vocab | None,
                 warn=lambda message: None) -> tuple[EncodedCorpus, Any]:
    corpus_cls = host.corpus(config.corpus)
    source = f"corpus {config.corpus!r}"
    try:
        corpus = corpus_cls(**config.corpus_options)
        corpus.iter_text = checked_pieces(corpus.iter_text, plugin_label(host, "corpus", config.corpus))
        preprocess = config.preprocess or corpus_cls.default_preprocess
        tokenizer = vocab.text_tokenizer if vocab is not None else host.get("tokenizer", config.tokens)(
            **config.tokens_options)
        encoded = encode_corpus(corpus, tokenizer=tokenizer, preprocess=preprocess, min_freq=config.min_freq,
                                max_tokens=config.max_tokens, vocab=vocab, warn=warn)  # cached: see corpus_cache
    except RNNStudioError as exc:
        raise RNNStudioError(str(exc), source=exc.source or source) from None
    except MemoryError:
        raise settings_error("the corpus does not fit in memory; use {max_tokens} to train on a part of it",
                             source=source) from None
    except (Exception, SystemExit) as exc:
        if raised_in(exc, corpus_cls.__module__):
            raise RNNStudioError(f"the corpus plugin raised {describe_failure(exc)}", source=source) from None
        raise RNNStudioError(f"reading the corpus failed: {describe_failure(exc)} (raised in {_raised_where(exc)})",
                             source=source) from None
    if len(encoded.ids) == 0 or not any(c.strip() for c in encoded.counts if isinstance(c, str)):
        raise RNNStudioError("the corpus is empty or only whitespace; give it some text to learn from", source=source)
    return encoded, corpus


def raised_in(exc: BaseException, module: str) -> bool:
    """Whether ``exc`` was raised inside ``module``'s own code: a frame of its traceback runs there."""
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_globals.get("__name__") or ""
        if name == module or name.startswith(module + "."):
            return True
        tb = tb.tb_next
    return False


def _raised_where(exc: BaseException) -> str:
    """The module of the innermost frame of ``exc``'s traceback."""
    tb, name = exc.__traceback__, "?"
    while tb is not None:
        name = tb.tb_frame.f_globals.get("__name__") or name
        tb = tb.tb_next
    return name


class _Fault(Exception):
    """An exception (or SystemExit) from inside the loop's work, with what the loop was doing."""

    def __init__(self, exc: BaseException, during: str):
        super().__init__(str(exc))
        self.exc, self.during = exc, during


def _sample_prefix(preferred: str, vocab: Vocab, train_ids: torch.Tensor) -> str:
    """The corpus's preferred preview prefix when the vocabulary knows all its tokens, else the text's first words."""
    if preferred and not vocab.unknown_tokens(preferred):
        return preferred
    text = ""
    for n in range(1, 9):  # the first tokens that make 8 characters (3 words, 8 characters)
        text = vocab.decode(train_ids[:n].tolist())
        if len(text) >= 8:
            break
    return text or vocab.idx_to_token[min(1, len(vocab) - 1)]


def _model_name(config: TrainConfig) -> str:
    return config.name or f"{config.corpus}-{config.cell}-{time.strftime('%Y%m%d-%H%M%S')}"


class Trainer:
    """``for event in Trainer(config).run(): ...`` — stop or pause from any thread with the two events."""

    def __init__(self, config: TrainConfig, *, host=None, stop_event: threading.Event | None = None,
                 pause_event: threading.Event | None = None, clock=time.monotonic):
        from .plugins import default_host

        self.clock = clock  # seconds; what --minutes is measured with (tests pass their own)
        self.config = config
        self.host = host or default_host()
        self.stop_event = stop_event or threading.Event()
        self.pause_event = pause_event or threading.Event()
        self.model: RNNLanguageModel | None = None
        self._tuner: ThreadTuner | None = None  # set per run (see thread_tuner)
        self.vocab: Vocab | None = None
        self.name = _model_name(config)
        self._first_loss: float | None = None  # the explosion check's reference, kept across a resume

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> Iterator[Event]:
        """The training events, each delivered to the observer plugins first (the run records are one)."""
        from .observers import observe_run

        return observe_run(self, self._run_events())

    # The body is one generator so that GUI and CLI consume the same events.
    def _run_events(self) -> Iterator[Event]:
        cfg = self.config
        saved = None
        if cfg.resume:
            if not cfg.name:
                raise settings_error("{resume} needs {name}: the saved model's name")
            path = ckpt.model_path(cfg.name)
            saved = ckpt.read_config(path)
            ckpt.check_resume(path, saved, self.host)  # shapes against the saved state before anything is built
            keep = {k: getattr(cfg, k) for k in RESUME_MAY_CHANGE if k != "lr"}
            if cfg.lr is not None:
                keep["lr"] = cfg.lr  # a resume may lower the learning rate, e.g. after a divergence
            cfg = TrainConfig.from_json({**saved.get("train", {}), **keep, "name": cfg.name, "resume": True})
            self.config = cfg
        cfg.validate()
        device = resolve_device(cfg.device)
        self._tuner = thread_tuner(cfg, device)
        metric_classes = choose_metrics(self.host, cfg.metrics, cfg.metric_options)  # {name: (class, options)}
        cell_cls = self.host.cell(cfg.cell)
        cell_cls.resolve_options(cfg.cell_options)  # option errors before any work
        self.host.get("tokenizer", cfg.tokens)(**cfg.tokens_options)  # its option errors, a missing library

        vocab = ckpt.read_vocab(ckpt.model_path(cfg.name), host=self.host) if saved else None
        load_warnings: list[str] = []
        if cfg.dropout and cfg.num_layers == 1:  # torch's nn.RNN/GRU/LSTM and the scratch cells alike
            load_warnings.append(f"dropout {cfg.dropout:g} has no effect with one layer: it acts between stacked "
                                 f"layers (use 2 or more layers, or --output-dropout)")
        encoded, corpus = _load_corpus(self.host, cfg, vocab, load_warnings.append)
        vocab = encoded.vocab
        self.vocab = vocab
        if len(vocab) <= 2 and not saved:
            raise settings_error(
                "the vocabulary has only {n} token(s) besides <unk>; a language model needs text with at least "
                "two different tokens (lower {min_freq}, or use more varied text)", n=len(vocab) - 1,
                source=f"corpus {cfg.corpus!r}")
        train_ids, val_ids = train_val_split(encoded.ids, cfg.val_fraction)
        first_plan = BatchPlan(train_ids, cfg.batch_size, cfg.seq_len, cfg.partition, seed=cfg.seed, epoch=0,
                               rank=cfg.rank, world_size=cfg.world_size)
        if len(first_plan) == 0:
            need = cfg.batch_size * cfg.world_size * cfg.seq_len + cfg.seq_len + 1
            raise settings_error(
                "the training text has {n} tokens, fewer than one batch needs (about {need} = {batch_size} "
                "{b} x {seq_len} {t}); use a smaller {batch_size} or {seq_len}, or more text",
                n=len(train_ids), need=need, b=cfg.batch_size, t=cfg.seq_len, source=f"corpus {cfg.corpus!r}")

        if not saved:  # --recipe auto under --minutes: auto_recipe decides what, if anything, to change
            from .recipe import auto_recipe, probe_step_rate

            changes, notes = auto_recipe(cfg, len(train_ids),
                                         lambda: probe_step_rate(cfg, cell_cls, len(vocab), device))
            if changes:
                cfg = self.config = dataclasses.replace(cfg, **changes)
                cfg.validate()
                load_warnings.extend(notes)
        mcfg = ModelConfig(cell=cfg.cell, vocab_size=len(vocab), hidden_size=cfg.hidden_size,
                           num_layers=cfg.num_layers, dropout=cfg.dropout,
                           output_dropout=cfg.output_dropout, encoding=cfg.encoding,
                           embed_size=cfg.embed_size, cell_options=dict(cfg.cell_options))
        torch.manual_seed(cfg.seed)
        try:
            model = RNNLanguageModel(mcfg, cell_cls).to(device)
        except RNNStudioError:
            raise
        except torch.cuda.OutOfMemoryError:
            raise _out_of_memory(cfg, device) from None
        except (Exception, SystemExit) as exc:
            raise RNNStudioError(f"the cell plugin could not be built: {describe_failure(exc)}",
                                 source=f"cell {cfg.cell!r}") from None
        self.model = model
        probe_cell(model, train_ids, plugin_label(self.host, "cell", cfg.cell))  # shapes and state, once
        params = list(model.parameters())
        # foreach: one multi-tensor kernel per update instead of a loop of small ops per parameter (torch picks
        # it on CUDA only); same formulas, so the same steps up to float rounding
        if cfg.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=cfg.learning_rate, foreach=True)
        elif cfg.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, foreach=True)
        else:
            opt = torch.optim.Adam(params, lr=cfg.learning_rate, foreach=True)

        step, epoch, batch_start, hidden = 0, 0, 0, None
        best_val = math.inf
        pos: dict = {}
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
            total = 0 if cfg.minutes else steps_per_epoch  # a time budget has no step count
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
            "providers": {kind: self.host.provider(kind, name) for kind, name in  # named when one is missing
                          (("cell", cfg.cell), ("tokenizer", cfg.tokens), ("corpus", cfg.corpus))},
        }
        if cfg.save and is_main:
            lock = ckpt.ModelLock(self.name).acquire()
        try:
            if cfg.save and is_main:
                writer = ckpt.ModelWriter.create(self.name, config_json, vocab, resume=bool(saved))
            yield Started(self.name, str(device), len(vocab), len(train_ids), len(val_ids), steps_per_epoch,
                          total, count_parameters(model), step, epoch, str(writer.path) if writer else "")
            for message in load_warnings:
                yield Warned(step, message)
            loop = TrainingLoop(self, model, opt, vocab, train_ids, val_ids, metric_classes, writer, device, step,
                                epoch, batch_start, hidden, best_val, total, steps_per_epoch, sample_prefix, pos)
            yield from self._guarded(loop.run())
        finally:
            if lock:
                lock.release()

    def _guarded(self, loop):
        """The loop's events. When plugin code raises (SystemExit included) or a rank is lost, the last
        completed step is saved first, and the error says what raised and what is on disk."""
        self._save_after_failure = None
        try:
            yield from loop
        except (RNNStudioError, KeyboardInterrupt, GeneratorExit):
            raise
        except BaseException as exc:
            exc, during = (exc.exc, exc.during) if isinstance(exc, _Fault) else (exc, "")
            message, source = self.describe_failure(exc, during)
            note = self._save_after_failure() if self._save_after_failure else "no checkpoint was saved"
            raise RNNStudioError(f"{message}; training stopped, {note}", source=source) from None
        finally:
            self._save_after_failure = None  # the loop's method (the loop holds self): no cycle outlives the run

    def describe_failure(self, exc: BaseException, during: str) -> tuple[str, str | None]:
        """``(message, source)`` for an exception from the loop: the cell plugin's only if its code raised it."""
        cell = self.config.cell
        if raised_in(exc, self.host.cell(cell).__module__):
            return f"the cell plugin raised {describe_failure(exc)}{during}", f"cell {cell!r}"
        return f"training failed{during}: {describe_failure(exc)} (raised in {_raised_where(exc)})", None

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
        except (Exception, SystemExit) as exc:
            raise _Fault(exc, " while sampling") from exc


# -- the loop -----------------------------------------------------------------------------

class TrainingLoop:
    """One run's loop: ``step`` takes one optimizer step, ``validate`` scores the validation split,
    ``checkpoint`` saves, and ``run`` is the generator of events that ties them together.

    Its state lives in attributes; the hooks for data parallelism stay on the trainer (``self.trainer``)."""

    def __init__(self, trainer: "Trainer", model, opt, vocab, train_ids, val_ids, metric_classes, writer, device,
                 step, epoch, batch_start, hidden, best_val, total, steps_per_epoch, sample_prefix,
                 resumed: dict | None = None):
        self.trainer = trainer
        self.cfg = trainer.config
        self.model, self.opt, self.vocab, self.writer, self.device = model, opt, vocab, writer, device
        self.train_ids, self.val_ids, self.metric_classes = train_ids, val_ids, metric_classes
        self.step_num, self.epoch, self.batch, self.state = step, epoch, batch_start, hidden  # where training is
        self.best_val, self.total, self.steps_per_epoch = best_val, total, steps_per_epoch
        self.sample_prefix = sample_prefix
        self.resumed = resumed or {}

    def _begin(self) -> None:
        """The run's counters and metrics; called when ``run`` starts, so that the clocks start there too."""
        from .scoring import bind_vocab

        trainer, cfg, resumed = self.trainer, self.cfg, self.resumed
        self.warnings_out: list[str] = []
        self.train_metrics = MetricSet(metric_factories(self.metric_classes, train=True), self.warnings_out.append)
        self.val_metrics = trainer.make_metric_set(metric_factories(self.metric_classes), self.warnings_out.append,
                                                   split="val")
        for metrics in (self.train_metrics, self.val_metrics):
            bind_vocab(metrics, self.vocab)  # the per-character metrics count the characters of each token
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.tokens_done = 0
        self.run_steps = 0  # steps taken by this process (a resumed run starts at its checkpoint's step)
        self.train_time = 0.0
        self.start = time.perf_counter()
        self.last_ckpt_time = time.monotonic()
        self.first_loss = trainer._first_loss  # None on a fresh run: the first step's loss becomes the reference
        self.explode_run = 0
        self.last_val: dict[str, float] = {}
        self.last_train: dict[str, float] = {}
        self.stopped = False
        self.budget = cfg.minutes * 60  # seconds in total, validation included; 0: no time limit
        self.clock = trainer.clock
        self.clock_start, self.elapsed_before = self.clock(), float(resumed.get("elapsed", 0.0))
        self.bad_evals = int(resumed.get("bad_evals", 0))  # validations in a row without improvement (--patience)
        self.best_step, self.best_val_on_disk = resumed.get("best_step"), resumed.get("best_val_perplexity")
        self.last_val_step = None
        self.pending_best = None  # (step, val perplexity, weights) of a best found before the folder exists
        self.base_lr = cfg.learning_rate
        self.scheduled = cfg.schedule != "constant" or cfg.warmup > 0
        self.model.train()
        self.forward = trainer.training_forward(self.model)  # under torchrun: DDP's forward, so its hooks fire
        writer = self.writer
        self.saved_at = self.step_num if writer is not None and writer.created else None  # the step on disk
        trainer._save_after_failure = self.save_after_failure
        self.stopped_early = False

    # -- time, warnings, what a checkpoint records ----------------------------------------

    def elapsed(self) -> float:
        return self.elapsed_before + self.clock() - self.clock_start

    def out_of_time(self) -> bool:
        return bool(self.budget) and self.elapsed() >= self.budget

    def flush_warnings(self):
        while self.warnings_out:
            yield Warned(self.step_num, self.warnings_out.pop(0))

    def position(self) -> dict:
        return {"step": self.step_num, "epoch": self.epoch, "batch": self.batch, "best_val": self.best_val,
                "first_loss": self.first_loss, "elapsed": self.elapsed(), "bad_evals": self.bad_evals,
                "best_step": self.best_step, "best_val_perplexity": self.best_val_on_disk}

    def summary(self) -> dict:
        out = {"step": self.step_num, "epoch": self.epoch, "val_perplexity": self.last_val.get("perplexity"),
               "device": str(self.device), "best_step": self.best_step, "best_val_perplexity": self.best_val_on_disk}
        if self.run_steps:  # a run that took no step keeps the saved train perplexity and speed
            out.update(train_perplexity=self.last_train.get("perplexity"),
                       tokens_per_s=self.tokens_done / self.train_time if self.train_time else 0.0)
        return out

    # -- best weights and checkpoints -----------------------------------------------------

    def keep_best(self) -> None:
        """After a validation improved: write best.safetensors, or hold the weights until the folder exists."""
        writer = self.writer
        if writer is None:
            return
        if writer.created:
            self.best_step, self.best_val_on_disk = self.step_num, self.last_val.get("perplexity")
            writer.save_best(self.model, self.step_num, self.summary())
        else:
            weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.pending_best = (self.step_num, self.last_val.get("perplexity"), weights)

    def note_best(self, now_best: bool) -> None:
        """The step and validation perplexity of the weights that best.safetensors will hold."""
        if now_best or (not self.writer.created and self.pending_best is None):  # a new folder's best: these
            self.best_step = self.step_num
            self.best_val_on_disk = self.last_val.get("perplexity") if self.last_val_step == self.step_num else None
        elif not self.writer.created:
            self.best_step, self.best_val_on_disk = self.pending_best[0], self.pending_best[1]

    def checkpoint(self, best=False, collective=True) -> Checkpointed | None:
        """Save the current step; ``None`` when this process keeps no checkpoints."""
        cfg, state, writer = self.cfg, self.state, self.writer
        self.last_ckpt_time = time.monotonic()
        h = state_tensors(state) if (state is not None and cfg.partition == "sequential") else None
        if collective:
            h = self.trainer.gather_state(h)  # under torchrun every rank takes part; only rank 0 writes
        elif cfg.world_size > 1:
            h = None  # after a failure the peers may be gone: a resume starts a fresh state
        if not all(bool(torch.isfinite(p).all()) for p in self.params):  # never checkpoint broken weights
            raise self.diverged(self.step_num, "the weights became NaN or inf")
        if writer is None:
            return None
        self.note_best(best)
        first = not writer.created
        writer.save(self.model, self.opt, self.position(), h, self.summary(), best=best)  # disk errors: RNNStudioError
        if first and self.pending_best is not None:
            if not best:  # the folder was created with the current weights as best: put the real best there
                writer.save_best(self.pending_best[2], self.pending_best[0], self.summary())
            self.pending_best = None
        self.saved_at = self.step_num
        return Checkpointed(self.step_num, str(writer.path))

    def checkpoint_note(self) -> str:
        if self.writer is None and not self.trainer.is_main:
            return "rank 0 keeps the checkpoints"
        return ("no checkpoint was saved" if self.saved_at is None
                else f"the last checkpoint (step {self.saved_at}) is intact")

    def save_after_failure(self) -> str:
        step = self.step_num
        if self.writer is None or step == 0 or step == self.saved_at:
            return self.checkpoint_note()
        try:
            self.checkpoint(collective=False)
        except RNNStudioError:
            return f"{self.checkpoint_note()}; step {step} could not be saved"
        return f"the model is saved at step {step}"

    def diverged(self, at_step, reason) -> RNNStudioError:
        cfg = self.cfg
        clip = "clip gradients harder ({clip}, now {clip_now})" if cfg.clip > 0 else "clip gradients ({clip} 1)"
        exc = settings_error(
            "training diverged at step {at_step}: {reason}. Lower the learning rate ({lr}, now {lr_now}) or "
            + clip + "; {note}", at_step=at_step, reason=reason, lr_now=f"{cfg.learning_rate:g}",
            clip_now=f"{cfg.clip:g}", note=self.checkpoint_note(), source=f"model {self.trainer.name!r}")
        exc.diverged_step, exc.reason = at_step, str(reason)  # the GUI marks the step on its charts
        return exc

    # -- validation -----------------------------------------------------------------------

    def validate(self) -> Evaluated:
        cfg, device = self.cfg, self.device
        try:
            last_val = evaluate(self.model, self.val_ids, cfg.batch_size, cfg.seq_len, self.val_metrics, device,
                                rank=cfg.rank, world_size=cfg.world_size) if len(self.val_ids) > 1 else {}
        except RNNStudioError:
            raise
        except torch.cuda.OutOfMemoryError:
            raise _out_of_memory(cfg, device) from None
        except (Exception, SystemExit) as exc:  # metrics are guarded by MetricSet
            raise _Fault(exc, f" during validation at step {self.step_num}") from exc
        self.last_val = last_val  # kept if the reduction raises: save_after_failure's summary shows it
        last_val = self.last_val = self.trainer.reduce_metrics(last_val, self.val_metrics)
        ppl = last_val.get("perplexity", math.inf)
        improved = ppl < self.best_val
        self.last_val_step = self.step_num
        if improved:
            self.best_val = ppl
            self.bad_evals = 0
        elif "perplexity" in last_val:  # no validation text: patience never runs out
            self.bad_evals += 1
        return Evaluated(self.step_num, self.epoch, dict(last_val), improved)

    def patience_spent(self) -> bool:
        cfg = self.cfg
        if not (cfg.patience and self.bad_evals >= cfg.patience):
            return False
        self.warnings_out.append(f"stopped early: {self.bad_evals} validations in a row without a perplexity below "
                                 f"the best, {self.best_val:.4g} (patience {cfg.patience})")
        return True

    # -- one optimizer step ---------------------------------------------------------------

    def step(self, X, Y):
        """Forward, loss, backward, clip, schedule and the optimizer, from ``self.state``.

        Returns ``(logits, y, nll, loss_value, new_state)``; a failure is raised as the error the run reports."""
        from .schedules import lr_factor, step_progress

        trainer, cfg, opt, params, step = self.trainer, self.cfg, self.opt, self.params, self.step_num
        try:
            logits, new_state = self.forward(X, self.state)
            y = self.model.flat_targets(Y)
            nll = F.cross_entropy(logits, y, reduction="none")
            loss = nll.mean()
            loss_value = trainer.reduce_loss(loss.detach())  # the global mean under data parallelism
            if not math.isfinite(loss_value) or loss_value > MAX_LOSS:
                raise _Diverged(f"the loss became {loss_value:.4g}, so the perplexity is infinite"
                                if math.isfinite(loss_value) else f"the loss became {loss_value}", loss_value)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            trainer.sync_gradients(self.model)
            if cfg.clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip, foreach=True)
            else:
                norm = torch.sqrt(sum((p.grad.float() ** 2).sum() for p in params if p.grad is not None))
            if not torch.isfinite(norm):
                raise _Diverged(f"the gradient norm became {float(norm)}", loss_value)
            if self.scheduled:
                progress = (self.elapsed() / self.budget if self.budget
                            else step_progress(step + 1, cfg.warmup, self.total))
                for group in opt.param_groups:
                    group["lr"] = self.base_lr * lr_factor(cfg.schedule, step + 1, cfg.warmup, progress)
            opt.step()
        except _Diverged as exc:
            error = self.diverged(step + 1, exc)
            error.diverged_loss = exc.loss
            raise error from None
        except RNNStudioError:
            raise
        except torch.cuda.OutOfMemoryError:
            raise _out_of_memory(cfg, self.device) from None
        except (Exception, SystemExit) as exc:
            raise _Fault(exc, f" at step {step + 1}") from exc
        return logits, y, nll, loss_value, new_state

    def watch_loss(self, loss_value: float) -> None:
        """The explosion check: warn once the loss stays above explode_factor x the first loss."""
        cfg = self.cfg
        if self.first_loss is None:
            self.first_loss = loss_value
        elif loss_value > cfg.explode_factor * self.first_loss:
            self.explode_run += 1
            if self.explode_run == cfg.explode_patience:
                self.warnings_out.append(
                    f"the loss ({loss_value:.3g}) has been above {cfg.explode_factor:g}x the first loss "
                    f"({self.first_loss:.3g}) for {self.explode_run} steps; it may be exploding: lower the learning "
                    f"rate or clip gradients harder")
        else:
            self.explode_run = 0

    def progress(self, plan_len: int, loss_value: float) -> Progress:
        step, total, budget = self.step_num, self.total, self.budget
        rate = self.tokens_done / self.train_time if self.train_time else 0.0
        remaining = (total - step) if total else None
        eta = remaining * self.train_time / self.run_steps if remaining else None
        shown_total = total
        if budget:  # the bar and the ETA follow the time budget; the total is an estimate
            fraction = min(self.elapsed() / budget, 1.0)
            shown_total = max(step, round(step / fraction)) if fraction > 0 else 0
            eta = max(budget - self.elapsed(), 0.0)
        return Progress(step, shown_total, self.epoch, self.batch, plan_len, loss_value, rate,
                        time.perf_counter() - self.start, eta, dict(self.last_train))

    # -- the events -----------------------------------------------------------------------

    def run(self) -> Iterator[Event]:
        self._begin()
        trainer, cfg, device = self.trainer, self.cfg, self.device
        self.train_metrics.reset()
        # a resumed run that already reached its length only re-validates and saves
        already_done = bool((cfg.max_steps and self.step_num >= cfg.max_steps)
                            or (cfg.epochs and self.epoch >= cfg.epochs) or self.out_of_time())
        if already_done:
            self.warnings_out.append(f"the model is already at step {self.step_num} (epoch {self.epoch}), which "
                                     f"this run's length does not exceed: it is validated and saved again, not trained")
        while not already_done:
            plan = BatchPlan(self.train_ids, cfg.batch_size, cfg.seq_len, cfg.partition, seed=cfg.seed,
                             epoch=self.epoch, rank=cfg.rank, world_size=cfg.world_size)
            if self.batch == 0:
                self.state = None  # d2l: a fresh state at the start of every epoch
            while self.batch < len(plan):
                if trainer.should_stop():
                    self.stopped = True
                    break
                if self.out_of_time():
                    break
                while trainer.pause_event.is_set() and not trainer.stop_event.is_set():
                    time.sleep(0.05)
                t0 = time.perf_counter()
                X, Y = plan[self.batch]
                X, Y = X.to(device, non_blocking=True), Y.to(device, non_blocking=True)
                if self.state is None or cfg.partition == "random":
                    self.state = self.model.begin_state(X.shape[0], device)
                else:
                    self.state = detach_state(self.state)
                try:
                    logits, y, nll, loss_value, self.state = self.step(X, Y)
                except RNNStudioError as exc:
                    blow_up = getattr(exc, "diverged_loss", None)
                    if blow_up is not None and math.isfinite(blow_up):  # the blow-up itself, for the charts
                        self.step_num += 1
                        yield self.progress(len(plan), blow_up)
                    raise
                self.step_num += 1
                self.batch += 1
                self.tokens_done += X.numel() * cfg.world_size
                self.train_metrics.update(logits.detach(), y, nll.detach())
                step_time = time.perf_counter() - t0
                self.train_time += step_time
                if trainer._tuner:
                    trainer._tuner.observe(step_time)  # threads=0: may switch the thread count for the next step
                self.watch_loss(loss_value)
                self.last_train = self.train_metrics.values()
                self.run_steps += 1
                yield self.progress(len(plan), loss_value)
                yield from self.flush_warnings()

                step = self.step_num
                done = bool(cfg.max_steps and step >= cfg.max_steps) or self.out_of_time()
                if cfg.eval_every and step % cfg.eval_every == 0 and not done:
                    ev = self.validate()
                    self.train_metrics.reset()
                    yield ev
                    if ev.best:
                        self.keep_best()
                    if self.patience_spent():
                        done = self.stopped_early = True
                if cfg.sample_every and step % cfg.sample_every == 0 and trainer.is_main:
                    yield Sampled(step, trainer._sample(self.model, self.vocab, self.sample_prefix))
                minutes_due = (cfg.checkpoint_minutes
                               and (time.monotonic() - self.last_ckpt_time) >= cfg.checkpoint_minutes * 60)
                if not done and ((cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or minutes_due):
                    ev = self.checkpoint()
                    if ev:
                        yield ev
                yield from self.flush_warnings()
                if done:
                    break
            if (self.stopped or self.stopped_early or (cfg.max_steps and self.step_num >= cfg.max_steps)
                    or self.out_of_time()):
                break
            self.epoch += 1
            self.batch = 0
            if cfg.epochs and self.epoch >= cfg.epochs:
                break
            if not cfg.epochs and not cfg.max_steps and not self.budget:
                break
            if not cfg.eval_every or self.step_num % cfg.eval_every:
                ev = self.validate()  # d2l reports at every epoch end
                self.train_metrics.reset()
                yield ev
                if ev.best:
                    self.keep_best()
                if self.patience_spent():
                    break

        best_now = False  # a validation at this very step (patience, a time budget) is not repeated
        if self.last_val_step != self.step_num or not self.last_val:
            ev = self.validate()
            best_now = ev.best
            yield ev
        if self.step_num > 0:
            ck = self.checkpoint(best=best_now)
            if ck:
                yield ck
        yield from self.flush_warnings()
        rate = self.tokens_done / self.train_time if self.train_time else 0.0
        writer = self.writer
        path = str(writer.path) if writer is not None and writer.created else None
        yield Finished(trainer.name, path, self.step_num, self.epoch, self.stopped, self.last_train.get("perplexity"),
                       self.last_val.get("perplexity"), rate, time.perf_counter() - self.start, str(device),
                       dict(self.last_train), dict(self.last_val))


class _Diverged(Exception):
    def __init__(self, message: str, loss: float | None = None):
        super().__init__(message)
        self.loss = loss  # the step's loss when it is a number: the blow-up that the charts can still show


def _out_of_memory(cfg: TrainConfig, device) -> RNNStudioError:
    return settings_error(
        "out of GPU memory at batch size {b}, hidden size {h}; use a smaller {batch_size}, {hidden_size} or "
        "{seq_len}", b=cfg.batch_size, h=cfg.hidden_size, source=f"device {device}")


def train(config: TrainConfig, **kw) -> Iterator[Event]:
    """Shorthand: ``for event in train(TrainConfig(...)): ...``."""
    return Trainer(config, **kw).run()
