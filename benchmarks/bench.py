"""RNN Studio's benchmark suite: training, generation, GUI, data and time-to-quality, measured side by side.

    python benchmarks/bench.py            # the full suite (< 10 minutes on 2 CPU cores), prints a table
    python benchmarks/bench.py --quick    # short settings, for development
    python benchmarks/bench.py --json     # ... and the results as JSON on the last line
    python benchmarks/bench.py --only busy,startup,encode   # any sections alone
    python benchmarks/bench.py --only busy --busy-rounds 3  # the busy-machine rows, best of 3 rounds each

Every comparison is a ratio measured inside one run: contenders are interleaved round by round
and each reports its best round, so load from other processes hits all of them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import baselines  # noqa: E402
from rnnstudio.data import encode_stream  # noqa: E402
from rnnstudio.errors import RNNStudioError  # noqa: E402
from rnnstudio.fileio import json_safe  # noqa: E402
from rnnstudio.gemm import onednn_available  # noqa: E402
from rnnstudio.model import ModelConfig, RNNLanguageModel  # noqa: E402
from rnnstudio.plugins import default_host  # noqa: E402
from rnnstudio.sampling import SamplingConfig, stream  # noqa: E402
from rnnstudio.trainer import Evaluated, Finished, Progress, TrainConfig, Trainer  # noqa: E402

DEFAULT_TEXT = Path("/work/shared/data/timemachine.txt")
GATES = {"rnn": 1, "gru": 3, "lstm": 4}  # recurrent GEMM width in units of H
# cell -> (baseline key, target ratio); baselines: "d2l" or a torch family
TARGETS = {"rnn-scratch": ("d2l", 1.5), "gru-scratch": ("gru", 0.9), "lstm-scratch": ("lstm", 0.9),
           "rnn": ("rnn", 0.95), "gru": ("gru", 0.95), "lstm": ("lstm", 0.95)}
SCRATCH = ("rnn-scratch", "gru-scratch", "lstm-scratch")  # their per-step GEMMs run on packed_linear (oneDNN here)


def clock() -> float:
    """What rates are measured in: this thread's CPU time when torch runs on one thread (other processes
    on a shared machine do not inflate it), else wall time. ``main`` picks it from --threads."""
    return _CLOCK()


_CLOCK = time.perf_counter


def log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def family(cell: str) -> str:
    """The torch family a cell belongs to, by its name (rnn, gru or lstm)."""
    for fam in ("lstm", "gru", "rnn"):
        if fam in cell:
            return fam
    return "rnn"


# -- the corpus ---------------------------------------------------------------------------------

def corpus_settings(text: Path | None) -> dict:
    """TrainConfig fields for The Time Machine: the local copy, else the corpus plugin's download,
    else (offline, no copy) Python's docs with d2l's preprocessing, which also gives ~28 characters."""
    host = default_host()
    candidates = []
    if text and text.exists():
        candidates.append({"corpus": "time-machine", "corpus_options": {"path": str(text)}})
    candidates.append({"corpus": "time-machine", "corpus_options": {}})
    for cand in candidates:
        try:
            corpus = host.corpus(cand["corpus"])(**cand["corpus_options"])
            encode_stream(corpus.iter_text, tokenizer="char", preprocess="d2l")
            return {**cand, "preprocess": "d2l", "label": "The Time Machine"}
        except RNNStudioError as exc:
            log(f"note: {exc}")
    log("note: The Time Machine is not available (pass --text FILE); using python-docs with d2l preprocessing")
    return {"corpus": "python-docs", "corpus_options": {}, "preprocess": "d2l", "label": "python-docs (d2l)"}


def load_ids(settings: dict):
    corpus = default_host().corpus(settings["corpus"])(**settings["corpus_options"])
    enc = encode_stream(corpus.iter_text, tokenizer="char", preprocess=settings["preprocess"])
    return enc.ids, enc.vocab


def train_config(settings: dict, **kw) -> TrainConfig:
    return TrainConfig(corpus=settings["corpus"], corpus_options=dict(settings["corpus_options"]),
                       preprocess=settings["preprocess"], save=False, checkpoint_every=0, checkpoint_minutes=0,
                       **kw)


# -- 1. training throughput -----------------------------------------------------------------------

class TrainerContender:
    """RNN Studio's real trainer (the CLI's code path), advanced one Progress event at a time."""

    def __init__(self, cell: str, settings: dict, hidden: int):
        self.name = cell
        self.trainer = Trainer(train_config(settings, cell=cell, hidden_size=hidden, batch_size=32, seq_len=35,
                                            optimizer="sgd", lr=1.0, clip=1.0, partition="sequential",
                                            epochs=10**6, eval_every=0, threads=torch.get_num_threads()))
        self.events = self.trainer.run()
        for ev in self.events:
            if ev.kind == "started":
                break
        self.clean = True

    def step(self) -> int:
        """One optimizer step; ``clean`` is False when the step also ran an evaluation (epoch end)."""
        self.clean = True
        for ev in self.events:
            if isinstance(ev, Progress):
                return 32 * 35
            if isinstance(ev, Evaluated):
                self.clean = False
        raise RuntimeError("the trainer finished early")

    def close(self) -> None:
        self.events.close()


def run_rounds(contenders, budget: float, steps: int, min_rounds: int = 1, warmup: int = 1) -> dict[str, list[float]]:
    """Interleave the contenders in short rounds of ``steps`` steps each (order alternating) until ``budget``
    seconds have passed. Returns every contender's tokens/s of each step; steps that also evaluated are left out.

    The best step is the headline: on a shared machine, other processes only ever slow a step down."""
    rates: dict[str, list[float]] = {c.name: [] for c in contenders}
    for c in contenders:
        for _ in range(warmup):
            c.step()
    t_end = time.perf_counter() + budget
    r = 0
    while r < min_rounds or time.perf_counter() < t_end:
        for c in (contenders if r % 2 == 0 else contenders[::-1]):
            taken = 0
            while taken < steps:
                t0 = clock()
                n = c.step()
                dt = clock() - t0
                if getattr(c, "clean", True):
                    rates[c.name].append(n / dt)
                    taken += 1
        r += 1
        log(f"  round {r}: " + ", ".join(f"{k} {max(v) / 1e3:.1f}k" for k, v in rates.items()))
    return rates


def bench_training(settings, cells, hidden, budget, steps, gemm, gemm_onednn=None) -> dict:
    """``gemm``: torch.mm's FLOP/s (MKL), the bound's rate for everything on torch's BLAS; ``gemm_onednn``:
    oneDNN's, the rate for nn.LSTM where its training runs on oneDNN's fused RNN primitive (the raw nn.LSTM
    loop and the ``lstm`` cell), which on AMD CPUs with AVX-512 is 2-3x MKL's and beat the MKL-based bound."""
    ids, vocab = load_ids(settings)
    V = len(vocab)
    lstm_on_onednn = gemm_onednn is not None and baselines.onednn_runs_lstm()
    log(f"[train] vocab {V}, {len(ids)} tokens, hidden {hidden}, cells {', '.join(cells)}; "
        f"nn.LSTM on oneDNN: {'yes' if lstm_on_onednn else 'no'}")
    base = {"d2l": baselines.D2LScratchLoop(ids, V, hidden)}
    for fam in ("rnn", "gru", "lstm"):
        base[fam] = baselines.RawTorchLoop(fam, ids, V, hidden)
    if lstm_on_onednn:  # the LSTM on the same BLAS as the scratch cells: what the old bound described
        base["lstm-aten"] = baselines.RawTorchLoopATen("lstm", ids, V, hidden)
    floor = baselines.RNNGemmFloor(hidden)  # what rnn-scratch could reach if nothing but its GEMMs cost time
    floors = [floor]
    if gemm_onednn is not None:  # the same GEMMs on oneDNN: what a scratch RNN on another GEMM library could reach
        floors.append(baselines.RNNGemmFloorOneDNN(hidden))
    ours = {}
    for cell in cells:
        try:
            ours[cell] = TrainerContender(cell, settings, hidden)
        except Exception as exc:  # a broken cell is reported, the suite goes on
            log(f"  {cell}: could not start ({type(exc).__name__}: {exc})")
    contenders = list(base.values()) + floors + list(ours.values())
    try:
        rates = run_rounds(contenders, budget, steps)
    finally:
        for c in ours.values():
            c.close()

    onednn_rows = {base["lstm"].name, "lstm"} if lstm_on_onednn else set()  # nn.LSTM itself and the cell on it
    onednn_rows |= {f.name for f in floors[1:]}
    scratch_on_onednn = gemm_onednn is not None and onednn_available()
    if scratch_on_onednn:  # every GEMM of their time loops, the weight gradients too (rnnstudio.gemm)
        onednn_rows |= set(SCRATCH) | {"rnn", "gru"}  # the fused gru and rnn train through the scratch loops on CPU

    def row(name, fam, kind):
        best = max(rates[name])
        rate = gemm_onednn if name in onednn_rows else gemm
        bound = rate / (3 * 2 * hidden * hidden * GATES[fam])
        return {"name": name, "kind": kind, "family": fam, "tokens_per_s": best,
                "median_tokens_per_s": statistics.median(rates[name]), "fraction_of_matmul_bound": best / bound,
                "gemm": "onednn" if name in onednn_rows else "blas"}

    rows = [row(base["d2l"].name, "rnn", "baseline")]
    rows += [row(base[f].name, f, "baseline") for f in ("rnn", "gru", "lstm")]
    if "lstm-aten" in base:
        rows.append(row(base["lstm-aten"].name, "lstm", "baseline"))
    d2l = rows[0]
    for f in floors:
        r = row(f.name, "rnn", "bound")
        r.update(vs=d2l["name"], ratio=r["median_tokens_per_s"] / d2l["median_tokens_per_s"],
                 ratio_best=r["tokens_per_s"] / d2l["tokens_per_s"], target=None, met=None)
        rows.append(r)
    floor_rows = {("onednn" if f is not floor else "blas"): next(r for r in rows if r["name"] == f.name) for f in floors}
    base_rate = {"d2l": rows[0]["tokens_per_s"], **{f: rows[i + 1]["tokens_per_s"] for i, f in enumerate(("rnn", "gru", "lstm"))}}
    base_median = {k: next(r["median_tokens_per_s"] for r in rows if r["name"] == base[k].name) for k in base}
    base_name = {"d2l": base["d2l"].name, **{f: base[f].name for f in ("rnn", "gru", "lstm")}}
    for cell in ours:
        r = row(cell, family(cell), "rnnstudio")
        key, target = TARGETS.get(cell, (family(cell), None))
        ratio = r["median_tokens_per_s"] / base_median[key]  # medians: steadier than the single best step
        r.update(vs=base_name[key], ratio=ratio, ratio_best=r["tokens_per_s"] / base_rate[key], target=target,
                 met=None if target is None else ratio >= target)
        if cell == "rnn-scratch":  # item 5 of issue 16: >= 0.85x the floor of the GEMM library it runs on
            ceiling = floor_rows[r["gemm"]]
            r.update(of_floor=r["median_tokens_per_s"] / ceiling["median_tokens_per_s"],
                     of_floor_best=r["tokens_per_s"] / ceiling["tokens_per_s"], of_floor_target=0.85,
                     of_floor_name=ceiling["name"],
                     **{f"of_floor_{lib}": r["median_tokens_per_s"] / f["median_tokens_per_s"]
                        for lib, f in floor_rows.items()})
        rows.append(r)
    return {"vocab_size": V, "hidden": hidden, "batch_size": 32, "num_steps": 35, "steps": len(rates[contenders[0].name]),
            "gemm_gflops": gemm / 1e9, "gemm_gflops_onednn": None if gemm_onednn is None else gemm_onednn / 1e9,
            "lstm_on_onednn": lstm_on_onednn, "rows": rows}


# -- 2. generation --------------------------------------------------------------------------------

class StudioGenerator:
    def __init__(self, cell, vocab, hidden):
        torch.manual_seed(0)
        cls = default_host().cell(cell)
        self.name = cell
        self.model = RNNLanguageModel(ModelConfig(cell=cell, vocab_size=len(vocab), hidden_size=hidden), cls)
        self.vocab = vocab

    def run(self, prefix, length, greedy):
        t0, c0 = time.perf_counter(), clock()
        first = None
        n = 0
        for _ in stream(self.model, self.vocab, prefix, SamplingConfig(length=length, greedy=greedy, seed=0)):
            if first is None:
                first = time.perf_counter() - t0
            n += 1
        return n, clock() - c0, first


class RawGenerator:
    def __init__(self, fam, vocab, hidden):
        self.loop = baselines.RawGenerationLoop(fam, len(vocab), hidden)
        self.name = self.loop.name
        self.vocab = vocab

    def run(self, prefix, length, greedy):
        t0, c0 = time.perf_counter(), clock()
        first = []
        ids = self.vocab.encode(prefix)
        out = self.loop.generate(ids, length, greedy, on_first=lambda: first.append(time.perf_counter() - t0))
        return len(out), clock() - c0, first[0]


def bench_generation(settings, cells, hidden, length, budget) -> dict:
    _, vocab = load_ids(settings)
    prefix = "time traveller "
    gens = {f: RawGenerator(f, vocab, hidden) for f in ("rnn", "gru", "lstm")}
    ours = {c: StudioGenerator(c, vocab, hidden) for c in cells}
    log(f"[generate] hidden {hidden}, {length} characters after {prefix!r}, batch 1")
    rows = []
    for greedy in (True, False):
        mode = "greedy" if greedy else "sampled"
        contenders = list(gens.values()) + list(ours.values())
        rates = {c.name: [] for c in contenders}
        firsts = {c.name: [] for c in contenders}
        for c in contenders:
            c.run(prefix, 20, greedy)  # warm-up
        t_end, r = time.perf_counter() + budget / 2, 0
        while r < 1 or time.perf_counter() < t_end:  # interleaved rounds, order alternating
            for c in (contenders if r % 2 == 0 else contenders[::-1]):
                n, secs, first = c.run(prefix, length, greedy)
                rates[c.name].append(n / secs)
                firsts[c.name].append(first)
            r += 1
        for fam, g in gens.items():
            rows.append({"name": g.name, "kind": "baseline", "mode": mode, "chars_per_s": max(rates[g.name]),
                         "first_char_ms": 1e3 * min(firsts[g.name])})
        for cell in ours:
            base = gens[family(cell)].name
            best = max(rates[cell])
            rows.append({"name": cell, "kind": "rnnstudio", "mode": mode, "chars_per_s": best,
                         "first_char_ms": 1e3 * min(firsts[cell]), "vs": base, "ratio": best / max(rates[base]),
                         "target": 0.9, "met": best / max(rates[base]) >= 0.9})
    return {"hidden": hidden, "length": length, "prefix": prefix, "rounds": r, "rows": rows}


# -- 3. GUI ------------------------------------------------------------------------------------------

def bench_gui(settings, quick) -> dict:
    """Runs in a subprocess (Qt offscreen) so that Qt never loads into the benchmark process."""
    app_py = HERE.parent / "rnnstudio" / "gui" / "app.py"
    if not app_py.exists():
        return {"skipped": "rnnstudio/gui/app.py does not exist yet"}
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    cmd = [sys.executable, str(HERE / "bench_gui.py"), "--settings", json.dumps(settings), "--launched", repr(time.time())]
    if quick:
        cmd.append("--quick")
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        return {"skipped": "the GUI benchmark did not finish in 240 s"}
    if out.returncode != 0 or not out.stdout.strip():
        return {"skipped": f"the GUI benchmark failed (exit {out.returncode}): {out.stderr.strip()[-600:]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- 7. a busy machine ----------------------------------------------------------------------------

# Runs `rnnstudio train` jobs through the CLI's own main() in one process. Importing rnnstudio.cli first
# sets OpenMP's wait policy before torch loads, exactly as the `rnnstudio` command does; one process for
# all jobs saves re-importing torch for each (the jobs differ only in their thread settings).
BUSY_CHILD = r"""
import contextlib, io, json, sys, time
from rnnstudio.cli import main
for job in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(job["argv"])
    if job["id"] is None:  # a warm-up run: not measured
        continue
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    summary = lines[-1] if lines else {}
    print(json.dumps({"id": job["id"], "code": code, "tokens_per_s": summary.get("tokens_per_s")}), flush=True)
"""

# 2-6 s of training each on 2 quiet cores: a short run, as runs go, but long enough that the tuner's probe (2 warm-up
# steps, then 3 timed steps per thread count, fewer for a clear loser) is not most of it
BUSY_STEPS = {32: 400, 256: 120, 512: 60}


def spinner() -> subprocess.Popen:
    """A competing CPU-bound process, as a browser or a second training run would be."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def bench_busy(settings, cells, hiddens, rounds: int) -> dict:
    """Default threads (the thread tuner) against --threads 1 and --threads <cores>, quiet and with a spinner."""
    cores = os.cpu_count() or 1
    choices = {"default": [], "threads 1": ["--threads", "1"], f"threads {cores}": ["--threads", str(cores)]}
    base = ["train", "--corpus", settings["corpus"], "--preprocess", settings["preprocess"], "--eval-every", "0",
            "--checkpoint-every", "0", "--checkpoint-minutes", "0", "--device", "cpu", "--json"]
    for key, value in settings["corpus_options"].items():
        base += ["--corpus-opt", f"{key}={value}"]
    rows = []
    for load in ("quiet", "busy"):
        jobs = []
        for r in range(rounds):
            for cell in cells:
                for hidden in hiddens:
                    order = list(choices.items())
                    order = order[r % len(order):] + order[: r % len(order)]  # rotate who goes first
                    for name, extra in order:
                        jobs.append({"id": [cell, hidden, name], "argv": [
                            *base, "--cell", cell, "--hidden-size", str(hidden), "--max-steps", str(BUSY_STEPS.get(hidden, 30)),
                            "--name", f"busy-{load}-{len(jobs)}", *extra]})
        # One untimed run per choice first: the first training run in a process pays once for what every later
        # one reuses (lazy imports at the first optimizer step, oneDNN's kernels for each shape, the thread pool),
        # and without this it landed on the first row's first choice, the default (quiet gru-32, the only row
        # under 0.9x in the morning's idle run, 0.84x: probably this).
        warm = [{"id": None, "argv": [*base, "--cell", cells[0], "--hidden-size", str(hiddens[0]), "--max-steps", "20",
                                      "--name", f"busy-{load}-warmup-{i}", *extra]}
                for i, extra in enumerate(choices.values())]
        jobs = warm + jobs
        log(f"[busy] {load}: {len(jobs) - len(warm)} training runs after {len(warm)} warm-up runs")
        competitor = spinner() if load == "busy" else None
        try:
            out = subprocess.run([sys.executable, "-c", BUSY_CHILD, json.dumps(jobs)], capture_output=True, text=True,
                                 timeout=900, env={k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"})
        finally:
            if competitor:
                competitor.kill()
                competitor.wait()
        if out.returncode:
            raise RuntimeError(f"busy-machine child failed: {out.stderr[-800:]}")
        best: dict[tuple, float] = {}
        for line in out.stdout.splitlines():
            res = json.loads(line)
            cell, hidden, name = res["id"]
            key = (cell, hidden, name)
            best[key] = max(best.get(key, 0.0), res["tokens_per_s"] or 0.0)  # best round: load hits all alike
        for cell in cells:
            for hidden in hiddens:
                rates = {name: best[(cell, hidden, name)] for name in choices}
                fixed = max(v for n, v in rates.items() if n != "default")
                ratio = rates["default"] / fixed if fixed else 0.0
                rows.append({"load": load, "cell": cell, "hidden": hidden, **rates, "ratio": ratio,
                             "target": 0.9, "met": ratio >= 0.9})
    return {"cores": cores, "rounds": rounds, "steps": BUSY_STEPS, "rows": rows}


# -- 8. start-up ------------------------------------------------------------------------------------

STARTUP_TARGETS = {"--version": 0.3, "--help": 0.3, "models": 0.6, "window shown": 1.5}

# Launch the GUI's own entry point and report when the main window is first shown (Qt offscreen).
WINDOW_CHILD = r"""
import sys, time
t0 = float(sys.argv[1])
from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication, QMainWindow
class Shown(QObject):
    def eventFilter(self, obj, event):
        if event.type() == QEvent.Show and isinstance(obj, QMainWindow):
            print(f"shown {time.time() - t0:.4f}", flush=True)
            QTimer.singleShot(0, QApplication.instance().quit)
        return False
app = QApplication(sys.argv[:1])
watcher = Shown()
app.installEventFilter(watcher)
from rnnstudio.cli import main
sys.exit(main(["gui"]))
"""


def bench_startup(repeats: int = 5) -> dict:
    """Process wall time of commands that do not train, best of ``repeats``: what a user waits for."""
    exe = [sys.executable, "-m", "rnnstudio"]
    rows = []
    for name, argv in (("--version", ["--version"]), ("--help", ["--help"]), ("models", ["models"])):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run([*exe, *argv], capture_output=True, text=True, timeout=120)
            times.append(time.perf_counter() - t0)
        rows.append({"command": f"rnnstudio {name}", "seconds": min(times), "target": STARTUP_TARGETS[name],
                     "met": min(times) <= STARTUP_TARGETS[name]})
    times = []
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    for _ in range(repeats):
        t0 = time.time()
        try:
            out = subprocess.run([sys.executable, "-c", WINDOW_CHILD, repr(t0)], capture_output=True, text=True,
                                 timeout=120, env=env)
        except subprocess.TimeoutExpired:
            continue
        shown = [float(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("shown ")]
        if shown:
            times.append(shown[0])
    if times:
        rows.append({"command": "rnnstudio (window shown)", "seconds": min(times), "target": 1.5,
                     "met": min(times) <= 1.5})
    return {"repeats": repeats, "rows": rows}


# -- 4. data ---------------------------------------------------------------------------------------

def _proc_status_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Linux: restart the peak-RSS mark (VmHWM) so imports' transient peaks are left out."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def data_child(path: str, what: str) -> None:
    """In a fresh process: encode (or train one step on) the corpus; print timings and peak RSS as JSON."""
    import rnnstudio.trainer  # noqa: F401  (imports are not part of the measurement)
    baseline = _proc_status_bytes("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    reset = _reset_peak_rss()
    t0 = time.perf_counter()
    if what == "encode":
        corpus = default_host().corpus("text-file")(path=path)
        enc = encode_stream(corpus.iter_text, tokenizer="char", preprocess="raw")
        out = {"tokens": len(enc.ids), "vocab": len(enc.vocab)}
    else:
        trainer = Trainer(TrainConfig(corpus="text-file", corpus_options={"path": path}, save=False,
                                      checkpoint_every=0, checkpoint_minutes=0, eval_every=0))
        events = trainer.run()
        for ev in events:
            if isinstance(ev, Progress):
                break
        events.close()
        out = {}
    peak = (_proc_status_bytes("VmHWM") if reset else None) or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out.update(seconds=time.perf_counter() - t0, baseline_rss=baseline, peak_rss=peak)
    print(json.dumps(out))


def bench_data(text: Path | None, megabytes: int) -> dict:
    from bench_score import make_text_file  # the same numbered-lines file as the scoring rows

    with tempfile.TemporaryDirectory() as tmp:
        path = make_text_file(Path(tmp), text, megabytes, "big.txt")
        size = path.stat().st_size
        log(f"[data] {size / 1e6:.0f} MB corpus")
        env = {**os.environ, "RNNSTUDIO_HOME": tmp}
        res = {}
        for what in ("encode", "first-step", "first-step-cached"):  # the second training reads the encoded cache
            out = subprocess.run([sys.executable, __file__, "--data-child", str(path), what], env=env,
                                 capture_output=True, text=True, timeout=300)
            if out.returncode:
                raise RuntimeError(f"data child {what} failed: {out.stderr[-800:]}")
            res[what] = json.loads(out.stdout.strip().splitlines()[-1])
    enc = res["encode"]
    extra = enc["peak_rss"] - enc["baseline_rss"]
    return {"corpus_mb": size / 1e6, "encode_mb_per_s": size / 1e6 / enc["seconds"], "encode_seconds": enc["seconds"],
            "peak_rss_mb": enc["peak_rss"] / 1e6, "baseline_rss_mb": enc["baseline_rss"] / 1e6,
            "rss_over_baseline_mb": extra / 1e6, "rss_ratio": extra / size, "rss_target": 3.0,
            "rss_met": extra / size <= 3.0, "first_step_seconds": res["first-step"]["seconds"],
            "first_step_cached_seconds": res["first-step-cached"]["seconds"], "encode_target_mb_per_s": 100,
            "encode_met": size / 1e6 / enc["seconds"] >= 100,
            "first_step_peak_rss_mb": res["first-step"]["peak_rss"] / 1e6}


# -- 5. time to quality ----------------------------------------------------------------------------

def bench_quality(settings, budget: float) -> dict:
    """Validation perplexity after ``budget`` seconds of training each, the recipes interleaved step by step."""
    recipes = {
        "rnnstudio default (gru 256, adam 0.005)": {},
        "d2l 9.1 (gru 256, sgd lr 1)": {"optimizer": "sgd", "lr": 1.0},
    }
    log(f"[quality] {budget:.0f} s of training per recipe")
    runs = {}
    for name, kw in recipes.items():
        tr = Trainer(train_config(settings, epochs=10**6, eval_every=0, seed=0, **kw))
        events = tr.run()
        for ev in events:
            if ev.kind == "started":
                break
        runs[name] = {"trainer": tr, "events": events, "spent": 0.0, "steps": 0}
    active = list(runs)
    while active:
        for name in list(active):
            run = runs[name]
            t0 = time.perf_counter()
            for ev in run["events"]:
                if isinstance(ev, Progress):
                    run["steps"] += 1
                    break
            run["spent"] += time.perf_counter() - t0
            if run["spent"] >= budget:
                run["trainer"].stop_event.set()
                active.remove(name)
    out = {"budget_s": budget, "rows": []}
    for name, run in runs.items():
        fin = None
        for ev in run["events"]:
            if isinstance(ev, Finished):
                fin = ev
        out["rows"].append({"recipe": name, "steps": run["steps"], "val_perplexity": fin.val_perplexity})
    ppl = [r["val_perplexity"] for r in out["rows"]]
    out["default_better"] = ppl[0] < ppl[1]
    return out


# -- report ---------------------------------------------------------------------------------------

def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version()}


def k(x):
    return f"{x / 1e3:.1f}k"


def print_table(res: dict) -> None:
    m = res["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['threads']} threads); "
          f"rates in {res['clock']}")
    if "train" in res:
        t = res["train"]
        onednn = (f", oneDNN {t['gemm_gflops_onednn']:.0f} (the bound of rows marked *, which run on oneDNN)"
                  if t.get("gemm_gflops_onednn") is not None else "")
        print(f"\n1. training tokens/s (vocab {t['vocab_size']}, batch 32, seq 35, hidden {t['hidden']}, sgd lr 1, "
              f"clip 1; GEMM {t['gemm_gflops']:.0f} GFLOP/s{onednn}; {t['steps']} interleaved steps each; ratios of medians)")
        print(f"   {'contender':<30}{'best':>10}{'median':>10}{'of bound':>10}  {'ratio (median; best)':>30}  target")
        for r in t["rows"]:
            ratio = (f"{r['ratio']:.2f}x; {r['ratio_best']:.2f}x {r['vs'].replace('raw ', '')}" if "ratio" in r else "")
            target = "" if r.get("target") is None else f">= {r['target']}x {'ok' if r['met'] else 'MISSED'}"
            name = r["name"] + ("*" if r.get("gemm") == "onednn" else "")
            print(f"   {name:<30}{k(r['tokens_per_s']):>10}{k(r['median_tokens_per_s']):>10}"
                  f"{r['fraction_of_matmul_bound']:>10.1%}  {ratio:>30}  {target}")
            if "of_floor" in r:
                other = "".join(f"; {r[f'of_floor_{lib}']:.2f}x the {label} one" for lib, label in
                                (("blas", "torch.mm (MKL)"), ("onednn", "oneDNN")) if f"of_floor_{lib}" in r and lib != r["gemm"])
                print(f"   {'':<30}{'':>30}  {r['of_floor']:.2f}x; {r['of_floor_best']:.2f}x the {r['of_floor_name']}  "
                      f">= {r['of_floor_target']}x {'ok' if r['of_floor'] >= r['of_floor_target'] else 'MISSED'}{other}")
    if "generate" in res:
        g = res["generate"]
        print(f"\n2. generation (hidden {g['hidden']}, {g['length']} characters, batch 1, best of {g['rounds']} interleaved runs)")
        print(f"   {'generator':<22}{'mode':>8}{'chars/s':>10}{'first ms':>10}  {'ratio':>16}  target")
        for r in g["rows"]:
            ratio = f"{r['ratio']:.2f}x {r['vs'].replace('raw ', '')}" if "ratio" in r else ""
            target = f">= 0.9x {'ok' if r['met'] else 'MISSED'}" if "met" in r else ""
            print(f"   {r['name']:<22}{r['mode']:>8}{k(r['chars_per_s']):>10}{r['first_char_ms']:>10.2f}  {ratio:>16}  {target}")
    if "gui" in res:
        g = res["gui"]
        print("\n3. GUI")
        if "skipped" in g:
            print(f"   skipped: {g['skipped']}")
        else:
            for key, val in g.items():
                print(f"   {key}: {val}")
    if "data" in res:
        d = res["data"]
        print(f"\n4. data ({d['corpus_mb']:.0f} MB corpus)")
        print(f"   encode {d['encode_mb_per_s']:.1f} MB/s ({d['encode_seconds']:.1f} s); peak RSS {d['peak_rss_mb']:.0f} MB "
              f"= {d['baseline_rss_mb']:.0f} MB python+torch + {d['rss_over_baseline_mb']:.0f} MB "
              f"({d['rss_ratio']:.2f}x the corpus, target <= 3x {'ok' if d['rss_met'] else 'MISSED'})")
        print(f"   first training step after {d['first_step_seconds']:.1f} s (peak RSS {d['first_step_peak_rss_mb']:.0f} MB); "
              f"{d['first_step_cached_seconds']:.1f} s on the next run (encoded-corpus cache)")
        print(f"   encode target >= {d['encode_target_mb_per_s']} MB/s {'ok' if d['encode_met'] else 'MISSED'}")
    if "quality" in res:
        q = res["quality"]
        print(f"\n5. validation perplexity after {q['budget_s']:.0f} s of training")
        for r in q["rows"]:
            print(f"   {r['recipe']:<42} {r['val_perplexity']:.2f} ({r['steps']} steps)")
        print(f"   default recipe better: {'yes' if q['default_better'] else 'NO'}")
    if "busy" in res:
        b = res["busy"]
        print(f"\n7. a busy machine: `rnnstudio train` wall-clock tokens/s, {b['cores']} cores, best of {b['rounds']} "
              f"rounds; busy = one competing CPU-bound process")
        print(f"   {'load':<6}{'cell':<13}{'hidden':>7}{'default':>10}{'threads 1':>11}{'threads ' + str(b['cores']):>11}"
              f"{'ratio':>8}  target")
        for r in b["rows"]:
            print(f"   {r['load']:<6}{r['cell']:<13}{r['hidden']:>7}{k(r['default']):>10}{k(r['threads 1']):>11}"
                  f"{k(r['threads ' + str(b['cores'])]):>11}{r['ratio']:>7.2f}x  >= 0.9x of the faster fixed choice "
                  f"{'ok' if r['met'] else 'MISSED'}")
    if "startup" in res:
        print(f"\n8. start-up (process wall time, best of {res['startup']['repeats']})")
        for r in res["startup"]["rows"]:
            print(f"   {r['command']:<28}{r['seconds']:>7.2f} s  target <= {r['target']} s {'ok' if r['met'] else 'MISSED'}")
    if "score" in res:
        from bench_score import print_rows

        print("\n6. scoring (rnnstudio score and score --explain)")
        print_rows(res["score"])


def summary(res: dict) -> dict:
    """The headline ratios of items 1-5 and whether each target was met."""
    out = {}
    if "train" in res:
        out["train"] = {r["name"]: {"ratio": round(r["ratio"], 3), "ratio_best": round(r["ratio_best"], 3),
                                    "vs": r["vs"], "target": r["target"], "met": r["met"],
                                    "fraction_of_matmul_bound": round(r["fraction_of_matmul_bound"], 4),
                                    **({"of_floor": round(r["of_floor"], 3), "of_floor_best": round(r["of_floor_best"], 3),
                                        "of_floor_vs": r["of_floor_name"],
                                        **{k: round(v, 3) for k, v in r.items() if k in ("of_floor_blas", "of_floor_onednn")},
                                        "of_floor_target": r["of_floor_target"],
                                        "of_floor_met": r["of_floor"] >= r["of_floor_target"]} if "of_floor" in r else {})}
                        for r in res["train"]["rows"] if "ratio" in r}
    if "generate" in res:
        out["generate"] = {f"{r['name']} {r['mode']}": {"ratio": round(r["ratio"], 3), "vs": r["vs"], "target": 0.9,
                                                       "met": r["met"], "first_char_ms": round(r["first_char_ms"], 2)}
                           for r in res["generate"]["rows"] if "ratio" in r}
    g = res.get("gui", {})
    if g and "skipped" not in g:
        out["gui"] = {k: g[k] for k in ("lateness_p99_ms", "lateness_met", "gui_vs_cli", "gui_vs_cli_met",
                                        "launch_to_shown_s")}
    elif g:
        out["gui"] = {"skipped": g["skipped"]}
    if "data" in res:
        d = res["data"]
        out["data"] = {k: d[k] for k in ("encode_mb_per_s", "encode_met", "rss_ratio", "rss_met", "first_step_seconds",
                                         "first_step_cached_seconds")}
    if "quality" in res:
        q = res["quality"]
        out["quality"] = {"default_better": q["default_better"],
                          **{r["recipe"]: r["val_perplexity"] for r in q["rows"]}}
    if "busy" in res:
        out["busy"] = {f"{r['load']} {r['cell']} {r['hidden']}": {"ratio": round(r["ratio"], 3), "met": r["met"]}
                       for r in res["busy"]["rows"]}
    if "startup" in res:
        out["startup"] = {r["command"]: {"seconds": round(r["seconds"], 3), "target": r["target"], "met": r["met"]}
                          for r in res["startup"]["rows"]}
    if "score" in res:
        s = res["score"]
        out["score"] = {"ratio": round(s["throughput"]["ratio"], 3), "met": s["throughput"]["met"],
                        "seconds_per_10mb": round(s["score_seconds_per_10mb"], 1), "seconds_met": s["score_met"],
                        "explain_peak_rss_mb": round(s["explain_peak_rss_mb"]), "explain_rss_met": s["explain_rss_met"]}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short settings for development")
    ap.add_argument("--json", action="store_true", help="print the results as JSON on the last line")
    ap.add_argument("--text", type=Path, default=DEFAULT_TEXT, help="a local copy of The Time Machine")
    ap.add_argument("--only", default="train,generate,gui,data,quality,score,busy,startup",
                    help="comma-separated sections to run (encode is another name for data)")
    ap.add_argument("--cells", default="", help="comma-separated cells (default: every cell plugin)")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: rates are then measured in thread CPU time, which other "
                         "processes on the machine do not inflate; >1 measures wall time)")
    ap.add_argument("--busy-rounds", type=int, default=1,
                    help="rounds of the busy-machine section (default 1, to stay under 10 minutes; each row's runs "
                         "last 2-6 s, and this VM's step times wander 30-50%% for seconds at a time, so a row's "
                         "verdict wants 3: each choice then reports its best of 3)")
    ap.add_argument("--data-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.data_child:
        data_child(*args.data_child)
        return 0
    os.environ.setdefault("RNNSTUDIO_HOME", tempfile.mkdtemp(prefix="rnnstudio-bench-"))
    global _CLOCK
    torch.set_num_threads(args.threads)
    _CLOCK = time.thread_time if args.threads == 1 else time.perf_counter
    only = set(args.only.split(","))
    if "encode" in only:
        only.add("data")
    cells = [c for c in args.cells.split(",") if c] or default_host().names("cell")
    t_start = time.perf_counter()
    settings = corpus_settings(args.text)
    res = {"machine": machine(), "corpus": settings["label"], "quick": args.quick, "command": " ".join(sys.argv)}
    res["machine"]["gemm_gflops"] = baselines.gemm_flops(clock=clock) / 1e9
    onednn = baselines.gemm_flops(clock=clock, library="onednn")
    res["machine"]["gemm_gflops_onednn"] = None if onednn is None else onednn / 1e9
    res["clock"] = "thread CPU time" if args.threads == 1 else "wall time"
    def bench_score_rows():
        from bench_score import bench_score

        return bench_score(settings, source=args.text, quick=args.quick, clock=clock)

    # The training budget is wall time for all contenders together: 100 s gave 57 interleaved rounds of 2 steps
    # at hidden 512 and a whole suite of 655 s on 2026-12-03's box (oneDNN half as fast as the afternoon's);
    # 60 s keeps the suite under 10 minutes (docs/performance.md has the two runs' medians side by side).
    sections = {
        "train": lambda: bench_training(settings, cells, args.hidden, budget=20.0 if args.quick else 60.0,
                                        steps=2, gemm=res["machine"]["gemm_gflops"] * 1e9, gemm_onednn=onednn),
        "generate": lambda: bench_generation(settings, cells, args.hidden, length=200,
                                             budget=15.0 if args.quick else 40.0),
        "gui": lambda: bench_gui(settings, args.quick),
        "data": lambda: bench_data(args.text, 20 if args.quick else 100),
        "quality": lambda: bench_quality(settings, 10.0 if args.quick else 60.0),
        "score": bench_score_rows,
        # One round by default: its 54 short runs (27 quiet, 27 beside a busy process) took 212 s on 2026-12-03's
        # box, the largest section; --only busy --busy-rounds 3 for a verdict per row.
        "busy": lambda: bench_busy(settings, ["gru", "lstm", "rnn-scratch"], [32, 256, 512], rounds=args.busy_rounds),
        "startup": lambda: bench_startup(repeats=3 if args.quick else 5),
    }
    res["section_seconds"] = {}
    for name, run in sections.items():
        if name in only:
            t0 = time.perf_counter()
            res[name] = run()
            res["section_seconds"][name] = round(time.perf_counter() - t0, 1)
    res["seconds"] = time.perf_counter() - t_start
    res["summary"] = summary(res)
    print_table(res)
    print(f"\ntotal {res['seconds']:.0f} s (" + ", ".join(f"{k} {v:.0f}" for k, v in res["section_seconds"].items())
          + ")")
    if args.json:
        print(json.dumps(json_safe(res)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
