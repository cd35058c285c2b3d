"""Which alert events each destination already got, kept across watchers: a restarted ``follow`` (systemd's
``Restart=``, a cron job's ``--once``) would otherwise page its logs' whole history again, and Slack or Discord
cannot drop a repeat by its key. Alertmanager keeps a notification log for the same reason.

The ledger is a file of lines ``<hash> <unix time>``, one per delivery, appended as each lands; the hash is of
the destination (its URL or command, never stored as such: a webhook's path is its secret) and the event's key
(:func:`.sinks.alert_key`). Lines older than :data:`KEEP_S` are dropped when a watcher starts. A ledger that
cannot be read or written is one notice; the watcher then remembers in memory only, and sends as before.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

KEEP_S = 30 * 86_400.0  # deliveries remembered this long (seconds): a month of restarts never re-pages
COMPACT_OVER = 10_000  # lines dropped as too old before the file is rewritten without them
MAX_BYTES = 64 << 20  # the most of the file read (its end): about 1.4 million deliveries


def default_path(environ: Mapping[str, str] = os.environ) -> Path:
    """Where the ledger lives unless told: ``$XDG_STATE_HOME/moola-watch/sent-alerts`` (the XDG base directory
    for state that should outlive a restart), else ``~/.local/state/moola-watch/sent-alerts``."""
    state = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "moola-watch" / "sent-alerts"


def entry(destination: str, key: str) -> str:
    """The ledger's name for one event sent to one destination."""
    return hashlib.sha256(f"{destination}\0{key}".encode()).hexdigest()[:32]


class SentLedger:
    """The events already delivered or taken for delivery, per destination. ``path`` None: in memory only.
    ``report`` gets one line if the file fails. Thread-safe: the sinks' threads record, the follow loop claims."""

    def __init__(
        self, path: Path | None, report: Callable[[str], None], clock: Callable[[], float] = time.time
    ) -> None:
        self.path = path
        self._report = report
        self._clock = clock
        self._lock = threading.Lock()
        self._delivered: set[str] = set()  # before this watcher, or by it
        self._claimed: set[str] = set()  # offered to a sink by this watcher (one page for one event, whatever log)
        self._failed = False
        self._torn = False  # the file ends in a torn line (a watcher killed mid-write): the next line starts anew
        if path is not None:
            self._load(path)

    def claim(self, destination: str, key: str) -> bool:
        """Whether the event with ``key`` is news to ``destination``: neither delivered there before nor claimed
        in this watcher; claims it if so."""
        name = entry(destination, key)
        with self._lock:
            if name in self._delivered or name in self._claimed:
                return False
            self._claimed.add(name)
            return True

    def had(self, destination: str, key: str) -> bool:
        """Whether ``destination`` took the event with ``key`` (before this watcher, or from it)."""
        with self._lock:
            return entry(destination, key) in self._delivered

    def delivered(self, destination: str, key: str) -> None:
        """Record that ``destination`` took the event with ``key``."""
        name = entry(destination, key)
        with self._lock:
            self._delivered.add(name)
            if self.path is not None and not self._failed:
                try:
                    line = f"{name} {self._clock():.0f}\n"
                    self._append(self.path, "\n" + line if self._torn else line)
                    self._torn = False
                except OSError as exc:
                    self._fail("cannot be written", exc)

    def _load(self, path: Path) -> None:
        try:
            with path.open("rb") as file:
                if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):  # /dev/full would read forever
                    raise OSError(errno.EINVAL, "not a regular file")
                size = os.fstat(file.fileno()).st_size
                file.seek(max(0, size - MAX_BYTES))  # the newest lines: a month of pages is far less than this
                text = file.read(MAX_BYTES).decode("ascii", errors="replace")
        except FileNotFoundError:
            return
        except OSError as exc:
            self._fail("cannot be read", exc)
            return
        self._torn = bool(text) and not text.endswith("\n")
        oldest = self._clock() - KEEP_S
        kept, dropped = [], 0
        for line in text.splitlines():
            name, _, when = line.partition(" ")
            try:
                recent = float(when) >= oldest
            except ValueError:  # a torn or foreign line remembers nothing
                recent = False
            if recent and len(name) == 32:
                kept.append(line)
                self._delivered.add(name)
            else:
                dropped += 1
        if dropped > COMPACT_OVER:
            try:  # another watcher's lines appended meanwhile may be lost: at worst, one repeat of each
                spare = path.with_name(f"{path.name}.{os.getpid()}")
                spare.write_text("".join(f"{line}\n" for line in kept), encoding="ascii")
                spare.replace(path)
            except OSError as exc:
                self._fail("cannot be rewritten", exc)

    @staticmethod
    def _append(path: Path, line: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # One write of a short line to a file opened for appending: watchers sharing the ledger never interleave.
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(descriptor, line.encode("ascii"))
        finally:
            os.close(descriptor)

    def _fail(self, what: str, exc: OSError) -> None:
        self._failed = True
        self._report(f"the ledger of alerts sent, {self.path}, {what} ({exc.strerror or exc}): this watcher "
                     "remembers what it sends until it exits; a restart may send its logs' alerts again")  # fmt: skip
