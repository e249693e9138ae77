"""The CPU thread policy: --threads forces a count, is bounded by the cores, and threads=0 picks by timing steps."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from rnnstudio.threads import ThreadTuner, usable_cores
from rnnstudio.trainer import TrainConfig, Trainer


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def drive(tuner: ThreadTuner, step_time: dict[int, float], steps: int, clock: FakeClock | None = None) -> list[int]:
    """Run ``steps`` fake steps whose duration depends on the thread count; the counts used, in order."""
    used = []
    for _ in range(steps):
        used.append(tuner.threads)
        if clock:
            clock.now += step_time[tuner.threads]
        tuner.observe(step_time[tuner.threads])
    return used


def test_tuner_keeps_the_faster_count_either_way():
    calls = []
    fast_n = ThreadTuner(4, calls.append, clock=FakeClock())
    used = drive(fast_n, {1: 0.010, 4: 0.004}, 30)
    assert fast_n.choices == [4] and used[-1] == 4 and set(used[:10]) == {1, 4}
    assert calls[0] == 1 and 4 in calls  # it starts at 1 thread and really sets both counts

    fast_1 = ThreadTuner(4, lambda n: None, clock=FakeClock())
    assert drive(fast_1, {1: 0.004, 4: 0.010}, 30)[-1] == 1 and fast_1.choices == [1]


def test_a_clear_loser_costs_two_steps_not_a_block():
    tuner = ThreadTuner(2, lambda n: None, clock=FakeClock())
    used = drive(tuner, {1: 0.005, 2: 0.020}, 30)
    assert tuner.choices == [1] and used.count(2) == 2  # one waking step, one timed step, then back to 1


def test_tuner_prefers_fewer_threads_on_a_near_tie():
    tuner = ThreadTuner(2, lambda n: None, clock=FakeClock())
    drive(tuner, {1: 0.0100, 2: 0.0098}, 20)
    assert tuner.choices == [1]


def test_tuner_probes_again_when_steps_slow_down_and_after_a_while():
    clock = FakeClock()
    tuner = ThreadTuner(2, lambda n: None, recheck_s=3600, clock=clock)
    drive(tuner, {1: 0.010, 2: 0.005}, 20, clock)
    assert tuner.choices == [2]
    # Another program takes a core: 2 threads become 10x slower, 1 thread stays as it was.
    drive(tuner, {1: 0.010, 2: 0.050}, 40, clock)
    assert tuner.choices == [2, 1] and tuner.threads == 1
    # The load leaves; only the periodic re-check can notice, since 1 thread did not slow down.
    drive(tuner, {1: 0.010, 2: 0.005}, 40, clock)
    assert tuner.choices == [2, 1]
    clock.now += 3600
    drive(tuner, {1: 0.010, 2: 0.005}, 20, clock)
    assert tuner.choices == [2, 1, 2] and tuner.threads == 2


def test_one_core_means_no_probing():
    calls = []
    tuner = ThreadTuner(1, calls.append, clock=FakeClock())
    assert drive(tuner, {1: 0.01}, 10) == [1] * 10 and calls == [1] and tuner.choices == []


@pytest.fixture
def thread_calls(monkeypatch):
    before = torch.get_num_threads()
    calls = []
    real = torch.set_num_threads

    def record(n):
        calls.append(n)
        real(n)

    monkeypatch.setattr(torch, "set_num_threads", record)
    yield calls
    real(before)


def _train(tiny_corpus, threads, steps=20):
    cfg = TrainConfig(corpus="text-file", corpus_options={"path": str(tiny_corpus)}, cell="gru", hidden_size=16,
                      batch_size=4, seq_len=8, max_steps=steps, eval_every=0, device="cpu", threads=threads,
                      save=False)
    return list(Trainer(cfg).run())


def test_threads_n_forces_n(tiny_corpus, thread_calls):
    _train(tiny_corpus, 1)
    assert thread_calls == [1] and torch.get_num_threads() == 1


def test_threads_zero_lets_the_tuner_choose(tiny_corpus, thread_calls, monkeypatch):
    monkeypatch.setattr("rnnstudio.trainer.max_auto_threads", lambda: 2)
    _train(tiny_corpus, 0, steps=30)
    assert thread_calls[0] == 1 and set(thread_calls) == {1, 2}  # starts at 1; both counts timed during the run


@pytest.mark.parametrize("count", ["20000", "1000000"])
def test_more_threads_than_cores_is_a_one_line_error(tiny_corpus, count):
    proc = subprocess.run([sys.executable, "-m", "rnnstudio", "train", "--corpus", "text-file", "--corpus-opt",
                           f"path={tiny_corpus}", "--max-steps", "1", "--threads", count],
                          capture_output=True, text=True, timeout=120, env={**os.environ})
    err = proc.stderr.strip()
    assert proc.returncode == 2, err
    assert "\n" not in err and "Traceback" not in err, err
    assert "--threads" in err and f"{int(count):,}" in err and str(usable_cores()) in err, err


@pytest.mark.parametrize("given,expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_entry_point_sets_a_passive_wait_before_torch_loads(given, expected):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given  # a user's own choice wins
    code = "import os, sys, rnnstudio.cli; print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, check=True)
    assert out.stdout.split() == [expected, "False"]
