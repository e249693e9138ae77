"""Whether a process of this machine is still alive: the owner of a model lock or of a run record."""

from __future__ import annotations

import os

PID_MAX = 2**22  # Linux's largest pid_max; anything outside 1..PID_MAX is not a real process id


def process_alive(pid: object) -> bool:
    """Whether process ``pid`` still runs. A value that cannot be a pid (bool, negative, huge) is not alive."""
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid <= PID_MAX:
        return False  # never os.kill(-1, 0) (every process) or an overflowing pid
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True
