"""Run records: every training run's config, metric curves, final metrics, device, time and speed, as JSON."""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import re
import socket
import stat
import sys
import time
from pathlib import Path

from . import paths
from .errors import RNNStudioError
from .fileio import atomic_write_json, atomic_write_text
from .hookspecs import hookimpl
from .observers import Observer
from .processes import PID_MAX, process_alive
from .store.format import Field

FORMAT = "rnnstudio-run"
VERSION = 1
MAX_POINTS = 2000  # a curve longer than this is thinned to every other point (and sampled half as often)
TARGET_POINTS = 500  # aim for about this many training points per run
WRITE_SECONDS = 10.0  # rewrite the record after a validation at most this often while training

CSV_COLUMNS = ("id", "model", "status", "started", "corpus", "cell", "tokens", "hidden_size", "num_layers",
               "optimizer", "lr", "batch_size", "seq_len", "steps", "parameters", "device", "seconds",
               "tokens_per_s", "train_perplexity", "val_perplexity", "best_val_perplexity", "val_nats_per_char", "error")


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _finite(x):
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


class RunRecorder(Observer):
    """Builds one run's record from the trainer's events; cheap per event (an int compare per step).

    The first observer (a core plugin, see ``register_observers`` below). Runs that do not save
    (benchmarks) are not recorded."""

    name = "run-records"
    description = "Records every saved run's settings, curves and final metrics (listed by `rnnstudio runs`)."

    @classmethod
    def wanted(cls, config) -> bool:
        return bool(getattr(config, "save", True))

    def __init__(self, config):
        self.config = config.to_json() if hasattr(config, "to_json") else dict(config)
        self.record: dict | None = None
        self.path: Path | None = None
        self.every = 1
        self._last_write = 0.0
        self._t0 = time.monotonic()
        self._last_progress = None  # the newest Progress, recorded on close if the thinning skipped it

    # -- events ------------------------------------------------------------------------
    def observe(self, event) -> None:
        kind = event.kind
        if kind == "progress":
            self._last_progress = event
            if self.record is not None and (event.step % self.every == 0 or event.step == event.total_steps):
                self._add_train_point(event)
        elif kind == "evaluated":
            self._add_val_point(event)
        elif kind == "started":
            self._start(event)
        elif kind == "summary":
            self._summary(event)

    def _start(self, ev) -> None:
        total = ev.total_steps - ev.step if ev.total_steps else 0
        self.every = max(1, total // TARGET_POINTS) if total else 10
        cfg = self.config
        self.record = {
            "format": FORMAT, "version": VERSION, "id": "", "model": ev.model, "status": "running", "error": None,
            "pid": os.getpid(), "host": socket.gethostname(),  # lets a reader tell a killed run from a live one
            "started": _now_iso(), "ended": None, "seconds": None, "device": ev.device,
            "parameters": ev.parameters, "vocab_size": ev.vocab_size, "train_tokens": ev.train_tokens,
            "val_tokens": ev.val_tokens, "total_steps": ev.total_steps, "start_step": ev.step,
            "model_path": ev.path, "config": cfg,
            "curves": {"train": {"step": [], "loss": [], "perplexity": [], "tokens_per_s": []}, "val": {"step": []}},
            "final": {},
        }
        try:
            self.path = _new_path(ev.model)
        except OSError:
            self.path = None  # the runs folder cannot be written: train on, unrecorded
            return
        self.record["id"] = self.path.stem
        self._write()

    def _add_train_point(self, ev) -> None:
        train = self.record["curves"]["train"]
        train["step"].append(ev.step)
        train["loss"].append(_finite(ev.loss))
        train["perplexity"].append(_finite(ev.train.get("perplexity")))
        train["tokens_per_s"].append(_finite(ev.tokens_per_s))
        if len(train["step"]) > MAX_POINTS:
            for key in train:
                train[key] = train[key][::2]
            self.every *= 2

    def _add_val_point(self, ev) -> None:
        if self.record is None:
            return
        val = self.record["curves"]["val"]
        if val["step"] and val["step"][-1] == ev.step:
            return  # the same step evaluated twice (end of epoch and end of run)
        val["step"].append(ev.step)
        for name, value in ev.val.items():
            column = val.setdefault(name, [None] * (len(val["step"]) - 1))
            column.append(_finite(value))
        for name, column in val.items():
            if len(column) < len(val["step"]):
                column.append(None)
        if time.monotonic() - self._last_write >= WRITE_SECONDS:
            self._write()

    def _summary(self, ev) -> None:
        if self.record is None:
            return
        val_ppl = [v for v in self.record["curves"]["val"].get("perplexity", []) if v is not None]
        self.record["final"] = {
            "steps": ev.steps, "epochs": ev.epochs, "stopped": ev.stopped,
            "train_perplexity": _finite(ev.train_perplexity), "val_perplexity": _finite(ev.val_perplexity),
            "best_val_perplexity": min(val_ppl) if val_ppl else None,
            "tokens_per_s": _finite(ev.tokens_per_s), "seconds": _finite(ev.seconds),
            "train": {k: _finite(v) for k, v in ev.train.items()}, "val": {k: _finite(v) for k, v in ev.val.items()},
        }
        self.record["device"] = ev.device
        self.record["seconds"] = _finite(ev.seconds)
        self.record["status"] = "stopped" if ev.stopped else "finished"

    def close(self, status: str | None = None, error: str | None = None) -> None:
        """Write the final record; ``status`` overrides (``failed``, ``interrupted``) when the run did not end well."""
        if self.record is None:
            return
        if status in ("failed", "interrupted"):
            self.record["status"] = status
        if error:
            self.record["error"] = error
        last, steps = self._last_progress, self.record["curves"]["train"]["step"]
        if last is not None and (not steps or steps[-1] != last.step):
            self._add_train_point(last)  # a run that failed or stopped between points ends on its last step
        if self.record["status"] == "running":
            self.record["status"] = "interrupted"
        self.record["ended"] = _now_iso()
        if self.record["seconds"] is None:
            self.record["seconds"] = time.monotonic() - self._t0
        self._write()

    def _write(self) -> None:
        self._last_write = time.monotonic()
        if self.path is None:
            return
        try:
            atomic_write_json(self.path, self.record)
        except OSError:
            pass  # a run record must never stop training


def _new_path(model: str) -> Path:
    folder = paths.runs_dir()
    folder.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model)[:80] or "run"
    now = time.time()  # milliseconds in the name keep runs started in the same second in order
    stem = f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}.{int(now * 1000) % 1000:03d}-{safe}"
    path, n = folder / f"{stem}.json", 1
    while path.exists():
        n += 1
        path = folder / f"{stem}-{n}.json"
    path.touch()  # claim the name; the atomic write replaces it
    return path


@hookimpl
def register_observers(register):
    register(RunRecorder)


# -- reading --------------------------------------------------------------------------------

def list_runs() -> list[dict]:
    """Every run record, oldest first; an unreadable or malformed one is listed as ``{id, path, error}``
    with status ``broken`` and never hides the others."""
    folder = paths.runs_dir()
    try:
        files = sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))
    except OSError:
        return []
    out = []
    for path in files:
        try:
            out.append(load_run(path))
        except RNNStudioError as exc:
            out.append({"id": path.stem, "path": str(path), "error": str(exc), "status": "broken"})
        except Exception as exc:  # a case the schema missed still only marks this one record
            out.append({"id": path.stem, "path": str(path), "status": "broken",
                        "error": f"run record {path.name} could not be read ({type(exc).__name__}: {exc})"})
    out.sort(key=lambda r: (r.get("started") or "", r["id"]))
    return out


# The fields a reader uses, with their types: a record that breaks one is listed as broken, by field name.
RECORD_FIELDS = {
    "model": Field("str", optional=True), "status": Field("str", optional=True),
    "started": Field("str", optional=True), "ended": Field("str", optional=True),
    "error": Field("str", optional=True), "pid": Field("int", optional=True), "host": Field("str", optional=True),
    "seconds": Field("number", optional=True), "device": Field("str", optional=True),
    "parameters": Field("int", optional=True, min=0), "model_path": Field("str", optional=True),
    "config": Field("dict", optional=True), "final": Field("dict", optional=True),
    "curves": Field("dict", optional=True),
}
FINAL_FIELDS = {name: Field("number", optional=True) for name in (
    "train_perplexity", "val_perplexity", "best_val_perplexity", "tokens_per_s", "seconds")}
FINAL_FIELDS.update(steps=Field("int", optional=True, min=0), epochs=Field("int", optional=True, min=0))
CONFIG_FIELDS = {name: Field("str", optional=True) for name in ("corpus", "cell", "tokens", "optimizer")}
CONFIG_FIELDS.update({name: Field("int", optional=True) for name in ("hidden_size", "num_layers", "batch_size",
                                                                     "seq_len")})
CONFIG_FIELDS["lr"] = Field("number", optional=True)


def check_record(record, name: str) -> dict:
    """A run record's fields against ``RECORD_FIELDS``; the first bad one raises, named."""
    def fail(text: str) -> RNNStudioError:
        return RNNStudioError(f"run record {name}: {text}; delete the file, or fix that field")

    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise RNNStudioError(f"{name} is not an RNN Studio run record")
    for fields, data, prefix in ((RECORD_FIELDS, record, ""), (FINAL_FIELDS, record.get("final") or {}, "final."),
                                 (CONFIG_FIELDS, record.get("config") or {}, "config.")):
        for key, spec in fields.items():
            problem = spec.check(data.get(key))
            if problem:
                raise fail(f"field {prefix}{key} {problem}")
    for split, columns in (record.get("curves") or {}).items():
        if not isinstance(columns, dict):
            raise fail(f"field curves.{split} must be a JSON object")
        for column, values in columns.items():
            if not isinstance(values, list) or not all(
                    v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values):
                raise fail(f"field curves.{split}.{column} must be a list of numbers")
    return record


def load_run(path_or_id) -> dict:
    path = Path(path_or_id)
    if not path.is_file():  # a run id such as 20261127-042535-mymodel
        path = paths.runs_dir() / f"{path.stem if path.suffix == '.json' else path_or_id}.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RNNStudioError(f"no run {str(path_or_id)!r} (looked in {paths.runs_dir()}); see `rnnstudio runs`") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RNNStudioError(f"run record {path.name} is unreadable ({type(exc).__name__}: "
                             f"{str(exc)[:200]}); delete it") from None
    check_record(record, path.name)
    record["id"] = path.stem  # the file's name is the run's id, whatever the record says
    record["path"] = str(path)
    if record.get("status") == "running" and _owner_gone(record):
        # killed (SIGKILL, power loss) before it could close its record: shown as such, the file is left as is
        record["status"] = "interrupted"
        record["error"] = record.get("error") or "the training process ended without closing this record (killed?)"
    return record


def _owner_gone(record: dict) -> bool:
    pid = record.get("pid")
    if not isinstance(pid, int) or not 0 < pid <= PID_MAX or record.get("host") != socket.gethostname():
        return False  # an older record, another machine's, or no real pid: cannot tell
    return not process_alive(pid)


def rename_model_runs(old: str, new: str) -> int:
    """Point the run records of model ``old`` at its new name (after a rename); returns how many changed."""
    changed = 0
    for record in list_runs():
        if record.get("status") == "broken" or record.get("model") != old:
            continue
        path = Path(record.pop("path"))
        record["model"] = new
        if isinstance(record.get("config"), dict):
            record["config"]["name"] = new
        if isinstance(record.get("model_path"), str):
            record["model_path"] = str(Path(record["model_path"]).with_name(new))
        try:
            atomic_write_json(path, record)
            changed += 1
        except OSError:
            pass  # the history keeps the old name; the model itself is renamed
    return changed


def _number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def run_row(record: dict) -> dict:
    """One flat row per run: what the table, ``rnnstudio runs`` and the CSV show."""
    if record.get("status") == "broken":
        return {c: record.get(c) for c in CSV_COLUMNS}
    cfg = record.get("config") or {}
    final = record.get("final") or {}
    return {
        "id": record.get("id"), "model": record.get("model"), "status": record.get("status"),
        "started": record.get("started"), "corpus": cfg.get("corpus"), "cell": cfg.get("cell"),
        "tokens": cfg.get("tokens"), "hidden_size": cfg.get("hidden_size"), "num_layers": cfg.get("num_layers"),
        "optimizer": cfg.get("optimizer"), "lr": cfg.get("lr"), "batch_size": cfg.get("batch_size"),
        "seq_len": cfg.get("seq_len"), "steps": final.get("steps"), "parameters": record.get("parameters"),
        "device": record.get("device"), "seconds": record.get("seconds"), "tokens_per_s": final.get("tokens_per_s"),
        "train_perplexity": final.get("train_perplexity"), "val_perplexity": final.get("val_perplexity"),
        "best_val_perplexity": final.get("best_val_perplexity"),
        "val_nats_per_char": _final_val(record).get("nats-per-char"),  # compares across tokenizers
        "error": record.get("error"),
    }


def _final_val(record: dict) -> dict:
    val = (record.get("final") or {}).get("val") if record.get("status") != "broken" else None
    return {k: v for k, v in val.items() if isinstance(k, str) and _number(v) is not None} if isinstance(val, dict) else {}


def runs_csv(records: list[dict]) -> str:
    """One row per run: the columns of ``run_row``, then ``val <metric>`` for every metric any run validated
    (plugin metrics included)."""
    metrics = sorted({name for record in records for name in _final_val(record)})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*CSV_COLUMNS, *(f"val {m}" for m in metrics)], lineterminator="\n")
    writer.writeheader()
    for record in records:
        val = _final_val(record)
        row = {**run_row(record), **{f"val {m}": val.get(m) for m in metrics}}
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def export_csv(records: list[dict], path: str | os.PathLike) -> str:
    """Write the runs' final metrics as CSV (one row per run). ``-`` is standard output; a regular file (also
    behind a symlink, which stays a symlink) is replaced atomically; a device or a pipe is written through."""
    text = runs_csv(records)
    if os.fspath(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return "standard output"
    path = Path(path)
    try:
        try:
            st = os.stat(path)  # follows symlinks
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise RNNStudioError(f"cannot write the CSV to {path}: it is a folder; give a file name")
        if st is None or stat.S_ISREG(st.st_mode):
            real = os.path.realpath(path)  # through a symlink: its target is replaced, the link stays
            atomic_write_text(real, text)
            os.chmod(real, stat.S_IMODE(st.st_mode) if st else 0o644)  # not the temp file's 0600
        else:
            _write_through(path, text)  # /dev/stdout, a terminal, a FIFO with a reader
    except OSError as exc:
        raise RNNStudioError(f"cannot write {path} ({exc.strerror or exc}); pick another file") from None
    return str(path)


def _write_through(path: Path, text: str) -> None:
    """Write into an existing non-regular file without replacing it; a FIFO nobody reads is an error, not a hang."""
    try:
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise RNNStudioError(f"cannot write the CSV to {path}: it is a pipe that nobody reads") from None
        raise
    try:
        os.set_blocking(fd, True)
        data = text.encode("utf-8")
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


def curve(record: dict, metric: str) -> tuple[list[int], list[float]]:
    """(steps, values) for ``train loss``, ``train perplexity``, ``val perplexity`` or any ``val <metric>``."""
    split, _, name = metric.partition(" ")
    data = (record.get("curves") or {}).get(split) or {}
    steps, values = data.get("step") or [], data.get(name) or []
    pairs = [(s, v) for s, v in zip(steps, values) if v is not None]
    return [s for s, _ in pairs], [v for _, v in pairs]


def curve_names(records: list[dict]) -> list[str]:
    """The curves these runs have, e.g. ``val perplexity``, ``train loss``."""
    names = []
    for split in ("val", "train"):
        for record in records:
            for name in (record.get("curves") or {}).get(split) or {}:
                label = f"{split} {name}"
                if name != "step" and label not in names:
                    names.append(label)
    return names
