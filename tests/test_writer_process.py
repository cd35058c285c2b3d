"""Whether the process that wrote a run is alive, judged from its run_start, on real processes."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from logs import LogBuilder

from moola_watch import rules, writer_process
from moola_watch.writer_process import this_process, writer_gone

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the identity is read from /proc")
HOST = socket.gethostname()


def identity_of(pid: int) -> dict:
    """What the monitor in process ``pid`` would have recorded (the same boot and namespace as this one)."""
    stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return {**this_process(), "start_ticks": int(stat[19])}


@pytest.fixture
def child():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def test_this_process_is_alive_and_its_identity_is_what_proc_says():
    me = this_process()
    assert set(me) == {"boot_id", "pid_namespace", "start_ticks"} and me == identity_of(os.getpid())
    assert writer_gone(HOST, os.getpid(), me) is False


def test_a_killed_writer_is_gone_whether_reaped_or_not(child):
    identity = identity_of(child.pid)
    assert writer_gone(HOST, child.pid, identity) is False
    child.kill()
    deadline = time.monotonic() + 10
    while writer_gone(HOST, child.pid, identity) is not True and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer_gone(HOST, child.pid, identity) is True  # a zombie: its parent has not waited yet
    child.wait()
    assert writer_gone(HOST, child.pid, identity) is True


def test_a_pid_now_held_by_a_later_process_is_not_the_writer():
    assert writer_gone(HOST, os.getpid(), {**this_process(), "start_ticks": this_process()["start_ticks"] - 1})


@pytest.mark.parametrize(
    ("host", "as_text", "differs"),
    [
        ("another-host", False, None),  # another machine: its processes are not ours to see
        (HOST, False, "all"),  # no identity recorded (an older version's log) while this machine has one
        (HOST, False, "pid_namespace"),  # another PID namespace: another container on this host
        (HOST, False, "boot_id"),
        (HOST, True, None),  # a pid that is not a number
    ],
)
def test_a_gone_writer_this_watcher_cannot_see_is_neither_alive_nor_gone(child, host, as_text, differs):
    identity = identity_of(child.pid)
    child.kill()
    child.wait()
    if differs == "all":
        identity = {}
    elif differs:
        identity[differs] = "something else"
    assert writer_gone(host, str(child.pid) if as_text else child.pid, identity) is None


def test_the_engine_calls_a_run_dead_only_while_it_has_not_ended():
    log = LogBuilder("r").start().grad(1, 0.3, 0.3)
    engine = rules.replay(log.records)
    assert engine.check_writer(None, time.time()) == [] and engine.check_writer(False, time.time()) == []
    (event,) = engine.check_writer(True, time.time())
    assert event.alert.rule == "run_died" and event.alert.severity == "error" and engine.run_status == "dead"
    assert engine.check_writer(True, time.time()) == [] and engine.check_stale(time.time() + 1e6) == []
    ended = rules.replay(log.grad(2, 0.3, 0.3).end().records)
    assert ended.check_writer(True, time.time()) == [] and ended.run_status == "completed"


def test_a_live_writer_hidden_by_proc_is_not_called_gone(child, monkeypatch):
    """/proc mounted hidepid=2 hides other users' processes: no /proc/PID is not proof of an exit."""
    identity = identity_of(child.pid)
    real = writer_process._stat_fields
    monkeypatch.setattr(writer_process, "_stat_fields", lambda pid: None if str(pid) == str(child.pid) else real(pid))
    assert writer_gone(HOST, child.pid, identity) is None
    child.kill()
    child.wait()
    assert writer_gone(HOST, child.pid, identity) is True  # kill(pid, 0): no such process


def test_a_proc_that_is_not_this_pid_namespaces_identifies_nothing(monkeypatch):
    """A PID namespace that did not mount its own /proc: /proc/self is another pid than os.getpid()."""
    monkeypatch.setattr(writer_process.os, "getpid", lambda: 2)
    assert this_process() == {}
