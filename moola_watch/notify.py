"""Notifications: alert transitions sent to the user's commands (``--on-alert``) and webhooks (``--webhook``).

The follow loop hands every alert event (the object ``follow --json`` prints) to a :class:`Notifier`, which
returns at once: each sink has its own bounded queue and daemon thread, so a slow command or a dead endpoint
never stalls following. An alert a webhook could not take yet stays at the head of its queue, tried with backoff,
so that after an outage the queued alerts go out in order. A sink's failure is reported once when it starts
failing and once when it recovers, not once per alert; at exit, one line says how many alerts a sink never got.
Log text never reaches a shell: a command's argv comes from ``shlex.split`` of the user's own flag, and the
alert travels as JSON on stdin and in ``MOOLA_*`` environment variables.

The formatting functions are pure; ``post_json`` and ``Command`` are the thin shells around HTTP and
processes.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.client import HTTPException
from typing import IO, Any

from moola_watch import __version__, rules, schema
from moola_watch.textsafe import inert, json_line

QUEUE_SIZE = 100  # alerts waiting per sink; beyond this new ones are dropped (said once, counted at exit)
CLOSE_GRACE_S = 5.0  # at exit, seconds the sinks get to finish what is queued
MAX_BACKOFF_S = 30.0  # longest wait between attempts at a destination that is down
EXIT_RETRY_S = 1.0  # longest wait between attempts during the exit grace, so a recovery within it is used
CHAT_LIMIT = 1900  # characters of the chat line (Discord refuses content over 2000)
ENV_LIMIT = 4000  # characters of one MOOLA_* environment value
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
ENV_FIELDS = ("rule", "severity", "state", "subject", "value", "message", "recommendation", "run", "log", "step",
              "epoch")  # fmt: skip


class DeliveryError(Exception):
    """One failed attempt; ``retry`` says whether another attempt could succeed."""

    def __init__(self, reason: str, *, retry: bool) -> None:
        super().__init__(reason)
        self.retry = retry


@dataclass(frozen=True)
class NotifySettings:
    """Where alerts go and which ones. ``timeout`` is seconds per attempt (HTTP request or command run);
    ``retries`` is quick extra webhook attempts at one alert before the webhook counts as failing (it is still
    tried after that, with longer backoff)."""

    commands: tuple[str, ...] = ()
    webhooks: tuple[str, ...] = ()
    notify_on: str = "error"
    timeout: float = 10.0
    retries: int = 2

    @property
    def enabled(self) -> bool:
        return bool(self.commands or self.webhooks)


# ------------------------------------------------------------------------------ settings (pure)


def _strings(table: Mapping[str, Any], key: str) -> list[str]:
    value = table.get(key, [])
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"[notify] {key} must be a string or a list of strings")
    return value


def settings_from(
    table: Mapping[str, Any],
    commands: Sequence[str] = (),
    webhooks: Sequence[str] = (),
    notify_on: str | None = None,
    timeout: float | None = None,
) -> NotifySettings:
    """A config file's ``[notify]`` table, then the flags: commands and webhooks add up, the rest override.
    Raises ValueError on anything unusable, before following starts."""
    known = {"on_alert", "webhook", "notify_on", "timeout", "retries"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ValueError(f"[notify] has unknown key(s): {', '.join(unknown)}")
    settings = NotifySettings(
        commands=tuple(_strings(table, "on_alert") + list(commands)),
        webhooks=tuple(_strings(table, "webhook") + list(webhooks)),
        notify_on=notify_on or table.get("notify_on", "error"),
        timeout=timeout if timeout is not None else table.get("timeout", 10.0),
        retries=table.get("retries", 2),
    )
    if settings.notify_on not in schema.SEVERITIES:
        raise ValueError(f"notify_on must be one of {', '.join(schema.SEVERITIES)}, got {settings.notify_on!r}")
    timeout = settings.timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < math.inf:
        raise ValueError(f"notify timeout must be a finite number of seconds above 0, got {timeout!r}")
    if isinstance(settings.retries, bool) or not isinstance(settings.retries, int) or not 0 <= settings.retries <= 10:
        raise ValueError(f"[notify] retries must be a whole number from 0 to 10, got {settings.retries!r}")
    for command in settings.commands:
        command_argv(command)
    for url in settings.webhooks:
        check_url(url)
    return settings


def command_argv(command: str) -> list[str]:
    """The argv of an ``--on-alert`` command: ``shlex.split`` of the user's own text, never a shell."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise ValueError(f"--on-alert {command!r}: {exc}") from None
    if not argv:
        raise ValueError("--on-alert needs a command")
    if shutil.which(argv[0]) is None:
        raise ValueError(f"--on-alert {command!r}: {argv[0]} is not an executable command")
    return argv


def check_url(url: str) -> str:
    """``url`` if it is an http(s) URL with a host and a valid port (urllib would also open file: and ftp: ones),
    in printable ASCII without spaces. The errors show the URL redacted: its path holds the secret."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--webhook needs an http:// or https:// URL, got {redact(url)!r}")
    # A pasted comment or line break would reach http.client, whose refusal quotes the whole URL, secret and all.
    if not all(" " < ch < "\x7f" for ch in url):
        raise ValueError(f"--webhook {redact(url)}: the URL holds a space, control or non-ASCII character")
    if _port(parts) == 0:
        raise ValueError(f"--webhook {redact(url)}: the port is not a number from 1 to 65535")
    return url


def _port(parts: urllib.parse.SplitResult) -> int | None:
    """The URL's port; None when it has none (the scheme's default), 0 when it is no usable port."""
    try:
        return parts.port
    except ValueError:  # not a number, or beyond 65535
        return 0


def redact(url: str) -> str:
    """A webhook URL shown without its path and query, which often hold the secret (Slack, Discord)."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return "<webhook>"
    port = _port(parts)
    shown = "" if port is None else f":{port}" if port else ":<bad port>"
    return f"{parts.scheme}://{inert(parts.hostname)}{shown}/…"


# ------------------------------------------------------------------------------ formatting (pure)


def wanted(event: Mapping[str, Any], notify_on: str) -> bool:
    """Firing and resolved transitions at or above ``notify_on``. Pending ones are not sent: they are not
    confirmed yet, and paging on them would undo the rules' ``confirm``."""
    rank = schema.SEVERITIES.index
    return event["state"] != rules.PENDING and rank(event["severity"]) >= rank(notify_on)


def headline(event: Mapping[str, Any]) -> str:
    """One line for a person: state, severity, rule, subject, run, where, message and what to do."""
    state = "ESCALATED" if event.get("escalated") else str(event["state"]).upper()
    text = (
        f"moola-watch {state} {str(event['severity']).upper()} {event['rule']} ({event['subject']}) in run "
        f"{event['run']} at {rules.position(event.get('epoch'), event.get('step'))}: {event['message']}"
    )
    if event["state"] != rules.RESOLVED and event.get("recommendation"):
        text += f" -> {event['recommendation']}"
    return inert(text.replace("\n", " "), limit=CHAT_LIMIT)


def slack_escape(text: str) -> str:
    """Slack's three control characters escaped, so log text cannot write ``<!channel>`` or links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def webhook_body(event: Mapping[str, Any]) -> bytes:
    """The POST body: ``text`` for Slack, ``content`` for Discord (mentions disabled), the full alert."""
    line = headline(event)
    body = {"text": slack_escape(line), "content": line, "allowed_mentions": {"parse": []}, "alert": dict(event)}
    return json_line(body)


def command_env(event: Mapping[str, Any]) -> dict[str, str]:
    """``MOOLA_RULE``, ``MOOLA_SEVERITY``, ... and ``MOOLA_TEXT`` (the headline); missing values are empty.
    NUL bytes, which no environment can hold, are dropped; each value is cut to ``ENV_LIMIT`` characters."""
    values = {f"MOOLA_{name.upper()}": event.get(name) for name in ENV_FIELDS}
    values["MOOLA_TEXT"] = headline(event)
    return {key: ("" if value is None else str(value)).replace("\0", "")[:ENV_LIMIT] for key, value in values.items()}


# ------------------------------------------------------------------------------ shells


def post_json(url: str, body: bytes, timeout: float) -> None:
    """POST ``body`` as JSON; any 2xx is delivered. ``timeout`` is seconds per connect and per read."""
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": f"moola-watch/{__version__}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read(1 << 16)
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"HTTP {exc.code} {exc.reason}", retry=exc.code in RETRY_STATUSES) from None
    except urllib.error.URLError as exc:
        raise DeliveryError(f"cannot reach it: {exc.reason}", retry=True) from None
    except TimeoutError:
        raise DeliveryError(f"no answer within {timeout:g} s", retry=True) from None
    except (OSError, HTTPException) as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}", retry=True) from None


class Command:
    """One ``--on-alert`` command, run once per alert, one run at a time. Each run is a process group of its own,
    so that a timeout, or ``stop`` at exit, ends it with whatever it started; a background child it leaves behind
    when it exits is its own (a notifier daemon, a ``curl ... &``)."""

    def __init__(self, argv: Sequence[str], timeout: float) -> None:
        """``timeout``: seconds one run may take before it is killed."""
        self.argv = list(argv)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._running: subprocess.Popen[bytes] | None = None
        self._stopped = False

    def deliver(self, event: Mapping[str, Any]) -> None:
        self.run(json_line(dict(event)), command_env(event))

    def run(self, stdin: bytes, env: Mapping[str, str]) -> None:
        """Run the command (no shell) with ``stdin`` and ``env`` added to ours; done when it exits. Its output is
        discarded, a non-zero exit is a failure that quotes its last line of stderr."""
        # Files, not pipes: a background child inherits them, and a pipe it holds would look like a hung command.
        with tempfile.TemporaryFile() as given, tempfile.TemporaryFile() as errors:
            given.write(stdin)
            given.seek(0)
            process = self._start(given, errors, env)
            try:
                code = process.wait(self.timeout)
            except subprocess.TimeoutExpired:
                kill_group(process)
                process.wait()
                raise DeliveryError(f"still running after {self.timeout:g} s, killed", retry=False) from None
            finally:
                with self._lock:
                    self._running = None
            if code != 0:
                raise DeliveryError(f"exited with status {code}{last_line(errors)}", retry=False)

    def _start(self, stdin: IO[bytes], stderr: IO[bytes], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._stopped:
                raise DeliveryError("not run: moola-watch is exiting", retry=False)
            try:
                self._running = subprocess.Popen(
                    self.argv, stdin=stdin, stdout=subprocess.DEVNULL, stderr=stderr, env={**os.environ, **env},
                    start_new_session=True,
                )  # fmt: skip
            except OSError as exc:
                raise DeliveryError(f"cannot run it: {exc.strerror or exc}", retry=False) from None
            return self._running

    def stop(self) -> None:
        """Kill the run in progress, with its process group, and start no other (at exit, after the grace)."""
        with self._lock:
            self._stopped = True
            if self._running is not None:
                kill_group(self._running)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL to ``process``'s group (it leads one: ``start_new_session``); quiet if it is gone already."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def last_line(stderr: IO[bytes]) -> str:
    """``": "`` and the last line a command wrote to ``stderr`` (of its last 64 KiB), or nothing."""
    stderr.seek(0, os.SEEK_END)
    stderr.seek(max(0, stderr.tell() - (1 << 16)))
    lines = stderr.read().decode("utf-8", "replace").strip().splitlines()
    return f": {lines[-1]}" if lines else ""


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): 0.5, 1, 2, 4, ... up to ``MAX_BACKOFF_S``."""
    return min(0.5 * 2 ** min(attempt, 16), MAX_BACKOFF_S)  # 2**attempt of a days-long outage overflows a float


# ------------------------------------------------------------------------------ workers


@dataclass(frozen=True)
class Sink:
    """A named destination: ``deliver`` sends one alert event or raises DeliveryError."""

    label: str
    deliver: Callable[[Mapping[str, Any]], None]
    retries: int
    stop: Callable[[], None] | None = None  # ends a delivery still in progress at exit


def sinks_for(settings: NotifySettings) -> list[Sink]:
    """One sink per ``--on-alert`` command and per ``--webhook`` URL. Commands are not retried (a command
    that half-ran should not page twice); webhooks are, on timeouts, connection errors, 429 and 5xx."""
    sinks = []
    for command in settings.commands:
        runner = Command(command_argv(command), settings.timeout)
        sinks.append(Sink(f"--on-alert {os.path.basename(runner.argv[0])}", runner.deliver, 0, runner.stop))
    for url in settings.webhooks:

        def deliver_webhook(event: Mapping[str, Any], url: str = url) -> None:
            post_json(url, webhook_body(event), settings.timeout)

        sinks.append(Sink(f"--webhook {redact(url)}", deliver_webhook, settings.retries))
    return sinks


class _Worker:
    """One sink's queue and daemon thread. Only the follow loop adds; only the thread removes. An alert leaves the
    queue once delivered or refused (a 4xx, a command's failure): alerts go out in order, and those a destination
    that is down could not take wait, at most ``QUEUE_SIZE``, while it is tried with backoff."""

    def __init__(self, sink: Sink, report: Callable[[str], None], pause: Callable[[int], float]) -> None:
        """``pause(n)``: seconds to wait before retry number ``n`` of one alert."""
        self.sink = sink
        self.report = report
        self.pause = pause
        self.queue: deque[Mapping[str, Any]] = deque()
        self.lock = threading.Condition()  # guards the queue and the counts; notified on a new alert and on close
        self.closing = False
        self.failing = False
        self.overflow = 0  # alerts never queued: the queue was full
        self.refused = 0  # alerts the destination refused, or a command failed on
        self._lost_before = 0  # overflow + refused at the last delivery
        self.thread = threading.Thread(target=self._run, name=f"moola-notify {sink.label}", daemon=True)
        self.thread.start()

    def offer(self, event: Mapping[str, Any]) -> None:
        with self.lock:
            if len(self.queue) < QUEUE_SIZE:
                self.queue.append(event)
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
        return f"{self.sink.label}: {sum(counts.values())} alert(s) not delivered ({said})" if said else None

    def _run(self) -> None:
        while (event := self._next()) is not None:
            self._deliver(event)
            with self.lock:
                self.queue.popleft()

    def _next(self) -> Mapping[str, Any] | None:
        """The oldest queued alert, left in the queue while it is being sent; None once closed and empty."""
        with self.lock:
            self.lock.wait_for(lambda: self.queue or self.closing)
            return self.queue[0] if self.queue else None

    def _deliver(self, event: Mapping[str, Any]) -> None:
        """Attempts until ``event`` is delivered or refused. After ``retries`` quick retries the sink is failing,
        and the attempts go on with backoff: the alerts behind this one wait, in order, for it to work again."""
        attempt = 0
        while True:
            try:
                self.sink.deliver(event)
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
        then = "its alerts wait, in order, until it works again" if kept else "its further failures are not said"
        self.report(f"{self.sink.label} failed: {error}; alerts still show here, {then}")

    def _works(self) -> None:
        with self.lock:
            lost = self.overflow + self.refused - self._lost_before
            self._lost_before += lost
        if not self.failing:
            return
        self.failing = False
        self.report(f"{self.sink.label} works again" + (f"; {lost} alert(s) were lost while it failed" if lost else ""))


class Notifier:
    """Sends alert events to every sink in the background; notices about the sinks come back via ``drain``."""

    def __init__(
        self, sinks: Sequence[Sink], notify_on: str = "error", grace: float = CLOSE_GRACE_S,
        pause: Callable[[int], float] = backoff,
    ) -> None:  # fmt: skip
        """``grace``: seconds the sinks get at ``close`` to finish what is queued; ``pause(n)``: seconds a sink
        waits before retry number ``n`` of one alert."""
        self.notify_on = notify_on
        self.grace = grace
        self._notices: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.workers = [_Worker(sink, self._notices.put, pause) for sink in sinks]

    @classmethod
    def from_settings(cls, settings: NotifySettings) -> Notifier:
        return cls(sinks_for(settings), settings.notify_on)

    def send(self, event: Mapping[str, Any]) -> None:
        """Queue ``event`` for every sink if it is wanted; never blocks."""
        if wanted(event, self.notify_on):
            for worker in self.workers:
                worker.offer(event)

    def drain(self) -> list[str]:
        """Notices the sinks reported since the last call (thread-safe)."""
        notices = []
        while not self._notices.empty():
            notices.append(self._notices.get())
        return notices

    def close(self) -> list[str]:
        """Let the sinks finish for at most ``grace`` seconds in all, then stop commands still running; the
        notices, and one line for each sink that did not deliver every alert, saying how many and why."""
        for worker in self.workers:
            worker.close()
        deadline = time.monotonic() + self.grace
        for worker in self.workers:
            worker.thread.join(max(0.0, deadline - time.monotonic()))
        lost = [line for worker in self.workers if (line := worker.lost())]
        for worker in self.workers:
            if worker.thread.is_alive() and worker.sink.stop is not None:
                worker.sink.stop()  # a command still running would outlive us
        return self.drain() + lost
