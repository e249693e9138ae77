"""``--recipe auto``: under a time budget (``--minutes``), fit the training recipe to the corpus and the budget.

Only settings left at their defaults change, and only for a new run (a resume keeps the saved run's recipe).
Step and epoch budgets keep the defaults as they are, so that 200 + 200 steps still equal 400. What it does and
why, measured with ``benchmarks/quality.py`` on The Time Machine (150k training characters, GRU 256, one thread of
this 2-core AMD EPYC, 2026-12-02; nats per character over the whole held-out 10%):

- One GRU layer at Adam 0.005 reaches its best validation, 2.455, within about 10 epochs (60 s here) and then
  overfits: at 180 s and 600 s its best was still 2.455 and its last weights 2.87 and 3.15. nanoGPT's CPU recipe
  reached 2.404 at 180 s. Dropout acts between stacked layers only, so the regularised model is two layers with
  dropout 0.3; at the same wall time as 180 s of one layer (2000 steps) it reached 2.307. So when the budget
  holds more than ``DEEP_EPOCHS`` epochs of the one-layer model, the recipe trains two layers with dropout 0.3.
- A cosine decay to a tenth over the budget, after ``WARMUP`` warm-up steps, helped a little on one layer
  (best 2.433 vs 2.455 at 3922 steps) and is what the two-layer result used, so every time budget gets it.

How many epochs fit is measured, not guessed: a few training steps of the one-layer model on the user's own
device give its step rate (``probe_step_rate``), which the budget turns into steps.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

RECIPES = ("auto", "manual")
WARMUP = 100  # optimizer steps of linear warm-up before the cosine decay
DEEP_EPOCHS = 20.0  # epochs of the one-layer model in the budget above which two layers with dropout win
DEEP = {"num_layers": 2, "dropout": 0.3}
BUDGET_SHARE = 0.9  # the part of a budget spent on training steps (the rest validates and saves)


def auto_recipe(cfg, train_tokens: int, step_rate: Callable[[], float]) -> tuple[dict, list[str]]:
    """The settings ``--recipe auto`` changes for ``cfg`` and one line saying why, given the training tokens and
    a function that measures the one-layer model's optimizer steps per second (called only when needed)."""
    if cfg.recipe != "auto" or not cfg.minutes or cfg.resume:
        return {}, []
    changes: dict = {}
    reasons: list[str] = []
    if cfg.schedule == "constant" and cfg.warmup == 0:
        changes.update(schedule="cosine", warmup=WARMUP)
        reasons.append(f"cosine decay over the {cfg.minutes:g} min after {WARMUP} warm-up steps")
    if cfg.num_layers == 1 and cfg.dropout == 0:
        rate = step_rate()
        steps = cfg.minutes * 60 * BUDGET_SHARE * rate
        epochs = steps * cfg.batch_size * cfg.seq_len * cfg.world_size / max(1, train_tokens)
        if epochs > DEEP_EPOCHS:
            changes.update(DEEP)
            reasons.append(f"2 layers with dropout 0.3, since about {epochs:.0f} epochs of one layer fit the budget "
                           f"and one layer overfits a corpus this small")
    if not reasons:
        return {}, []
    return changes, ["recipe auto: " + "; ".join(reasons) + " (--recipe manual keeps the settings as given)"]


def probe_step_rate(cfg, cell_cls, vocab_size: int, device, steps: int = 4) -> float:
    """Training steps per second of the one-layer model ``cfg`` describes, timed on random tokens on ``device``
    (the first step is not timed; no optimizer, whose update is a small part of a step and whose state a run's
    own optimizer must not share). The model is thrown away; the global random state is left as it was."""
    import torch

    from .model import ModelConfig, RNNLanguageModel

    mcfg = ModelConfig(cell=cfg.cell, vocab_size=vocab_size, hidden_size=cfg.hidden_size, num_layers=1, dropout=0.0,
                       encoding=cfg.encoding, embed_size=cfg.embed_size, cell_options=dict(cfg.cell_options))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = RNNLanguageModel(mcfg, cell_cls).to(device)
        ids = torch.randint(0, vocab_size, (cfg.batch_size, cfg.seq_len + 1), device=device)
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            _, loss, _ = model(ids[:, :-1], None, ids[:, 1:])  # forward, backward and clipping: most of a step
            model.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            if getattr(device, "type", str(device)) == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
    return 1.0 / max(1e-9, statistics.median(times[1:]))
