"""Metric selection: --metrics, --metric-opt, and metrics that run only at validation."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest

import rnnstudio
from rnnstudio import cli
from rnnstudio.errors import RNNStudioError
from rnnstudio.plugins import load_plugins
from rnnstudio.trainer import TrainConfig, Trainer

CALLS = {"slow": 0, "eager": 0}


class Slow(rnnstudio.Metric):
    """Stands for an expensive metric: it only counts its updates, and says it is validation-only."""

    name = "slow"
    description = "validation only"
    params = (rnnstudio.Param("scale", "float", 1.0, help="multiplies the value"),)

    def reset(self):
        self.n = 0

    def update(self, logits, targets, nll):
        CALLS[self.name] += 1
        self.n += int(targets.numel())

    def value(self):
        return self.n * self.options["scale"]


class Eager(Slow):
    name = "eager"
    description = "the same metric, on training batches too"
    on_train = True


class Plugin:
    @rnnstudio.hookimpl
    def register_metrics(self, register):
        register(Slow)
        register(Eager)


def _host():
    return load_plugins(no_plugins=True, extra=[("test:metrics", Plugin())])


def _run(tiny_corpus, **kw):
    cfg = TrainConfig(corpus="text-file", corpus_options={"path": str(tiny_corpus)}, hidden_size=8, batch_size=4,
                      seq_len=8, max_steps=7, save=False, eval_every=0, sample_every=0, **kw)
    return list(Trainer(cfg, host=_host()).run())


def test_a_validation_only_metric_never_runs_on_training_batches(tiny_corpus):
    CALLS.update(slow=0, eager=0)
    events = _run(tiny_corpus)
    progress = [e for e in events if e.kind == "progress"]
    assert progress and all("slow" not in e.train and "eager" in e.train for e in progress)
    assert CALLS["eager"] - CALLS["slow"] == 7  # one update per training step, on top of validation's
    assert CALLS["slow"] > 0 and events[-1].val["slow"] == events[-1].val["eager"]


def test_metrics_chooses_which_run_and_perplexity_always_does(tiny_corpus):
    CALLS.update(slow=0, eager=0)
    final = _run(tiny_corpus, metrics="slow")[-1]
    assert set(final.val) == {"perplexity", "slow"}
    assert CALLS == {"slow": CALLS["slow"], "eager": 0} and CALLS["slow"] > 0
    everything = _run(tiny_corpus)[-1]
    assert {"accuracy", "cross-entropy", "slow", "eager"} <= set(everything.val)


def test_metric_options_reach_the_metric(tiny_corpus):
    plain = _run(tiny_corpus, metrics="slow")[-1].val["slow"]
    scaled = _run(tiny_corpus, metrics="slow", metric_options={"slow.scale": "2.5"})[-1].val["slow"]
    assert scaled == pytest.approx(2.5 * plain) and plain > 0


@pytest.mark.parametrize("kw, match", [
    ({"metrics": "perplexity,slwo"}, "unknown metric 'slwo'. Did you mean 'slow'"),
    ({"metrics": "slow", "metric_options": {"eager.scale": "2"}}, "metric 'eager' is not among --metrics"),
    ({"metric_options": {"scale": "2"}}, "write NAME.KEY=VALUE"),
    ({"metric_options": {"slow.nope": "2"}}, "has no option"),
    ({"metric_options": {"slow.scale": "big"}}, "scale"),
])
def test_bad_metric_choices_are_one_line_errors(tiny_corpus, kw, match):
    with pytest.raises(RNNStudioError, match=match) as info:
        _run(tiny_corpus, **kw)
    assert "\n" not in str(info.value)


def test_the_cli_flags(rnnstudio_home, tiny_corpus, capsys):
    folder = rnnstudio_home / "data" / "plugins"
    folder.mkdir(parents=True)
    (folder / "counting_metric.py").write_text(
        "import rnnstudio\n"
        "class Count(rnnstudio.Metric):\n"
        "    name = 'count'\n"
        "    description = 'tokens seen'\n"
        "    params = (rnnstudio.Param('scale', 'int', 1),)\n"
        "    def reset(self): self.n = 0\n"
        "    def update(self, logits, targets, nll): self.n += int(targets.numel())\n"
        "    def value(self): return self.n * self.options['scale']\n"
        "@rnnstudio.hookimpl\n"
        "def register_metrics(register):\n"
        "    register(Count)\n")
    args = ["train", "--corpus", "text-file", "--corpus-opt", f"path={tiny_corpus}", "--hidden-size", "8",
            "--batch-size", "4", "--seq-len", "8", "--max-steps", "3", "--eval-every", "0", "--json",
            "--metrics", "count", "--metric-opt", "count.scale=3", "--name", "counted"]
    assert cli.main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(summary["val"]) == {"perplexity", "count"}
    assert summary["val"]["count"] > 0 and summary["val"]["count"] % 3 == 0
    assert cli.main([*args[:-2], "--metrics", "cuont"]) == 2
    assert "unknown metric 'cuont'" in capsys.readouterr().err

    # a plugin metric shows in every output: the runs CSV and score's text
    assert cli.main(["runs", "--csv", "-"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    [row] = [r for r in rows if r["model"] == "counted"]
    assert float(row["val count"]) == summary["val"]["count"]
    assert cli.main(["score", "--model", "counted", str(tiny_corpus)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith(f"{tiny_corpus}: ")
    [count] = re.findall(r"\bcount (\d+)", lines[1])
    assert int(count) > 0
