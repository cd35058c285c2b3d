"""Where an alert goes and in what words: which events are sent, the chat line and JSON body of a webhook, the
environment of a command, and the thin shells that deliver them (``post_json`` and :class:`Webhook` over HTTP,
:class:`Command` as a process in its own group). Log text never reaches a shell: a command's argv comes from
``shlex.split`` of the user's own flag, and the alert travels as JSON on stdin and in ``MOOLA_*`` environment
variables. Each alert event sent has a key made from what identifies the event (:func:`alert_key`), the same on
every attempt at it and in every watcher that reads the same log, so that a receiver can drop a repeat."""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.client import HTTPException
from typing import IO, Any

from moola_watch import __version__, rules, schema
from moola_watch.notify.settings import NotifySettings, command_argv, redact
from moola_watch.sources import without_rank
from moola_watch.textsafe import inert, json_line

CHAT_LIMIT = 1900  # characters of the chat line (Discord refuses content over 2000)
ENV_LIMIT = 4000  # characters of one MOOLA_* environment value
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_PATIENCE = 8  # a webhook that answers too late is waited on up to this many times the timeout
ENV_FIELDS = ("rule", "severity", "state", "subject", "value", "message", "recommendation", "run", "rank", "log",
              "step", "epoch")  # fmt: skip


class DeliveryError(Exception):
    """One failed attempt; ``retry`` says whether another attempt could succeed."""

    def __init__(self, reason: str, *, retry: bool) -> None:
        super().__init__(reason)
        self.retry = retry


class NoAnswer(DeliveryError):
    """The whole request was sent and no answer came in time: the receiver may have taken the alert, or not."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, retry=True)


def wanted(event: Mapping[str, Any], notify_on: str) -> bool:
    """Firing and resolved transitions at or above ``notify_on``. Pending ones are not sent: they are not
    confirmed yet, and paging on them would undo the rules' ``confirm``."""
    rank = schema.SEVERITIES.index
    return event["state"] != rules.PENDING and rank(event["severity"]) >= rank(notify_on)


#: What tells one alert event from another, stable across reads of the same log: where it is (the log's file name,
#: its run), which alert (rule, subject, where it began), and which transition (state, severity, escalation, where).
KEY_FIELDS = ("run", "rule", "subject", "first_step", "first_epoch", "state", "severity", "escalated", "step",
              "epoch")  # fmt: skip


def alert_key(event: Mapping[str, Any]) -> str:
    """The idempotency key of one alert event: a hash of the log's absolute path (without a per-rank log's
    rank: the same alert of one job's run in each rank's log is one event), when the run started (but for a
    per-rank log, each rank's run_start its own: the job's run id, rank 0's, is unique already) and the event's
    :data:`KEY_FIELDS`. Every watcher of the log gives an event the same key, so a receiver (and the ledger of
    what was sent, :mod:`.ledger`) can drop a repeat; the same alert firing again after it resolved is another
    event, with another key, and so is one of another run given the same id (``run_id="baseline"`` run again,
    or in another folder)."""
    log = os.path.realpath(str(event.get("log") or ""))  # `follow DIR` and `follow DIR/LOG` agree, from any cwd
    shared = without_rank(log)
    started = None if shared is not None else event.get("run_started")
    identity = [shared or log, started, *(event.get(name) for name in KEY_FIELDS)]
    return hashlib.sha256(json.dumps(identity, default=str).encode()).hexdigest()[:32]


def headline(event: Mapping[str, Any]) -> str:
    """One line for a person: state, severity, rule, subject, run (and the rank whose own log it came from), the
    host its trainer runs on, where, message and what to do."""
    state = "ESCALATED" if event.get("escalated") else str(event["state"]).upper()
    host = f" on {event['host']}" if event.get("host") else ""
    rank = f" (rank {event['rank']})" if event.get("rank") is not None else ""
    text = (
        f"moola-watch {state} {str(event['severity']).upper()} {event['rule']} ({event['subject']}) in run "
        f"{event['run']}{rank}{host} at {rules.position(event.get('epoch'), event.get('step'))}: {event['message']}"
    )
    if event["state"] != rules.RESOLVED and event.get("recommendation"):
        text += f" -> {event['recommendation']}"
    return inert(text.replace("\n", " "), limit=CHAT_LIMIT)


def slack_escape(text: str) -> str:
    """Slack's three control characters escaped, so log text cannot write ``<!channel>`` or links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def webhook_body(event: Mapping[str, Any], key: str) -> bytes:
    """The POST body: ``text`` for Slack, ``content`` for Discord (mentions disabled), the full alert, and its
    ``idempotency_key`` (the same on a retry of this alert, another for the next one)."""
    line = headline(event)
    body = {
        "text": slack_escape(line), "content": line, "allowed_mentions": {"parse": []}, "alert": dict(event),
        "idempotency_key": key,
    }  # fmt: skip
    return json_line(body)


def command_env(event: Mapping[str, Any]) -> dict[str, str]:
    """``MOOLA_RULE``, ``MOOLA_SEVERITY``, ... and ``MOOLA_TEXT`` (the headline); missing values are empty.
    NUL bytes, which no environment can hold, are dropped; each value is cut to ``ENV_LIMIT`` characters."""
    values = {f"MOOLA_{name.upper()}": event.get(name) for name in ENV_FIELDS}
    values["MOOLA_TEXT"] = headline(event)
    return {key: ("" if value is None else str(value)).replace("\0", "")[:ENV_LIMIT] for key, value in values.items()}


# ------------------------------------------------------------------------------ shells


def basic_auth(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without the ``user:password@`` it may hold, and the Basic ``Authorization`` header that says it
    instead (urllib would take the user info for part of the host name)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url, {}
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    host = parts.netloc.rpartition("@")[2]
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return urllib.parse.urlunsplit(parts._replace(netloc=host)), {"Authorization": f"Basic {token}"}


class _PostRedirects(urllib.request.HTTPRedirectHandler):
    """307 and 308 keep the method and the body (RFC 9110), so the POST goes on to the new URL (an endpoint moved
    to HTTPS, a path given its slash), its Basic authentication only to the same host. 301, 302 and 303 would
    turn it into a GET that delivers nothing: they stay errors."""

    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        if code not in (307, 308):
            return None
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            return None
        same_host = urllib.parse.urlsplit(newurl).netloc == urllib.parse.urlsplit(req.full_url).netloc
        dropped = {"host", "content-length"} | (set() if same_host else {"authorization"})  # the new URL's own
        kept = {name: value for name, value in req.header_items() if name.lower() not in dropped}
        return urllib.request.Request(newurl, data=req.data, method="POST", headers=kept)


class _Deadline:
    """The end of one request, connect, send and answer together: when it comes, every connection the request
    opened is shut down, which ends whatever read or write is blocked on it. A socket's own timeout is per read:
    a receiver that trickles its answer a line at a time would hold the request, and every alert behind it, for
    as long as it likes."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.passed = False
        self._lock = threading.Lock()
        self._watched: list[socket.socket] = []  # our own duplicates: shutting one down ends the connection
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def left(self) -> float:
        """Seconds left; TimeoutError when none are."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        return left

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock``'s connection down at the deadline (a duplicate of it: the TLS layer wraps the original)."""
        duplicate = sock.dup()
        with self._lock:
            self._watched.append(duplicate)
            if self.passed:
                self._shut(duplicate)

    def _expire(self) -> None:
        with self._lock:
            self.passed = True
            for sock in self._watched:
                self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):  # the connection is gone already
            sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._watched:
                sock.close()


class _StatusLineEnds:
    """An answer's stream that ends after a 2xx status line: that line is delivery (README), and the headers after
    it are not waited for (``http.client`` reads headers until an empty line, which this gives at once)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._delivered = False

    def readline(self, limit: int = -1) -> bytes:
        if self._delivered:
            return b""
        line = self._stream.readline(limit)
        version, _, rest = line.partition(b" ")
        self._delivered = version.startswith(b"HTTP/") and rest[:1] == b"2"
        return line

    def __getattr__(self, name: str) -> Any:  # read, close, ...: the stream's own
        return getattr(self._stream, name)


class _StatusLineResponse(http.client.HTTPResponse):
    """A response whose 2xx status line is the whole answer (:class:`_StatusLineEnds`)."""

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self.fp = _StatusLineEnds(self.fp)  # type: ignore[assignment]


class _BoundedConnection(http.client.HTTPConnection):
    """A connection within a request's :class:`_Deadline`, its answer a :class:`_StatusLineResponse`."""

    response_class = _StatusLineResponse

    def __init__(self, *args: Any, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deadline = deadline
        self._create_connection = self._connect_within  # (http.client's hook for making the socket)

    def _connect_within(
        self, address: tuple[str, int], _timeout: float | None = None, source_address: Any = None
    ) -> socket.socket:
        """The connection's socket, made within what is left of the request's time (not a whole timeout anew)."""
        sock = socket.create_connection(address, self.deadline.left(), source_address)
        self.deadline.watch(sock)  # from here on the deadline ends it: a proxy's tunnel, TLS, the request
        return sock


class _BoundedHTTPSConnection(_BoundedConnection, http.client.HTTPSConnection):
    """:class:`_BoundedConnection` over TLS: the handshake is within the deadline too."""


class _BoundedHTTPHandler(urllib.request.HTTPHandler):
    """urllib's http: handler, its connections within ``deadline``."""

    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_BoundedConnection, deadline=self.deadline), req)


class _BoundedHTTPSHandler(urllib.request.HTTPSHandler):
    """urllib's https: handler (the default TLS context), its connections within ``deadline``."""

    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_BoundedHTTPSConnection, deadline=self.deadline), req)


def _opener(deadline: _Deadline) -> urllib.request.OpenerDirector:
    """urllib's opener (proxies from the environment, redirects by :class:`_PostRedirects`) whose connections
    all end at ``deadline``."""
    return urllib.request.build_opener(_PostRedirects, _BoundedHTTPHandler(deadline), _BoundedHTTPSHandler(deadline))


def post_json(url: str, body: bytes, timeout: float, key: str | None = None) -> None:
    """POST ``body`` as JSON; a 2xx status line is delivery, and nothing after it is waited for (a receiver that
    sends its status and then stalls has taken the alert). ``timeout`` is seconds for the whole request: connect,
    send and the status line, redirects included. A URL's ``user:password@`` is sent as Basic authentication,
    ``key`` as the ``Idempotency-Key`` header. A 307 or 308 is followed with the same POST. Raises
    :class:`NoAnswer` when the request was sent but no status came in time."""
    url, auth = basic_auth(url)
    headers = {"Content-Type": "application/json", "User-Agent": f"moola-watch/{__version__}", **auth}
    if key is not None:
        headers["Idempotency-Key"] = key
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    deadline = _Deadline(timeout)
    try:
        with _opener(deadline).open(request, timeout=timeout):  # returns at a 2xx status line
            pass
    except urllib.error.HTTPError as exc:
        moved = " (it redirects elsewhere: give the webhook its new URL)" if exc.code in (301, 302, 303) else ""
        reason = str(exc.reason).splitlines()[0] if exc.reason else ""  # (urllib's redirect loop says it in lines)
        raise DeliveryError(f"HTTP {exc.code} {reason}{moved}", retry=exc.code in RETRY_STATUSES) from None
    except urllib.error.URLError as exc:  # urllib wraps what fails while connecting or sending
        reason = f"timed out after {timeout:g} s" if deadline.passed else exc.reason
        raise DeliveryError(f"cannot reach it: {reason}", retry=True) from None
    except (OSError, HTTPException) as exc:  # while waiting for the answer: the request was sent whole
        if deadline.passed or isinstance(exc, TimeoutError):
            raise NoAnswer(f"no answer within {timeout:g} s") from None
        raise DeliveryError(f"{type(exc).__name__}: {exc}", retry=True) from None
    finally:
        deadline.close()


class Webhook:
    """One ``--webhook`` URL. A request sent whole but not answered within the wait may have been taken: it is
    tried again (the alert must not be lost), with the same key, and this webhook is waited on twice as long from
    then on, up to ``MAX_PATIENCE`` times the timeout; each answer that comes within the timeout again halves the
    wait, back down to the timeout. A receiver k times slower than the timeout gets about log2(k) + 1 copies of
    the first alert it is slow on (waits of 1, 2, 4, ... timeouts), and one of each alert after it."""

    def __init__(self, url: str, timeout: float) -> None:
        """``timeout``: seconds a request may take, connect to status line, until an answer comes too late."""
        self.url = url
        self.timeout = timeout
        self.wait = timeout  # seconds per request now

    def deliver(self, event: Mapping[str, Any], key: str) -> None:
        began = time.monotonic()
        try:
            post_json(self.url, webhook_body(event, key), self.wait, key)
        except NoAnswer:
            self.wait = min(2 * self.wait, MAX_PATIENCE * self.timeout)
            raise
        if time.monotonic() - began <= self.timeout:  # prompt again: it need not be waited on so long
            self.wait = max(self.timeout, self.wait / 2)


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

    def deliver(self, event: Mapping[str, Any], key: str) -> None:
        self.run(json_line(dict(event)), {**command_env(event), "MOOLA_IDEMPOTENCY_KEY": key})

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


@dataclass(frozen=True)
class Sink:
    """A named destination: ``deliver(event, key)`` sends one alert event or raises DeliveryError; ``key`` is the
    alert's, the same on every attempt at it."""

    label: str
    deliver: Callable[[Mapping[str, Any], str], None]
    retries: int
    stop: Callable[[], None] | None = None  # ends a delivery still in progress at exit
    destination: str = ""  # what tells it apart in the ledger of alerts sent (its URL or command; never shown)


def sinks_for(settings: NotifySettings) -> list[Sink]:
    """One sink per ``--on-alert`` command and per ``--webhook`` URL. Commands are not retried (a command
    that half-ran should not page twice); webhooks are, on timeouts, connection errors, 429 and 5xx."""
    runners = [Command(command_argv(command), settings.timeout) for command in settings.commands]
    commands = numbered("--on-alert", [os.path.basename(runner.argv[0]) for runner in runners])
    webhooks = numbered("--webhook", [redact(url) for url in settings.webhooks])
    return [
        *(Sink(label, runner.deliver, 0, runner.stop, f"command {command}")
          for label, runner, command in zip(commands, runners, settings.commands, strict=True)),
        *(Sink(label, Webhook(url, settings.timeout).deliver, settings.retries, destination=f"webhook {url}")
          for label, url in zip(webhooks, settings.webhooks, strict=True)),
    ]  # fmt: skip


def numbered(flag: str, shown: list[str]) -> list[str]:
    """Each destination's label: its flag and what may be shown of it (a webhook's host: its path holds the
    secret; a command's program: its arguments may hold one), with its place among that flag's (``--webhook #2
    https://hooks.slack.com/…``) where two would read the same."""
    alike = {text for text in shown if shown.count(text) > 1}
    return [f"{flag} #{place} {text}" if text in alike else f"{flag} {text}" for place, text in enumerate(shown, 1)]
