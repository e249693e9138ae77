"""Torchrun reliability loop: N short 2-rank gloo runs must all exit 0, and a killed rank must end the run quickly.

    python benchmarks/torchrun_loop.py              # 50 runs of 20-50 steps, then the kill checks
    python benchmarks/torchrun_loop.py --runs 8 --no-kill

Each run trains a tiny model on a generated corpus with ``torchrun --nproc_per_node=2 -m rnnstudio train
... --distributed`` and is counted as clean when torchrun exits 0, the model loads, and no rank printed
"terminate called" (a rank that aborted at exit). The kill checks SIGKILL rank 1 mid-run and SIGTERM the
launcher mid-run, and report how long the rest took to exit and what they said.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_cmd(corpus: Path, name: str, steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
            "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "rnnstudio", "train",
            "--corpus", "text-file", "--corpus-opt", f"path={corpus}", "--hidden-size", "16", "--batch-size", "4",
            "--seq-len", "10", "--max-steps", str(steps), "--eval-every", "10", "--checkpoint-every", "10",
            "--checkpoint-minutes", "0", "--device", "cpu", "--threads", "1", "--name", name, "--distributed",
            *extra]


def env_for(home: Path, timeout_s: float = 30) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "RNNSTUDIO_HOME": str(home),
            "RNNSTUDIO_DIST_TIMEOUT": str(timeout_s), "PYTHONPATH": str(ROOT)}


def saved_step(home: Path, name: str) -> int | None:
    config = home / "data" / "models" / name / "config.json"
    try:
        return json.loads(config.read_text())["summary"]["step"]
    except (OSError, ValueError, KeyError):
        return None


def loop(corpus: Path, home: Path, runs: int, seed: int) -> dict:
    rng = random.Random(seed)
    failures = []
    for i in range(runs):
        steps = rng.randint(20, 50)
        proc = subprocess.run(torchrun_cmd(corpus, f"loop{i}", steps), capture_output=True, text=True,
                              env=env_for(home), timeout=300)
        aborted = "terminate called" in proc.stderr
        saved = saved_step(home, f"loop{i}")
        ok = proc.returncode == 0 and not aborted and saved == steps
        print(f"run {i + 1}/{runs}: {steps} steps, exit {proc.returncode}, saved step {saved}"
              f"{', ABORT in a rank' if aborted else ''}", flush=True)
        if not ok:
            said = [line for line in proc.stderr.splitlines()
                    if line.startswith(("rnnstudio", "terminate called")) or "Error:" in line][:8]
            failures.append({"run": i, "exit": proc.returncode, "aborted": aborted, "ranks_said": said,
                             "stderr_tail": proc.stderr[-1500:]})
    return {"runs": runs, "non_zero_exits": sum(f["exit"] != 0 for f in failures), "failures": failures}


def rank_pids(launcher_pid: int) -> list[int]:
    """The launcher's child processes (the ranks), from /proc."""
    out = []
    for task in Path(f"/proc/{launcher_pid}/task").iterdir():
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return sorted(out)


def start_and_wait(corpus: Path, home: Path, name: str) -> tuple[subprocess.Popen, float]:
    proc = subprocess.Popen(torchrun_cmd(corpus, name, 100000, "--json"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env_for(home, timeout_s=60))
    deadline = time.monotonic() + 120
    for line in proc.stdout:  # rank 0's JSON events
        if '"event": "checkpoint"' in line:
            return proc, time.monotonic()
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit(f"{name}: the run never reached its first checkpoint:\n{proc.stderr.read()[-2000:]}")


def kill_rank(corpus: Path, home: Path) -> dict:
    proc, _ = start_and_wait(corpus, home, "killed-rank")
    ranks = rank_pids(proc.pid)
    t0 = time.monotonic()
    os.kill(ranks[-1], signal.SIGKILL)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        return {"exit": None, "seconds_to_exit": None, "message": "did not exit within 120 s"}
    lines = [line for line in err.splitlines() if line.startswith("rnnstudio")]
    return {"exit": proc.returncode, "seconds_to_exit": round(time.monotonic() - t0, 2),
            "messages": lines[-3:], "saved_step": saved_step(home, "killed-rank")}


def term_launcher(corpus: Path, home: Path) -> dict:
    proc, _ = start_and_wait(corpus, home, "term-launcher")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    summary = next((e for e in reversed(events) if e["event"] == "summary"), None)
    lines = [line for line in err.splitlines() if line.startswith("rnnstudio")]
    return {"exit": proc.returncode, "seconds_to_exit": round(time.monotonic() - t0, 2),
            "summary_steps": summary and summary["steps"], "saved_step": saved_step(home, "term-launcher"),
            "messages": lines[-3:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-kill", action="store_true", help="skip the kill checks")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus.txt"
        corpus.write_text("the cat sat on the mat. the dog ate the log. " * 300, encoding="utf-8")
        result = {"loop": loop(corpus, tmp / "home", args.runs, args.seed)} if args.runs else {}
        if not args.no_kill:
            result["kill_rank_1"] = kill_rank(corpus, tmp / "home")
            result["sigterm_launcher"] = term_launcher(corpus, tmp / "home")
    print(json.dumps(result, indent=2))
    return 0 if not result.get("loop", {}).get("failures") else 1


if __name__ == "__main__":
    sys.exit(main())
