"""Torchrun from outside: user errors reach torchrun's summary as one line, SIGTERM saves, a lost rank is named."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("torchrun_loop", ROOT / "benchmarks" / "torchrun_loop.py")
torchrun_loop = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(torchrun_loop)

PICKLING_COLLECTIVES = {"all_gather_object", "broadcast_object_list", "gather_object", "scatter_object_list",
                        "send_object_list", "recv_object_list"}


def test_no_module_uses_a_pickling_collective():
    used = []
    for path in (ROOT / "rnnstudio").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
            if name in PICKLING_COLLECTIVES:
                used.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert used == []


# Runs on both ranks: each user error once through the CLI, recording the exit code, stderr and the
# error file torchrun reads. Every case fails before the ranks join, so they are independent.
WORKER = textwrap.dedent('''
    import contextlib, io, json, os, sys
    from rnnstudio.cli import main

    out_dir, corpus = sys.argv[1], sys.argv[2]
    base = ["train", "--corpus", "text-file", "--corpus-opt", f"path={corpus}", "--max-steps", "2", "--distributed"]
    cases = {
        "bad-name": (base + ["--name", "../escape"], {}),
        "missing-resume": (["train", "--name", "not-there", "--resume", "--max-steps", "5", "--distributed"], {}),
        "bad-timeout": (base + ["--name", "t"], {"RNNSTUDIO_DIST_TIMEOUT": "soon"}),
        "no-cuda": (base + ["--name", "c", "--device", "cuda"], {}),
    }
    rank = os.environ["RANK"]
    results = {}
    for case, (argv, env) in cases.items():
        os.environ.update(env)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(argv)
        for key in env:
            del os.environ[key]
        with open(os.environ["TORCHELASTIC_ERROR_FILE"]) as f:
            reported = json.load(f)["message"]
        os.remove(os.environ["TORCHELASTIC_ERROR_FILE"])
        results[case] = {"code": code, "stderr": err.getvalue(), "reported": reported}
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump(results, f)
''')


def _torchrun(args: list[str], home: Path, **env) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={torchrun_loop.free_port()}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env={**torchrun_loop.env_for(home), **env})


def test_user_errors_are_one_line_on_each_rank_and_in_the_error_file(tmp_path, tiny_corpus):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    proc = _torchrun([str(worker), str(tmp_path), str(tiny_corpus)], tmp_path / "home")
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = {"bad-name": "invalid model name '../escape'", "missing-resume": "not-there",
                "bad-timeout": "RNNSTUDIO_DIST_TIMEOUT must be a number of seconds, got 'soon'",
                "no-cuda": "CUDA is not available"}
    if torch.cuda.is_available():
        del expected["no-cuda"]
    for rank in (0, 1):
        results = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for case, text in expected.items():
            r = results[case]
            line = r["stderr"].strip()
            assert r["code"] == 2 and "\n" not in line and "Traceback" not in line, (case, r)
            assert line.startswith(f"rnnstudio: error: rank {rank} of 2: ") and text in line, (case, line)
            assert r["reported"]["message"] == line  # what torchrun's summary shows
            assert r["reported"]["extraInfo"]["py_callstack"] == line


def test_torchrun_summary_carries_the_one_line_reason(tmp_path):
    proc = _torchrun(["-m", "rnnstudio", "train", "--name", "not-there", "--resume", "--max-steps", "5",
                      "--distributed"], tmp_path / "home")
    assert proc.returncode != 0
    rank_lines = [line for line in proc.stderr.splitlines() if line.startswith("rnnstudio: error: rank")]
    assert len(rank_lines) == 2 and all("not-there" in line for line in rank_lines)
    # torchrun's own report (it still prints its ChildFailedError traceback above it) names the reason
    assert "traceback : rnnstudio: error: rank " in proc.stderr and "not-there" in proc.stderr.split("Root Cause")[-1]


def test_sigterm_to_the_launcher_saves_every_rank_stops_at_one_step(tiny_corpus, tmp_path):
    result = torchrun_loop.term_launcher(tiny_corpus, tmp_path / "home")
    assert result["summary_steps"] is not None and result["saved_step"] == result["summary_steps"], result
    assert any(m.startswith("rnnstudio: stopped by SIGTERM; the model is saved at step "
                            f"{result['saved_step']} ") for m in result["messages"]), result


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the ranks through /proc")
def test_a_killed_rank_ends_the_run_quickly_and_the_survivor_says_why(tiny_corpus, tmp_path):
    result = torchrun_loop.kill_rank(tiny_corpus, tmp_path / "home")
    assert result["exit"] not in (0, None) and result["seconds_to_exit"] < 60, result
    said = " ".join(result["messages"])
    assert "rank 0 of 2: lost touch with the other ranks" in said and "plugin raised" not in said, result
    assert result["saved_step"] is not None and result["saved_step"] >= 10  # the model is still there
