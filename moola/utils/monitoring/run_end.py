"""How a run ended, in the log's words: from the exception that ended it, or from a SIGTERM.

A scheduler (Slurm, Kubernetes, ``timeout``) stops a job with SIGTERM, whose default action ends the process
at once, before any ``finally`` or ``with`` block: the log would get no ``run_end``. While runs write their
logs, and only where nobody else handles SIGTERM, one handler ends every such run (:func:`on_sigterm`), then
ends the process by the same signal, as it would have ended without moola.

A Python handler runs between two bytecodes of the main thread: a process blocked in native code (a
collective waiting on a stuck peer) would die only when that call returns. Distributed jobs are where that
happens, so there the signal keeps its default action (the watcher sees such a process die: ``run_died``).
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import os
import signal
import sys
import threading
import weakref
from collections.abc import Callable
from types import FrameType

#: Exit statuses 129-192 are a process ended by a signal (128 + its number), as shells report them.
SIGNAL_EXIT_BASE, HIGHEST_SIGNAL = 128, 64
SIGTERM_WORDS = "SIGTERM: the job was told to stop (preempted, cancelled, or out of time); resume it"

EndRun = Callable[[str, str], object]


def ending(exc: BaseException | None) -> tuple[str, str | None]:
    """The ``run_end`` status and error for a run ended by ``exc`` (None: it ran to its end). Ctrl-C is
    ``interrupted``; ``sys.exit()`` with status 0 or none is ``completed`` (a loop that stops early on
    purpose), with a signal's status (128 + N, what a handler for SIGTERM exits with) ``interrupted``, with
    another ``failed``; any other exception ``failed``, with it as the error."""
    if exc is None:
        return "completed", None
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", None
    if isinstance(exc, SystemExit):
        code = exc.code
        if code is None or code == 0:
            return "completed", None
        if type(code) is int and SIGNAL_EXIT_BASE < code <= SIGNAL_EXIT_BASE + HIGHEST_SIGNAL:
            return "interrupted", f"exit status {code} ({_signal_name(code - SIGNAL_EXIT_BASE)})"
    return "failed", f"{type(exc).__name__}: {exc}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class _Runs:
    """The runs one SIGTERM ends: those of this process that registered, in order."""

    def __init__(self) -> None:
        self.ends: dict[int, Callable[[], EndRun | None]] = {}  # each run's end, None once its monitor is freed
        self.owner = 0  # the pid that installed the handler: a forked child's SIGTERM is not its parent's
        self.next_id = 0
        self.handler = self._handle  # one object, so that signal.getsignal() can be recognised as it

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        chained = signal.getsignal(signal.SIGTERM) is not self.handler  # a later handler calls the one it replaced
        if os.getpid() == self.owner:  # (a forked child gets the default action: see _after_fork_in_child)
            for end_of in list(self.ends.values()):
                end_run = end_of()
                if end_run is not None:
                    end_run("interrupted", SIGTERM_WORDS)
        if not chained:  # ours is the handler: the default action now, as without moola
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signum)


_RUNS = _Runs()
_TERM = {signal.SIGTERM}


# A forked child must get SIGTERM's default action, not a handler for its parent's runs; and one sent to it
# before Python in it runs would be lost (the interpreter clears pending signals after a fork): so SIGTERM
# is held back across the fork, and the child lets it in only once its handler is the default again.
def _before_fork() -> None:
    if signal.getsignal(signal.SIGTERM) is _RUNS.handler:
        signal.pthread_sigmask(signal.SIG_BLOCK, _TERM)


def _after_fork_in_parent() -> None:
    if signal.getsignal(signal.SIGTERM) is _RUNS.handler:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _TERM)


def _after_fork_in_child() -> None:
    if signal.getsignal(signal.SIGTERM) is _RUNS.handler:
        _RUNS.ends = {}
        with contextlib.suppress(ValueError):  # forked from a thread Python does not count as the child's main one
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _TERM)


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)


def _distributed() -> bool:
    """A job of several processes (a process group, or a launcher's ``WORLD_SIZE``): its processes may block in
    collectives, where a Python handler cannot run."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return True
    size = os.environ.get("WORLD_SIZE", "1")
    return size.isdigit() and int(size) > 1


def on_sigterm(end_run: EndRun) -> Callable[[], None]:
    """Have SIGTERM call ``end_run("interrupted", why)`` (with every other run registered so), then end the
    process by it as it would have. Only from the main thread (where Python runs handlers), only while SIGTERM
    has its default action or is already ours (a framework or the user that handles it, as Lightning does,
    keeps its own; one that takes over later and calls the handler it replaced gets the runs ended, and the
    process is left to it), and not in a distributed job. Returns what undoes it for this run."""
    if threading.current_thread() is not threading.main_thread() or _distributed():
        return _nothing
    current = signal.getsignal(signal.SIGTERM)
    if current is not _RUNS.handler or _RUNS.owner != os.getpid():
        if current != signal.SIG_DFL and current is not _RUNS.handler:
            return _nothing
        signal.signal(signal.SIGTERM, _RUNS.handler)
        _RUNS.owner, _RUNS.ends = os.getpid(), {}  # (a forked child's inherited runs are its parent's)
    key = _RUNS.next_id = _RUNS.next_id + 1

    def undo() -> None:
        _RUNS.ends.pop(key, None)
        main = threading.current_thread() is threading.main_thread()
        if not _RUNS.ends and main and signal.getsignal(signal.SIGTERM) is _RUNS.handler:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    _RUNS.ends[key] = _held_weakly(end_run, undo)
    return undo


def _held_weakly(end_run: EndRun, gone: Callable[[], None]) -> Callable[[], EndRun | None]:
    """What gives ``end_run`` back when SIGTERM comes. A bound method (a monitor's ``on_run_end``) is held through
    a weak reference, and ``gone()`` is called once its object is freed: a run that raised outside any ``with``
    and that nobody holds any more must not be kept alive by this registry, its log locked for the life of the
    process (a later run there could not write it)."""
    if not inspect.ismethod(end_run):
        return lambda: end_run
    # A plain reference with a callback, not a WeakMethod with one: that one's callback raised (an ignored
    # AttributeError printed at exit) when the interpreter freed the monitor while shutting down.
    owner, function = end_run.__self__, end_run.__func__
    ref = weakref.ref(owner, lambda _ref: gone())
    return lambda: None if (alive := ref()) is None else function.__get__(alive)


def at_exit(end_run: EndRun) -> Callable[[], None]:
    """Have the interpreter's exit call ``end_run(status, error)`` for a run still open then (a loop without
    ``with`` that never ended it): ``failed`` with the exception that reached the top level since now (Python
    keeps an uncaught one as ``sys.last_value``), ``interrupted`` by Ctrl-C, else ``completed`` (the script ran to
    its end, or ``sys.exit(0)``). A bound method is held weakly; a forked child's exit does not end its parent's
    run. Returns what undoes it."""
    pid, before = os.getpid(), getattr(sys, "last_value", None)
    end_of = _held_weakly(end_run, _nothing)
    exiting = False

    def end_at_exit() -> None:
        nonlocal exiting
        end, exiting = end_of(), True
        if end is None or os.getpid() != pid:
            return
        raised = getattr(sys, "last_value", None)
        end(*ending(raised if raised is not before else None))

    def undo() -> None:
        if not exiting:  # (not from inside the exit's own call: atexit is iterating its callbacks)
            atexit.unregister(end_at_exit)

    atexit.register(end_at_exit)
    return undo


def _nothing() -> None:
    return None
