"""A model folder saved by an earlier release still lists, generates and resumes (tests/fixtures/legacy-model)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "legacy-model"


def _cli(args, home, cwd):
    env = {**os.environ, "RNNSTUDIO_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "rnnstudio", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def test_a_model_saved_by_the_first_release_loads_generates_and_resumes(rnnstudio_home, tmp_path):
    models = rnnstudio_home / "data" / "models"
    models.mkdir(parents=True)
    shutil.copytree(FIXTURE / "legacy-gru", models / "legacy-gru")
    work = tmp_path / "work"  # the model was trained on a corpus given as a path relative to the working folder
    work.mkdir()
    shutil.copy(FIXTURE / "corpus.txt", work / "corpus.txt")

    listed = _cli(["models", "--json"], rnnstudio_home, work)
    assert listed.returncode == 0, listed.stderr
    [row] = [m for m in json.loads(listed.stdout) if m["name"] == "legacy-gru"]
    assert not row.get("error"), row

    gen = _cli(["generate", "--model", "legacy-gru", "--prefix", "the ", "--length", "30", "--seed", "1"],
               rnnstudio_home, work)
    assert gen.returncode == 0, gen.stderr
    assert gen.stdout.startswith("the ") and len(gen.stdout.strip()) > len("the ")

    resumed = _cli(["train", "--resume", "--name", "legacy-gru", "--max-steps", "24", "--json"], rnnstudio_home, work)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout.splitlines()[-1])
    assert summary["steps"] == 24 and summary["path"]
