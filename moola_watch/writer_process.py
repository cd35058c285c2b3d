"""Is the process that wrote a run still alive? A thin shell over ``/proc`` and ``kill(pid, 0)``.

A trainer ended by the OOM killer, ``kill -9`` or a crash in native code writes no ``run_end``; from the log
alone that looks like a slow step until the run goes stale. The monitor records in ``run_start`` the host and
pid of the process writing the log and, on Linux, what tells that process apart from a later one given the
same pid: the kernel's boot, the PID namespace, and the process's start time in clock ticks since boot. A
watcher on the same host, in the same PID namespace and boot, can then tell for certain that the writer is
gone. Anywhere else (another host, a container with its own PID namespace, a log of an older version) it
cannot tell, and says so (None): the run is judged stale on the clock, as before.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PROC = Path("/proc")
#: Process states of a process that has ended but is not yet reaped (``/proc/PID/stat``'s third field).
ENDED_STATES = frozenset("ZXx")
#: ``/proc/PID/stat``'s 22nd field, the start time, counted from the state (the 3rd) after the command's ")".
START_TICKS_FIELD = 22 - 3


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (which may hold spaces and parentheses), from
    the state on; None if there is no such process (or no ``/proc``)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _pid_namespace() -> str | None:
    try:
        return os.readlink(PROC / "self" / "ns" / "pid")
    except OSError:
        return None


def this_process() -> dict[str, Any]:
    """What, beside the host and pid, identifies this process for :func:`writer_gone`: ``boot_id``,
    ``pid_namespace`` and ``start_ticks`` (its start, in clock ticks since boot). Empty where ``/proc`` does
    not say (not Linux), or is not this PID namespace's (a namespace that did not mount its own: its pids are
    not the ones ``/proc`` lists)."""
    try:
        if os.readlink(PROC / "self") != str(os.getpid()):
            return {}
    except OSError:
        return {}
    fields = _stat_fields("self")
    boot_id = _read(PROC / "sys" / "kernel" / "random" / "boot_id")
    namespace = _pid_namespace()
    if fields is None or boot_id is None or namespace is None or len(fields) <= START_TICKS_FIELD:
        return {}
    return {"boot_id": boot_id, "pid_namespace": namespace, "start_ticks": int(fields[START_TICKS_FIELD])}


def writer_gone(host: object, pid: object, process: object) -> bool | None:
    """Whether the process a ``run_start`` names (``host``, ``pid`` and ``process``, :func:`this_process`'s
    identity) has ended: True when it certainly has (no such process, a zombie, or that pid now belongs to a
    process started later), False while it runs, None when this watcher cannot tell (another host, another
    boot or PID namespace, or a record without the identity while this machine has one)."""
    if not isinstance(host, str) or host != socket.gethostname() or type(pid) is not int or pid <= 0:
        return None
    here = this_process()
    if not here:  # no /proc (macOS, BSD): the host and pid are all there is, and one namespace per host
        return None if process else _no_such_pid(pid)
    if not isinstance(process, Mapping) or any(process.get(key) != here[key] for key in ("boot_id", "pid_namespace")):
        return None
    fields = _stat_fields(pid)
    if fields is None:  # gone, or hidden from this user (/proc mounted hidepid=2): kill(pid, 0) tells which
        return True if _no_such_pid(pid) else None
    if fields[0] in ENDED_STATES:
        return True
    return len(fields) > START_TICKS_FIELD and fields[START_TICKS_FIELD] != str(process.get("start_ticks"))


def log_writer_gone(read_path: str | Path, host: object, pid: object, process: object, log: object) -> bool | None:
    """:func:`writer_gone` for a log read at ``read_path`` whose ``run_start`` recorded that its writer wrote
    ``log``: None (cannot tell) unless it is that very file. A copy, or the part of a rotated log renamed away,
    holds no run_end because its writer went on elsewhere, not because it died."""
    if not isinstance(log, str):
        return None
    try:
        if not os.path.samefile(read_path, log):
            return None
    except OSError:  # the recorded file is gone (deleted, or renamed away by rotation)
        return None
    return writer_gone(host, pid, process)


def _no_such_pid(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: it exists, owned by someone else
        return False
    return False
