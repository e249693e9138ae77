"""Rebuild d2l 8.5/8.6/9.1/9.2/9.3 on The Time Machine with RNN Studio's Trainer and compare with the book.

Settings are the old d2l's (v0.17, ``load_data_time_machine(batch_size=32, num_steps=35, max_tokens=10000)``):
per-line preprocessing (letters only, lowercased) joined with no separator, a 28-token character
vocabulary, the first 10000 tokens, SGD with lr 1, gradient clipping at 1, 500 epochs. d2l prints the
*training* perplexity of the last epoch and has no validation split, so neither do we.

    python benchmarks/d2l_fidelity.py [PATH_TO_TIMEMACHINE_TXT] [--epochs N] [--models a,b]

Without PATH the ``time-machine`` corpus downloads the d2l copy (once, SHA-1 checked).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import torch

from rnnstudio.trainer import Finished, Started, TrainConfig, Trainer


@dataclass
class BookRun:
    key: str
    label: str
    cell: str
    hidden_size: int
    book_perplexity: float  # what the book printed after 500 epochs
    partition: str = "sequential"
    num_layers: int = 1
    lr: float = 1.0
    d2l_init: bool = False  # the from-scratch models also draw W_hq from N(0, 0.01^2), b_q = 0


RUNS = [
    BookRun("rnn-seq", "8.5 RNN from scratch", "rnn-scratch", 512, 1.0, d2l_init=True),
    BookRun("rnn-rand", "8.5 RNN from scratch", "rnn-scratch", 512, 1.5, partition="random", d2l_init=True),
    BookRun("rnn", "8.6 nn.RNN(256)", "rnn", 256, 1.3),
    BookRun("gru", "9.1 GRU from scratch", "gru-scratch", 256, 1.1, d2l_init=True),
    BookRun("lstm", "9.2 LSTM from scratch", "lstm-scratch", 256, 1.2, d2l_init=True),
    BookRun("deep-lstm", "9.3 deep LSTM, 2 layers, lr 2", "lstm", 256, 1.0, num_layers=2, lr=2.0),
]
TOLERANCE = 0.3  # acceptance: no model more than this above the book


def config_for(run: BookRun, path: str | None, epochs: int, seed: int, threads: int) -> TrainConfig:
    return TrainConfig(
        corpus="time-machine", corpus_options={"path": path} if path else {},
        tokens="char", preprocess="d2l", max_tokens=10000, val_fraction=0.0,
        cell=run.cell, hidden_size=run.hidden_size, num_layers=run.num_layers, encoding="onehot",
        batch_size=32, seq_len=35, epochs=epochs, optimizer="sgd", lr=run.lr, clip=1.0,
        partition=run.partition, seed=seed, save=False, threads=threads,
        eval_every=0, sample_every=0, checkpoint_every=0, checkpoint_minutes=0,
    )


def train_one(run: BookRun, path: str | None, epochs: int, seed: int, threads: int) -> tuple[Finished, int]:
    trainer = Trainer(config_for(run, path, epochs, seed, threads))
    finished, vocab_size = None, 0
    for event in trainer.run():
        if isinstance(event, Started):
            vocab_size = event.vocab_size
            if run.d2l_init:  # Started comes before the first step, so the weights are still fresh
                with torch.no_grad():
                    trainer.model.head.weight.normal_(0.0, 0.01)
                    trainer.model.head.bias.zero_()
        elif isinstance(event, Finished):
            finished = event
    return finished, vocab_size


def timed_run(job) -> tuple[float, float, int, int, float]:
    """Train one book run; returns perplexity, tokens/s, steps, vocab size and seconds (picklable)."""
    run, path, epochs, seed, threads = job
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    fin, vocab_size = train_one(run, path, epochs, seed, threads)
    return fin.train_perplexity, fin.tokens_per_s, fin.steps, vocab_size, time.perf_counter() - t0


def report(run: BookRun, ppl, rate, steps, vocab_size, secs):
    print(f"  done {run.key}: vocab {vocab_size}, {steps} steps, train perplexity {ppl:.3f}, "
          f"{rate:,.0f} tokens/s", flush=True)
    return run, ppl, rate, secs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", default=None, help="The Time Machine as a text file (Gutenberg boilerplate is removed)")
    ap.add_argument("--epochs", type=int, default=500, help="d2l trains for 500")
    ap.add_argument("--models", default=",".join(r.key for r in RUNS), help="comma-separated subset of: "
                    + ", ".join(r.key for r in RUNS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1, help="train this many models side by side in separate "
                    "processes (faster on a shared machine; each one's tokens/s then shares the CPU)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads; at these sizes one thread is about as "
                    "fast as two and it does not stall when other processes share the cores (0: torch's default)")
    args = ap.parse_args(argv)
    wanted = [k.strip() for k in args.models.split(",") if k.strip()]
    runs = [r for r in RUNS if r.key in wanted]
    if not runs:
        ap.error(f"no known model in --models {args.models!r}")

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"d2l fidelity: {args.epochs} epochs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}", flush=True)
    header = f"{'model':<40} {'partition':<10} {'ppl':>6} {'book':>5} {'diff':>6} {'tokens/s':>9} {'time':>6}"
    rows = []
    jobs = [(run, args.path, args.epochs, args.seed, args.threads) for run in runs]
    if args.jobs > 1:
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn")) as pool:
            results = pool.map(timed_run, jobs)
            rows = [report(job[0], *result) for job, result in zip(jobs, results)]
    else:
        rows = [report(job[0], *timed_run(job)) for job in jobs]

    print()
    print(header)
    print("-" * len(header))
    misses = 0
    for run, ppl, rate, secs in rows:
        diff = ppl - run.book_perplexity
        miss = diff > TOLERANCE
        misses += miss
        label = f"{run.label} [{run.cell}]"
        print(f"{label:<40} {run.partition:<10} {ppl:>6.2f} {run.book_perplexity:>5.1f} {diff:>+6.2f} "
              f"{rate:>9,.0f} {secs:>5.0f}s{'  MISS' if miss else ''}")
    print(f"\n{len(rows) - misses}/{len(rows)} within {TOLERANCE} of the book's perplexity")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
