"""Which compute devices torch can see, and turning a user's device choice into a torch.device."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from .errors import RNNStudioError


@dataclass(frozen=True)
class DeviceInfo:
    spec: str  # what a user types: "cpu", "cuda:0", "mps"
    label: str  # what a user reads: "CUDA 0: NVIDIA H100 (79.1 GiB)"
    available: bool
    reason: str = ""  # why it is unavailable


def _mps_available() -> tuple[bool, str]:
    backend = getattr(torch.backends, "mps", None)
    if backend is None or not backend.is_built():
        return False, "this PyTorch build has no MPS support (Apple silicon only)"
    if not backend.is_available():
        return False, "MPS is built in but not available on this machine"
    return True, ""


def list_devices() -> list[DeviceInfo]:
    """CPU, each CUDA device by name and memory, and MPS; unavailable ones carry a reason."""
    out = [DeviceInfo("cpu", f"CPU ({torch.get_num_threads()} threads)", True)]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            out.append(DeviceInfo(f"cuda:{i}", f"CUDA {i}: {props.name} ({props.total_memory / 2**30:.1f} GiB)", True))
    else:
        why = "this PyTorch build has no CUDA support" if torch.version.cuda is None else "no CUDA device was found"
        out.append(DeviceInfo("cuda", "CUDA", False, why))
    ok, why = _mps_available()
    out.append(DeviceInfo("mps", "Apple MPS", ok, why))
    return out


def resolve_device(spec: str | None) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU. An absent device is a user error, said before any work."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available()[0]:
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if m:
        if not torch.cuda.is_available():
            why = "this PyTorch build has no CUDA support" if torch.version.cuda is None else "no CUDA device was found"
            raise RNNStudioError(f"device {spec!r} is not available: {why}; use --device cpu (or auto)")
        index = int(m.group(1) or 0)
        count = torch.cuda.device_count()
        if index >= count:
            raise RNNStudioError(
                f"device {spec!r} is not available: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})"
            )
        return torch.device("cuda", index)
    if spec == "mps":
        ok, why = _mps_available()
        if not ok:
            raise RNNStudioError(f"device 'mps' is not available: {why}; use --device cpu (or auto)")
        return torch.device("mps")
    raise RNNStudioError(f"unknown device {spec!r}; use auto, cpu, cuda, cuda:N or mps")
