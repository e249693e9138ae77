"""A bounded kill loop: SIGKILL, SIGTERM and SIGHUP at random moments of a CLI run (the full loop: benchmarks/kill_loop.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "kill_loop", Path(__file__).resolve().parents[1] / "benchmarks" / "kill_loop.py")
kill_loop = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kill_loop)


def test_every_signal_leaves_a_loadable_model_that_resumes_exactly(tiny_corpus, rnnstudio_home):
    result = kill_loop.run_loop(tiny_corpus, rnnstudio_home, moments=3, seed=7, max_delay_s=0.6)
    assert sorted(r["signal"] for r in result["runs"]) == ["SIGHUP", "SIGKILL", "SIGTERM"]
    assert all(r["max_weight_diff"] <= 1e-6 for r in result["runs"])
