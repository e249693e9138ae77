"""GUI benchmark (run by bench.py in its own process, offscreen): launch time, event-loop lateness, GUI vs headless tokens/s."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

LAUNCHED = time.time()  # before Qt or torch are imported
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

PROBE_MS = 10


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--settings", required=True, help="bench.py's corpus settings as JSON")
    ap.add_argument("--launched", type=float, default=None, help="wall time the parent launched this process")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    settings = json.loads(args.settings)
    launched = args.launched or LAUNCHED

    from PySide6.QtCore import QElapsedTimer, QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from rnnstudio.gui.app import create_app, create_window
    from rnnstudio.trainer import Progress, TrainConfig, Trainer

    app = create_app([sys.argv[0]])
    window = create_window(restore=False)
    window.show()
    QApplication.processEvents()
    shown = time.time()

    config = TrainConfig(corpus=settings["corpus"], corpus_options=settings["corpus_options"],
                         preprocess=settings["preprocess"], save=False, eval_every=0, epochs=10**6,
                         checkpoint_every=0, checkpoint_minutes=0,  # the default recipe: gru 256, adam
                         threads=1)  # the same on both sides, so the ratio is the GUI's own overhead

    def wait(seconds):
        loop = QEventLoop()
        QTimer.singleShot(int(seconds * 1000), loop.quit)
        loop.exec()

    # -- training in the GUI (the real panel, its worker thread, charts and labels) alternated with the
    # -- same training headless, as the CLI runs it; each reports its best round
    panel = window.training
    panel.config = lambda: TrainConfig(**config.to_json())
    lateness: list[float] = []
    clock = QElapsedTimer()
    probe = QTimer()
    probe.setInterval(PROBE_MS)
    last = [None]

    def tick():
        now = clock.elapsed()
        if last[0] is not None:
            lateness.append(max(0.0, now - last[0] - PROBE_MS))
        last[0] = now

    probe.timeout.connect(tick)
    seconds = 5.0 if args.quick else 8.0
    gui_rates, cli_rates, ok = [], [], True

    def run_gui():
        nonlocal ok
        steps: list[tuple[float, int]] = []
        if not panel.start():
            raise RuntimeError("the training panel refused to start")
        # the trainer's own clock (Progress.elapsed, stamped in the worker): late delivery cannot skew it
        panel.job.worker.progressed.connect(lambda ev, points: steps.append((ev.elapsed, ev.step)))
        t_end = time.perf_counter() + 120
        while not steps and time.perf_counter() < t_end:  # corpus loading, first step
            wait(0.05)
        last[0] = None
        clock.start()
        probe.start()
        wait(seconds)
        probe.stop()
        ok = panel.stop_and_join(60) and ok
        gui_rates.append(rate_from(steps, config.batch_size * config.seq_len))

    def run_cli():
        events = Trainer(TrainConfig(**config.to_json())).run()
        head: list[tuple[float, int]] = []
        for ev in events:
            if isinstance(ev, Progress):
                head.append((ev.elapsed, ev.step))
                if ev.elapsed - head[0][0] >= seconds:
                    break
        events.close()
        cli_rates.append(rate_from(head, config.batch_size * config.seq_len))

    for r in range(1 if args.quick else 2):
        for run in ((run_gui, run_cli) if r % 2 == 0 else (run_cli, run_gui)):
            try:
                run()
            except RuntimeError as exc:
                print(json.dumps({"skipped": str(exc)}))
                return 0
        print(f"round {r + 1}: gui {gui_rates[-1]:.0f}, cli {cli_rates[-1]:.0f} tokens/s", file=sys.stderr)
    gui_rate, cli_rate = max(gui_rates), max(cli_rates)
    window.close()
    out = {
        "launch_to_shown_s": shown - launched,
        "probe_interval_ms": PROBE_MS,
        "probe_ticks": len(lateness),
        "lateness_p50_ms": percentile(lateness, 0.50),
        "lateness_p99_ms": percentile(lateness, 0.99),
        "lateness_max_ms": max(lateness) if lateness else float("nan"),
        "lateness_target_ms": 50,
        "lateness_met": percentile(lateness, 0.99) <= 50,
        "gui_tokens_per_s": gui_rate,
        "cli_tokens_per_s": cli_rate,
        "gui_vs_cli": gui_rate / cli_rate if cli_rate else float("nan"),
        "gui_vs_cli_target": 0.9,
        "gui_vs_cli_met": bool(cli_rate) and gui_rate / cli_rate >= 0.9,
        "training_seconds": seconds,
        "thread_joined": ok,
    }
    print(json.dumps(out))
    return 0


def rate_from(points: list[tuple[float, int]], tokens_per_step: int) -> float:
    """Tokens/s between the first and the last observed step (the first step's setup is left out)."""
    if len(points) < 2:
        return float("nan")
    (t0, s0), (t1, s1) = points[0], points[-1]
    return (s1 - s0) * tokens_per_step / (t1 - t0) if t1 > t0 else float("nan")


if __name__ == "__main__":
    sys.exit(main())
