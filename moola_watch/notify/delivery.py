"""Getting alerts out without stalling the follow loop: each sink has its own bounded queue and daemon thread. An
alert a destination could not take yet stays at the head of its queue, tried with backoff, so that after an
outage the queued alerts go out in order; a sink's failure is said once when it starts and once when it ends;
at exit the sinks get a bounded grace, and one line says how many alerts a sink never got."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from moola_watch.counts import counted
from moola_watch.notify.flapping import ResolveHold
from moola_watch.notify.ledger import SentLedger, default_path
from moola_watch.notify.settings import NotifySettings
from moola_watch.notify.sinks import DeliveryError, Sink, alert_key, sinks_for, wanted
from moola_watch.rules import RESOLVED

QUEUE_SIZE = 100  # alerts waiting per sink; beyond this new ones are dropped (said once, counted at exit)
CLOSE_GRACE_S = 5.0  # at exit, seconds the sinks get to finish what is queued
MAX_BACKOFF_S = 30.0  # longest wait between attempts at a destination that is down
EXIT_RETRY_S = 1.0  # longest wait between attempts during the exit grace, so a recovery within it is used
RESOLVE_AFTER_S = 60.0  # an alert must stay resolved this long before that is sent: a flap is one incident


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): 0.5, 1, 2, 4, ... up to ``MAX_BACKOFF_S``."""
    return min(0.5 * 2 ** min(attempt, 16), MAX_BACKOFF_S)  # 2**attempt of a days-long outage overflows a float


# ------------------------------------------------------------------------------ workers


class _Worker:
    """One sink's queue and daemon thread. Only the follow loop adds; only the thread removes. An alert leaves the
    queue once delivered or refused (a 4xx, a command's failure): alerts go out in order, and those a destination
    that is down could not take wait, at most ``QUEUE_SIZE``, while it is tried with backoff."""

    def __init__(
        self, sink: Sink, report: Callable[[str], None], pause: Callable[[int], float], ledger: SentLedger
    ) -> None:
        """``pause(n)``: seconds to wait before retry number ``n`` of one alert; ``ledger`` is told of each
        delivery."""
        self.sink = sink
        self.ledger = ledger
        self.report = report
        self.pause = pause
        self.queue: deque[tuple[Mapping[str, Any], str]] = deque()  # each alert with its key
        self.lock = threading.Condition()  # guards the queue and the counts; notified on a new alert and on close
        self.closing = False
        self.failing = False
        self.overflow = 0  # alerts never queued: the queue was full
        self.refused = 0  # alerts the destination refused, or a command failed on
        self._lost_before = 0  # overflow + refused at the last delivery
        self.thread = threading.Thread(target=self._run, name=f"moola-notify {sink.label}", daemon=True)
        self.thread.start()

    def offer(self, event: Mapping[str, Any], key: str) -> None:
        with self.lock:
            if len(self.queue) < QUEUE_SIZE:
                self.queue.append((event, key))
                self.lock.notify()
                return
            self.overflow += 1
            first = self.overflow == 1
        if first:
            self.report(f"{self.sink.label} is falling behind: {QUEUE_SIZE} alerts queued, dropping new ones")

    def close(self) -> None:
        with self.lock:
            self.closing = True
            self.lock.notify()

    def lost(self) -> str | None:
        """One line saying how many alerts never went out and why, or None when all did."""
        with self.lock:
            counts = {
                "still queued at exit": len(self.queue),
                f"dropped beyond its queue of {QUEUE_SIZE}": self.overflow,
                "refused or failed": self.refused,
            }
        said = ", ".join(f"{count} {why}" for why, count in counts.items() if count)
        return f"{self.sink.label}: {counted(sum(counts.values()), 'alert')} not delivered ({said})" if said else None

    def _run(self) -> None:
        while (queued := self._next()) is not None:
            self._deliver(*queued)
            with self.lock:
                self.queue.popleft()

    def _next(self) -> tuple[Mapping[str, Any], str] | None:
        """The oldest queued alert and its key, left in the queue while it is being sent; None once closed and
        empty."""
        with self.lock:
            self.lock.wait_for(lambda: self.queue or self.closing)
            return self.queue[0] if self.queue else None

    def _deliver(self, event: Mapping[str, Any], key: str) -> None:
        """Attempts, each with ``key``, until ``event`` is delivered or refused. After ``retries`` quick retries
        the sink is failing, and the attempts go on with backoff: the alerts behind this one wait, in order, for
        it to work again."""
        attempt = 0
        while True:
            try:
                self.sink.deliver(event, key)
            except DeliveryError as exc:
                if not exc.retry:
                    self._failed(exc, kept=False)
                    with self.lock:
                        self.refused += 1
                    return
                if attempt >= self.sink.retries:
                    self._failed(exc, kept=True)
                self._wait(self.pause(attempt))
                attempt += 1
            else:
                self.ledger.delivered(self.sink.destination, key)
                self._works()
                return

    def _wait(self, seconds: float) -> None:
        """``seconds`` before the next attempt; at most ``EXIT_RETRY_S`` once closing, to make use of the grace."""
        with self.lock:
            closing = self.lock.wait_for(lambda: self.closing, timeout=seconds)
        if closing:
            time.sleep(min(seconds, EXIT_RETRY_S))

    def _failed(self, error: DeliveryError, *, kept: bool) -> None:
        if self.failing:
            return
        self.failing = True
        then = (
            "its alerts are kept, in order, and sent when it works again"
            if kept
            else "the alerts it refuses are dropped, not retried (counted when it works again)"
        )
        self.report(f"{self.sink.label} failed: {error}; {then} (every alert still shows here)")

    def _works(self) -> None:
        with self.lock:
            lost = self.overflow + self.refused - self._lost_before
            self._lost_before += lost
        if not self.failing:
            return
        self.failing = False
        were = "was" if lost == 1 else "were"
        self.report(
            f"{self.sink.label} works again"
            + (f"; {counted(lost, 'alert')} {were} lost while it failed" if lost else "")
        )


class Notifier:
    """Sends alert events to every sink in the background; notices about the sinks come back via ``drain``."""

    def __init__(
        self, sinks: Sequence[Sink], notify_on: str = "error", grace: float = CLOSE_GRACE_S,
        pause: Callable[[int], float] = backoff, resolve_after: float = RESOLVE_AFTER_S,
        clock: Callable[[], float] = time.monotonic, sent_log: Path | None = None,
    ) -> None:  # fmt: skip
        """``grace``: seconds the sinks get at ``close`` to finish what is queued; ``pause(n)``: seconds a sink
        waits before retry number ``n`` of one alert; ``resolve_after``: seconds an alert must stay resolved
        before its resolution is sent (a flapping alert is one incident: :mod:`.flapping`; 0 sends at once);
        ``sent_log``: the ledger file of alerts each destination got (:mod:`.ledger`; None: in memory only)."""
        self.notify_on = notify_on
        self.grace = grace
        self.hold = ResolveHold(resolve_after)
        self.clock = clock
        self._notices: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.ledger = SentLedger(sent_log, self._notices.put)
        self.workers = [_Worker(sink, self._notices.put, pause, self.ledger) for sink in sinks]

    @classmethod
    def from_settings(cls, settings: NotifySettings) -> Notifier:
        sent_log = ledger_path(settings.sent_log)
        return cls(sinks_for(settings), settings.notify_on, resolve_after=settings.resolve_after, sent_log=sent_log)

    def send(self, event: Mapping[str, Any], at: float | None = None) -> None:
        """Queue ``event`` for every sink if it is news (not a flapping alert's repeat) and wanted; never blocks.
        ``at``: when it happened by the run's own records (unix seconds), so that a log's history replayed in
        a moment still has its incidents apart. Every event goes through the hold, those below ``notify_on``
        too: an alert firing again at a milder severity is the same incident going on, not its end; except a
        resolution every destination already had (an earlier watcher's, in the ledger): that incident is over for
        the person, and the alert firing again is news."""
        if event["state"] == RESOLVED and self._had_everywhere(event):
            self.hold.forget(event)
            return
        self._offer(self.hold.admit(event, self.clock(), at))

    def _had_everywhere(self, event: Mapping[str, Any]) -> bool:
        if not self.workers or not wanted(event, self.notify_on):
            return False
        key = alert_key(event)
        return all(self.ledger.had(worker.sink.destination, key) for worker in self.workers)

    def tick(self) -> None:
        """Send the resolutions that have now stayed resolved long enough (the follow loop calls this often)."""
        self._offer(self.hold.due(self.clock()))

    def _offer(self, events: list[Mapping[str, Any]]) -> None:
        """Queue each wanted event for every sink that has not had it (:mod:`.ledger`), with its key
        (:func:`.sinks.alert_key`), which every attempt at it carries."""
        for event in events:
            if wanted(event, self.notify_on):
                key = alert_key(event)
                for worker in self.workers:
                    if self.ledger.claim(worker.sink.destination, key):
                        worker.offer(event, key)

    def failing(self) -> list[str]:
        """The labels of the sinks failing now (tried and retried; none delivered since)."""
        return [worker.sink.label for worker in self.workers if worker.failing]

    def drain(self) -> list[str]:
        """Notices the sinks reported since the last call (thread-safe)."""
        notices = []
        while not self._notices.empty():
            notices.append(self._notices.get())
        return notices

    def close(self) -> list[str]:
        """Let the sinks finish for at most ``grace`` seconds in all, then stop commands still running; the
        notices, and one line for each sink that did not deliver every alert, saying how many and why. Held
        resolutions go out first: each alert's last state is known at exit. A Ctrl-C (or SIGTERM, SIGHUP) during
        the grace ends it; what did not go out is still said."""
        self._offer(self.hold.flush())
        for worker in self.workers:
            worker.close()
        deadline = time.monotonic() + self.grace
        with contextlib.suppress(KeyboardInterrupt):  # one who will not wait must still be told what was lost
            for worker in self.workers:
                worker.thread.join(max(0.0, deadline - time.monotonic()))
        lost = [line for worker in self.workers if (line := worker.lost())]
        for worker in self.workers:
            if worker.thread.is_alive() and worker.sink.stop is not None:
                worker.sink.stop()  # a command still running would outlive us
        return self.drain() + lost


def ledger_path(sent_log: str | None) -> Path | None:
    """The ledger file a ``sent_log`` setting names: None (not set) the default place, "" none."""
    if sent_log is None:
        return default_path()
    return Path(sent_log).expanduser() if sent_log else None
