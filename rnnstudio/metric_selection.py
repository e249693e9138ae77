"""Which metric plugins a run computes, with their options, and which of them also run on training batches."""

from __future__ import annotations

import functools
from typing import Callable

from .errors import RNNStudioError

ALWAYS = ("perplexity",)  # best-weights selection, --patience and the progress line read it


def metric_names(text: str | None) -> list[str]:
    """``"a, b"`` -> ``["a", "b"]``; an empty text chooses every registered metric."""
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def choose_metrics(host, names: str | None, options: dict | None = None) -> dict[str, tuple[type, dict]]:
    """``{name: (class, resolved options)}`` for ``--metrics`` (all when empty; perplexity always) and
    ``--metric-opt NAME.KEY=VALUE``. Unknown names and options are user errors, found before any work."""
    asked = metric_names(names)
    chosen = list(host.names("metric")) if not asked else list(dict.fromkeys([*ALWAYS, *asked]))
    classes = {name: host.metric(name) for name in chosen}  # an unknown name first, with the available ones
    per_metric: dict[str, dict] = {}
    for key, value in (options or {}).items():
        metric, dot, option = str(key).partition(".")
        if not dot or not option:
            raise RNNStudioError(f"--metric-opt {key}={value}: write NAME.KEY=VALUE, e.g. accuracy.k=5")
        if metric not in chosen:
            host.metric(metric)  # an unknown name says so, with the available ones
            raise RNNStudioError(f"--metric-opt {key}={value}: metric {metric!r} is not among --metrics "
                                 f"({', '.join(chosen)})")
        per_metric.setdefault(metric, {})[option] = value
    return {name: (cls, cls.resolve_options(per_metric.get(name, {}))) for name, cls in classes.items()}


def factories(chosen: dict[str, tuple[type, dict]], *, train: bool = False) -> dict[str, Callable]:
    """What ``MetricSet`` builds from: every chosen metric, or (``train``) those whose class says
    ``on_train = True``; the others run only at validation and in ``score``."""
    return {name: functools.partial(cls, **opts) for name, (cls, opts) in chosen.items()
            if not train or getattr(cls, "on_train", False)}
