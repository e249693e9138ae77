"""Data-parallel training under torchrun: 2 CPU processes (gloo) match 1 process with the double batch."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch

from rnnstudio import cli
from rnnstudio.checkpoint import load_model, load_train_state, model_path
from rnnstudio.plugins import load_plugins
from rnnstudio.trainer import TrainConfig, Trainer

B = 4  # per-rank batch; the 1-process reference uses 2B over the same rows
STEPS = 8

# Runs on every rank (and is imported by the test for its metric plugin). It trains each config in
# argv[2] (a JSON list) through DistributedTrainer and writes per-step losses, validation values,
# warnings and the final parameters for its rank; then it runs the CLI with the arguments in argv[3].
# One launch serves every test here: starting 2 Python processes with torch is the slow part.
WORKER = textwrap.dedent('''
    """A 2-rank worker for test_distributed.py."""
    import json
    import sys

    import torch

    import rnnstudio
    from rnnstudio import Metric


    class MergedCrossEntropy(Metric):
        """A third-party metric with the optional state()/merge() pair: sums that add across ranks."""
        name = "merged-cross-entropy"
        description = "Cross-entropy kept as sums, merged across ranks."

        def reset(self):
            self.total, self.count = 0.0, 0

        def update(self, logits, targets, nll):
            self.total += float(nll.double().sum())
            self.count += int(nll.numel())

        def value(self):
            return self.total / self.count

        def state(self):
            return {"total": self.total, "count": self.count}

        def merge(self, other):
            self.total += other["total"]
            self.count += other["count"]


    class TokensSeen(Metric):
        """A third-party metric without state()/merge(): under torchrun it reports rank 0's share."""
        name = "tokens-seen"
        description = "How many tokens were scored (no state/merge)."

        def reset(self):
            self.count = 0

        def update(self, logits, targets, nll):
            self.count += int(nll.numel())

        def value(self):
            return self.count


    class TestPlugin:
        @rnnstudio.hookimpl
        def register_metrics(self, register):
            register(MergedCrossEntropy)
            register(TokensSeen)


    def main(out_dir, configs, cli_args):
        import torch.distributed as dist
        from rnnstudio.distributed import DistributedTrainer, init_from_torchrun, shutdown
        from rnnstudio.plugins import load_plugins
        from rnnstudio.trainer import TrainConfig

        def no_pickles(*args, **kwargs):
            raise AssertionError("a *_object collective ran: it would unpickle what a peer sent")

        for fn in ("all_gather_object", "broadcast_object_list", "gather_object", "scatter_object_list",
                   "send_object_list", "recv_object_list"):
            setattr(dist, fn, no_pickles)  # every run below exchanges tensors only
        host = load_plugins(no_plugins=True, extra=[("test", TestPlugin())])
        try:
            for i, fields in enumerate(configs):
                stop_at = fields.pop("stop_rank1_at", None)  # as if Ctrl+C reached rank 1 alone
                cfg = TrainConfig(**fields)
                init_from_torchrun(cfg)
                trainer = DistributedTrainer(cfg, host=host)
                record = {"losses": [], "val": [], "warnings": [], "stopped": None}
                for ev in trainer.run():
                    if ev.kind == "progress":
                        record["losses"].append(ev.loss)
                        if cfg.rank == 1 and ev.step == stop_at:
                            trainer.stop()
                    elif ev.kind == "summary":
                        record["stopped"] = ev.stopped
                    elif ev.kind == "evaluated":
                        record["val"].append(ev.val)
                    elif ev.kind == "warning":
                        record["warnings"].append(ev.message)
                dist.barrier()  # rank 0's checkpoint is complete before anyone starts the next run
                with open(f"{out_dir}/run{i}-rank{cfg.rank}.json", "w") as f:
                    json.dump(record, f)
                torch.save(trainer.model.state_dict(), f"{out_dir}/run{i}-rank{cfg.rank}.pt")
            # last, the command line itself, as `torchrun ... -m rnnstudio train ... --distributed` runs it
            import contextlib
            from rnnstudio import cli

            rank = dist.get_rank()
            with open(f"{out_dir}/cli-rank{rank}.out", "w") as f, contextlib.redirect_stdout(f):
                code = cli.main(cli_args)
            with open(f"{out_dir}/cli-rank{rank}.code", "w") as f:
                f.write(str(code))
            # again: now only rank 0 fails (the model exists); rank 1, waiting in DDP's broadcast, must not hang
            with open(f"{out_dir}/again-rank{rank}.err", "w") as f, contextlib.redirect_stderr(f):
                code = cli.main(cli_args)
            with open(f"{out_dir}/again-rank{rank}.code", "w") as f:
                f.write(str(code))
        finally:
            shutdown()


    if __name__ == "__main__":
        main(sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]))
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str], home, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=2`` on 127.0.0.1 with a free port, 1 thread per rank."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RNNSTUDIO_DIST_TIMEOUT": "30", "RNNSTUDIO_HOME": str(home)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check:
        assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _base(corpus, **kw) -> dict:
    fields = dict(corpus="text-file", corpus_options={"path": str(corpus)}, hidden_size=16, batch_size=B,
                  seq_len=10, max_steps=STEPS, eval_every=4, checkpoint_every=0, checkpoint_minutes=0,
                  device="cpu", save=False, threads=1)
    return {**fields, **kw}


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    """One 2-rank launch: four DistributedTrainer runs, then the CLI; its own RNNSTUDIO_HOME."""
    root = tmp_path_factory.mktemp("ddp")
    corpus = root / "tiny.txt"
    corpus.write_text("the cat sat on the mat. " * 400, encoding="utf-8")  # as conftest's tiny_corpus
    worker = root / "ddp_worker.py"
    worker.write_text(WORKER, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("ddp_worker", worker)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    configs = [
        _base(corpus, cell="gru", name="seq-gru", save=True),  # sequential: each rank carries its rows' state
        _base(corpus, cell="lstm", partition="random", optimizer="sgd", lr=1.0),  # tuple state, random order
        _base(corpus, cell="gru", name="seq-gru", save=True, resume=True, max_steps=STEPS + 4),
        _base(corpus, cell="gru", max_steps=STEPS + 4),  # the same 12 steps without a break
        _base(corpus, cell="gru", stop_rank1_at=3),
    ]
    cli_args = ["train", "--corpus", "text-file", "--corpus-opt", f"path={corpus}", "--cell", "gru",
                "--hidden-size", "16", "--batch-size", "4", "--seq-len", "10", "--max-steps", "6",
                "--distributed", "--name", "ddp", "--json"]
    out = root / "out"
    out.mkdir()
    home = root / "home"
    _torchrun([str(worker), str(out), json.dumps(configs), json.dumps(cli_args)], home)
    return SimpleNamespace(out=out, home=home, configs=configs, cli_args=cli_args, plugin=module.TestPlugin())


def _reference(fields: dict, host) -> tuple[dict, dict]:
    """One process, batch 2B: the same rows as the two ranks' B each."""
    cfg = TrainConfig(**{**fields, "batch_size": 2 * B, "name": None, "save": False, "resume": False})
    trainer = Trainer(cfg, host=host)
    record = {"losses": [], "val": []}
    for ev in trainer.run():
        if ev.kind == "progress":
            record["losses"].append(ev.loss)
        elif ev.kind == "evaluated":
            record["val"].append(ev.val)
    return record, trainer.model.state_dict()


@pytest.mark.parametrize("run", [0, 1], ids=["gru-sequential", "lstm-random"])
def test_two_ranks_match_one_process_with_the_double_batch(ddp, run):
    host = load_plugins(no_plugins=True, extra=[("test", ddp.plugin)])
    assert not host.failures, host.failures
    ranks = [json.loads((ddp.out / f"run{run}-rank{r}.json").read_text()) for r in (0, 1)]
    params = [torch.load(ddp.out / f"run{run}-rank{r}.pt") for r in (0, 1)]
    ref, ref_params = _reference(ddp.configs[run], host)

    # every rank logs the same global loss, and it is the 1-process loss over the same rows
    assert ranks[0]["losses"] == ranks[1]["losses"]
    assert len(ranks[0]["losses"]) == STEPS
    assert ranks[0]["losses"] == pytest.approx(ref["losses"], rel=1e-4, abs=1e-5)
    # DDP keeps the replicas bit-identical, and equal to the 1-process model
    for name in ref_params:
        assert torch.equal(params[0][name], params[1][name]), name
        torch.testing.assert_close(params[0][name], ref_params[name], rtol=1e-4, atol=1e-5)

    # validation is global: built-ins from the summed nll/tokens/correct, plugins through state()/merge()
    assert len(ranks[0]["val"]) == len(ref["val"]) == 2
    for got, want in zip(ranks[0]["val"], ref["val"]):
        for metric in ("perplexity", "cross-entropy", "accuracy", "merged-cross-entropy"):
            assert got[metric] == pytest.approx(want[metric], rel=1e-5), metric
        assert got["merged-cross-entropy"] == pytest.approx(got["cross-entropy"], rel=1e-9)
        # no state()/merge(): rank 0's share only, with a warning saying so
        assert 0 < got["tokens-seen"] < want["tokens-seen"]
    assert any("tokens-seen" in w and "state()/merge()" in w for w in ranks[0]["warnings"])


def test_resume_under_torchrun_continues_every_rank_exactly(ddp, monkeypatch):
    # 8 steps, checkpoint, resume for 4 more == 12 steps straight: every rank's hidden rows came back
    resumed = json.loads((ddp.out / "run2-rank0.json").read_text())
    straight = json.loads((ddp.out / "run3-rank0.json").read_text())
    assert len(resumed["losses"]) == 4
    assert resumed["losses"] == pytest.approx(straight["losses"][STEPS:], rel=1e-6, abs=1e-7)
    after_resume = torch.load(ddp.out / "run2-rank0.pt")
    for name, value in torch.load(ddp.out / "run3-rank0.pt").items():
        torch.testing.assert_close(after_resume[name], value, rtol=1e-6, atol=1e-7)
    monkeypatch.setenv("RNNSTUDIO_HOME", str(ddp.home))
    meta, tensors = load_train_state(model_path("seq-gru"))
    assert meta["position"]["step"] == STEPS + 4
    assert tensors["hidden.0"].shape == (1, 2 * B, 16)  # both ranks' rows


def test_a_stop_on_one_rank_stops_every_rank_at_the_same_step(ddp):
    ranks = [json.loads((ddp.out / f"run4-rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["stopped"] is True and ranks[1]["stopped"] is True
    # rank 1 stopped after step 3; the flag travels with step 4's loss, so both ranks end after step 4
    assert len(ranks[0]["losses"]) == len(ranks[1]["losses"]) == 4


def test_cli_under_torchrun_writes_a_model_generate_loads(ddp, monkeypatch, capsys):
    assert [(ddp.out / f"cli-rank{r}.code").read_text() for r in (0, 1)] == ["0", "0"]
    assert (ddp.out / "cli-rank1.out").read_text() == ""  # rank 0 alone logs
    events = [json.loads(line) for line in (ddp.out / "cli-rank0.out").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds.count("started") == 1 and kinds[-1] == "summary"
    assert events[-1]["steps"] == 6 and math.isfinite(events[-1]["val_perplexity"])

    monkeypatch.setenv("RNNSTUDIO_HOME", str(ddp.home))
    loaded = load_model("ddp")  # the single-process format: config, vocab, weights
    assert loaded.config["train"]["world_size"] == 2
    assert cli.main(["generate", "--model", "ddp", "--length", "20", "--prefix", "the "]) == 0
    assert len(capsys.readouterr().out.strip()) >= 20


def test_distributed_without_torchrun_says_how_to_launch(monkeypatch, capsys):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    assert cli.main(["train", "--max-steps", "1", "--distributed"]) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "torchrun" in err and "--nproc_per_node" in err


def test_an_error_on_one_rank_ends_the_run_instead_of_hanging(ddp):
    # only rank 0 checks that the model folder is new; both ranks return a user error, nobody waits forever
    assert [(ddp.out / f"again-rank{r}.code").read_text() for r in (0, 1)] == ["2", "2"]
    assert "rank 0 of 2: a model named 'ddp' already exists" in (ddp.out / "again-rank0.err").read_text()
    assert "rank 1 of 2: could not start data parallelism" in (ddp.out / "again-rank1.err").read_text()
