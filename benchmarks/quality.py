"""Quality at equal wall time: RNN Studio's defaults (--minutes), d2l's recipe and a small GPT (nanoGPT's CPU recipe).

Every contender gets the same corpus, the same 90/10 split (the first 90% of the characters trains, the last 10%
validates) and the same wall-clock budget on this machine, in one run, one after the other. Each reports nats per
character over the whole held-out 10% (the summed NLL of every character after the first, divided by their
count) and a text sample.

    python benchmarks/quality.py                       # budgets 60, 180, 600 s on time machine and python-docs
    python benchmarks/quality.py --budgets 60 --corpora time-machine --json   # the last line is JSON
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpt_baseline  # noqa: E402
from rnnstudio.config import SamplingConfig, TrainConfig  # noqa: E402
from rnnstudio.data import train_val_split  # noqa: E402
from rnnstudio.plugins import load_plugins  # noqa: E402
from rnnstudio.sampling import generate_text  # noqa: E402
from rnnstudio.trainer import Trainer, _load_corpus  # noqa: E402

TIME_MACHINE = "/work/shared/data/timemachine.txt"
CORPORA = {  # name: (corpus plugin, its options); raw text for every contender, so the characters are the same
    "time-machine": ("text-file", {"path": TIME_MACHINE}),
    "python-docs": ("python-docs", {}),
}
SAMPLE_PREFIX = "The "
SAMPLE_LENGTH = 160


THREADS = os.cpu_count() or 1  # every contender gets the same CPU threads (--threads)


def _base_config(corpus: str, seconds: float, **kw) -> TrainConfig:
    plugin, options = CORPORA[corpus]
    return TrainConfig(corpus=plugin, corpus_options=dict(options), preprocess="raw", val_fraction=0.1, threads=THREADS,
                       minutes=seconds / 60, save=False, sample_every=0, checkpoint_every=0,
                       checkpoint_minutes=0, **kw)


def rnn_contender(config: TrainConfig, host) -> dict:
    """Train through the Trainer under --minutes; its final validation scores the whole held-out 10%."""
    trainer = Trainer(config, host=host)
    start = time.monotonic()
    finished, best = None, math.inf
    for event in trainer.run():
        if event.kind == "evaluated":  # every validation scores the whole held-out 10%
            best = min(best, _nats(event.val))
        elif event.kind == "summary":
            finished = event
    wall = time.monotonic() - start
    nats = _nats(finished.val)
    text = generate_text(trainer.model, trainer.vocab, SAMPLE_PREFIX,
                         SamplingConfig(length=SAMPLE_LENGTH, temperature=0.8, seed=0))[0]
    # the last weights' score, and the best validation's: the weights generate and score use by default
    # (the sample above comes from the last weights, which the trainer holds)
    return {"nats_per_char": nats, "best_nats_per_char": min(best, nats), "steps": finished.steps, "wall_s": wall,
            "sample": text}


def _nats(metrics: dict) -> float:
    return metrics.get("nats-per-char", metrics.get("cross-entropy"))


def gpt_contender(corpus: str, seconds: float, host) -> dict:
    encoded, _ = _load_corpus(host, _base_config(corpus, seconds), None)  # the trainer's own text and ids
    train_ids, val_ids = train_val_split(encoded.ids.long(), 0.1)
    torch.set_num_threads(THREADS)
    start = time.monotonic()
    model, steps = gpt_baseline.train(train_ids, len(encoded.vocab), seconds)
    nats = gpt_baseline.nats_per_char(model, val_ids)
    wall = time.monotonic() - start
    prefix = torch.tensor(encoded.vocab.encode(SAMPLE_PREFIX))
    text = encoded.vocab.decode(gpt_baseline.sample(model, prefix, SAMPLE_LENGTH))
    return {"nats_per_char": nats, "steps": steps, "wall_s": wall, "sample": text}


CONTENDERS = {
    # (a) the defaults, given only a time budget (so --recipe auto fits the recipe to it)
    "rnnstudio": lambda corpus, s, host: rnn_contender(_base_config(corpus, s), host),
    # (b) d2l 9.1: a GRU of 256 on one-hot characters, SGD at lr 1, batches of 32 x 35, clipping at 1, one layer at a
    # constant learning rate (--recipe manual)
    "d2l": lambda corpus, s, host: rnn_contender(_base_config(
        corpus, s, recipe="manual", cell="gru", hidden_size=256, encoding="onehot", optimizer="sgd", lr=1.0,
        batch_size=32,
        seq_len=35, clip=1.0), host),
    # (c) nanoGPT's CPU recipe
    "gpt": gpt_contender,
}


def main(argv=None) -> int:
    global THREADS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", default="60,180,600", help="seconds per contender, comma-separated")
    ap.add_argument("--corpora", default="time-machine,python-docs", help=f"from {', '.join(CORPORA)}")
    ap.add_argument("--contenders", default=",".join(CONTENDERS), help=f"from {', '.join(CONTENDERS)}")
    ap.add_argument("--threads", type=int, default=THREADS, help="CPU threads for every contender (default: the cores)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON on the last line")
    args = ap.parse_args(argv)
    THREADS = max(1, args.threads)
    budgets = [float(b) for b in args.budgets.split(",") if b]
    corpora = [c for c in args.corpora.split(",") if c]
    contenders = [c for c in args.contenders.split(",") if c]
    for name, known in ((c, CORPORA) for c in corpora):
        if name not in known:
            ap.error(f"unknown corpus {name!r}")
    host = load_plugins(no_plugins=True)
    rows = []
    print(f"{'corpus':<13} {'budget':>7} {'contender':<10} {'nats/char':>9} {'best':>7} {'steps':>7} {'wall s':>7}  sample",
          flush=True)
    for corpus in corpora:
        for seconds in budgets:
            for name in contenders:
                r = {"corpus": corpus, "budget_s": seconds, "contender": name,
                     **CONTENDERS[name](corpus, seconds, host)}
                rows.append(r)
                sample = r["sample"].replace("\n", "⏎")[:70]
                best = r.get("best_nats_per_char", r["nats_per_char"])
                print(f"{corpus:<13} {seconds:>7.0f} {name:<10} {r['nats_per_char']:>9.4f} {best:>7.4f} {r['steps']:>7} "
                      f"{r['wall_s']:>7.1f}  {sample}", flush=True)
    margins = []
    for corpus in corpora:
        for seconds in budgets:
            got = {r["contender"]: r["nats_per_char"] for r in rows if r["corpus"] == corpus and r["budget_s"] == seconds}
            if "rnnstudio" in got and "gpt" in got:
                m = {"corpus": corpus, "budget_s": seconds, "margin_over_gpt": got["gpt"] - got["rnnstudio"]}
                if "d2l" in got:
                    m["margin_over_d2l"] = got["d2l"] - got["rnnstudio"]
                margins.append(m)
                print(f"margin {corpus} {seconds:.0f}s: rnnstudio beats gpt by {m['margin_over_gpt']:+.4f} nats/char"
                      + (f", d2l by {m['margin_over_d2l']:+.4f}" if "margin_over_d2l" in m else ""))
    if args.json:
        print(json.dumps({"threads": THREADS, "results": rows, "margins": margins}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
