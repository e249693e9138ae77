"""CPU threads for training: OpenMP's wait policy, the bound on --threads, and choosing 1 or N threads by timing steps."""

from __future__ import annotations

import os
import statistics
import threading
import time


def prefer_passive_wait() -> None:
    """Let OpenMP threads sleep at a barrier instead of spinning; must run before torch is first imported.

    Spinning threads wait for a core that another program holds: on a 2-core machine with one busy core a
    hidden-256 GRU at 2 threads fell from 25k to 1.8k tokens/s. Passive waiting costs a wake-up per parallel
    region instead, so on a quiet machine 2 threads can lose to 1 at small sizes; ThreadTuner measures that.
    A user's own OMP_WAIT_POLICY wins.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_threads(requested: int) -> None:
    """More threads than cores only oversubscribes them; a huge count would try to start that many threads."""
    from .config import settings_error

    cores = usable_cores()
    if requested > cores:
        raise settings_error("{threads} {got:,} is more than the {cores} CPU core(s) available; "
                             "use 0 (auto) or 1 to {cores}", got=requested, cores=cores)


def max_auto_threads() -> int:
    """The most threads ``threads=0`` uses: every core (or OMP_NUM_THREADS, which torchrun sets to 1 per rank)
    from the main thread, the CLI; from a background thread, the GUI's worker, one core fewer, so the event
    loop keeps one."""
    cores = usable_cores()
    try:
        most = min(int(os.environ.get("OMP_NUM_THREADS", "")), cores)
    except ValueError:
        most = cores
    if threading.current_thread() is not threading.main_thread():
        most = min(most, cores - 1)
    return max(1, most)


class ThreadTuner:
    """``threads=0`` on a CPU: time training steps at 1 thread and at N, and train on the faster.

    Which is faster depends on the model and on what else the machine is doing: measured on 2 cores (tokens/s,
    passive wait), a hidden-32 GRU ran ~190k at 1 thread and ~47k at 2; at hidden 512 an LSTM ran 18k and 20k;
    with a competing busy process, a hidden-256 GRU ran 34k at 1 thread and 30k at 2. No rule of thumb by size
    holds on both a quiet and a busy machine, so the tuner measures.

    The probe costs as little as it can, because short runs pay for it too (a 1-2 s benchmark run lost 10-15%
    to an earlier probe that alternated 1, N, 1, N ... from N):

    - it starts at 1 thread, the likelier winner on small models and on a busy machine, so the untimed warm-up
      steps and the first timed block run at full speed;
    - it times a block of ``PAIRS`` steps per candidate, the current setting first (no switch), then the other
      after one untimed step that wakes its threads;
    - a candidate whose timed step is ``CLEAR_LOSS`` times slower than the first block's median has lost: the
      probe ends there, so a losing N costs two steps, not five.

    Ties (within 5%) go to 1 thread, which leaves a core to the rest of the machine. It probes again when the
    chosen setting's steps get ``SLOWDOWN`` times slower than measured (load arrived) and every ``recheck_s``
    seconds (load may have left).
    """

    WARMUP = 2  # the first steps allocate and fill caches: not timed
    PAIRS = 3  # timed steps per candidate in one probe
    CLEAR_LOSS = 1.5  # a timed step this much slower than the first candidate's median ends the probe
    SLOWDOWN = 1.5  # the median of the last few steps this much slower than measured: probe again
    WATCH = 5

    def __init__(self, most: int, set_threads=None, *, recheck_s: float = 60.0, clock=time.monotonic):
        if set_threads is None:
            import torch

            set_threads = torch.set_num_threads
        self.candidates = (1, most) if most > 1 else (1,)
        self._set = set_threads
        self._clock = clock
        self.recheck_s = recheck_s
        self.threads = 1
        self.choices: list[int] = []  # every choice made, for tests and the benchmark
        self._order: list[int] = []  # the candidates of the probe in progress, in the order they are timed
        self._times: dict[int, list[float]] = {}
        self._recent: list[float] = []
        self._reference = 0.0
        self._warmup = self.WARMUP
        self._probing = False
        self._next_probe = 0.0
        self._set(1)
        if len(self.candidates) > 1:
            self._start_probe()

    def _apply(self, n: int) -> None:
        if n != self.threads:
            self._set(n)
            self.threads = n

    def _start_probe(self) -> None:
        self._probing = True
        self._times = {}
        self._order = [self.threads] + [n for n in self.candidates if n != self.threads]

    def observe(self, seconds: float) -> None:
        """Tell the tuner how long the step just taken lasted; it may change the thread count for the next one."""
        if len(self.candidates) == 1:
            return
        if self._warmup:
            self._warmup -= 1
            return
        if self._probing:
            self._probe_step(seconds)
            return
        self._recent.append(seconds)
        del self._recent[: -self.WATCH]
        slowed = len(self._recent) == self.WATCH and statistics.median(self._recent) > self.SLOWDOWN * self._reference
        if slowed or self._clock() >= self._next_probe:
            self._start_probe()

    def _probe_step(self, seconds: float) -> None:
        first, current = self._order[0], self.threads
        times = self._times.setdefault(current, [])
        times.append(seconds)
        if current != first and seconds > self.CLEAR_LOSS * statistics.median(self._times[first]):
            self._finish_probe()  # a clear loser: no need for the rest of its block
            return
        if len(times) < self.PAIRS:
            return
        pending = [n for n in self._order if n not in self._times]
        if not pending:
            self._finish_probe()
            return
        self._apply(pending[0])
        self._warmup = 1  # the first step after a change pays for waking the pool

    def _finish_probe(self) -> None:
        medians = {n: statistics.median(ts) for n, ts in self._times.items()}
        fastest = min(medians.values())
        # Within 5% of the fastest counts as a tie, and a tie goes to fewer threads.
        best = min(n for n in medians if medians[n] <= 1.05 * fastest)
        self._probing = False
        self._reference = medians[best]
        self._recent = []
        self._next_probe = self._clock() + self.recheck_s
        self.choices.append(best)
        self._apply(best)
