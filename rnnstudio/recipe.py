"""``--recipe auto``: under a time budget (``--minutes``), fit the training recipe to the corpus and the budget.

Only settings left at their defaults change, and only for a new run (a resume keeps the saved run's recipe).
Step and epoch budgets keep the defaults as they are, so that 200 + 200 steps still equal 400. What it does and
why, measured with ``benchmarks/quality.py`` on The Time Machine (150k training characters, GRU 256, one thread of
this 2-core AMD EPYC, 2026-12-02; nats per character over the whole held-out 10%):

- One GRU layer at Adam 0.005 reaches its best validation, 2.455, within about 10 epochs (60 s here) and then
  overfits: at 180 s and 600 s its best was still 2.455 and its last weights 2.87 and 3.15. nanoGPT's CPU recipe
  reached 2.404 at 180 s. So the more epochs the budget holds, the more the recipe regularises.
- Above ``DROP_EPOCHS`` epochs: dropout 0.5 before the output layer (``output_dropout``). One layer at 1500
  steps (~9 epochs): 2.425 plain, 2.388 with output dropout 0.3, 2.356 with 0.5 (2.377 with AdamW's weight decay
  0.1 on top: not at this depth). Below: on python-docs (418k training characters) at 1600 steps, ~4 epochs,
  output dropout 0.3 cost 1.227 -> 1.243, so a budget of a few epochs keeps none.
- Above ``DEEP_EPOCHS`` epochs: two layers with dropout 0.3 between them, and AdamW with weight decay. At
  2000 steps (= 180 s of one layer): 2.307 plain, 2.273 with output dropout 0.3, 2.244 with 0.5, 2.214 with 0.5
  and AdamW 0.1; 0.5 between the layers as well was worse (2.319), and output dropout 0.65 too (2.324). At 650
  steps (60 s) two layers lost to one (2.497 vs 2.455), hence the depth by epochs. On python-docs at 180 s
  (17-28 epochs of one layer, the probe's estimate varies) two layers won: 1.141 against one layer's 1.173.
- The weight decay grows with the epochs (``DECAYS``). With the oneDNN training loops, 180 s here hold ~32-46
  epochs of one layer and 3000 two-layer steps: weight decay 0.1 2.278 (best 2.216: it overfits), 0.3 2.229, 1.0
  2.321 (underfits); 600 s hold ~108-150 epochs and 11000 two-layer steps: 0.1 2.892 (best 2.247), 1.0 2.296,
  with no gap between its last and best. python-docs, 2.8x the text, wanted less (see ``DECAYS``).
- A cosine decay to a tenth over the budget, after ``WARMUP`` warm-up steps, helped a little on one layer
  (best 2.433 vs 2.455 at 3922 steps) and is what every result above used, so every time budget gets it.
- The width stays at the default 256. Wider helped only where the budget and the corpus are both the largest
  measured (python-docs at 600 s: 256 1.144, 384 1.122, 512 1.111; 640, which the probe sends to one layer, 1.137)
  and hurt elsewhere (512: The Time Machine at 600 s 2.468 vs 2.351, python-docs at 180 s 1.209 vs 1.196), so no
  width rule is in; a 512-wide step costs about three 256-wide ones here (2212 vs 6816 steps in 600 s).

How many epochs fit is measured, not guessed: a few training steps of the one-layer model on the user's own
device give its step rate (``probe_step_rate``), which the budget turns into steps.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

RECIPES = ("auto", "manual")
WARMUP = 100  # optimizer steps of linear warm-up before the cosine decay
DROP_EPOCHS = 6.0  # epochs of the one-layer model above which output dropout wins (at 4 it lost, at 9 it won)
DROP = {"output_dropout": 0.5}
DEEP_EPOCHS = 15.0  # epochs of the one-layer model above which two layers win (lost at ~6-11, won at 17-28)
DEEP = {"num_layers": 2, "dropout": 0.3}
DECAY = {"optimizer": "adamw"}  # with DEEP, unless the optimizer or weight decay was given
# AdamW's weight decay by the epochs of one layer that fit: (above this many epochs, this decay). Measured: python-docs
# at 180 s (15-28 epochs) wanted 0.1 (1.141 vs 1.181 at 0.3), at 600 s (50-90) less than 1.0 (1.147 at 0.1, 1.316 at
# 1.0); The Time Machine at 180 s (32-46) 0.3 (2.229 vs 2.278 at 0.1, 2.321 at 1.0), at 600 s (108-150) 1.0 (2.296 vs
# 2.892 at 0.1). The ranges are the probe's estimate and the epochs the run really trained.
DECAYS = ((0.0, 0.1), (30.0, 0.3), (100.0, 1.0))
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
    drop = cfg.output_dropout == 0
    deepen = cfg.num_layers == 1 and cfg.dropout == 0
    if drop or deepen:
        rate = step_rate()
        steps = cfg.minutes * 60 * BUDGET_SHARE * rate
        epochs = steps * cfg.batch_size * cfg.seq_len * cfg.world_size / max(1, train_tokens)
        if drop and epochs > DROP_EPOCHS:
            changes.update(DROP)
            reasons.append(f"output dropout {DROP['output_dropout']:g}")
        if deepen and epochs > DEEP_EPOCHS:
            changes.update(DEEP)
            reasons.append(f"2 layers with dropout {DEEP['dropout']:g} between them")
            if cfg.optimizer == "adam" and cfg.weight_decay == 0:
                decay = {**DECAY, "weight_decay": decay_for(epochs)}
                changes.update(decay)
                reasons[-1] += f" and AdamW with weight decay {decay['weight_decay']:g}"
        if len(reasons) > (1 if "schedule" in changes else 0):
            reasons[-1] += (f", since about {epochs:.0f} epochs of one layer fit the budget and a model overfits "
                            f"a corpus it reads this often")
    if not reasons:
        return {}, []
    return changes, ["recipe auto: " + "; ".join(reasons) + " (--recipe manual keeps the settings as given)"]


def decay_for(epochs: float) -> float:
    """The weight decay of ``DECAYS`` for a budget of ``epochs`` epochs of the one-layer model."""
    return [decay for above, decay in DECAYS if epochs > above][-1]


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
