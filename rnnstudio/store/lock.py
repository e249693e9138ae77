"""One trainer per model: an OS file lock (``filelock``) that dies with its holder, plus who holds it, for the message."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import filelock

from .. import paths
from ..errors import RNNStudioError
from ..fileio import atomic_write_json
from ..processes import process_alive
from .format import check_name


class ModelLock:
    """``models/.NAME.lock`` is locked by the OS (flock) while a trainer holds it, so a killed holder never
    leaves a live-looking lock; ``models/.NAME.owner.json`` says who holds it (only for the message)."""

    def __init__(self, name: str):
        folder = paths.models_dir()
        self.name = check_name(name)
        self.path = folder / f".{name}.lock"
        self.owner_path = folder / f".{name}.owner.json"
        self._lock = filelock.FileLock(self.path, timeout=0, thread_local=False)
        self.held = False

    def acquire(self) -> "ModelLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock.acquire(timeout=0)
        except filelock.Timeout:
            raise RNNStudioError(
                f"model {self.name!r} is already being trained by {self._describe_owner()}; wait for it to finish, "
                f"stop it, or pick another --name") from None
        except OSError as exc:
            raise RNNStudioError(f"cannot write to the models folder {self.path.parent} ({exc.strerror or exc}); "
                                 f"check its permissions and free space") from None
        self.held = True
        try:
            atomic_write_json(self.owner_path, {"pid": os.getpid(), "host": socket.gethostname()})
        except OSError:
            pass  # the lock holds without it; only the message of a second trainer is vaguer
        return self

    def busy(self) -> bool:
        """Whether a trainer (in this process or another) holds the lock right now."""
        if self.held:
            return True
        probe = filelock.FileLock(self.path, timeout=0, thread_local=False)
        try:
            probe.acquire(timeout=0)
        except filelock.Timeout:
            return True
        except OSError:
            return False  # no lock can be taken in that folder, so nobody trains there
        probe.release()
        return False

    def _describe_owner(self) -> str:
        try:
            data = json.loads(Path(self.owner_path).read_text(encoding="utf-8"))
            pid, host = data.get("pid"), data.get("host")
        except (OSError, ValueError, AttributeError, RecursionError):
            return "another process"
        if host != socket.gethostname():
            return "another machine" if isinstance(host, str) else "another process"
        return f"process {pid}" if process_alive(pid) else "another process"

    def release(self) -> None:
        if self.held:
            try:
                self.owner_path.unlink()
            except OSError:
                pass
            self._lock.release()
            self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
