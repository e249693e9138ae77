"""Evaluation: the metric plugins of one split (a metric that raises is disabled, never the run) and the validation pass."""

from __future__ import annotations

import torch

from .plugins import describe_failure


class MetricSet:
    """The metric plugins for one split; a metric that raises is disabled with a warning.

    ``classes`` maps each name to what builds the metric: its class, or a class with options bound
    (``rnnstudio.metric_selection.factories``)."""

    def __init__(self, classes: dict[str, type], warn):
        self.metrics = {}
        self.warn = warn
        for name, cls in classes.items():
            try:
                self.metrics[name] = cls()
            except (Exception, SystemExit) as exc:
                warn(f"metric {name!r} disabled: it raised {describe_failure(exc)}")

    def _guard(self, name, fn):
        try:
            return fn()
        except (Exception, SystemExit) as exc:
            self.metrics.pop(name, None)
            self.warn(f"metric {name!r} disabled: it raised {describe_failure(exc)}")
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


def evaluate(model, ids: torch.Tensor, batch_size: int, seq_len: int, metrics: MetricSet, device,
             *, rank: int = 0, world_size: int = 1) -> dict[str, float]:
    """Metrics over every next-token prediction of ``ids``: ``batch_size`` streams per rank with a burn-in,
    the one scoring path of ``rnnstudio score`` (see ``scoring``)."""
    from .scoring import score_ids

    return score_ids(model, ids, metrics, streams=batch_size * world_size, seq_len=seq_len, device=device,
                     rank=rank, world_size=world_size)
