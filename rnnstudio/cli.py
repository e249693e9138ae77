"""The headless command line: ``rnnstudio train|generate|plugins|models|score`` (no command opens the GUI)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from dataclasses import replace

from .errors import RNNStudioError
from .fileio import json_safe
from .messages import event_line
from .messages import number as _fmt
from .threads import prefer_passive_wait

prefer_passive_wait()  # the `rnnstudio` command, `python -m rnnstudio` and torchrun ranks, before torch loads
EXIT_USER_ERROR = 2


def _print_json(obj) -> None:
    print(json.dumps(json_safe(obj), ensure_ascii=False), flush=True)


def _host(args):
    from .plugins import default_host, load_plugins, set_default_host

    disable = getattr(args, "disable", None) or ()
    if getattr(args, "no_plugins", False) or disable:
        set_default_host(load_plugins(no_plugins=True if getattr(args, "no_plugins", False) else None,
                                      disable=disable))
    host = default_host()
    if _debug(args):
        for failure in host.failures:
            if failure.traceback:
                sys.stderr.write(f"rnnstudio: debug: {failure.plugin}: {failure.error}\n{failure.traceback}")
    return host


def _debug(args) -> bool:
    from .plugins import debug_enabled

    return bool(getattr(args, "debug", False)) or debug_enabled()


def _warn_contested(host, **requested) -> None:
    """One stderr line per requested component whose name more than one plugin registered."""
    for kind, name in requested.items():
        line = host.contest_warning(kind, name) if name else None
        if line:
            _say(f"rnnstudio: warning: {line}")


# -- commands ----------------------------------------------------------------------------

def cmd_plugins(args) -> int:
    """``plugins``: what loaded, from which distribution; ``--strict`` exits 1 when any plugin failed."""
    from .plugins import describe_all

    host = _host(args)
    info = describe_all(host)
    status = 1 if args.strict and (info["failed"] or host.unmatched_disable) else 0
    if args.json:
        _print_json(info)
        return status
    print("plugins:")
    for d in info["distributions"]:
        dist = f"{d['distribution']} {d['version']}".strip() or "-"
        print(f"  {d['source']:<28} {dist:<24} hooks: {', '.join(d['hooks']) or 'none'}")
    for source in info["disabled"]:
        print(f"  {source:<28} disabled")
    for kind in ("corpora", "cells", "metrics", "tokenizers", "observers"):
        if kind not in info:
            continue
        print(f"{kind}:")
        for comp in info[kind]:
            print(f"  {comp['name']:<16} {comp['description']}  [{host.label(comp['source'])}]")
            for p in comp["params"]:
                extra = ""
                if "choices" in p:
                    extra = f" one of {', '.join(map(str, p['choices']))}"
                elif "min" in p or "max" in p:
                    extra = f" in [{p.get('min', '')}, {p.get('max', '')}]"
                print(f"      {p['name']} ({p['type']}, default {p['default']!r}{extra}): {p['help']}")
    if info["contested"]:
        print("contested names (the first registration wins):")
        for c in info["contested"]:
            print(f"  {c['kind']} {c['name']!r}: {host.label(c['winner'])}; rejected "
                  f"{', '.join(host.label(s) for s in c['rejected'])}")
    if info["failed"]:
        print("failed plugins:")
        for f in info["failed"]:
            print(f"  {host.label(f['plugin'])}: {f['error']}")
    for name in host.unmatched_disable:
        print(f"--disable {name}: no plugin has that name")
    return status


def train_config_from_args(args):
    """The TrainConfig a ``train`` command line asks for. A typed zero length, or a resume that names
    settings the saved model keeps, is a user error rather than a silent surprise."""
    from .config import TrainConfig, resume_keeps, saved_settings
    from .settings import explicit, from_args, schema

    flags = {s.name: s.flag for s in schema(TrainConfig)}
    for name in ("epochs", "max_steps", "minutes"):  # None: not given (the parser's default), so one epoch
        value = getattr(args, name, None)
        if value == 0:
            raise RNNStudioError(f"{flags[name]} 0 trains nothing; give a positive number, or leave out --epochs, "
                                 f"--max-steps and --minutes to train one epoch")
        if value is None:
            setattr(args, name, 0)
    if getattr(args, "resume", False):
        kept = [n for n in explicit(TrainConfig, args) if n in resume_keeps()]
        if kept and _saved_model_exists(getattr(args, "name", None)):  # else the missing model is the error
            recipe = [n for n in resume_keeps() if n not in saved_settings() and flags[n]]
            raise RNNStudioError(
                f"--resume keeps the saved model's data and model settings "
                f"({', '.join(flags[n] for n in saved_settings())}) and its training recipe "
                f"({', '.join(flags[n] for n in recipe)}); leave out {', '.join(flags[n] for n in kept)}, "
                f"or train a new model under another --name (--lr may change)")
    return from_args(TrainConfig, args)


def _saved_model_exists(name: str | None) -> bool:
    from .checkpoint import model_path

    try:
        return bool(name) and model_path(name).exists()
    except RNNStudioError:  # a bad name: the trainer says so (on every rank under torchrun)
        return False


def _resolve_component_options(host, config) -> None:
    """Parse KEY=VALUE strings against the plugins' declared params (errors before any work)."""
    corpus_cls = host.corpus(config.corpus)
    config.corpus_options = corpus_cls.resolve_options(config.corpus_options)
    cell_cls = host.cell(config.cell)
    config.cell_options = cell_cls.resolve_options(config.cell_options)


def cmd_train(args) -> int:
    from .trainer import Trainer

    host = _host(args)
    config = train_config_from_args(args)
    if not config.resume:
        _resolve_component_options(host, config)
        _warn_contested(host, corpus=config.corpus, cell=config.cell)
    if args.distributed:
        from .distributed import run_distributed

        return run_distributed(config, host, lambda trainer, is_main: _consume(
            trainer, bool(args.json) and is_main, quiet=not is_main))
    trainer = Trainer(config, host=host)
    return _consume(trainer, args.json)


def _stop_signals() -> tuple[int, ...]:
    """The signals that stop a training run cleanly: Ctrl+C, ``kill`` (SIGTERM) and a closed terminal (SIGHUP)."""
    return tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)


class _Output:
    """Where the training lines go. Once stdout's reader is gone (``| head -1``), stdout points at /dev/null
    and training goes on; the lines that matter (checkpoints, warnings, the summary) then go to stderr."""

    def __init__(self):
        self.gone = False

    def write(self, text: str, *, end: str = "\n", keep: bool = True) -> None:
        if not self.gone:
            try:
                sys.stdout.write(text + end)
                sys.stdout.flush()
                return
            except (OSError, ValueError):  # EPIPE; EIO from a closed terminal; ValueError: stdout was closed
                self._drop_stdout()
        if keep:
            _say(text.lstrip("\r"))

    def _drop_stdout(self) -> None:
        self.gone = True
        _stdout_to_devnull()
        _say("rnnstudio: standard output was closed; training goes on, and its checkpoints and summary are "
             "reported here")


def _say(text: str) -> None:
    """A line on stderr that can never stop training: after SIGHUP the terminal may be gone."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _stdout_to_devnull() -> None:
    """Point fd 1 at /dev/null, so that later writes and the interpreter's final flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _consume(trainer, as_json: bool, *, quiet: bool = False) -> int:
    """Print a trainer's events and return the exit status.

    Ctrl+C, SIGTERM and SIGHUP ask the loop to stop after this step, validate and save; the status is
    then 128 + the signal's number. A second Ctrl+C aborts without saving.
    """
    caught: list[int] = []

    # Under torchrun a terminal's Ctrl+C reaches each rank twice: from the terminal, then passed on by
    # the launcher. There the repeat is not a second press, and the launcher kills after its timeout.
    under_torchrun = "TORCHELASTIC_RUN_ID" in os.environ

    def on_signal(signum, frame):
        if caught and signum == signal.SIGINT and not under_torchrun:
            raise KeyboardInterrupt
        caught.append(signum)
        if len(caught) == 1:
            trainer.stop()
            again = " (Ctrl+C again to abort without saving)" if signum == signal.SIGINT and not under_torchrun else ""
            _say(f"\nrnnstudio: {signal.Signals(signum).name}: stopping after this step, then validating and "
                 f"saving{again}...")

    old = {}
    if threading.current_thread() is threading.main_thread():
        old = {s: signal.signal(s, on_signal) for s in _stop_signals()}
    out = _Output()
    tty = sys.stdout.isatty()
    last_print = 0.0
    summary = None
    try:
        for event in trainer.run():
            kind = event.kind
            if kind == "summary":
                summary = event
            if as_json:  # every event, and progress at most once a second (other events do not reset that clock)
                if kind == "progress":
                    if time.monotonic() - last_print < 1.0:
                        continue
                    last_print = time.monotonic()
                out.write(json.dumps(json_safe(event.to_json()), ensure_ascii=False), keep=kind != "progress")
                continue
            if quiet:
                continue
            if kind == "progress":
                now = time.monotonic()
                if now - last_print >= (0.2 if tty else 2.0) or event.step == event.total_steps:
                    last_print = now
                    total = f"/{event.total_steps}" if event.total_steps else ""
                    eta = f" eta {event.eta:.0f}s" if event.eta is not None else ""
                    line = (f"step {event.step}{total} epoch {event.epoch + 1} loss {event.loss:.3f} "
                            f"ppl {_fmt(event.train.get('perplexity'), '.2f')} "
                            f"{event.tokens_per_s / 1000:.1f}k tok/s{eta}")
                    out.write(("\r" + line.ljust(78)) if tty else line, end="" if tty else "\n", keep=False)
                continue
            if tty:
                out.write("", keep=False)
            if kind == "warning":
                _say(event_line(event))
                continue
            line = event_line(event)
            if line is not None:
                out.write(line)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if not caught:
        return 0
    name = signal.Signals(caught[0]).name
    if not quiet:
        where = (f"the model is saved at step {summary.steps} in {summary.path}" if summary and summary.path
                 else "nothing was saved")
        _say(f"rnnstudio: stopped by {name}; {where}")
    return 128 + caught[0]


def cmd_generate(args) -> int:
    from .checkpoint import load_model
    from .devices import resolve_device
    from .config import SamplingConfig
    from .sampling import check_fits, stream, unescape
    from .settings import expand, from_args

    host = _host(args)
    loaded = load_model(args.model, host=host, device=resolve_device(args.device), weights=args.weights)
    _warn_contested(host, cell=loaded.config["model"].get("cell"),
                    tokenizer=getattr(getattr(loaded.vocab, "tokenizer", None), "name", None))
    prefix = args.prefix if args.prefix is not None else loaded.config.get("data", {}).get("sample_prefix", "The ")
    asked = from_args(SamplingConfig, args)
    asked.stop_at = unescape(asked.stop_at) if asked.stop_at else None
    configs = [replace(asked, temperature=1.0)] if asked.greedy else expand(asked)
    results = []
    for cfg in configs:
        cfg.validate()
        check_fits(loaded.model, len(loaded.vocab.encode(prefix)), cfg)  # before the samples' texts exist
        temp = None if cfg.greedy else cfg.temperature
        header = len(configs) > 1 or cfg.num_samples > 1
        if args.json or header:
            texts = [prefix] * cfg.num_samples
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                for pieces in stream(loaded.model, loaded.vocab, prefix, cfg):
                    texts = [t + p for t, p in zip(texts, pieces)]
            for w in caught:
                print(f"warning: {w.message}", file=sys.stderr)
            for i, text in enumerate(texts):
                results.append({"temperature": temp, "sample": i + 1, "text": text})
                if not args.json:
                    label = "greedy" if temp is None else f"temperature {temp:g}"
                    print(f"--- sample {i + 1}, {label} ---")
                    print(text)
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gen = stream(loaded.model, loaded.vocab, prefix, cfg)
            first = next(gen, None)
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
        sys.stdout.write(prefix)
        if first is not None:
            sys.stdout.write(first[0])
            for pieces in gen:
                sys.stdout.write(pieces[0])
                sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
    if args.json:
        _print_json({"model": loaded.name, "prefix": prefix, "samples": results})
    return 0


def cmd_models(args) -> int:
    from .store.catalogue import list_models  # torch-free: headers are read with struct and json

    rows = [m.row() for m in list_models()]
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no saved models yet; train one with `rnnstudio train`")
        return 0
    print(f"{'name':<24} {'corpus':<14} {'cell':<13} {'size':>9} {'step':>7} {'val ppl':>8} {'best at':>7} "
          f"{'best ppl':>8}  date")  # the last weights, then the best weights (generate's default)
    for r in rows:
        if r.get("error"):
            print(f"{r['name']:<24} BROKEN: {r['error']}")
            continue
        size = f"{r['num_layers']}x{r['hidden_size']}"
        print(f"{r['name']:<24} {str(r['corpus']):<14} {str(r['cell']):<13} {size:>9} "
              f"{r['steps'] if r['steps'] is not None else '-':>7} {_fmt(r['val_perplexity'], '.3f'):>8} "
              f"{'—' if r['best_step'] is None else r['best_step']:>7} "
              f"{'—' if r['best_step'] is None else _fmt(r['best_val_perplexity'], '.3f'):>8}  {r['date'] or '-'}")
    return 0


def cmd_score(args) -> int:
    from .checkpoint import load_model
    from .devices import resolve_device

    host = _host(args)
    if args.rows is not None and args.rows < 0:
        raise RNNStudioError(f"--rows must be >= 0, got {args.rows}")
    corpus = host.corpus("text-file")(path=args.file, encoding=args.encoding, errors=args.errors)  # checks first
    loaded = load_model(args.model, host=host, device=resolve_device(args.device), weights=args.weights)
    if args.explain:
        return _explain(args, loaded, "".join(corpus.iter_text()), host)
    from .scoring import score_stream

    result = score_stream(loaded, corpus.iter_text, host=host, exact=args.exact)
    if args.json:
        _print_json(result)
    else:
        print(f"{args.file}: perplexity {_fmt(result.get('perplexity'))} over {result['scored']:,} {result['unit']} "
              f"(cross-entropy {_fmt(result.get('cross-entropy'))} nats, {_fmt(result.get('bits-per-token'))} bits per "
              f"token, {_fmt(result.get('nats-per-char'))} nats per character, accuracy "
              f"{_fmt(result.get('accuracy'))}; {result['unknown']} unknown)")
        shown = {"perplexity", "cross-entropy", "bits-per-token", "nats-per-char", "accuracy"}
        others = [n for n in host.names("metric") if n not in shown and n in result]
        if others:  # the plugin metrics, one line
            print(f"{args.file}: " + ", ".join(f"{n} {_fmt(result[n], '.4g')}" for n in others))
    return 0


def _explain(args, loaded, text: str, host) -> int:
    """``score --explain``: the rows are written as they are made (JSON lines, or a table), then the summary."""
    from .inspector import explain, explanation_lines

    result = explain(loaded, text, host=host, exact=args.exact)
    rows = result.pop("rows")
    out = sys.stdout
    if args.json:  # one {"event": "token", ...} object per row, then {"event": "summary", ...}
        for row in rows:
            row = {"event": "token", **row}
            try:
                line = json.dumps(row, ensure_ascii=False, allow_nan=False)
            except ValueError:  # an infinite NLL: null, as everywhere in the JSON output
                line = json.dumps(json_safe(row), ensure_ascii=False)
            out.write(line + "\n")
        _print_json({"event": "summary", **result})
        return 0
    result["rows"] = rows
    for line in explanation_lines(result, max_rows=args.rows):
        out.write(line + "\n")
    out.flush()
    return 0


def cmd_runs(args) -> int:
    from .runs import export_csv, list_runs, run_row

    if args.csv == "-" and args.json:
        raise RNNStudioError("--csv - and --json both write to standard output; pick one (or give --csv a file)")
    records = list_runs()
    if args.csv:
        where = export_csv(records, args.csv)
        print(f"wrote {len(records)} runs to {where}", file=sys.stderr)
    if args.json:
        _print_json([run_row(r) for r in records])
        return 0
    if args.csv:
        return 0
    if not records:
        print("no runs recorded yet; every `rnnstudio train` (and GUI training) records one")
        return 0
    print(f"{'run':<40} {'cell':<12} {'tokens':<6} {'size':>7} {'steps':>6} {'val ppl':>8} {'nats/ch':>7} {'tok/s':>9} "
          f"{'device':<7} status")
    for r in map(run_row, records):
        if r["status"] == "broken":
            print(f"{r['id']:<40} BROKEN: {r['error']}")
            continue
        size = f"{r['num_layers']}x{r['hidden_size']}"
        print(f"{r['id']:<40} {str(r['cell']):<12} {str(r['tokens'] or '-'):<6} {size:>7} "
              f"{r['steps'] if r['steps'] is not None else '-':>6} {_fmt(r['val_perplexity']):>8} "
              f"{_fmt(r['val_nats_per_char']):>7} {_fmt(r['tokens_per_s'], ',.0f'):>9} {str(r['device']):<7} {r['status']}")
    return 0


def cmd_new_plugin(args) -> int:
    """``new-plugin NAME --dir DIR``: a ready package to install with pip and test with pytest."""
    from .new_plugin import write_plugin

    folder = args.dir or f"rnnstudio-{args.name}"
    for path in write_plugin(args.name, folder):
        print(path)
    print(f"next: pip install -e {folder} && rnnstudio plugins && (cd {folder} && pytest)")
    return 0


def cmd_gui(args) -> int:
    try:
        from .gui.app import main as gui_main
    except ImportError as exc:
        raise RNNStudioError(f"the GUI is not available ({exc}); the CLI commands still work") from None
    disable = getattr(args, "disable", None)
    if disable:  # the app's plugin host reads it (and its Plugins tab shows those plugins as disabled)
        os.environ["RNNSTUDIO_DISABLE"] = ",".join([os.environ.get("RNNSTUDIO_DISABLE", ""), *disable]).strip(",")
    return gui_main(no_plugins=getattr(args, "no_plugins", False))


# -- parser ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="rnnstudio", description="Train recurrent language models on your own text.")
    p.add_argument("--version", action="version", version=f"rnnstudio {__version__}")
    p.add_argument("--no-plugins", action="store_true", help="safe mode: load the built-in plugins only")
    p.add_argument("--disable", action="append", metavar="NAME", default=[],
                   help="skip one plugin by name (entry point, distribution or user file; repeatable; "
                        "also RNNSTUDIO_DISABLE=a,b)")
    p.add_argument("--debug", action="store_true", help="print the full traceback of plugin errors "
                                                        "(also RNNSTUDIO_DEBUG=1)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name, help_):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("--no-plugins", action="store_true", default=argparse.SUPPRESS,
                        help="safe mode: load the built-in plugins only")
        sp.add_argument("--disable", action="append", metavar="NAME", default=argparse.SUPPRESS,
                        help="skip one plugin by name (repeatable)")
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="print the full traceback of plugin errors")
        return sp

    add("gui", "open the desktop app (the default)")

    sp = add("plugins", "list the plugins (distribution, version, hooks), their components, and failed plugins")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--strict", action="store_true", help="exit 1 when any plugin failed (for plugin authors' CI)")

    from .config import WEIGHT_CHOICES, SamplingConfig, TrainConfig
    from .settings import add_arguments

    sp = add("train", "train a model")
    add_arguments(sp, TrainConfig)
    sp.set_defaults(epochs=None, max_steps=None, minutes=None)  # tells a typed 0 from no length given
    g = sp.add_argument_group("distributed")
    g.add_argument("--distributed", action="store_true", help="data-parallel under torchrun")
    sp.add_argument("--json", action="store_true", help="one JSON object per line; the last is the summary")

    sp = add("generate", "generate text from a saved model")
    sp.add_argument("--model", required=True)
    sp.add_argument("--prefix", default=None, help="text to warm up on (default: the corpus's sample prefix)")
    add_arguments(sp, SamplingConfig)
    sp.add_argument("--device", default="cpu")
    sp.add_argument("--json", action="store_true")

    sp = add("new-plugin", "write a ready plugin package: pyproject with the entry point, example hooks, tests")
    sp.add_argument("name", help="the plugin's name: the package is rnnstudio-NAME")
    sp.add_argument("--dir", default=None, help="where to write it (a new or empty folder; default: ./rnnstudio-NAME)")

    sp = add("models", "list saved models")
    sp.add_argument("--json", action="store_true")

    sp = add("runs", "list recorded training runs: config, final metrics, device, speed")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--csv", metavar="FILE", default=None,
                    help="also write the runs' final metrics to FILE as CSV ('-': standard output)")

    sp = add("score", "perplexity of a text file under a model")
    sp.add_argument("--model", required=True)
    sp.add_argument("file")
    sp.add_argument("--encoding", default="utf-8")
    sp.add_argument("--errors", default="strict", choices=("strict", "replace"))
    sp.add_argument("--weights", default="best", choices=WEIGHT_CHOICES,
                    help="best: the best-by-validation weights (the default); last: the last step's")
    sp.add_argument("--explain", action="store_true",
                    help="per-token breakdown, written as it goes (with --json: one JSON object per token, then a summary)")
    sp.add_argument("--rows", type=int, default=None, metavar="N",
                    help="with --explain and no --json: print only the first N rows of the table (default: all)")
    sp.add_argument("--exact", action="store_true",
                    help="one left-to-right stream (slow); the default scores parallel streams, each warmed up on "
                         "the text before it, which matches to about 0.1%% perplexity")
    sp.add_argument("--device", default="cpu")
    sp.add_argument("--json", action="store_true")
    return p


COMMANDS = {"gui": cmd_gui, "plugins": cmd_plugins, "train": cmd_train, "generate": cmd_generate,
            "models": cmd_models, "score": cmd_score, "runs": cmd_runs, "new-plugin": cmd_new_plugin}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command or "gui"
    try:
        return COMMANDS[command](args) or 0
    except RNNStudioError as exc:
        cause = exc.__cause__ or exc.__context__
        if cause is not None and _debug(args):
            cause = getattr(cause, "exc", cause)  # the loop wraps a plugin's error with where it happened
            traceback.print_exception(type(cause), cause, cause.__traceback__, file=sys.stderr)
        if not getattr(exc, "reported", False):  # a torchrun rank prints its line before it leaves the group
            print(f"rnnstudio: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("rnnstudio: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `rnnstudio generate ... | head -1`: the reader has all it wanted
        _stdout_to_devnull()
        return 0


if __name__ == "__main__":
    sys.exit(main())
