"""Scoring benchmarks: score's tokens/s against the training forward pass, a 10 MB file, explain's peak memory.

    python benchmarks/bench_score.py            # every row, printed as a table (a few minutes on 2 cores)
    python benchmarks/bench_score.py --quick    # smaller files, for development
    python benchmarks/bench_score.py --json     # ... and the results as JSON on the last line

``bench.py`` runs the same rows as its "score" section.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from rnnstudio import scoring  # noqa: E402
from rnnstudio.data import encode_stream  # noqa: E402
from rnnstudio.model import ModelConfig, RNNLanguageModel, detach_state  # noqa: E402
from rnnstudio.plugins import default_host  # noqa: E402

SCORE_TARGET = 0.5  # score's tokens/s over the training forward pass's
TEN_MB_TARGET_S = 60.0  # a 10 MB file "well under a minute"
EXPLAIN_RSS_TARGET_MB = 600.0  # peak RSS of `score --explain` on a 1 MB file
DEFAULT_TEXT = Path("/work/shared/data/timemachine.txt")


def _text(source: Path | None) -> str:
    if source and source.exists():
        return source.read_text(encoding="utf-8")
    from pydoc_data.topics import topics

    return "\n".join(topics.values())


def make_text_file(folder: Path, source: Path | None, megabytes: float, name: str) -> Path:
    """A ``megabytes`` MB file: the source text repeated, lines numbered so that it varies."""
    lines = _text(source).splitlines()
    path = folder / name
    target, written, copy = int(megabytes * 1_000_000), 0, 0
    with open(path, "w", encoding="utf-8") as fh:
        while written < target:
            block = "\n".join(f"{copy} {line}" for line in lines) + "\n"
            fh.write(block)
            written += len(block.encode("utf-8"))
            copy += 1
    return path


def _forward_rate(model, ids: torch.Tensor, clock, batch: int = 32, steps: int = 35) -> float:
    """Training's forward pass (autograd on, loss computed, no backward) over ``ids`` as (batch, steps) chunks."""
    model.train()
    per_row = (len(ids) - 1) // batch
    xs = ids[: batch * per_row].view(batch, per_row)
    ys = ids[1: batch * per_row + 1].view(batch, per_row)
    state, n = None, 0
    t0 = clock()
    for c in range(0, per_row - steps + 1, steps):
        logits, state = model.forward_flat(xs[:, c:c + steps], state)
        loss = F.cross_entropy(logits, model.flat_targets(ys[:, c:c + steps]))
        loss.item()  # the training loop reads the loss too
        state = detach_state(state)
        n += batch * steps
    return n / (clock() - t0)


def _score_rate(model, ids: torch.Tensor, clock) -> float:
    metrics = scoring.metric_set(default_host(), print)
    t0 = clock()
    scoring.score_ids(model, ids, metrics)
    return (len(ids) - 1) / (clock() - t0)


def bench_throughput(ids: torch.Tensor, vocab_size: int, cell: str, hidden: int, rounds: int, clock) -> dict:
    """Score vs the training forward pass on the same model and tokens, interleaved round by round (best of each)."""
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(cell=cell, vocab_size=vocab_size, hidden_size=hidden),
                             default_host().cell(cell))
    fwd, score = [], []
    for _ in range(rounds):
        fwd.append(_forward_rate(model, ids, clock))
        score.append(_score_rate(model, ids, clock))
    ratio = max(score) / max(fwd)
    return {"cell": cell, "hidden": hidden, "tokens": len(ids), "rounds": rounds,
            "train_forward_tokens_per_s": max(fwd), "score_tokens_per_s": max(score), "ratio": ratio,
            "target": SCORE_TARGET, "met": ratio >= SCORE_TARGET}


def _saved_model(settings: dict, cell: str, hidden: int, name: str) -> None:
    """A saved model to run the real CLI on (one training step: speed does not depend on the weights)."""
    from rnnstudio.trainer import TrainConfig, Trainer

    cfg = TrainConfig(corpus=settings["corpus"], corpus_options=dict(settings["corpus_options"]),
                      preprocess=settings.get("preprocess"), cell=cell, hidden_size=hidden, max_steps=1,
                      eval_every=0, name=name)
    for _ in Trainer(cfg).run():
        pass


# The child's peak RSS. Not ru_maxrss: Linux folds the address space that exec replaces into it, and after
# subprocess's fork or vfork that is the parent's (a child of a 600 MB parent reported 585 MB before doing
# anything), so bench.py's own memory showed up as explain's peak (637 MB in one run, 386 MB alone). VmHWM counts
# the child's own address space only; ru_maxrss is the fallback where there is no /proc.
_PEAK = ("def peak():\n"
         "    try:\n"
         "        for line in open('/proc/self/status'):\n"
         "            if line.startswith('VmHWM:'):\n"
         "                return int(line.split()[1]) * 1024\n"
         "    except OSError:\n"
         "        pass\n"
         "    import resource\n"
         "    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n")


def _cli_child(argv: list[str], env: dict) -> dict:
    """Run the real CLI in a fresh process; its wall time and peak RSS (of that process alone)."""
    code = (_PEAK + "import json, sys, time; t = time.perf_counter(); from rnnstudio.cli import main; "
            f"rc = main({argv!r}); "
            "sys.stderr.write(json.dumps({'rc': rc, 'seconds': time.perf_counter() - t, "
            "'peak_rss': peak()}) + '\\n')")
    proc = subprocess.run([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, timeout=900)
    last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    if proc.returncode or not last.startswith("{"):
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr[-800:]}")
    return json.loads(last)


def bench_files(settings: dict, source: Path | None, cell: str, hidden: int, quick: bool) -> dict:
    """``rnnstudio score`` on a 10 MB file (wall time) and ``score --explain --json`` on 1 MB (peak RSS)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "RNNSTUDIO_HOME": os.environ.get("RNNSTUDIO_HOME", tmp)}
        _saved_model(settings, cell, hidden, "bench-score")
        big_mb = 2 if quick else 10
        big = make_text_file(Path(tmp), source, big_mb, "big.txt")
        scored = _cli_child(["score", "--model", "bench-score", str(big), "--json"], env)
        per_10mb = scored["seconds"] * 10 / big_mb
        one = make_text_file(Path(tmp), source, 0.25 if quick else 1, "one.txt")
        explained = _cli_child(["score", "--model", "bench-score", str(one), "--explain", "--json"], env)
        explain_mb = one.stat().st_size / 1e6
    return {"file_mb": big_mb, "score_seconds": scored["seconds"], "score_seconds_per_10mb": per_10mb,
            "score_target_s": TEN_MB_TARGET_S, "score_met": per_10mb < TEN_MB_TARGET_S,
            "explain_mb": explain_mb, "explain_seconds": explained["seconds"],
            "explain_peak_rss_mb": explained["peak_rss"] / 1e6, "explain_rss_target_mb": EXPLAIN_RSS_TARGET_MB,
            "explain_rss_met": explained["peak_rss"] / 1e6 <= EXPLAIN_RSS_TARGET_MB}


def bench_score(settings: dict, *, source: Path | None = DEFAULT_TEXT, cell: str = "gru", hidden: int = 256,
                quick: bool = False, clock=time.perf_counter, only=("throughput", "files")) -> dict:
    """The scoring rows of ``bench.py``: throughput ratio, the 10 MB file, explain's memory."""
    out = {}
    if "throughput" in only:
        corpus = default_host().corpus(settings["corpus"])(**settings["corpus_options"])
        enc = encode_stream(corpus.iter_text, tokenizer="char", preprocess=settings.get("preprocess") or "raw")
        ids = enc.ids.long()[: 60_000 if quick else 150_000]
        out["throughput"] = bench_throughput(ids, len(enc.vocab), cell, hidden, 2 if quick else 3, clock)
    if "files" in only:
        out.update(bench_files(settings, source, cell, hidden, quick))
    return out


def print_rows(res: dict) -> None:
    t = res.get("throughput")
    if t:
        print(f"   score {t['score_tokens_per_s'] / 1e3:.1f}k tokens/s vs training forward "
              f"{t['train_forward_tokens_per_s'] / 1e3:.1f}k ({t['cell']} {t['hidden']}): {t['ratio']:.2f}x, "
              f"target >= {t['target']}x {'ok' if t['met'] else 'MISSED'}")
    if "score_seconds" not in res:
        return
    print(f"   score on a {res['file_mb']} MB file: {res['score_seconds']:.1f} s "
          f"(~{res['score_seconds_per_10mb']:.0f} s per 10 MB, target < {res['score_target_s']:.0f} s "
          f"{'ok' if res['score_met'] else 'MISSED'})")
    print(f"   score --explain --json on {res['explain_mb']:.2f} MB: peak RSS {res['explain_peak_rss_mb']:.0f} MB in "
          f"{res['explain_seconds']:.1f} s (target <= {res['explain_rss_target_mb']:.0f} MB "
          f"{'ok' if res['explain_rss_met'] else 'MISSED'})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--text", type=Path, default=DEFAULT_TEXT)
    ap.add_argument("--cell", default="gru")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for the throughput row (1: rates in thread CPU time, which other processes "
                         "do not inflate; >1: wall time); the CLI rows always run the real CLI, with its defaults")
    ap.add_argument("--only", default="throughput,files", help="comma-separated: throughput, files")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = time.thread_time if args.threads == 1 else time.perf_counter
    os.environ.setdefault("RNNSTUDIO_HOME", tempfile.mkdtemp(prefix="rnnstudio-bench-"))
    if args.text.exists():
        settings = {"corpus": "text-file", "corpus_options": {"path": str(args.text)}, "preprocess": "raw"}
    else:
        settings = {"corpus": "python-docs", "corpus_options": {}, "preprocess": "raw"}
    res = bench_score(settings, source=args.text, cell=args.cell, hidden=args.hidden, quick=args.quick, clock=clock,
                      only=set(args.only.split(",")))
    print(f"scoring (torch {torch.__version__}, {args.threads} thread(s) for the throughput row)")
    print_rows(res)
    if args.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
