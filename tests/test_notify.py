"""Notifications: ``moola-watch follow --webhook/--on-alert`` against real HTTP servers on 127.0.0.1, real commands
and a real trainer; the formatting functions on their own."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import REPO
from logs import LogBuilder
from processes import start_trainer

from moola_watch import notify

SAMPLES = REPO / "sample_logs"
# A pointer_collapse sample frozen as it was on 2026-11-30: at --notify-on error it sends exactly three transitions
# (exploding firing, norm_level firing, exploding resolved), which these delivery tests count on; a regenerated
# sample may flap, and the flapping hold would then send fewer.
THREE_ERRORS = REPO / "tests" / "data" / "notify" / "three_error_transitions.jsonl"
NO_PROXY = {"no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"}  # urllib would send 127.0.0.1 via a proxy
EVIL = "$(touch PWNED1); touch PWNED2 `touch PWNED3` | touch PWNED4 && touch PWNED5 <x >PWNED6"
RECORDER = """\
import json, os, sys
alert = json.loads(sys.stdin.read())
env = {k: v for k, v in os.environ.items() if k.startswith("MOOLA_")}
with open(sys.argv[1], "a") as out:
    out.write(json.dumps({"stdin": alert, "env": env}) + "\\n")
"""


# ------------------------------------------------------------------------------ real servers


class Hook:
    """A real HTTP server on 127.0.0.1: records each POSTed JSON body with the wall time it arrived. It answers
    after ``delay`` seconds (its first requests after ``delays``, one each), and its first ``failures`` requests
    with 500 (those bodies are not recorded); ``stall``: it sends a 200 and its headers at once, then holds back
    the body it announced until it is closed. A POST to ``/moved/CODE`` is answered CODE with its ``moved_to``
    (by default, its own URL) as the Location."""

    def __init__(
        self, delay: float = 0.0, failures: int = 0, delays: tuple[float, ...] = (), stall: bool = False
    ) -> None:
        self.bodies: list[tuple[float, dict]] = []
        self.keys: list[str | None] = []  # each recorded body's Idempotency-Key header
        self.authorizations: list[str | None] = []
        self.hosts: list[str | None] = []  # each request's Host header
        self.requests = 0
        self.arrived = 0  # POSTs to the hook's URL that came in
        self.closed = threading.Event()
        lock = threading.Lock()
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.hosts.append(self.headers["Host"])
                if self.path.startswith("/moved/"):
                    self.send_response(int(self.path.rsplit("/", 1)[1]))
                    self.send_header("Location", hook.moved_to or "/hooks/SECRET-TOKEN")
                    self.end_headers()
                    return
                hook.authorizations.append(self.headers["Authorization"])
                with lock:
                    index = hook.arrived
                    hook.arrived += 1
                time.sleep(delays[index] if index < len(delays) else delay)
                hook.requests += 1
                if hook.requests <= failures:
                    self.send_response(500)
                    self.end_headers()
                    return
                hook.keys.append(self.headers["Idempotency-Key"])
                hook.bodies.append((time.time(), body))
                if stall:
                    self.send_response(200)
                    self.send_header("Content-Length", "100")
                    self.end_headers()
                    self.wfile.write(b"ok")
                    self.wfile.flush()
                    hook.closed.wait(30)
                    return
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = f"{self.base}/hooks/SECRET-TOKEN"
        self.moved_to: str | None = None
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, predicate, timeout: float) -> tuple[float, dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for arrived, body in list(self.bodies):
                if predicate(body["alert"]):
                    return arrived, body
            time.sleep(0.05)
        raise AssertionError(f"no matching alert arrived; got {[b['alert']['rule'] for _, b in self.bodies]}")

    def close(self) -> None:
        self.closed.set()
        self.server.shutdown()
        self.server.server_close()


class Hanging:
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        self.accepted = threading.Event()
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return
            self.accepted.set()

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


class Trickle:
    """A TCP server on 127.0.0.1 that reads each request whole, sends ``head`` at once, then ``drip`` a byte at a
    time, one every ``every`` seconds: a receiver that answers a line, or a byte, at a time."""

    def __init__(self, head: bytes, drip: bytes, every: float) -> None:
        self.head, self.drip, self.every = head, drip, every
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hooks/SECRET-TOKEN"
        self.requests = 0
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn = self.sock.accept()[0]
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            while len(body) < length:
                body += conn.recv(65536)
            self.requests += 1
            conn.sendall(self.head)
            for byte in self.drip:
                if self.closed.wait(self.every):
                    return
                conn.sendall(bytes([byte]))

    def close(self) -> None:
        self.closed.set()
        self.sock.close()


@pytest.fixture
def hook():
    server = Hook()
    yield server
    server.close()


@pytest.fixture
def hanging():
    server = Hanging()
    yield server
    server.close()


def dead_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return f"http://127.0.0.1:{sock.getsockname()[1]}/"


def watch(*args: str, cwd: Path = REPO) -> subprocess.Popen:
    """``moola-watch follow ARGS`` as a real, piped subprocess."""
    return subprocess.Popen(
        [sys.executable, "-m", "moola_watch.cli", "follow", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=cwd, env={**os.environ, **NO_PROXY, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def stop(watcher: subprocess.Popen) -> tuple[str, str]:
    watcher.send_signal(signal.SIGINT)
    out, err = watcher.communicate(timeout=20)
    assert watcher.returncode == 0 and "Traceback" not in err, err
    return out, err


def run_watch(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "moola_watch.cli", "follow", *args], capture_output=True, text=True, timeout=60,
        cwd=cwd, env={**os.environ, **NO_PROXY},
    )  # fmt: skip


def json_events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


# ------------------------------------------------------------------------------ end to end


def test_webhook_receives_the_collapse_alert_while_the_trainer_is_still_running(tmp_path, hook):
    log = tmp_path / "run.jsonl"
    watcher = watch(str(log), "--webhook", hook.url)
    # Hidden size 4: there the pointer task really starves the type task, which is what makes collapse an error.
    trainer = start_trainer(log, 40, "--loss-beta", "50", "--hidden-size", "4")
    try:
        _, body = hook.wait_for(lambda a: a["rule"] == "collapse" and a["state"] == "firing", timeout=150)
        assert trainer.poll() is None, "training had already ended"
        assert b'"kind":"run_end"' not in log.read_bytes()
    finally:
        trainer.kill()
        trainer.wait(timeout=30)
    out, _ = stop(watcher)
    run_id = json.loads(log.read_bytes().splitlines()[0])["run"]
    alert = body["alert"]
    assert alert["run"] == run_id and alert["log"] == str(log) and alert["severity"] == "error"
    assert alert["host"] == socket.gethostname() and f" on {alert['host']} at " in body["content"]
    assert alert["message"].startswith("TASK COLLAPSE: Pointer task dominating") and alert["recommendation"]
    assert alert["step"] is not None and alert["epoch"] is not None
    assert body["content"].startswith("moola-watch FIRING ERROR collapse (type)")
    assert body["text"] == notify.slack_escape(body["content"]) and body["allowed_mentions"] == {"parse": []}
    # Only what reaches --notify-on (error by default): the same transitions as the piped lines.
    sent = [(a["rule"], a["state"]) for a in (b["alert"] for _, b in hook.bodies)]
    assert all(a["severity"] in ("error", "critical") for a in (b["alert"] for _, b in hook.bodies))
    assert ("collapse", "firing") in sent and "collapse (type)" in out


def test_a_hanging_webhook_does_not_delay_the_next_alert_line(tmp_path, hanging):
    log = tmp_path / "run.jsonl"
    first = LogBuilder().start()
    for epoch in (1, 2):  # exploding in two samples running: an error
        first.grad(epoch, 20.0, 40.0, {"a": 0.3, "b": 40.0})
    log.write_bytes(b"".join(first.lines()))
    watcher = watch(str(log), "--webhook", hanging.url, "--notify-timeout", "60")
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(target=lambda: lines.extend((time.time(), line) for line in watcher.stdout))
    reader.start()
    assert hanging.accepted.wait(20), "the webhook was never called"
    time.sleep(0.3)  # the sink is now stuck waiting for an answer that never comes
    second = LogBuilder(t0=first.time).grad(3, 0.3, 0.4, {"a": 0.3, "b": float("nan")}).lines()
    written = time.time()
    with log.open("ab") as handle:
        handle.write(second[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any("nonfinite" in line for _, line in lines):
        time.sleep(0.01)
    seen = next((t for t, line in lines if "nonfinite" in line and "FIRING" in line), float("inf"))
    assert seen - written < 1.0, f"the next alert line came {seen - written:.2f} s after its record"
    began = time.monotonic()
    watcher.send_signal(signal.SIGINT)
    reader.join(timeout=20)
    err = watcher.stderr.read()
    assert watcher.wait(timeout=20) == 0 and "Traceback" not in err
    assert time.monotonic() - began < notify.CLOSE_GRACE_S + 3  # exit waits a bounded grace, not the endpoint
    assert re.search(
        r"--webhook http://127\.0\.0\.1:\d+/…: (\d+) alerts? not delivered \(\1 still queued at exit\)", err
    )
    assert "SECRET" not in err


def test_a_dead_webhook_and_a_failing_command_are_one_notice_each(tmp_path):
    result = run_watch(
        "--once", "--json", str(THREE_ERRORS), "--webhook", dead_url() + "hooks/SECRET",
        "--on-alert", "false", "--notify-on", "warning",
    )  # fmt: skip
    events = json_events(result.stdout)
    alerts = [e for e in events if e["event"] == "alert" and e["state"] != "pending"]
    notices = [e["message"] for e in events if e["event"] == "notice" and e["kind"] == "notify"]
    assert len(alerts) >= 5 and result.returncode == 1
    assert len(notices) == 4, notices  # one when each started failing, one each at exit
    webhook = next(n for n in notices if n.startswith("--webhook"))
    assert "Connection refused" in webhook and "SECRET" not in "".join(notices)
    assert webhook.endswith("; its alerts are kept, in order, and sent when it works again (every alert still shows "
                            "here)")  # fmt: skip
    assert next(n for n in notices if n.startswith("--on-alert false")).endswith(
        "failed: exited with status 1; the alerts it refuses are dropped, not retried (counted when it works again) "
        "(every alert still shows here)"
    )
    # The dead webhook was tried through the exit grace; nothing went out, and both say how much was lost.
    assert notices[-2] == f"--on-alert false: {len(alerts)} alerts not delivered ({len(alerts)} refused or failed)"
    assert re.fullmatch(r"--webhook .*: (\d+) alerts? not delivered \(\1 still queued at exit\)", notices[-1])
    text = run_watch("--once", str(THREE_ERRORS), "--on-alert", "false", "--notify-on", "warning")
    assert "(counted when it works again) (every alert still shows here)" in text.stderr, text.stderr  # not cut


def test_alerts_wait_out_a_short_webhook_outage_and_go_out_in_order(tmp_path):
    hook = Hook(failures=4)  # 500 to the first four requests: more than one alert's quick retries
    try:
        result = run_watch("--once", "--json", str(THREE_ERRORS), "--webhook", hook.url)
    finally:
        hook.close()
    events = json_events(result.stdout)
    printed = [e for e in events if e["event"] == "alert" and e["severity"] == "error" and e["state"] != "pending"]
    notices = [e["message"] for e in events if e["event"] == "notice"]
    # Before, the first alert used up its retries, the next one got a single attempt: only the RESOLVED arrived.
    assert len(printed) == 3 and [body["alert"] for _, body in hook.bodies] == printed, notices
    assert [n.split(": ", 1)[0].split("/… ")[1] for n in notices] == ["failed", "works again"], notices
    assert "HTTP 500" in notices[0] and notices[1].endswith("/… works again")


def test_exit_gives_queued_alerts_5_s_whatever_the_request_timeout(tmp_path):
    hook = Hook(delay=1.2)  # three alerts take 3.6 s in all, each well within its 2 s timeout
    try:
        result = run_watch(
            "--once", "--json", str(THREE_ERRORS), "--webhook", hook.url, "--notify-timeout", "2"
        )  # fmt: skip
    finally:
        hook.close()
    events = json_events(result.stdout)
    printed = [e for e in events if e["event"] == "alert" and e["severity"] == "error" and e["state"] != "pending"]
    sent = [body["alert"] for _, body in hook.bodies]
    # Before, the grace was min(timeout, 5 s): 2 s, and only the first alert went out.
    assert len(printed) == 3 and sent == printed, result.stderr
    assert not [e for e in events if e["event"] == "notice"]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_ends_follow_like_ctrl_c_queued_alerts_go_out_and_the_summary_is_written(tmp_path, stop):
    """SIGTERM: systemd's, Kubernetes' and timeout's way to stop a process; SIGHUP: the terminal or ssh session
    it ran in closed."""
    log = tmp_path / "run.jsonl"
    log.write_bytes(THREE_ERRORS.read_bytes())
    hook = Hook(delay=1.0)  # three alerts: two are still queued when the first has arrived
    watcher = watch("--json", str(log), "--webhook", hook.url)
    try:
        hook.wait_for(lambda alert: True, timeout=20)
        watcher.send_signal(stop)
        out, err = watcher.communicate(timeout=20)
    finally:
        watcher.kill()
        hook.close()
    # Before, SIGTERM killed follow at once (status -15): one alert of three sent, no summary, nothing said.
    assert watcher.returncode == 0 and "Traceback" not in err, err
    events = json_events(out)
    printed = [e for e in events if e["event"] == "alert" and e["severity"] == "error" and e["state"] != "pending"]
    assert len(printed) == 3 and [body["alert"] for _, body in hook.bodies] == printed
    assert events[-1]["event"] == "summary"


def test_a_webhook_slower_than_its_timeout_gets_every_alert_and_can_tell_a_retry_by_its_key(tmp_path):
    """A receiver that takes 1.5 s to answer, a watcher that waits 1 s: the first attempt at an alert times out
    after the whole POST was sent, so the receiver may have it; the retry carries the same key and waits longer."""
    log = tmp_path / "run.jsonl"
    log.write_bytes(THREE_ERRORS.read_bytes())
    hook = Hook(delay=1.5)
    watcher = watch("--json", str(log), "--webhook", hook.url, "--notify-timeout", "1")
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and len(set(hook.keys)) < 2:  # the two firing; the resolution is held
            time.sleep(0.1)
        time.sleep(2.0)  # a retry still on its way would arrive now
        out, _ = stop(watcher)
    finally:
        watcher.kill()
        hook.close()
    events = json_events(out)
    printed = [e for e in events if e["event"] == "alert" and e["severity"] == "error" and e["state"] != "pending"]
    bodies = [body for _, body in hook.bodies]
    assert all(key and body["idempotency_key"] == key for key, body in zip(hook.keys, bodies, strict=True))
    firsts = {body["idempotency_key"]: body["alert"] for body in bodies}  # a receiver keeping the first of each key
    # Before, no key told a retry from a new alert, and every attempt timed out: each alert arrived again and again.
    assert len(printed) == 3 and list(firsts.values()) == printed, hook.keys
    assert len(bodies) > len(firsts)  # the timed-out first attempt did arrive: the retry is a repeat ...
    assert len(bodies) <= 2 * len(firsts)  # ... one, not one every backoff


def test_a_webhook_waited_on_longer_after_a_late_answer_is_waited_on_less_again_once_it_answers_promptly():
    """The first alert's attempts time out at 0.4 s and 0.8 s; the third, waiting 1.6 s, is answered at 1 s. The
    wait stays 1.6 s while answers are late (the second alert's too), and halves with each prompt one, back down
    to the timeout."""
    hook = Hook(delays=(1.0, 1.0, 1.0, 1.0))
    webhook = notify.sinks.Webhook(hook.url, timeout=0.4)
    waits = []
    try:
        for step in range(5):
            for _attempt in range(3):
                with contextlib.suppress(notify.sinks.NoAnswer):
                    webhook.deliver(event(step=step), f"k{step}")
                    break
            waits.append(webhook.wait)
    finally:
        hook.close()
    assert hook.keys == ["k0", "k0", "k0", "k1", "k2", "k3", "k4"], hook.keys  # each answered late received
    # Before, the wait stayed doubled for good: a receiver slow once was waited on 4 x as long ever after.
    assert waits == [1.6, 1.6, 0.8, 0.4, 0.4], waits


def test_a_receiver_2_5_times_slower_than_the_timeout_gets_its_first_alert_three_times_and_the_rest_once():
    """What the README promises a slow receiver: the first alert's attempts wait 1, 2 and 4 timeouts, the third is
    answered, and the wait stays there for the alerts after it; every copy carries its alert's key."""
    hook = Hook(delay=1.0)
    settings = notify.NotifySettings(webhooks=(hook.url,), timeout=0.4, resolve_after=0)
    notifier = notify.Notifier(notify.sinks_for(settings), grace=30.0)
    try:
        for step in range(3):
            notifier.send(event(step=step, subject=f"layer{step}"))
        notices = notifier.close()
    finally:
        hook.close()
    assert [body["alert"]["step"] for _, body in hook.bodies] == [0, 0, 0, 1, 2] and not notices, notices
    assert hook.keys == [notify.alert_key(event(step=step, subject=f"layer{step}")) for step in (0, 0, 0, 1, 2)]


def test_a_2xx_status_is_delivery_even_if_the_receiver_then_stalls_its_body():
    """A receiver that sends its 200 at once and then holds back the body it announced has taken the alert:
    before, the body's read timed out, the alert counted as not answered and was sent again and again."""
    hook = Hook(stall=True)
    try:
        began = time.monotonic()
        notify.sinks.Webhook(hook.url, timeout=1.0).deliver(event(), "k1")
        took = time.monotonic() - began
    finally:
        hook.close()
    assert hook.keys == ["k1"] and took < 0.9, took


def test_a_2xx_status_line_is_delivery_without_waiting_for_headers_trickled_after_it():
    """A receiver that sends ``200 OK`` at once, then its headers a byte at a time (each byte well within the
    timeout): before, every read waited anew, and one alert held its queue for as long as the headers took."""
    trickle = Trickle(b"HTTP/1.1 200 OK\r\n", b"X-A: b\r\n" * 8, every=0.1)  # 6.4 s of headers
    try:
        began = time.monotonic()
        notify.post_json(trickle.url, b"{}", timeout=1.0, key="k1")
        took = time.monotonic() - began
    finally:
        trickle.close()
    assert trickle.requests == 1 and took < 0.5, took


def test_a_status_line_trickled_a_byte_at_a_time_is_no_answer_once_the_timeout_is_up():
    """The timeout bounds the whole request: a status line that comes a byte every 0.3 s (5 s in all) is no
    answer after 1 s. Before, each byte restarted the timeout, and the request took the 5 s."""
    trickle = Trickle(b"", b"HTTP/1.1 200 OK\r\n", every=0.3)
    try:
        began = time.monotonic()
        with pytest.raises(notify.sinks.NoAnswer, match="no answer within 1 s"):
            notify.post_json(trickle.url, b"{}", timeout=1.0, key="k1")
        took = time.monotonic() - began
    finally:
        trickle.close()
    assert 0.9 < took < 1.5, took


def test_alerts_behind_a_receiver_that_trickles_its_headers_are_not_held_up(tmp_path):
    """What a user sees: three alerts to a receiver that answers ``200 OK`` and then drips its headers. Before,
    each alert took the 6.4 s of headers, and at exit two were still queued."""
    trickle = Trickle(b"HTTP/1.1 200 OK\r\n", b"X-A: b\r\n" * 8, every=0.1)
    try:
        began = time.monotonic()
        result = run_watch(
            "--once", "--json", str(THREE_ERRORS), "--webhook", trickle.url,
            "--notify-timeout", "1",
        )  # fmt: skip
        took = time.monotonic() - began
    finally:
        trickle.close()
    events = json_events(result.stdout)
    assert not [e for e in events if e["event"] == "notice"] and "not delivered" not in result.stderr, result.stderr
    assert trickle.requests == 3 and took < 5, took


def flapping_log(path: Path, epochs: int = 12) -> Path:
    """An exploding alert that fires, resolves and fires again (every five epochs)."""
    log = LogBuilder().start()
    for epoch in range(1, epochs):
        norm = 50.0 if epoch % 5 < 2 else 0.3
        log.grad(epoch, 0.3, norm, {"a": 0.3, "b": norm})
    return log.write(path)


def sent(hook: Hook) -> list[tuple[str, str, int]]:
    return [(body["alert"]["rule"], body["alert"]["state"], body["alert"]["step"]) for _, body in hook.bodies]


def test_a_restarted_watcher_sends_only_what_its_destinations_have_not_had(tmp_path, hook):
    """``follow`` judges a log's history when it starts, but a watcher restarted on it (systemd's Restart=, a
    cron job's --once) sends none of what the first one delivered: Slack cannot drop a repeat by its key. Only
    what is new goes out; without the ledger (--sent-log ''), the history again, with the keys first used."""
    path = flapping_log(tmp_path / "run.jsonl")
    config = tmp_path / "watch.toml"
    config.write_text(f'[notify]\nwebhook = "{hook.url}"\nresolve_after = 0\n')
    first = run_watch("--once", "--json", "--config", str(config), str(path))
    assert sent(hook) == [("exploding", "firing", 60), ("exploding", "resolved", 70), ("exploding", "firing", 110)]
    keys = list(hook.keys)
    assert len(set(keys)) == 3 and [body["idempotency_key"] for _, body in hook.bodies] == keys
    second = run_watch("--once", "--json", "--config", str(config), str(tmp_path))  # the folder: the same log
    assert first.returncode == second.returncode == 1, first.stderr + second.stderr
    assert len(hook.bodies) == 3 and len(json_events(second.stdout)) == len(json_events(first.stdout)) > 3
    flapping_log(path, epochs=17)  # the run went on: resolved at 120, firing again at 160
    run_watch("--once", "--config", str(config), str(path))
    assert sent(hook)[3:] == [("exploding", "resolved", 120), ("exploding", "firing", 160)]
    # Without a ledger each watcher sends the whole history, with the same keys: a receiver that keeps them drops.
    run_watch("--once", "--sent-log", "", "--config", str(config), str(path))
    assert sent(hook)[5:] == sent(hook)[:5] and hook.keys[5:] == hook.keys[:5]


def test_an_alert_firing_again_after_a_resolution_an_earlier_watcher_sent_is_sent(tmp_path, hook):
    """A cron job's --once sends a resolution still held at its exit; the next one, reading the alert fire again
    within resolve_after of it, must not take that for the same incident going on (the person was told it
    ended), or the page is lost for the rest of the run."""
    whole = flapping_log(tmp_path / "whole.jsonl")
    lines = whole.read_bytes().splitlines(keepends=True)
    path = tmp_path / "run.jsonl"
    path.write_bytes(b"".join(lines[:9]))  # up to epoch 8: fired at step 60, resolved at 70
    run_watch("--once", "--webhook", hook.url, str(path))
    assert sent(hook) == [("exploding", "firing", 60), ("exploding", "resolved", 70)]  # the held one, at exit
    path.write_bytes(b"".join(lines))
    run_watch("--once", "--webhook", hook.url, str(path))
    assert sent(hook)[2:] == [("exploding", "firing", 110)]


def test_another_run_given_the_same_id_in_a_log_of_the_same_name_is_paged_too(tmp_path, hook):
    """run_id="baseline" run again, in another folder and then into the same file: each its own alerts."""
    for folder, t0 in (("a", 1.7e9), ("b", 1.7e9 + 3600), ("b", 1.7e9 + 7200)):
        (tmp_path / folder).mkdir(exist_ok=True)
        log = LogBuilder(run="baseline", t0=t0).start()
        for epoch in range(1, 4):
            log.grad(epoch, 0.3, 50.0, {"a": 0.3, "b": 50.0})
        run_watch("--once", "--webhook", hook.url, str(log.write(tmp_path / folder / "run.jsonl")))
    assert sent(hook) == [("exploding", "firing", 20)] * 3 and len(set(hook.keys)) == 3


def test_one_alert_of_a_job_in_each_ranks_log_is_sent_once(tmp_path, hook):
    """Each rank's own log (per_rank) names the job's one run, and its gradients are the all-reduced ones: the
    same alert in both is one incident, one page; an alert only one rank has is sent too."""
    for rank in (0, 1):
        log = LogBuilder(run="job-7").start()
        for epoch in range(1, 5):
            log.grad(epoch, 0.3, 50.0, {"a": 0.3, "b": 50.0})
            log.balance(epoch, 1.0, rank=rank)  # each rank's own batches: balanced
        if rank == 1:
            log.add("run_end", status="failed", error="RuntimeError: rank 1 lost its data loader")
        log.write(tmp_path / f"run.rank{rank}.jsonl")
    result = run_watch("--once", "--notify-on", "error", "--webhook", hook.url, str(tmp_path))
    assert result.returncode == 1, result.stderr
    assert sorted((rule, state) for rule, state, _ in sent(hook)) == [("exploding", "firing"), ("run_failed", "firing")]
    failed = next(body for _, body in hook.bodies if body["alert"]["rule"] == "run_failed")
    assert failed["alert"]["rank"] == 1 and "in run job-7 (rank 1)" in failed["text"], failed


def test_a_ledger_that_cannot_be_written_is_one_notice_and_every_alert_still_goes_out(tmp_path, hook):
    path = flapping_log(tmp_path / "run.jsonl")
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    config = tmp_path / "watch.toml"
    config.write_text(f'[notify]\nwebhook = "{hook.url}"\nresolve_after = 0\nsent_log = "{blocked / "sent"}"\n')
    result = run_watch("--once", "--config", str(config), str(path))
    assert len(hook.bodies) == 3, result.stderr
    assert result.stderr.count("the ledger of alerts sent") == 1, result.stderr
    assert "cannot be read (Not a directory)" in result.stderr


def test_the_ledger_forgets_what_is_a_month_old_and_lines_it_cannot_read(tmp_path):
    from moola_watch.notify.ledger import KEEP_S, SentLedger, entry

    now = 1_800_000_000.0
    path = tmp_path / "sent"
    recent, old = entry("webhook A", "k1"), entry("webhook A", "k2")
    path.write_text(f"{recent} {now - 60:.0f}\n{old} {now - KEEP_S - 60:.0f}\ntorn-li")
    notices: list[str] = []
    ledger = SentLedger(path, notices.append, clock=lambda: now)
    assert not ledger.claim("webhook A", "k1")  # delivered a minute ago
    assert ledger.claim("webhook A", "k2") and not ledger.claim("webhook A", "k2")  # forgotten; then claimed here
    assert ledger.claim("webhook B", "k1")  # another destination has not had it
    ledger.delivered("webhook B", "k1")
    assert not SentLedger(path, notices.append, clock=lambda: now).claim("webhook B", "k1") and not notices
    # A device given as the ledger (/dev/full reads forever) is refused in one notice, not read into memory.
    assert SentLedger(Path("/dev/full"), notices.append).claim("webhook A", "k1")
    assert len(notices) == 1 and "not a regular file" in notices[0]


@pytest.mark.parametrize("key", ["notify_on", "notify-on"])  # the flag's spelling too, as [thresholds] takes it
def test_every_transition_at_or_above_notify_on_reaches_a_webhook_from_the_config(tmp_path, hook, key):
    config = tmp_path / "watch.toml"
    config.write_text(f'[notify]\nwebhook = "{hook.url}"\n{key} = "warning"\n')
    result = run_watch("--once", "--json", "--config", str(config), str(SAMPLES / "type_collapse.jsonl"))
    printed = [e for e in json_events(result.stdout) if e["event"] == "alert" and e["state"] != "pending"]
    sent = [body["alert"] for _, body in hook.bodies]
    assert len(printed) >= 4 and sent == printed  # all of them, in order, before the watcher exited
    assert {a["severity"] for a in sent} >= {"warning", "error"}


def test_a_webhook_url_with_a_user_and_password_sends_them_as_basic_auth_and_never_shows_them(hook):
    url = hook.url.replace("http://", "http://alerts:pa%40ss-w0rd@")
    result = run_watch("--once", "--json", "--notify-on", "warning", "--webhook", url,
                       str(SAMPLES / "type_collapse.jsonl"))  # fmt: skip
    assert hook.bodies and set(hook.authorizations) == {"Basic " + base64.b64encode(b"alerts:pa@ss-w0rd").decode()}
    assert "pa%40ss" not in result.stdout + result.stderr and "alerts:" not in result.stdout + result.stderr


def test_a_webhook_moved_by_308_gets_the_same_posts_with_its_credentials(hook):
    url = f"{hook.base}/moved/308".replace("http://", "http://alerts:secret@")
    result = run_watch("--once", "--json", "--notify-on", "warning", "--webhook", url,
                       str(SAMPLES / "type_collapse.jsonl"))  # fmt: skip
    sent = [body["alert"] for _, body in hook.bodies]
    printed = [e for e in json_events(result.stdout) if e["event"] == "alert" and e["state"] != "pending"]
    assert printed and sent == printed
    assert set(hook.authorizations) == {"Basic " + base64.b64encode(b"alerts:secret").decode()}


def test_a_307_to_another_host_keeps_the_post_but_not_the_credentials_and_a_302_is_a_plain_refusal(hook):
    elsewhere = Hook()
    try:
        hook.moved_to = elsewhere.url
        body = json.dumps({"alert": {"rule": "moved"}}).encode()
        notify.sinks.post_json(f"{hook.base}/moved/307".replace("http://", "http://alerts:secret@"), body, 5)
        assert [b["alert"]["rule"] for _, b in elsewhere.bodies] == ["moved"] and elsewhere.authorizations == [None]
        assert elsewhere.hosts == [elsewhere.base.removeprefix("http://")]  # its own name, not the first host's
        with pytest.raises(notify.sinks.DeliveryError, match=r"HTTP 302 .*give the webhook its new URL") as refused:
            notify.sinks.post_json(f"{hook.base}/moved/302", body, 5)
        assert not refused.value.retry and len(elsewhere.bodies) == 1 and not hook.bodies
    finally:
        elsewhere.close()


def test_on_alert_gets_the_alert_on_stdin_and_in_the_environment_and_log_text_runs_nothing(tmp_path):
    (tmp_path / "recorder.py").write_text(RECORDER)
    log = LogBuilder(run=f"run {EVIL}").start().grad(1, 0.3, 40.0, {EVIL: 40.0, "ok": 0.3})
    log.grad(2, 0.3, 40.0, {EVIL: 40.0, "ok": 0.3}).end()  # exploding in two samples running
    log.write(tmp_path / "evil.jsonl")
    recorder = f"{sys.executable} recorder.py 'got alerts.jsonl'"
    through_sh = 'sh -c \'printf "%s\\n" "$MOOLA_SUBJECT $MOOLA_MESSAGE $MOOLA_RUN" >> sh.txt\''
    result = run_watch("--once", "--json", "evil.jsonl", "--on-alert", recorder, "--on-alert", through_sh, cwd=tmp_path)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("PWNED") or p.name == "x"]
    printed = [e for e in json_events(result.stdout) if e["event"] == "alert" and e["state"] == "firing"]
    got = [json.loads(line) for line in (tmp_path / "got alerts.jsonl").read_text().splitlines()]
    assert [g["stdin"] for g in got] == printed and printed[0]["layers"] == [EVIL]
    env = got[0]["env"]
    assert env["MOOLA_RULE"] == "exploding" and env["MOOLA_SEVERITY"] == "error" and env["MOOLA_STATE"] == "firing"
    assert env["MOOLA_RUN"] == f"run {EVIL}" and EVIL in env["MOOLA_MESSAGE"] and env["MOOLA_LOG"] == "evil.jsonl"
    assert env["MOOLA_STEP"] == "20" and env["MOOLA_EPOCH"] == "2" and float(env["MOOLA_VALUE"]) == 40.0
    assert len({g["env"]["MOOLA_IDEMPOTENCY_KEY"] for g in got}) == len(got)  # one key per alert
    assert EVIL in (tmp_path / "sh.txt").read_text()  # the shell got the text as data, and ran none of it


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie waiting to be reaped does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_a_command_that_leaves_a_background_child_is_done_when_it_exits(tmp_path):
    command = "sh -c 'echo \"$MOOLA_STATE\" >> states.txt; sleep 20 & echo $! >> children.txt'"
    began = time.monotonic()
    result = run_watch(
        "--once", "--json", str(THREE_ERRORS), "--on-alert", command, "--notify-timeout", "3",
        cwd=tmp_path,
    )  # fmt: skip
    took = time.monotonic() - began
    children = [int(pid) for pid in (tmp_path / "children.txt").read_text().split()]
    try:
        events = json_events(result.stdout)
        # Before, the child's hold on the command's stderr pipe made each run last its full 3 s timeout, and the
        # notice said "still running after 3 s, killed": one alert went out before the exit grace ran out.
        assert not [e["message"] for e in events if e["event"] == "notice"]
        assert (tmp_path / "states.txt").read_text().split() == ["firing", "firing", "resolved"]
        assert took < 3, took
        assert all(alive(pid) for pid in children)  # what a command starts in the background is its own
    finally:
        for pid in children:
            os.kill(pid, signal.SIGKILL)


def test_a_command_still_running_at_exit_is_killed_with_its_process_group(tmp_path):
    command = "sh -c 'sleep 60 & echo $! > child.txt; wait'"
    result = run_watch(
        "--once", str(THREE_ERRORS), "--on-alert", command, "--notify-timeout", "60",
        cwd=tmp_path,
    )  # fmt: skip
    child = int((tmp_path / "child.txt").read_text())
    deadline = time.monotonic() + 3
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(child):
        os.kill(child, signal.SIGKILL)
        pytest.fail("the hung command's child outlived moola-watch")
    assert "--on-alert sh: 3 alerts not delivered (3 still queued at exit)" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--webhook", "file:///etc/passwd"], "needs an http:// or https:// URL"),
        (["--on-alert", "no-such-command-anywhere --flag"], "is not an executable command"),
        (["--on-alert", "python 'unbalanced"], "No closing quotation"),
        (["--notify-timeout", "0", "--webhook", "http://127.0.0.1:9/"], "above 0"),
        (["--notify-timeout", "nan", "--webhook", "http://127.0.0.1:9/"], "above 0"),
        # Before, the webhook's thread died of an OverflowError at its first alert, and nothing was sent.
        (["--notify-timeout", "1e10", "--webhook", "http://127.0.0.1:9/"], "at most 86400 (a day), got 1000000"),
        (["--webhook", "http://[::1/services/SECRET"], "--webhook 'http://[::1/…' is not a valid URL"),
    ],
)
def test_unusable_notification_settings_are_usage_errors(args, said):
    result = run_watch("--once", str(SAMPLES / "healthy.jsonl"), *args)
    assert result.returncode == 2 and said in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    assert "SECRET" not in result.stderr


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ('notify_on = "info"', "[notify] notify_on must be one of warning, error, critical, got 'info'"),
        ("timeout = 1e10", "[notify] timeout) must be a number of seconds above 0 and at most 86400 (a day)"),
        ('notify-on = "error"\nnotify_on = "error"', "[notify] sets notify_on twice (as notify_on and notify-on)"),
        ('on-alerts = "true"', "[notify] has unknown key(s): on-alerts; valid keys of [notify]: on_alert, webhook, "
                               "notify_on, timeout, retries, resolve_after"),
    ],
)  # fmt: skip
def test_unusable_notify_config_is_a_one_line_usage_error(tmp_path, setting, said):
    config = tmp_path / "watch.toml"
    config.write_text(f'[notify]\nwebhook = "http://127.0.0.1:9/"\n{setting}\n')
    result = run_watch("--once", "--config", str(config), str(SAMPLES / "healthy.jsonl"))
    assert result.returncode == 2 and said in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://127.0.0.1:99999/services/T0/B0/SECRET", "http://127.0.0.1:<bad port>/…: the port is not a number"),
        ("http://127.0.0.1:abc/services/T0/B0/SECRET", "http://127.0.0.1:<bad port>/…: the port is not a number"),
        ("https://127.0.0.1:8799/services/T0/B0/SECRET #prod", "https://127.0.0.1:8799/…: the URL holds a space"),
        ("https://127.0.0.1:8799/services/T0/B0/SECRET\n", "https://127.0.0.1:8799/…: the URL holds a space"),
        ("https://127.0.0.1:8799/services/T0/B0/SECRET\x7f", "https://127.0.0.1:8799/…: the URL holds a space"),
        ("https://127.0.0.1:8799/services/SECRET/é", "https://127.0.0.1:8799/…: the URL holds a space"),
        ("hooks.slack.com/services/T0/B0/SECRET", "needs an http:// or https:// URL, got 'hooks.slack.com/…' "
                                                  "(nothing in front of the host: write https:// or http://)"),
        ("hook:SECRET@127.0.0.1:8799/services/SECRET", "needs an http:// or https:// URL, got '127.0.0.1:8799/…'"),
    ],
)  # fmt: skip
def test_a_malformed_webhook_url_is_a_one_line_usage_error_without_its_path(url, said):
    # Before, a bad port was a traceback from redact(), and a space reached http.client, whose failure notice
    # quoted the path: the webhook's secret.
    result = run_watch("--once", "--json", str(THREE_ERRORS), "--webhook", url)
    assert result.returncode == 2 and result.stdout == "", result.stderr
    assert result.stderr.startswith(f"moola-watch: error: --webhook {said}") and "SECRET" not in result.stderr
    assert len(result.stderr.splitlines()) == 1


# ------------------------------------------------------------------------------ pure parts


def event(**fields) -> dict:
    base = {"event": "alert", "log": "a.jsonl", "run": "r1", "rule": "collapse", "severity": "error",
            "state": "firing", "subject": "pointer/type", "value": 6.34, "message": "TASK COLLAPSE: x",
            "recommendation": "Urgent: increase alpha", "escalated": False, "epoch": 15, "step": 300}  # fmt: skip
    return {**base, **fields}


def test_wanted_sends_confirmed_transitions_at_or_above_notify_on():
    assert notify.wanted(event(), "error") and notify.wanted(event(state="resolved"), "error")
    assert not notify.wanted(event(state="pending"), "warning")
    assert not notify.wanted(event(severity="warning"), "error")
    assert notify.wanted(event(severity="critical"), "error") and not notify.wanted(event(), "critical")


def test_an_alert_events_key_is_what_identifies_it_not_where_the_watcher_found_the_log(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "runs")
    here = {"log": "runs/a.jsonl", "run_started": 1.0e9}
    key = notify.alert_key(event(**here))
    for same in ({"log": str(tmp_path / "runs" / "a.jsonl"), "value": 9.0, "message": "other words"},
                 {"log": "link/a.jsonl"}):  # fmt: skip
        assert notify.alert_key(event(**{**here, **same})) == key
    changes = [{"state": "resolved"}, {"step": 310}, {"epoch": 16}, {"first_step": 200}, {"run": "r2"},
               {"subject": "pointer/cls"}, {"rule": "exploding"}, {"severity": "critical", "escalated": True},
               {"log": "runs/b.jsonl"}, {"log": "elsewhere/a.jsonl"}, {"run_started": 2.0e9}]  # fmt: skip
    others = [notify.alert_key(event(**{**here, **change})) for change in changes]
    assert len({key, *others}) == 1 + len(changes)
    # Each rank's own log of one job: its run_start time is its own, and the job's run is one.
    ranks = [event(log=f"runs/a.rank{rank}.jsonl", run_started=1.0e9 + rank) for rank in (0, 1)]
    assert notify.alert_key(ranks[0]) == notify.alert_key(ranks[1]) != key
    # per_rank keeps whatever suffix the path given had (run.log -> run.rank1.log), or none
    for name in ("runs/a.rank{}.log", "runs/a.rank{}"):
        ranks = [event(log=name.format(rank), run_started=1.0e9 + rank) for rank in (0, 1)]
        assert notify.alert_key(ranks[0]) == notify.alert_key(ranks[1])


def test_chat_text_cannot_ping_or_link_and_is_one_inert_line():
    body = json.loads(notify.webhook_body(event(message="<!channel> @everyone\n\x1b[2Jhi", state="resolved"), "k1"))
    assert "<!channel>" not in body["text"] and "&lt;!channel&gt;" in body["text"]
    assert body["allowed_mentions"] == {"parse": []} and "\n" not in body["content"] and "\x1b" not in body["content"]
    assert body["content"].startswith("moola-watch RESOLVED ERROR collapse (pointer/type) in run r1 at epoch 15, st")
    assert "->" not in body["content"]  # a resolved alert needs no action
    assert body["alert"]["message"] == "<!channel> @everyone\n\x1b[2Jhi"  # the full alert keeps the real text
    assert len(notify.headline(event(message="m" * 10_000))) <= notify.CHAT_LIMIT + 1
    assert notify.headline(event(host="gpu-7")).startswith("moola-watch FIRING ERROR collapse (pointer/type) in run r1 "
                                                           "on gpu-7 at epoch 15, step 300")  # fmt: skip


def test_command_env_is_strings_without_nul_and_bounded():
    env = notify.command_env(event(subject="a\0b", value=None, message="m" * 10_000))
    assert env["MOOLA_SUBJECT"] == "ab" and env["MOOLA_VALUE"] == "" and len(env["MOOLA_MESSAGE"]) == notify.ENV_LIMIT
    assert env["MOOLA_STEP"] == "300" and env["MOOLA_TEXT"].startswith("moola-watch FIRING ERROR collapse")


def test_settings_add_commands_and_webhooks_from_config_and_flags():
    settings = notify.settings_from(
        {"webhook": ["https://hooks.slack.com/services/T/B/X"], "on_alert": "true", "notify_on": "warning"},
        commands=["false"], webhooks=["http://127.0.0.1:1/"], timeout=2,
    )  # fmt: skip
    assert settings.commands == ("true", "false") and len(settings.webhooks) == 2
    assert settings.notify_on == "warning" and settings.timeout == 2 and settings.retries == 2
    for bad in ({"webhooks": "x"}, {"on_alert": 3}, {"retries": -1}, {"notify_on": "loud"}):
        with pytest.raises(ValueError):
            notify.settings_from(bad)
    assert notify.redact("https://hooks.slack.com/services/T/B/X?x=1") == "https://hooks.slack.com/…"
    assert notify.redact("https://hooks.slack.com:99999/services/T/B/X") == "https://hooks.slack.com:<bad port>/…"


def test_backoff_grows_and_is_bounded():
    assert [notify.backoff(n) for n in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert notify.backoff(10_000) == notify.MAX_BACKOFF_S  # a days-long outage


def flaky(outcomes: list[bool], calls: list[dict], entered: threading.Event | None = None, gate=None):
    """A sink's deliver: sets ``entered`` and waits for ``gate`` if given, then fails or succeeds as ``outcomes``
    says, in turn."""

    def deliver(alert, key: str) -> None:
        if entered is not None:
            entered.set()
            gate.wait(10)
        calls.append(dict(alert))
        if not outcomes.pop(0):
            raise notify.DeliveryError("HTTP 503 Service Unavailable", retry=False)

    return deliver


def test_a_failing_sink_is_one_notice_and_one_more_when_it_works_again():
    calls: list[dict] = []
    sink = notify.Sink("--webhook x", flaky([False, False, False, True, False], calls), retries=0)
    notifier = notify.Notifier([sink])
    for step in range(5):
        notifier.send(event(step=step, subject=f"layer{step}"))  # five alerts, not one flapping
    notifier.send(event(state="pending"))  # not wanted: never delivered
    notices = notifier.close()
    assert [c["step"] for c in calls] == [0, 1, 2, 3, 4]
    assert notices == [
        "--webhook x failed: HTTP 503 Service Unavailable; the alerts it refuses are dropped, not retried (counted "
        "when it works again) (every alert still shows here)",
        "--webhook x works again; 3 alerts were lost while it failed",
        "--webhook x failed: HTTP 503 Service Unavailable; the alerts it refuses are dropped, not retried (counted "
        "when it works again) (every alert still shows here)",
        "--webhook x: 4 alerts not delivered (4 refused or failed)",
    ]


def test_a_sink_that_is_down_keeps_what_fits_in_its_queue_and_sends_it_in_order_when_it_works_again():
    down = threading.Event()
    down.set()
    calls: list[int] = []

    def deliver(alert, key: str) -> None:
        if down.is_set():
            raise notify.DeliveryError("HTTP 503 Service Unavailable", retry=True)
        calls.append(alert["step"])

    notifier = notify.Notifier([notify.Sink("--webhook x", deliver, retries=2)], pause=lambda attempt: 0.01)
    for step in range(notify.QUEUE_SIZE + 30):
        notifier.send(event(step=step, subject=f"layer{step}"))
    (worker,) = notifier.workers
    time.sleep(0.3)  # dozens of attempts at the first alert, all failing
    assert len(worker.queue) == notify.QUEUE_SIZE and calls == []  # bounded while down, nothing lost from it
    down.clear()
    notices = notifier.close()
    assert calls == list(range(notify.QUEUE_SIZE))  # every queued one, oldest first
    assert sorted(notices[:2]) == [  # in either order: the queue may fill before the quick retries are over
        "--webhook x failed: HTTP 503 Service Unavailable; its alerts are kept, in order, and sent when it works "
        "again (every alert still shows here)",
        "--webhook x is falling behind: 100 alerts queued, dropping new ones",
    ]
    assert notices[2:] == [
        "--webhook x works again; 30 alerts were lost while it failed",
        "--webhook x: 30 alerts not delivered (30 dropped beyond its queue of 100)",
    ]


def test_a_stuck_sink_drops_beyond_its_queue_says_so_once_and_exit_is_bounded():
    calls: list[dict] = []
    entered, gate = threading.Event(), threading.Event()
    sink = notify.Sink("--on-alert page", flaky([True] * 200, calls, entered, gate), retries=0)
    notifier = notify.Notifier([sink], grace=0.2)
    notifier.send(event(step=0, subject="layer0"))
    assert entered.wait(5)  # the first alert is in flight, stuck, still in the queue; 99 more fit in it
    began = time.monotonic()
    for step in range(1, notify.QUEUE_SIZE + 50):
        notifier.send(event(step=step, subject=f"layer{step}"))
    assert time.monotonic() - began < 0.5  # sending never waits for the sink
    assert notifier.drain() == ["--on-alert page is falling behind: 100 alerts queued, dropping new ones"]
    notices = notifier.close()
    assert time.monotonic() - began < 2 and notices == [
        "--on-alert page: 150 alerts not delivered (100 still queued at exit, 50 dropped beyond its queue of 100)"
    ]
    gate.set()


def test_a_ctrl_c_during_the_exit_grace_ends_it_and_still_says_what_was_not_delivered():
    calls: list[dict] = []
    entered, gate = threading.Event(), threading.Event()
    sink = notify.Sink("--webhook x", flaky([True] * 3, calls, entered, gate), retries=0)
    notifier = notify.Notifier([sink], grace=30.0, resolve_after=0)
    for step in range(3):
        notifier.send(event(step=step, subject=f"layer{step}"))
    assert entered.wait(5)  # the first alert is in flight, stuck; all three are queued
    interrupt = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))  # the second Ctrl-C
    began = time.monotonic()
    interrupt.start()
    try:
        notices = notifier.close()
    except KeyboardInterrupt:
        pytest.fail("the Ctrl-C escaped close(): the alerts not delivered were never said")
    finally:
        gate.set()
    assert time.monotonic() - began < 5
    assert notices == ["--webhook x: 3 alerts not delivered (3 still queued at exit)"]


def test_a_second_ctrl_c_cuts_the_exit_grace_short_and_the_lost_alerts_are_still_said(tmp_path, hanging):
    """Ctrl-C, and Ctrl-C again a second later, while a webhook hangs: before, follow exited 0 at once with no line
    at all, and nobody learnt that the alerts queued never went out."""
    log = tmp_path / "run.jsonl"
    log.write_bytes(THREE_ERRORS.read_bytes())
    watcher = watch(str(log), "--webhook", hanging.url)
    try:
        assert hanging.accepted.wait(20)  # the first alert is on its way, and will get no answer
        time.sleep(1.0)  # the log's history read, its other alerts queued behind it
        watcher.send_signal(signal.SIGINT)
        time.sleep(1.0)  # within the 5 s grace
        began = time.monotonic()
        watcher.send_signal(signal.SIGINT)
        _, err = watcher.communicate(timeout=20)
        took = time.monotonic() - began
    finally:
        watcher.kill()
    assert watcher.returncode == 0 and "Traceback" not in err, err
    assert re.search(r"/…: (\d+) alerts? not delivered \(\1 still queued at exit\)\n", err) and took < 2, (err, took)


def test_a_flapping_alert_is_one_incident_firing_once_and_resolved_once_it_stays_resolved():
    hold = notify.ResolveHold(60.0)
    firing, resolved = event(state="firing"), event(state="resolved")
    assert hold.admit(firing, 0.0) == [firing] and hold.admit(resolved, 1.0) == []  # held
    assert hold.admit(firing, 2.0) == [] and hold.due(1000.0) == []  # it came back: the same incident
    assert hold.admit(resolved, 3.0) == [] and hold.due(62.9) == [] and hold.due(63.0) == [resolved]
    assert hold.admit(firing, 64.0) == [firing]  # over: a new incident is news again
    worse = event(state="firing", severity="critical")
    assert hold.admit(resolved, 65.0) == [] and hold.admit(worse, 66.0) == [worse]  # back worse: news
    assert hold.flush() == [] and hold.admit(resolved, 67.0) == [] and hold.flush() == [resolved]
    assert notify.ResolveHold(0.0).admit(resolved, 0.0) == [resolved]


def test_incidents_apart_in_a_runs_own_time_stay_apart_when_its_history_is_read_in_a_moment():
    hold = notify.ResolveHold(60.0)
    firing, resolved = event(state="firing"), event(state="resolved")
    assert hold.admit(firing, 0.0, at=1000.0) == [firing] and hold.admit(resolved, 0.0, at=1010.0) == []
    assert hold.admit(firing, 0.0, at=4610.0) == [resolved, firing]  # an hour later by its records: a new one
    assert hold.admit(resolved, 0.0, at=4620.0) == [] and hold.admit(firing, 0.0, at=4630.0) == []  # a flap


def test_an_alert_firing_again_below_notify_on_is_the_same_incident_not_an_all_clear():
    sent: list[dict] = []
    sink = notify.Sink("--on-alert x", lambda alert, key: sent.append(alert), retries=0)
    notifier = notify.Notifier([sink], "error", clock=lambda: 0.0)
    notifier.send(event(state="firing", severity="error"))
    notifier.send(event(state="resolved", severity="error"))
    notifier.send(event(state="firing", severity="warning"))  # not sent, but it is still going on
    notifier.send(event(state="firing", severity="error"))
    notifier.tick()
    notifier.close()
    assert [(e["state"], e["severity"]) for e in sent] == [("firing", "error")]


def test_a_layer_exploding_on_and_off_pages_once_not_at_every_flap(tmp_path):
    """An exploding layer that fires and resolves five times: the webhook gets one firing and, at exit, one
    resolution; follow's own lines still show every transition."""
    log = LogBuilder().start()
    for epoch in range(1, 24):  # ends healthy: resolved
        norm = 50.0 if epoch % 5 < 3 else 0.3
        log.grad(epoch, 0.3, norm, {"a": 0.3, "b": norm})
    hook = Hook()
    try:
        result = run_watch("--once", "--json", str(log.write(tmp_path / "flap.jsonl")), "--webhook", hook.url)
    finally:
        hook.close()
    shown = [e for e in json_events(result.stdout) if e["event"] == "alert" and e["rule"] == "exploding"]
    assert [e["state"] for e in shown].count("firing") == [e["state"] for e in shown].count("resolved") == 5, shown
    sent = [(b["alert"]["rule"], b["alert"]["state"]) for _, b in hook.bodies]
    assert sent == [("exploding", "firing"), ("exploding", "resolved")], sent


def test_the_live_view_says_which_destinations_fail_while_they_fail(terminal):
    """An outside review: for ten minutes two webhooks answered 500, and the dashboard said nothing (the notices
    wait for it to close); and two webhooks on one host read the same in those notices."""
    broken, working = Hook(failures=10**6), Hook()
    try:
        term = terminal(f"{sys.executable} -m moola_watch.cli follow {THREE_ERRORS} --notify-on warning "
                        f"--webhook {broken.base}/hooks/A --webhook {broken.base}/hooks/B --webhook {working.url}",
                        width=220)  # fmt: skip
        host = f"http://127.0.0.1:{broken.server.server_address[1]}/…"
        term.wait_for(f"NOTIFICATIONS FAILING: --webhook #1 {host}, --webhook #2 {host}; why", timeout=30)
        assert working.url.rsplit("/", 2)[0] not in term.screen().split("NOTIFICATIONS FAILING")[1].split("\n")[0]
        working.wait_for(lambda alert: True, timeout=10)  # the working one delivers meanwhile
        term.keys("C-c")
        assert term.exit_code(timeout=20) == 0
    finally:
        broken.close()
        working.close()
