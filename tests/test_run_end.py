"""How a run ends in its log: the exception or signal that ended it, as a scheduler or a loop ends runs."""

import json
import os
import signal
import subprocess
import sys

import pytest
from helpers import REPO
from processes import start_trainer, wait_for_epochs

from moola.utils.monitoring.run_end import SIGTERM_WORDS, ending

LOOP = """
import signal, sys, time
import torch
from moola.utils.monitoring import GradientMonitor

log, how = sys.argv[1], sys.argv[2]
if how == "handler":  # the user's own SIGTERM handler, exiting with the signal's status
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
model = torch.nn.Linear(4, 2)
with GradientMonitor(every_n_steps=1, log_path=log) as monitor:
    monitor.on_run_start(model)
    if how == "chained":  # a framework's handler set later, calling the one it replaced, then stopping gracefully
        replaced = signal.getsignal(signal.SIGTERM)
        stopping = []
        signal.signal(signal.SIGTERM, lambda signum, frame: (stopping.append(signum), replaced(signum, frame)))
    if how == "two":  # a second run in the same process, with its own log
        second = GradientMonitor(every_n_steps=1, log_path=log + ".second")
        second.on_run_start(model)
    if how == "fork":  # a child process the loop starts and stops: its SIGTERM is not the run's
        import multiprocessing

        child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))
        child.start()
        child.terminate()
        child.join()
    for step in range(10_000):
        if how == "chained" and stopping:
            print("stopped gracefully", flush=True)
            break
        if how == "fork" and step == 5:
            break
        model(torch.randn(8, 4)).pow(2).mean().backward()
        monitor.on_before_optimizer_step(model)
        model.zero_grad()
        if how == "exit" and step == 3:
            print("target reached", flush=True)
            sys.exit(0)
        if step == 3:
            print("ready", flush=True)
        time.sleep(0.01)
"""


@pytest.mark.parametrize(
    ("exc", "status", "error"),
    [
        (None, "completed", None),
        (KeyboardInterrupt(), "interrupted", None),
        (SystemExit(0), "completed", None),
        (SystemExit(None), "completed", None),
        (SystemExit(143), "interrupted", "exit status 143 (SIGTERM)"),
        (SystemExit(2), "failed", "SystemExit: 2"),
        (SystemExit(255), "failed", "SystemExit: 255"),  # 128 + 127: no signal
        (RuntimeError("boom"), "failed", "RuntimeError: boom"),
    ],
)
def test_the_status_a_run_ends_with(exc, status, error):
    assert ending(exc) == (status, error)


def run_loop(tmp_path, how: str, **env: str) -> tuple[subprocess.Popen, list[dict]]:
    log = tmp_path / "run.jsonl"
    loop = subprocess.Popen([sys.executable, "-c", LOOP, str(log), how], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env={**os.environ, **env})  # fmt: skip
    if how not in ("exit", "fork"):
        assert loop.stdout.readline().strip() == "ready"
        loop.send_signal(signal.SIGTERM)
    loop.communicate(timeout=60)
    return loop, [json.loads(line) for line in log.read_text().splitlines()]


def test_sigterm_writes_run_end_and_the_process_still_ends_by_it(tmp_path):
    loop, records = run_loop(tmp_path, "default")
    assert loop.returncode == -signal.SIGTERM  # as without moola: killed by the signal
    end = records[-1]
    assert end["kind"] == "run_end" and end["status"] == "interrupted" and end["error"] == SIGTERM_WORDS


def test_a_users_sigterm_handler_is_kept_and_its_exit_is_an_interruption(tmp_path):
    loop, records = run_loop(tmp_path, "handler")
    assert loop.returncode == 143
    assert records[-1]["status"] == "interrupted" and records[-1]["error"] == "exit status 143 (SIGTERM)"


def test_a_handler_set_later_that_chains_to_the_monitors_keeps_the_process(tmp_path):
    """Lightning's way: its handler notes the signal, calls the one it replaced, and stops at the next step."""
    loop, records = run_loop(tmp_path, "chained")
    assert loop.returncode == 0  # the later handler decided: the process was not killed under it
    assert records[-1]["status"] == "interrupted" and records[-1]["error"] == SIGTERM_WORDS
    assert [r["kind"] for r in records].count("run_end") == 1


def test_sys_exit_0_in_the_loop_is_a_completed_run(tmp_path):
    loop, records = run_loop(tmp_path, "exit")
    assert loop.returncode == 0 and records[-1]["status"] == "completed" and records[-1]["error"] is None


def test_moola_train_stopped_by_sigterm_is_interrupted_not_unterminated(tmp_path):
    log = tmp_path / "train.jsonl"
    trainer = start_trainer(log, 200)
    wait_for_epochs(log, 2)
    trainer.send_signal(signal.SIGTERM)
    trainer.communicate(timeout=60)
    assert trainer.returncode == -signal.SIGTERM
    report = json.loads(subprocess.run([sys.executable, "-m", "moola_watch.cli", "check", "--json", str(log)],
                                       capture_output=True, text=True, cwd=REPO).stdout)  # fmt: skip
    assert report["status"] == "interrupted" and report["verdict"] == "warning"


def test_every_run_of_the_process_ends_interrupted_on_one_sigterm(tmp_path):
    loop, records = run_loop(tmp_path, "two")
    second = [json.loads(line) for line in (tmp_path / "run.jsonl.second").read_text().splitlines()]
    assert loop.returncode == -signal.SIGTERM
    assert records[-1]["status"] == second[-1]["status"] == "interrupted"


def test_a_forked_childs_sigterm_does_not_end_the_parents_run(tmp_path):
    loop, records = run_loop(tmp_path, "fork")
    assert loop.returncode == 0 and [r["kind"] for r in records].count("run_end") == 1
    assert records[-1]["status"] == "completed"


def test_in_a_distributed_job_sigterm_keeps_its_default_action(tmp_path):
    """A rank blocked in a collective must still die at once: no Python handler, which runs only between
    bytecodes (the watcher on its host calls the run dead instead)."""
    loop, records = run_loop(tmp_path, "default", WORLD_SIZE="2")
    assert loop.returncode == -signal.SIGTERM and records[-1]["kind"] != "run_end"


def test_a_run_that_nobody_holds_any_more_is_not_kept_alive_for_sigterm(tmp_path):
    """A review's case: a run that raised outside any ``with`` never ended, and the SIGTERM registry kept its
    monitor (and the monitor's log) for the life of the process. Let go of, it is freed at once, and SIGTERM
    gets its default action back with the last run gone."""
    import gc
    import weakref

    import torch

    from moola.utils.monitoring import GradientMonitor

    model = torch.nn.Linear(2, 2)
    gc.disable()  # freed by its reference count, not whenever the collector runs
    try:
        monitor = GradientMonitor(every_n_steps=1, log_path=tmp_path / "run.jsonl")
        monitor.on_run_start(model)
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # it registered: a SIGTERM would end it
        freed = weakref.ref(monitor)
        del monitor
        assert freed() is None
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        gc.enable()


def test_a_later_run_of_the_process_writes_the_log_of_one_let_go_of_unended(tmp_path):
    """Its writer, freed with it, releases the log's lock; one still held unended keeps it, and the warning says
    that this process holds it, not another."""
    import torch

    from moola.utils.monitoring import GradientMonitor

    log, model, warnings = tmp_path / "run.jsonl", torch.nn.Linear(2, 2), []
    GradientMonitor(every_n_steps=1, log_path=log).on_run_start(model)  # raised, and nobody holds it
    with GradientMonitor(every_n_steps=1, log_path=log, warn=warnings.append) as second:
        second.on_run_start(model)
    assert warnings == [] and [json.loads(line)["kind"] for line in log.read_text().splitlines()] == [
        "run_start", "run_start", "run_end"
    ]  # fmt: skip

    held = GradientMonitor(every_n_steps=1, log_path=log)
    held.on_run_start(model)
    with GradientMonitor(every_n_steps=1, log_path=log, warn=warnings.append) as third:
        third.on_run_start(model)
    (warning,) = warnings
    assert "an earlier run of this process that was not ended still holds it" in warning, warning
    assert "another process" not in warning
    held.on_run_end()


OUTSIDE_WITH = """
import os, sys, torch
from moola.utils.monitoring import GradientMonitor

model = torch.nn.Linear(4, 2)
monitor = GradientMonitor(every_n_steps=1, log_path=sys.argv[1])
for step in range(3):
    model(torch.randn(8, 4)).pow(2).mean().backward()
    monitor.on_before_optimizer_step(model)
if sys.argv[2] == "raises":
    raise RuntimeError("bad batch")
if sys.argv[2] == "os._exit":  # no Python exit at all: as a kill, the watcher says the process died
    os._exit(0)
"""


@pytest.mark.parametrize(
    ("how", "returncode", "status", "error"),
    [("ends", 0, "completed", None), ("raises", 1, "failed", "RuntimeError: bad batch"), ("os._exit", 0, None, None)],
)
def test_a_plain_loop_without_with_or_on_run_end_is_ended_by_the_interpreters_exit(tmp_path, how, returncode,
                                                                                  status, error):  # fmt: skip
    """An outside review's loop used the monitor without ``with`` and never called on_run_end: a script that ran to
    its end got ``run_died`` (killed, crashed), check failed, and an ignored AttributeError was printed at exit.
    The interpreter's exit now ends the run, with the exception that reached the top level if one did; only a
    process that never exits through Python (``os._exit``, a kill) is one that died."""
    log = tmp_path / "run.jsonl"
    loop = subprocess.run([sys.executable, "-c", OUTSIDE_WITH, str(log), how], cwd=REPO, capture_output=True,
                          text=True)  # fmt: skip
    assert loop.returncode == returncode and "Exception ignored" not in loop.stderr, loop.stderr
    ends = [json.loads(line) for line in log.read_text().splitlines() if '"run_end"' in line]
    assert [(end["status"], end.get("error"), end["step"]) for end in ends] == ([(status, error, 3)] if status else [])
    report = json.loads(subprocess.run([sys.executable, "-m", "moola_watch.cli", "check", "--json", str(log)],
                                       capture_output=True, text=True, cwd=REPO).stdout)  # fmt: skip
    died = [alert for alert in report["alerts"] if alert["rule"] == "run_died"]
    if status is None:
        assert "or ended by an exception that no `with monitor:` recorded" in died[0]["message"], died
    else:
        assert not died, died
