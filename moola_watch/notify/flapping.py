"""A flapping alert is one incident to the person it pages: pure bookkeeping, given the times.

An exploding layer can fire, resolve and fire again every few steps for an hour; each transition sent would
page someone dozens of times for one condition. Prometheus' ``keep_firing_for`` answers the same problem: a
resolution is held for ``hold_s`` seconds and sent only if the alert stays resolved that long; if it fires again
meanwhile, that is the same incident still going on, and nothing is sent (unless it came back worse).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from moola_watch import rules

Event = Mapping[str, Any]
Key = tuple[Any, ...]


def incident(event: Event) -> Key:
    """Which alert an event is of: its log, run, rule and subject."""
    return event.get("log"), event.get("run"), event["rule"], event["subject"]


class ResolveHold:
    """Which alert events to send now, and which resolutions have been held long enough (``due``)."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.sent: dict[Key, str] = {}  # open incidents: the worst severity they reached (sent or not)
        # Resolutions waiting: the event, when it came (the caller's clock) and when it happened (the run's).
        self.held: dict[Key, tuple[Event, float, float | None]] = {}

    def admit(self, event: Event, now: float, at: float | None = None) -> list[Event]:
        """The events to send for ``event``, which came at ``now`` (seconds, any monotonic clock) and happened
        at ``at`` (the run's own time, unix seconds; None: not known). A firing that follows its held
        resolution by ``hold_s`` of the run's time is a new incident (a log's history is replayed in a moment):
        the resolution goes out first."""
        key = incident(event)
        if event["state"] == rules.PENDING:  # not confirmed: no incident yet
            return [event]
        if event["state"] == rules.RESOLVED:
            if self.hold_s > 0 and key in self.sent:
                self.held[key] = (event, now, at)
                return []
            self.sent.pop(key, None)
            return [event]
        out = []
        if key in self.held:
            _event, _came, happened = self.held[key]
            if at is not None and happened is not None and at - happened >= self.hold_s:
                out.append(self._release(key))  # it stayed resolved long enough: that incident was over
            else:
                del self.held[key]  # firing again before its resolution went out: the same incident goes on
        worst = self.sent.get(key)
        if worst is not None and rules.SEVERITY_RANK[event["severity"]] <= rules.SEVERITY_RANK[worst]:
            return out  # the person already knows of it, at this severity or worse
        self.sent[key] = event["severity"]
        return [*out, event]

    def due(self, now: float) -> list[Event]:
        """Resolutions that stayed resolved for ``hold_s`` by ``now``: send them; those incidents are over."""
        ready = [key for key, (_event, came, _at) in self.held.items() if now - came >= self.hold_s]
        return [self._release(key) for key in ready]

    def forget(self, event: Event) -> None:
        """``event``'s incident is over for the person: its resolution reached them already (an earlier watcher
        sent it), so the alert firing again is news, not the same incident going on."""
        key = incident(event)
        self.sent.pop(key, None)
        self.held.pop(key, None)

    def flush(self) -> list[Event]:
        """Every held resolution (at exit: the last state each alert was in)."""
        return [self._release(key) for key in list(self.held)]

    def _release(self, key: Key) -> Event:
        event, _came, _at = self.held.pop(key)
        self.sent.pop(key, None)
        return event
