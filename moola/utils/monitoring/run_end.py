"""How a run ended, in the log's words: from the exception that ended it, or from a SIGTERM.

A scheduler (Slurm, Kubernetes, ``timeout``) stops a job with SIGTERM, whose default action ends the process
at once, before any ``finally`` or ``with`` block: the log would get no ``run_end``. While a run writes its
log, and only where nobody else handles SIGTERM, :func:`on_sigterm` lets the monitor write ``run_end``
first, then ends the process by the same signal, exactly as it would have ended without moola.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

#: Exit statuses from 128 up are a process ended by a signal (128 + its number), as shells report them.
SIGNAL_EXIT_BASE = 128
SIGTERM_WORDS = "SIGTERM: the job was told to stop (preempted, cancelled, or out of time); resume it"


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
        if type(code) is int and code > SIGNAL_EXIT_BASE:
            return "interrupted", f"exit status {code} ({_signal_name(code - SIGNAL_EXIT_BASE)})"
    return "failed", f"{type(exc).__name__}: {exc}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def on_sigterm(end_run: Callable[[str, str], object]) -> Callable[[], None]:
    """Have SIGTERM call ``end_run("interrupted", why)`` before the process ends by it as it would have. Only
    from the main thread (where Python runs handlers) and only while SIGTERM has its default action (a
    framework or the user that handles it, as Lightning does, keeps its own; one that takes over later and
    calls the handler it replaced gets the run ended, and the process is left to it). Returns what undoes
    it."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        return _nothing

    def terminated(signum: int, _frame: FrameType | None) -> None:
        if signal.getsignal(signal.SIGTERM) is not terminated:
            # Called by a handler set after ours that chains to it (Lightning's does): the run ends here, and
            # what the process does next is that handler's business.
            end_run("interrupted", SIGTERM_WORDS)
            return
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            end_run("interrupted", SIGTERM_WORDS)
        finally:
            os.kill(os.getpid(), signum)  # the default action now: the process ends as it would have

    signal.signal(signal.SIGTERM, terminated)

    def undo() -> None:
        if signal.getsignal(signal.SIGTERM) is terminated and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    return undo


def _nothing() -> None:
    return None
