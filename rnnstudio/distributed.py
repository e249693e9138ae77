"""Data-parallel training under ``torchrun``: PyTorch DDP over the one trainer loop, rank 0 logs and saves."""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from .errors import RNNStudioError
from .trainer import MetricSet, Trainer, TrainConfig, _model_name, raised_in

#: Seconds a rank waits for the others in one collective before it gives up (env RNNSTUDIO_DIST_TIMEOUT).
DEFAULT_TIMEOUT_S = 600.0

LAUNCH_HINT = ("start it with torchrun, e.g. `torchrun --standalone --nproc_per_node=2 -m rnnstudio train ... "
               "--distributed`")


class FlatForward(nn.Module):
    """DDP wraps this thin module, so ``forward`` (and with it DDP's gradient hooks) runs ``forward_flat``.

    The hidden state goes in and comes out as arguments; it is never a buffer, which DDP would
    overwrite with rank 0's on every forward.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, idx: torch.Tensor, state):  # (B, T), state -> (T*B, V), state
        return self.model.forward_flat(idx, state)


def _metric_state(metric):
    """``metric.state()`` when the metric offers the optional ``state()``/``merge()`` pair, else None."""
    if callable(getattr(metric, "state", None)) and callable(getattr(metric, "merge", None)):
        return metric.state()
    return None


class DistributedTrainer(Trainer):
    """The single-process Trainer with DDP for the gradients and collectives where the ranks must agree."""

    def __init__(self, config: TrainConfig, **kw):
        super().__init__(config, **kw)
        self.ddp: nn.parallel.DistributedDataParallel | None = None
        self._stop_agreed = False
        self._warned: set[str] = set()

    # The model is wrapped once, at the start of the loop (after a resume has loaded its weights).
    def training_forward(self, model):
        device = next(model.parameters()).device
        ids = [device.index] if device.type == "cuda" else None
        try:  # its first collective: rank 0's weights are broadcast to every rank
            self.ddp = nn.parallel.DistributedDataParallel(FlatForward(model), device_ids=ids)
        except RuntimeError as exc:
            raise RNNStudioError(f"could not start data parallelism: {str(exc).splitlines()[0]} (if another rank "
                                 f"failed, its error says why)") from None
        return self.ddp

    # One small all-reduce per step carries the loss and the stop flag, so every rank stops at the same step.
    def reduce_loss(self, loss: torch.Tensor) -> float:
        stop = 1.0 if self.stop_event.is_set() else 0.0
        both = torch.stack([loss.float().reshape(()), torch.tensor(stop, device=loss.device)])
        dist.all_reduce(both)
        loss_sum, stops = both.tolist()
        self._stop_agreed = stops > 0
        return loss_sum / dist.get_world_size()

    def should_stop(self) -> bool:
        return self._stop_agreed

    def _warn_once(self, metrics: MetricSet, name: str, message: str) -> None:
        if name not in self._warned:
            self._warned.add(name)
            metrics.warn(message)

    def reduce_metrics(self, values, metrics=None):
        """Global validation metrics: each rank's ``state()`` is gathered and ``merge()``d (see rnnstudio.Metric)."""
        if metrics is None:
            return values
        states = {}
        for name, m in metrics.metrics.items():
            try:
                states[name] = _metric_state(m)
            except Exception as exc:
                states[name] = None
                self._warn_once(metrics, name, f"metric {name!r}: state() raised {type(exc).__name__}: {exc}; "
                                               f"its value is rank 0's share of the validation set")
        for name, state in list(states.items()):
            if state is not None and _json_bytes(state) is None:
                states[name] = None
                self._warn_once(metrics, name, f"metric {name!r}: state() is not plain JSON numbers; its value "
                                               f"is rank 0's share of the validation set")
        everyone = all_gather_json({"values": values, "states": states})  # the same list on every rank
        rank0 = everyone[0]["values"]
        out = {}
        for name, m in metrics.metrics.items():
            shards = [e["states"].get(name) for e in everyone]
            if all(s is not None for s in shards):
                try:
                    for r, shard in enumerate(shards):
                        if r != dist.get_rank():
                            m.merge(shard)
                    out[name] = float(m.value())
                    continue
                except Exception as exc:
                    self._warn_once(metrics, name, f"metric {name!r}: merge() raised {type(exc).__name__}: {exc}; "
                                                   f"its value is rank 0's share of the validation set")
            else:
                self._warn_once(metrics, name, f"metric {name!r} has no state()/merge() pair, so under "
                                               f"torchrun its value is rank 0's share of the validation set")
            if name in rank0:
                out[name] = rank0[name]
        return out

    def release(self) -> None:
        """Drop DDP and the model before the group ends. DDP's reducer holds the process group; left to
        the garbage collector, gloo's connection threads outlived destroy_process_group and a rank could
        abort at interpreter exit ("terminate called without an active exception")."""
        self.ddp = None
        self.model = None
        gc.collect()

    def describe_failure(self, exc, during):
        """A collective that failed because a peer is gone is a rank failure, whatever gloo calls it."""
        if is_peer_failure(exc):
            return lost_touch_message(exc), None
        return super().describe_failure(exc, during)

    def gather_state(self, hidden):
        """Every rank's rows of the state, (L, B, H) each -> (L, world*B, H), so a resume restores them all."""
        if hidden is None:
            return None
        B = self.config.batch_size
        if not all(h.dim() >= 2 and h.shape[1] == B for h in hidden):
            return hidden  # an unusual state layout: checkpoint rank 0's rows only
        out = []
        for h in hidden:
            parts = [torch.empty_like(h) for _ in range(dist.get_world_size())]
            dist.all_gather(parts, h.detach().contiguous())
            out.append(torch.cat(parts, dim=1))
        return out

    def scatter_state(self, hidden, saved_world_size):
        """This rank's rows of a resumed state; a different number of processes starts a fresh state."""
        if hidden is None or saved_world_size != self.config.world_size:
            return None
        B, r = self.config.batch_size, self.config.rank
        tensors = list(hidden) if isinstance(hidden, tuple) else [hidden]
        if not all(h.dim() >= 2 and h.shape[1] == B * saved_world_size for h in tensors):
            return hidden
        rows = [h[:, r * B:(r + 1) * B].contiguous() for h in tensors]
        return tuple(rows) if isinstance(hidden, tuple) else rows[0]


# -- exchanging data: tensors only, so that nothing a peer sends is ever unpickled ----------------

def _json_bytes(obj) -> bytes | None:
    """``obj`` as UTF-8 JSON (NaN and inf allowed), or None when it is not plain JSON data."""
    try:
        return json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError):
        return None


def _wire_device() -> torch.device:
    """Where collective buffers live: NCCL moves CUDA tensors only, gloo CPU ones."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_gather_json(obj) -> list:
    """Every rank's ``obj``, in rank order, as JSON in uint8 tensors: the lengths first, then the padded bytes."""
    device = _wire_device()
    data = torch.frombuffer(bytearray(_json_bytes(obj) or b"null"), dtype=torch.uint8).to(device)
    world = dist.get_world_size()
    lengths = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world)]
    dist.all_gather(lengths, torch.tensor([data.numel()], dtype=torch.int64, device=device))
    longest = max(int(n) for n in lengths)
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[:data.numel()] = data
    parts = [torch.empty(longest, dtype=torch.uint8, device=device) for _ in range(world)]
    dist.all_gather(parts, padded)
    return [json.loads(bytes(p[:int(n)].cpu().tolist()).decode("utf-8")) for p, n in zip(parts, lengths)]


def broadcast_json(obj, src: int = 0):
    """``obj`` from rank ``src`` on every rank, as JSON in a uint8 tensor: the length first, then the bytes."""
    device = _wire_device()
    mine = (_json_bytes(obj) or b"null") if dist.get_rank() == src else b""
    length = torch.tensor([len(mine)], dtype=torch.int64, device=device)
    dist.broadcast(length, src=src)
    data = torch.zeros(int(length), dtype=torch.uint8, device=device)
    if dist.get_rank() == src:
        data[:] = torch.frombuffer(bytearray(mine), dtype=torch.uint8)
    dist.broadcast(data, src=src)
    return json.loads(bytes(data.cpu().tolist()).decode("utf-8"))


def is_peer_failure(exc: BaseException) -> bool:
    """A DistError, or the RuntimeError gloo or NCCL raises when a peer's connection closes: from a
    collective (inside torch.distributed) or from DDP's gradient all-reduce during backward."""
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (raised_in(exc, "torch.distributed") or "/gloo/" in text
                                              or "NCCL" in text)


def lost_touch_message(exc: BaseException) -> str:
    return (f"lost touch with the other ranks ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}): "
            f"another rank failed or stopped (its own error says why), or did not answer within "
            f"RNNSTUDIO_DIST_TIMEOUT={_timeout_text()} s")


def _timeout_text() -> str:
    try:
        return f"{timeout_seconds():g}"
    except RNNStudioError:
        return "?"


# -- launching ----------------------------------------------------------------------------

def torchrun_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the environment torchrun sets; a user error without it."""
    missing = [k for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RNNStudioError(f"--distributed runs under torchrun, which sets {', '.join(missing)}; {LAUNCH_HINT}")
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])


def rank_device(spec: str, local_rank: int) -> torch.device:
    """Each rank on its own device: ``cuda:LOCAL_RANK`` when CUDA is asked for (or auto), else the CPU.

    ``cuda:N`` counts as ``cuda``: under torchrun the local rank, not N, picks the GPU.
    """
    spec = (spec or "auto").strip().lower()
    is_cuda = spec == "cuda" or spec.startswith("cuda:")
    if is_cuda and not torch.cuda.is_available():
        raise RNNStudioError(f"--device {spec!r}: CUDA is not available on this machine; use --device cpu (or auto)")
    if (spec == "auto" or is_cuda) and torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise RNNStudioError(f"local rank {local_rank} has no GPU: this node has {torch.cuda.device_count()}; "
                                 f"start at most that many processes per node (--nproc_per_node)")
        return torch.device("cuda", local_rank)
    if spec in ("auto", "cpu"):
        return torch.device("cpu")
    raise RNNStudioError(f"--device {spec!r} does not work with --distributed; use auto, cuda or cpu "
                         f"(with cuda, each rank takes cuda:LOCAL_RANK)")


def timeout_seconds() -> float:
    raw = os.environ.get("RNNSTUDIO_DIST_TIMEOUT", "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise RNNStudioError(f"RNNSTUDIO_DIST_TIMEOUT must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise RNNStudioError(f"RNNSTUDIO_DIST_TIMEOUT must be positive, got {raw!r}")
    return value


def check_before_joining(config: TrainConfig) -> None:
    """The user errors that each rank can find on its own, before it joins the group and starts work."""
    config.validate()  # ranges and the model name
    if config.resume:
        from . import checkpoint as ckpt

        if not config.name:
            raise RNNStudioError("--resume needs --name MODEL")
        ckpt.read_config(ckpt.model_path(config.name))  # a missing or unreadable model: its own clear error


def init_from_torchrun(config: TrainConfig) -> torch.device:
    """Join the process group torchrun describes; set the config's rank, world size and device."""
    rank, world, local_rank = torchrun_env()
    device = rank_device(config.device, local_rank)
    timeout = timeout_seconds()
    check_before_joining(config)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
    config.rank, config.world_size = rank, world
    config.device = str(device)
    # The minutes timer would fire at different steps on different ranks; checkpoints must be collective.
    config.checkpoint_minutes = 0
    # One name for the run: rank 0's (a derived name contains the time, which differs between ranks).
    config.name = broadcast_json(config.name or _model_name(config), src=0)
    return device


def shutdown(*, clean: bool = False) -> None:
    """Leave the process group. After a clean run every rank first waits for the others at a barrier, so
    no rank tears down its connections while a peer still uses them (that ended runs with SIGABRT,
    "terminate called without an active exception"). After a failure there is no barrier: a peer may be gone."""
    if not dist.is_initialized():
        return
    try:
        if clean:
            dist.barrier()
        dist.destroy_process_group()
    except Exception:  # a peer already gone: nothing left to tidy
        pass


def write_error_file(message: str) -> None:
    """Give torchrun the one-line reason for its failure summary (its elastic error-file mechanism)."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    data = {"message": {"message": message, "extraInfo": {"py_callstack": message,
                                                          "timestamp": str(int(time.time()))}}}
    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f)
    except OSError:
        pass


def run_distributed(config: TrainConfig, host, consume) -> int:
    """``rnnstudio train --distributed`` on every rank; only rank 0 writes the model.

    ``consume(trainer, is_main)`` runs the trainer's events and returns the exit status (the CLI
    prints rank 0's). The process group is ended only if this call started it: a caller that set one
    up keeps it (joining a fresh group in the same process can read the old group's stale addresses
    from torchrun's store).
    """
    owns_group = not dist.is_initialized()
    clean = False
    trainer = None
    try:
        try:
            init_from_torchrun(config)
            trainer = DistributedTrainer(config, host=host)
            code = consume(trainer, config.rank == 0)
            clean = True
            return code
        except (dist.DistError, RuntimeError) as exc:  # a peer failed, or did not answer within the timeout
            if not is_peer_failure(exc):
                raise
            raise RNNStudioError(lost_touch_message(exc)) from None
    except RNNStudioError as exc:
        world = int(os.environ.get("WORLD_SIZE", config.world_size) or 1)
        if world > 1:
            exc = RNNStudioError(f"rank {os.environ.get('RANK', config.rank)} of {world}: {exc}")
        # Said now: leaving the group can take a while, and torchrun may SIGTERM this rank meanwhile.
        write_error_file(f"rnnstudio: error: {exc}")
        try:
            print(f"rnnstudio: error: {exc}", file=sys.stderr, flush=True)
            exc.reported = True
        except (OSError, ValueError):
            pass
        raise exc from None
    finally:
        if trainer is not None:
            trainer.release()
        if owns_group:
            shutdown(clean=clean)
