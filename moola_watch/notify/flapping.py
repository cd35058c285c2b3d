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
        self.sent: dict[Key, str] = {}  # open incidents: the worst severity sent for each
        self.held: dict[Key, tuple[Event, float]] = {}  # resolutions waiting, and since when (seconds)

    def admit(self, event: Event, now: float) -> list[Event]:
        """The events to send now for ``event``, at ``now`` (seconds, any monotonic clock)."""
        key = incident(event)
        if event["state"] == rules.RESOLVED:
            if self.hold_s > 0 and key in self.sent:
                self.held[key] = (event, now)
                return []
            self.sent.pop(key, None)
            return [event]
        self.held.pop(key, None)  # firing again before its resolution went out: the same incident goes on
        worst = self.sent.get(key)
        if worst is not None and rules.SEVERITY_RANK[event["severity"]] <= rules.SEVERITY_RANK[worst]:
            return []  # the person already knows of it, at this severity or worse
        self.sent[key] = event["severity"]
        return [event]

    def due(self, now: float) -> list[Event]:
        """Resolutions that stayed resolved for ``hold_s`` by ``now``: send them; those incidents are over."""
        ready = [key for key, (_event, since) in self.held.items() if now - since >= self.hold_s]
        return [self._release(key) for key in ready]

    def flush(self) -> list[Event]:
        """Every held resolution (at exit: the last state each alert was in)."""
        return [self._release(key) for key in list(self.held)]

    def _release(self, key: Key) -> Event:
        event, _since = self.held.pop(key)
        self.sent.pop(key, None)
        return event
