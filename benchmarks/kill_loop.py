"""Kill loop: SIGKILL, SIGTERM and SIGHUP at random moments of a CLI training run, each followed by generate and --resume.

    python benchmarks/kill_loop.py            # 10 moments
    python benchmarks/kill_loop.py --moments 30 --seed 1

Checked at every moment: the model loads and generates; a SIGTERM or SIGHUP run exits 128+N after
saving at the step it was on (its summary, config.json and train_state agree, and no step it had
reported is lost); a SIGKILL run keeps its last periodic checkpoint. Then every model is resumed to one
common step and its weights must equal an uninterrupted run's with the same seed. tests/test_kill_loop.py
runs the same loop with a few moments.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVERY = 20  # steps between periodic checkpoints
SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGHUP)


def train_args(corpus: Path, name: str, max_steps: int) -> list[str]:
    return ["train", "--corpus", "text-file", "--corpus-opt", f"path={corpus}", "--cell", "gru", "--hidden-size",
            "16", "--num-layers", "2", "--dropout", "0.3", "--batch-size", "4", "--seq-len", "8", "--seed", "3",
            "--device", "cpu", "--threads", "1", "--eval-every", "0", "--max-steps", str(max_steps),
            "--checkpoint-every", str(EVERY), "--checkpoint-minutes", "0", "--name", name]


def interrupt(corpus: Path, home: Path, name: str, signum: int, delay_s: float) -> dict:
    """Train in a subprocess and send ``signum`` ``delay_s`` after the first checkpoint (so SIGKILL leaves one)."""
    env = {**os.environ, "RNNSTUDIO_HOME": str(home), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "rnnstudio", *train_args(corpus, name, 100_000), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    seen = 0
    try:
        deadline = time.monotonic() + 120
        for line in proc.stdout:
            event = json.loads(line)
            if event["event"] in ("progress", "checkpoint"):
                seen = max(seen, event["step"])
            if event["event"] == "checkpoint":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: no checkpoint within 120 s")
        time.sleep(delay_s)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    for event in events:
        if event["event"] in ("progress", "checkpoint"):
            seen = max(seen, event["step"])
    summary = next((e for e in events if e["event"] == "summary"), None)
    return {"name": name, "signal": signal.Signals(signum).name, "delay_s": round(delay_s, 2),
            "exit": proc.returncode, "seen_step": seen, "summary": summary, "stderr": err}


def check_interrupted(run: dict) -> int:
    """The saved step after one interruption; raises AssertionError when a promise is broken."""
    from rnnstudio import checkpoint as ckpt

    name, sig = run["name"], run["signal"]
    loaded = ckpt.load_model(name)  # always loadable
    meta, _ = ckpt.load_train_state(ckpt.model_path(name))
    saved = meta["position"]["step"]
    assert "Traceback" not in run["stderr"], run["stderr"]
    if sig == "SIGKILL":
        assert run["exit"] == -signal.SIGKILL, run
        assert saved % EVERY == 0 and saved >= EVERY, run
        # a kill between the files of one checkpoint can leave config.json one interval behind
        assert loaded.config["summary"]["step"] in (saved, saved - EVERY), run
    else:
        assert loaded.config["summary"]["step"] == saved, run
        assert run["exit"] == 128 + signal.Signals[sig], run
        assert run["summary"] and run["summary"]["stopped"] and run["summary"]["steps"] == saved, run
        assert saved >= run["seen_step"], run  # every step it reported is in the model
        last = run["stderr"].strip().splitlines()[-1]
        assert last.startswith(f"rnnstudio: stopped by {sig}; the model is saved at step {saved} "), last
    return saved


def run_loop(corpus: Path, home: Path, moments: int, seed: int, max_delay_s: float = 1.5) -> dict:
    """``moments`` interruptions with random signals and delays; returns what happened."""
    from rnnstudio import checkpoint as ckpt
    from rnnstudio.cli import main as cli

    rng = random.Random(seed)
    signals = [SIGNALS[i % len(SIGNALS)] for i in range(moments)]
    rng.shuffle(signals)
    runs = []
    for i, signum in enumerate(signals):
        run = interrupt(corpus, home, f"kill{i}", signum, rng.uniform(0.0, max_delay_s))
        run["saved_step"] = check_interrupted(run)
        assert cli(["generate", "--model", run["name"], "--length", "10", "--seed", "1"]) == 0
        runs.append(run)
    target = max(r["saved_step"] for r in runs) + 7  # every resume ends mid-interval, away from a checkpoint
    assert cli(train_args(corpus, "unbroken", target)) == 0
    reference = ckpt.load_model("unbroken").model.state_dict()
    for run in runs:
        assert cli(["train", "--name", run["name"], "--resume", "--max-steps", str(target), "--device", "cpu",
                    "--threads", "1", "--eval-every", "0", "--checkpoint-every", str(EVERY)]) == 0
        resumed = ckpt.load_model(run["name"]).model.state_dict()
        worst = max(float((resumed[k] - reference[k]).abs().max()) for k in reference)
        run["max_weight_diff"] = worst
        assert worst <= 1e-6, (run["name"], run["signal"], worst)
    return {"moments": moments, "target_step": target,
            "runs": [{k: r[k] for k in ("name", "signal", "delay_s", "exit", "seen_step", "saved_step",
                                        "max_weight_diff")} for r in runs]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--moments", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["RNNSTUDIO_HOME"] = str(tmp / "home")
        corpus = tmp / "corpus.txt"
        corpus.write_text("the cat sat on the mat. " * 400, encoding="utf-8")
        t0 = time.monotonic()
        result = run_loop(corpus, tmp / "home", args.moments, args.seed)
        result["seconds"] = round(time.monotonic() - t0, 1)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
