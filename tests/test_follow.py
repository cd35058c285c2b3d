"""`moola-watch follow` in a real terminal (tmux) and piped, on files a separate process is appending."""

import bz2
import gzip
import json
import lzma
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import REPO, run_id
from logs import LogBuilder
from processes import start_trainer, wait_for_epochs
from terminal import Terminal

from moola_watch import rules
from moola_watch.schema import decode_record

WRITER = Path(__file__).with_name("log_writer.py")
SAMPLES = REPO / "sample_logs"
WATCH = f"{sys.executable} -m moola_watch.cli"


def replay_steps(lines: list[bytes], gap: float, mark_at: int | None = None, mark: Path | None = None) -> list:
    steps: list = []
    for index, line in enumerate(lines):
        steps += [["append", line.hex()], ["sleep", gap]]
        if index == mark_at:
            steps.insert(len(steps) - 1, ["mark", str(mark)])
    return steps


def start_writer(steps: list, path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WRITER), json.dumps(steps), str(path)])


def collapse_trigger(lines: list[bytes]) -> int:
    """Index of the line whose record makes the collapse alert fire."""
    engine = rules.RuleEngine()
    for index, line in enumerate(lines):
        if any(
            e.alert.rule == rules.COLLAPSE and e.alert.state == rules.FIRING
            for e in engine.observe(decode_record(line))
        ):
            return index
    raise AssertionError("no collapse in this log")


def test_dashboard_shows_the_run_and_the_collapse_within_2s_of_its_record(tmp_path, terminal):
    lines = (SAMPLES / "pointer_collapse.jsonl").read_bytes().splitlines(keepends=True)
    trigger = collapse_trigger(lines)
    log, mark = tmp_path / "live.jsonl", tmp_path / "mark"
    term = terminal(f"{WATCH} {log}")
    term.wait_for("waiting for records")
    writer = start_writer(replay_steps(lines, 0.03, trigger, mark), log)
    run_id = decode_record(lines[0])["run"]
    term.wait_for(f"run {run_id}")
    seen = term.wait_for("TASK COLLAPSE: Pointer task dominating")
    written = float(mark.read_text())
    assert seen - written < 2.0, f"collapse shown {seen - written:.2f}s after its record"
    writer.wait(timeout=30)
    term.wait_for("COMPLETED")
    assert "\\x0a" not in term.screen()  # our own line breaks are not escaped as if they were untrusted
    term.keys("C-c")
    assert term.exit_code() == 0


def test_untrusted_text_is_shown_literally_and_cannot_clear_the_screen(tmp_path, terminal):
    evil = "[bold red]boom[/]\x1b[2J"
    log = LogBuilder(run="[blink]run[/]\x07").start()
    log.grad(1, 0.2, 0.3, {evil: 0.3, "ok.weight": 0.1}).write(tmp_path / "evil.jsonl")
    term = terminal(f"echo MARKER-BEFORE; {WATCH} {tmp_path / 'evil.jsonl'} --once")
    assert term.exit_code() == 0
    screen = term.screen()
    assert "MARKER-BEFORE" in screen  # ESC[2J was not sent to the terminal
    assert "[bold red]boom[/]\\x1b[2J" in screen and "[blink]run[/]\\x07" in screen
    live = terminal(f"{WATCH} {tmp_path / 'evil.jsonl'}")
    live.wait_for("[bold red]boom[/]\\x1b[2J")
    live.keys("C-c")
    assert live.exit_code() == 0


def test_directory_mode_shows_three_concurrently_written_runs(tmp_path, terminal):
    runs = tmp_path / "runs"
    runs.mkdir()
    term = terminal(f"{WATCH} follow {runs}", width=200)
    term.wait_for("0 logs")
    writers = []
    for name in ("healthy", "pointer_collapse", "type_collapse"):
        lines = (SAMPLES / f"{name}.jsonl").read_bytes().splitlines(keepends=True)
        writers.append(start_writer(replay_steps(lines, 0.01), runs / f"{name}.jsonl"))
    for writer in writers:
        writer.wait(timeout=30)
    term.wait_for("3 logs")
    for name in ("healthy", "pointer_collapse", "type_collapse"):
        term.wait_for(f"{name}.jsonl")
    term.wait_for("completed", count=3)
    # The worst alert of each collapse log: an error on exploding gradients (a layer's, or the mean norm's level).
    term.wait_for("xploding", count=2)
    term.keys("C-c")
    assert term.exit_code() == 0


def test_a_folder_made_after_follow_started_is_followed_as_a_folder(tmp_path, terminal):
    """An outside review: `follow runs/` started before the trainer made the folder waited for "records in runs"
    for ever, while the run in it collapsed, NaN'd and died: the path was taken for a file once, at the start."""
    runs = tmp_path / "runs"
    term = terminal(f"{WATCH} follow {runs}/", width=200)
    term.wait_for("does not exist yet")
    runs.mkdir()
    lines = (SAMPLES / "pointer_collapse.jsonl").read_bytes().splitlines(keepends=True)
    writer = start_writer(replay_steps(lines, 0.005), runs / "pointer_collapse.jsonl")
    writer.wait(timeout=30)
    term.wait_for("1 log")
    term.wait_for("pointer_collapse.jsonl")
    term.wait_for("completed")
    term.keys("C-c")
    assert term.exit_code() == 0


def test_json_stream_of_a_collapse_log_has_the_firing_event_and_a_summary():
    result = subprocess.run(
        [sys.executable, "-m", "moola_watch.cli", "follow", "--json", "--exit-on-end",
         str(SAMPLES / "type_collapse.jsonl")],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 1
    firing = [e for e in events if e["event"] == "alert" and e["rule"] == "collapse" and e["state"] == "firing"]
    assert firing and firing[0]["message"].startswith("TASK COLLAPSE: Type task dominating")
    assert {"event": "status"}.items() <= next(e for e in events if e["event"] == "status").items()
    assert events[-1]["event"] == "summary" and events[-1]["logs"][0]["verdict"] == "error"


def test_piped_output_is_one_line_per_transition_and_ctrl_c_exits_0(tmp_path):
    lines = (SAMPLES / "pointer_collapse.jsonl").read_bytes().splitlines(keepends=True)
    log = tmp_path / "live.jsonl"
    watcher = subprocess.Popen(
        [sys.executable, "-m", "moola_watch.cli", str(log)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    writer = start_writer(replay_steps(lines, 0.005), log)
    writer.wait(timeout=30)
    # Read as it comes: Ctrl-C is sent once the watcher has shown the collapse and read the log to its run_end (on
    # a loaded machine it can still be short of the end when the collapse line comes; Ctrl-C stops it there).
    shown: list[str] = []
    reader = threading.Thread(target=lambda: shown.extend(iter(watcher.stdout.readline, "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (
        any("FIRING" in line and "collapse (type)" in line for line in shown)
        and any("is completed" in line for line in shown)
    ):
        time.sleep(0.05)
    watcher.send_signal(signal.SIGINT)
    watcher.wait(timeout=20)
    reader.join(timeout=5)
    err = watcher.stderr.read()
    out = "".join(shown)
    assert watcher.returncode == 0 and "Traceback" not in err
    assert "\x1b[" not in out  # no Live, no colour codes when piped
    collapse = [line for line in out.splitlines() if "FIRING" in line and "collapse (type)" in line]
    assert len(collapse) == 1 and "TASK COLLAPSE: Pointer task dominating" in collapse[0]
    assert " at epoch 10, step " in collapse[0] and "None" not in out  # where, in the dashboard's words
    assert "is completed" in out.splitlines()[-1]


def test_from_end_skips_history(tmp_path):
    log = tmp_path / "log.jsonl"
    shutil.copy(SAMPLES / "pointer_collapse.jsonl", log)
    result = subprocess.run(
        [sys.executable, "-m", "moola_watch.cli", "follow", "--from-end", "--json", "--once", str(log)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    events = [json.loads(line) for line in result.stdout.splitlines()]
    # Nothing of the history is judged again; its run_start and run_end say which run it was and that it is over.
    assert [e["event"] for e in events] == ["status", "summary"] and events[0]["status"] == "completed"
    assert events[1]["logs"][0]["records"] == 1 and events[1]["logs"][0]["runs"][0]["summary"]["alerts_fired"] == 0


def test_from_end_judges_what_follows_by_the_runs_recorded_thresholds_and_not_stale_from_its_start(tmp_path):
    """The skipped history holds the run's run_start: its thresholds still judge the records appended after
    (here a layer norm of 50 is healthy: the run raised `exploding` to 1000), and the run is not stale for the
    hours since it started while the file was written a moment ago."""
    log = tmp_path / "live.jsonl"
    builder = LogBuilder("resumed", t0=time.time() - 7200).start()
    builder.records[0]["thresholds"] = {"exploding": 1000.0, "norm_exploding": 1000.0, "norm_large": 1000.0}
    for epoch in range(1, 30):
        builder.grad(epoch, 50.0, 50.0)
    history = builder.lines()
    log.write_bytes(b"".join(history))
    follow = subprocess.Popen(
        [*WATCH.split(), "follow", "--from-end", "--json", "--exit-on-end", "--stale-seconds", "600", str(log)],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    time.sleep(2.0)
    tail = LogBuilder("resumed", t0=time.time())
    for epoch in range(30, 33):
        tail.grad(epoch, 50.0, 50.0)
    with log.open("ab") as handle:
        handle.write(b"".join(tail.end().lines()))
    out, _ = follow.communicate(timeout=60)
    events = [json.loads(line) for line in out.splitlines()]
    assert follow.returncode == 0, out
    assert not [e for e in events if e["event"] == "alert"], out
    (summary,) = [e for e in events if e["event"] == "summary"]
    assert summary["logs"][0]["records"] == 1 + 4  # the run_start of the history, then what was appended


def passed_nan_log(path: Path) -> Path:
    """One NaN step, resolved by the next: check fails the run as critical, though nothing fires at the end."""
    log = LogBuilder("passed-nan-run-with-a-long-id-20261130-043516").start()
    for epoch in range(1, 7):
        norms = {name: (float("nan") if epoch == 3 else 0.3) for name in ("a.weight", "b.weight")}
        log.grad(epoch, 0.3 if epoch != 3 else float("nan"), 0.3, norms)
    return log.end().write(path)


def test_a_passed_nan_keeps_the_runs_verdict_critical_in_the_dashboard_as_in_check(tmp_path, terminal):
    logs = tmp_path / "logs"
    logs.mkdir()
    log = passed_nan_log(logs / "passed_nan.jsonl")
    check = subprocess.run([*WATCH.split(), "check", str(log)], capture_output=True, text=True, cwd=REPO)
    assert check.returncode == 1 and "verdict=critical" in check.stdout, check.stdout
    single = terminal(f"{WATCH} follow {log}", width=120)
    single.wait_for("verdict: critical (now: nothing firing)")
    single.keys("C-c")
    # Many logs on an 80-column terminal: the verdict and the alert keep their columns, the run id gives way.
    many = terminal(f"{WATCH} follow {logs}", width=80)
    many.wait_for("moola-watch: 1 log\n")
    screen = many.screen()
    assert "passed_nan.jsonl" in screen and "critical" in screen and "resolved: Non-finite" in screen, screen
    assert all(len(line) <= 80 for line in screen.splitlines())
    many.keys("C-c")
    assert many.exit_code() == 0


def follow_once(*args, timeout=60):
    return subprocess.run([*WATCH.split(), "follow", *map(str, args)], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout, env={**os.environ, "COLUMNS": "150"})  # fmt: skip


def test_follow_gives_checks_verdict_and_exit_code_on_what_check_judges(tmp_path):
    """An outside review's cases, each against `check` on the same file: a 3 MB line in the history (--once
    stopped reading at it); a run that measured nothing (exit 3, not 0); a killed run (--exit-on-end waited
    forever: stale ends it); --run naming no run (exit 2 and the runs there are)."""
    lines = (SAMPLES / "pointer_collapse.jsonl").read_bytes().splitlines(keepends=True)
    long_line = tmp_path / "long.jsonl"
    long_line.write_bytes(b"".join(lines[:5]) + b'{"x":"' + b"a" * 3_000_000 + b'"}\n' + b"".join(lines[5:]))
    nothing = tmp_path / "nothing.jsonl"
    nothing.write_bytes(b"".join(line for line in lines if b'"grad_stats"' not in line and b'"task_balance"' not in line
                                 and b'"alert"' not in line))  # fmt: skip
    for log in (long_line, nothing, SAMPLES / "killed_midway.jsonl"):
        check = subprocess.run([*WATCH.split(), "check", str(log)], capture_output=True, text=True, cwd=REPO)
        assert follow_once("--once", log).returncode == check.returncode, (log, check.stdout)
        assert follow_once("--exit-on-end", log, timeout=30).returncode == check.returncode, log
    assert "verdict: no_measurements" in follow_once("--once", nothing).stdout
    typo = follow_once("--once", "--run", "typo", SAMPLES / "healthy.jsonl")
    assert typo.returncode == 2 and "no run 'typo'" in typo.stderr and "(runs: enhanced_simple_lstm-" in typo.stderr


def test_a_running_run_without_alerts_is_not_called_healthy(tmp_path):
    log = LogBuilder("live", t0=time.time()).start().grad(1, 0.3, 0.4).write(tmp_path / "live.jsonl")
    out = follow_once("--once", log).stdout
    assert "verdict: unterminated (no alert so far; no run_end yet)" in out and "verdict: healthy" not in out, out


SKEWED_TRAINER = """
import os, socket, sys, time
import torch
from moola.utils.monitoring import GradientMonitor

socket.gethostname = lambda: "other-host"  # another machine: no watcher here can see whether it still runs

log, skew, steps, end = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "end"
model = torch.nn.Linear(4, 2)
monitor = GradientMonitor(every_n_steps=1, log_path=log, clock=lambda: time.time() + skew)
for _ in range(steps):
    model(torch.randn(8, 4)).pow(2).mean().backward()
    monitor.on_before_optimizer_step(model)
    model.zero_grad()
    time.sleep(0.2)
if end:
    monitor.on_run_end()
else:  # killed: the process ends without a word (an exit through Python would end the run)
    os._exit(0)
"""


def skewed_trainer(log: Path, skew_s: float, steps: int, end: bool) -> subprocess.Popen:
    """A real trainer on another host, whose clock is ``skew_s`` seconds off the watcher's (its records'
    ``time``)."""
    return subprocess.Popen([sys.executable, "-c", SKEWED_TRAINER, str(log), str(skew_s), str(steps),
                             "end" if end else "open"], cwd=REPO)  # fmt: skip


@pytest.mark.parametrize("skew_s", [-3600.0, 3600.0])
@pytest.mark.parametrize("watcher", ["first", "after some history"])
def test_a_live_run_whose_writer_clock_is_an_hour_off_is_judged_on_its_own_clock(tmp_path, skew_s, watcher):
    """A trainer on another host an hour behind (or ahead), followed from its start or joined later: while its
    records keep coming, follow never calls the run stale (its history, an hour old by its own clock, gets the
    time of its next record to show it is alive); it ends with the run."""
    log = tmp_path / "skewed.jsonl"
    command = [*WATCH.split(), "follow", "--json", "--exit-on-end", "--stale-seconds", "1.5", str(log)]
    if watcher == "first":
        follow = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO)
        time.sleep(1.0)  # the watcher waits for the file
        trainer = skewed_trainer(log, skew_s, steps=20, end=True)
    else:
        trainer = skewed_trainer(log, skew_s, steps=20, end=True)
        while not log.exists() or log.stat().st_size < 1000:
            time.sleep(0.05)
        follow = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert trainer.wait(timeout=60) == 0
    out, _ = follow.communicate(timeout=60)
    events = [json.loads(line) for line in out.splitlines()]
    assert follow.returncode == 0, out
    assert not [e for e in events if e["event"] == "alert" and e["rule"] == rules.STALE], out
    assert [e["status"] for e in events if e["event"] == "status"][-1] == "completed"


def test_a_killed_runs_log_copied_into_a_followed_directory_is_stale_as_its_records_say(tmp_path):
    """Its records are an hour old: the first read of a file that appears is its history, not live records."""
    killed = tmp_path / "killed.jsonl"
    assert skewed_trainer(killed, -3600.0, steps=3, end=False).wait(timeout=60) == 0
    watched = tmp_path / "runs"
    watched.mkdir()
    follow = subprocess.Popen([*WATCH.split(), "follow", "--json", "--exit-on-end", str(watched)],
                              stdout=subprocess.PIPE, text=True, cwd=REPO)  # fmt: skip
    time.sleep(1.0)
    shutil.copy(killed, watched / "killed.jsonl")
    out, _ = follow.communicate(timeout=30)
    events = [json.loads(line) for line in out.splitlines()]
    (stale,) = [e for e in events if e["event"] == "alert" and e["rule"] == rules.STALE]
    assert stale["state"] == rules.FIRING and "No record for 1 h" in stale["message"], stale


def test_a_dead_run_whose_writer_clock_was_ahead_goes_stale_after_stale_seconds_not_an_hour_late(tmp_path):
    """Its records say they come from an hour in the future: they were written at the latest when read, so the
    run is stale --stale-seconds after that, the silence measured in seconds."""
    log = tmp_path / "dead.jsonl"
    assert skewed_trainer(log, 3600.0, steps=3, end=False).wait(timeout=60) == 0
    began = time.monotonic()
    follow = subprocess.run(
        [*WATCH.split(), "follow", "--json", "--exit-on-end", "--stale-seconds", "3", str(log)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    waited = time.monotonic() - began
    events = [json.loads(line) for line in follow.stdout.splitlines()]
    (stale,) = [e for e in events if e["event"] == "alert" and e["rule"] == rules.STALE]
    assert stale["state"] == rules.FIRING and "No record for 3 s" in stale["message"], stale
    assert 2.0 < waited < 30, waited


@pytest.mark.parametrize(
    "ahead",
    [lambda epoch: epoch == 3, lambda epoch: epoch >= 3, lambda epoch: epoch == 6],
    ids=["one record", "for good", "the last record"],
)
def test_a_run_that_stops_after_its_clock_jumped_an_hour_ahead_goes_stale_after_stale_seconds(tmp_path, ahead):
    """A writer whose clock jumped an hour ahead (for one record, for good, or at its last), then stopped:
    followed live, the run is stale --stale-seconds after its last record came. Before, the run's last time was
    the largest, an hour ahead ("last record 0 s ago", no stale alert for the hour); then the jump counted as an
    hour's wait between records, and the run went stale only after two. The wait between live records is taken
    from when they arrived."""
    log = LogBuilder("glitch", t0=time.time()).start()
    for epoch in range(1, 7):
        log.epoch(epoch)
        if ahead(epoch):
            log.records[-1]["time"] += 3600.0
    path = tmp_path / "glitch.jsonl"
    path.touch()
    began = time.monotonic()
    follow = subprocess.Popen([*WATCH.split(), "follow", "--json", "--exit-on-end", "--stale-seconds", "3", str(path)],
                              stdout=subprocess.PIPE, text=True, cwd=REPO)  # fmt: skip
    time.sleep(1.5)  # the watcher has read the empty file: every record comes live
    assert start_writer(replay_steps(log.lines(), 0.1), path).wait(timeout=30) == 0
    out, _ = follow.communicate(timeout=60)
    waited = time.monotonic() - began
    events = [json.loads(line) for line in out.splitlines()]
    (stale,) = [e for e in events if e["event"] == "alert" and e["rule"] == rules.STALE]
    assert stale["state"] == rules.FIRING and "No record for 3 s" in stale["message"], stale
    assert waited < 30, waited


def test_a_trainer_killed_while_followed_is_dead_within_seconds_and_fails(tmp_path):
    """kill -9 (what the OOM killer sends) leaves no run_end: the watcher on the trainer's host sees the process
    is gone, fires run_died (an error: sent by default) and --exit-on-end exits 1, without waiting to go stale.
    A run that ends normally while followed, its process exiting right after its run_end, never died."""
    log = tmp_path / "run.jsonl"
    command = [*WATCH.split(), "follow", "--json", "--exit-on-end", "--stale-seconds", "600", str(log)]
    follow = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO)
    trainer = start_trainer(log, 200)
    try:
        wait_for_epochs(log, 3)
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
        killed_at = time.monotonic()
        out, _ = follow.communicate(timeout=60)
    finally:
        trainer.kill()
        follow.kill()
    assert time.monotonic() - killed_at < 10 and follow.returncode == 1
    events = [json.loads(line) for line in out.splitlines()]
    (died,) = [e for e in events if e["event"] == "alert"]
    assert (died["rule"], died["severity"], died["state"]) == ("run_died", "error", "firing"), died
    assert f"(pid {trainer.pid} on " in died["message"] and "resume from the last checkpoint" in died["recommendation"]
    assert [e["status"] for e in events if e["event"] == "status"][-1] == "dead"

    ended = tmp_path / "ended.jsonl"
    follow = subprocess.Popen([*WATCH.split(), "follow", "--json", "--exit-on-end", str(ended)],
                              stdout=subprocess.PIPE, text=True, cwd=REPO)  # fmt: skip
    assert start_trainer(ended, 3).wait(timeout=120) == 0
    out, _ = follow.communicate(timeout=60)
    events = [json.loads(line) for line in out.splitlines()]
    assert not [e for e in events if e["event"] == "alert" and e["rule"] == "run_died"]
    assert follow.returncode == 0 and events[-1]["logs"][0]["status"] == "completed"


@pytest.mark.parametrize(("norm", "code"), [(float("nan"), 1), (0.3, 0)])
def test_follow_stopped_by_sigterm_exits_1_only_if_what_it_saw_fails(tmp_path, norm, code):
    """A CI job's timeout (SIGTERM) must not pass a run whose gradients were already non-finite; a healthy one
    stopped so is 0, as Ctrl-C leaves it."""
    log = LogBuilder().start().grad(1, norm, norm, {"encoder.weight_ih_l0": norm}).write(tmp_path / "run.jsonl")
    follow = subprocess.Popen([*WATCH.split(), "follow", "--exit-on-end", str(log)], stdout=subprocess.PIPE,
                              text=True, cwd=REPO)  # fmt: skip
    while "run-1 is running" not in follow.stdout.readline():
        pass
    follow.send_signal(signal.SIGTERM)
    follow.communicate(timeout=30)
    assert follow.returncode == code


def test_a_killed_run_that_a_resumed_run_supersedes_is_judged_alike_live_and_offline(tmp_path):
    """Killed, then restarted into the same log: live, its run_died fired, then resolved when the new run
    started (the training goes on), so it counts as a warning; check, reading it all at once, calls it
    unterminated. Both exit 0 once the new run completes."""
    log = tmp_path / "run.jsonl"
    follow = subprocess.Popen([*WATCH.split(), "follow", "--json", str(log)], stdout=subprocess.PIPE, text=True,
                              cwd=REPO)  # fmt: skip
    killed = start_trainer(log, 200)
    try:
        wait_for_epochs(log, 2)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        time.sleep(2.5)  # the watcher looks for writers every second
        assert start_trainer(log, 2).wait(timeout=120) == 0
        time.sleep(1.5)
        follow.send_signal(signal.SIGINT)
        out, _ = follow.communicate(timeout=30)
    finally:
        killed.kill()
        follow.kill()
    events = [json.loads(line) for line in out.splitlines()]
    died = [(e["state"], e["run"]) for e in events if e["event"] == "alert" and e["rule"] == "run_died"]
    first = died[0][1]
    assert died == [("firing", first), ("resolved", first)], died
    (summary,) = [e for e in events if e["event"] == "summary"]
    verdicts = {run["run"]: run["verdict"] for run in summary["logs"][0]["runs"]}
    assert verdicts[first] == "warning" and list(verdicts.values())[-1] in ("healthy", "warning")
    checked = subprocess.run([*WATCH.split(), "check", "--json", str(log)], capture_output=True, text=True,
                             cwd=REPO)  # fmt: skip
    assert checked.returncode == 0 and json.loads(checked.stdout)["runs"][0]["verdict"] == "unterminated"


def test_from_end_once_with_nothing_after_the_skipped_history_says_so(tmp_path):
    """Nothing was judged: not the lines --from-end skipped (here no log at all), nor anything after them."""
    path = tmp_path / "notes.txt"
    path.write_text("some notes\nnot a log\n")
    result = subprocess.run([*WATCH.split(), "follow", "--from-end", "--once", str(path)],
                            capture_output=True, text=True, timeout=60, cwd=REPO)  # fmt: skip
    assert result.returncode == 2 and "holds no record after what it held when followed" in result.stderr


def test_once_on_a_log_of_two_runs_names_the_run_that_failed(tmp_path):
    """The dashboard shows the log's latest run (healthy here); the run before it collapsed and fails the check:
    the output must say which run that was, not leave a healthy header beside exit 1."""
    failing, healthy = SAMPLES / "pointer_collapse.jsonl", SAMPLES / "healthy.jsonl"
    two = tmp_path / "two.jsonl"
    two.write_bytes(failing.read_bytes() + healthy.read_bytes())
    failing_run, healthy_run = (decode_record(path.read_bytes().splitlines()[0])["run"] for path in (failing, healthy))
    result = follow_once("--once", two)
    assert result.returncode == 1
    (line,) = [line for line in result.stdout.splitlines() if "not ok:" in line]
    assert f"{failing_run} (verdict=error" in line and healthy_run not in line, line
    assert "2 runs" in line
    both_ok = tmp_path / "both_ok.jsonl"
    both_ok.write_bytes(healthy.read_bytes() * 2)
    result = follow_once("--once", both_ok)
    assert result.returncode == 0 and "not ok:" not in result.stdout and "2 runs" in result.stdout


BOX_TOPS, BOX_BOTTOMS = "╭┏┌", "╰└"


def firing_alerts(log: Path) -> list[dict]:
    check = subprocess.run([*WATCH.split(), "check", "--json", str(log)], capture_output=True, text=True, cwd=REPO)
    return [alert for alert in json.loads(check.stdout)["alerts"] if alert["state"] == "firing"]


def dashboard_alerts(log: Path) -> list[str]:
    """The states of the rows of the Alerts table ``follow --once`` draws for ``log`` on a wide terminal."""
    once = subprocess.run([*WATCH.split(), "follow", "--once", str(log)], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "COLUMNS": "200"})  # fmt: skip
    return re.findall(r"^│ (firing|pending|resolved) ", once.stdout, flags=re.MULTILINE)


def test_an_80x24_terminal_shows_every_firing_alert_and_the_panels_and_says_what_it_left_out(terminal):
    """A review's case: at 80x24 the dashboard stopped mid-sentence after its second alert, with no panel and
    nothing saying so. Each firing alert gets a line (severity, rule, subject, the message or its start and an
    ellipsis), the panels are there, every box is closed, and the last line says what did not fit."""
    log = SAMPLES / "exploding_gradients.jsonl"  # more alerts than 24 lines hold beside the panels
    term = terminal(f"{WATCH} follow {log}", width=80, height=24)
    term.wait_for("… not shown (")  # the last line: the screen is drawn
    lines = term.screen().splitlines()
    screen = "\n".join(lines)
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines), screen
    for alert in firing_alerts(log):
        line = next((line for line in lines if line.split()[:3] == [alert["severity"], alert["rule"],
                                                                  alert["subject"]]), None)  # fmt: skip
        assert line is not None, (alert["rule"], screen)
        shown = line.rstrip().split(alert["subject"], 1)[1].strip()
        assert alert["message"] == shown or alert["message"].startswith(shown.removesuffix("…")), (shown, screen)
    assert "Gradients (epoch 20)" in screen and "Task balance (epoch 20)" in screen, screen
    assert "Layers (" in screen, screen
    assert sum(screen.count(c) for c in BOX_TOPS) == sum(screen.count(c) for c in BOX_BOTTOMS), screen
    last = [line for line in lines if line.strip()][-1]
    left_out = re.match(r"… not shown \(a taller terminal or --once shows it\): (\d+) more alerts?, ", last)
    assert left_out, screen
    on_screen = [line for line in lines if line.split()[:1] in (["critical"], ["error"], ["warning"])]
    assert len(on_screen) + int(left_out[1]) == len(dashboard_alerts(log)), screen
    assert "layer rows" in last, screen
    term.keys("C-c")
    assert term.exit_code() == 0


def test_a_folder_of_thirteen_logs_fits_an_80x24_terminal_one_line_per_run(tmp_path, terminal):
    """A review's case: the worst alert folded over ten lines per log, so 2 of 13 logs showed and the critical
    one was off-screen, unsaid. One line per run: every log is on the screen."""
    logs = sorted(SAMPLES.glob("*.jsonl"))
    for i in range(13):
        shutil.copy(logs[i % len(logs)], tmp_path / f"{i:02d}-{logs[i % len(logs)].stem[:12]}.jsonl")
    term = terminal(f"{WATCH} follow {tmp_path}", width=80, height=24)
    term.wait_for("13 logs")
    time.sleep(1.0)
    screen = term.screen()
    lines = screen.splitlines()
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines), screen
    for path in tmp_path.glob("*.jsonl"):
        assert path.name[:8] in screen, (path.name, screen)
    term.keys("C-c")


def test_folder_overview_at_80_columns_tells_runs_apart_and_ctrl_c_names_every_failing_run(tmp_path, terminal):
    """A review's case: at 80 columns (no run column) a log of two runs showed two rows alike, its file name
    twice; and at Ctrl-C the summary named the failing runs of that log only, not another log's failing run.
    Each row of a log of several runs now ends with its run's label (as analyze labels it), and the summary names
    every run that fails, as ``check DIR`` does."""
    failing, healthy = SAMPLES / "pointer_collapse.jsonl", SAMPLES / "healthy.jsonl"
    (tmp_path / "two.jsonl").write_bytes(failing.read_bytes() + healthy.read_bytes())
    shutil.copy(SAMPLES / "exploding_gradients.jsonl", tmp_path / "one.jsonl")
    shutil.copy(healthy, tmp_path / "ok.jsonl")
    term = terminal(f"{WATCH} follow {tmp_path}", width=80, height=24)
    term.wait_for("completed", count=4)
    rows = [line for line in term.screen().splitlines() if "two.jsonl" in line]
    assert len(rows) == 2 and rows[0] != rows[1], rows
    for row, run in zip(rows, (run_id(failing), run_id(healthy)), strict=True):  # each row ends with its run's id
        shown = row.split("two.jsonl …", 1)[1].split()[0]
        assert len(shown) >= 8 and run.endswith(shown), (run, rows)
    term.keys("C-c")
    assert term.exit_code() == 0
    said = term._tmux("capture-pane", "-p", "-J")  # the summary's long lines joined where the terminal wrapped them
    checked = subprocess.run([*WATCH.split(), "check", "--json", str(tmp_path)], capture_output=True, text=True,
                             cwd=REPO)  # fmt: skip
    assert checked.returncode == 1
    logs = [json.loads(line) for line in checked.stdout.splitlines()]
    failed = {(log["log"], run["run"]) for log in logs for run in log["runs"] if run["verdict"] == "error"}
    assert {Path(log).name for log, _run in failed} == {"one.jsonl", "two.jsonl"}
    for log, run in failed:
        assert re.search(rf"runs? in {re.escape(log)}; not ok: .*{re.escape(run)} \(verdict=error", said), said
    assert "ok.jsonl;" not in said and said.count("not ok:") == 2, said


@pytest.mark.parametrize("columns", [90, 200])
def test_a_folder_overview_cuts_long_names_in_the_middle_so_a_sweeps_rows_stay_apart(tmp_path, columns):
    """A review's case: a sweep's logs named by run id (``run-20261130-201416-6361.jsonl``) differ at the end; cut
    at their end, even at 200 columns, two runs begun in the same second looked the same. Names short of room
    now lose their middle, and the column is wider where the terminal is."""
    prefix = "run-20261130-201416-sweep-lr-0.001-"
    for pid in ("6361", "6377"):
        shutil.copy(SAMPLES / "healthy.jsonl", tmp_path / f"{prefix}{pid}.jsonl")
    result = subprocess.run([*WATCH.split(), "follow", "--once", str(tmp_path)], capture_output=True, text=True,
                            cwd=REPO, timeout=60, env={**os.environ, "COLUMNS": str(columns)})  # fmt: skip
    rows = [line.split("│")[1].strip() for line in result.stdout.splitlines() if line.startswith("│ run-")]
    assert len(rows) == 2 and rows[0].endswith("6361.jsonl") and rows[1].endswith("6377.jsonl"), result.stdout
    assert all(row.startswith("run-20261130-") for row in rows), rows
    if columns == 200:
        assert rows == [f"{prefix}6361.jsonl", f"{prefix}6377.jsonl"], rows


def test_once_on_a_folder_names_each_file_that_is_no_log_to_check(tmp_path):
    """Such a file makes ``follow --once DIR`` exit 2, as ``check DIR``: the output says which, not only the
    overview's row, cut to the terminal."""
    (tmp_path / "junk.jsonl").write_text("garbage\n")
    (tmp_path / "empty.jsonl").write_bytes(b"")
    shutil.copy(SAMPLES / "healthy.jsonl", tmp_path / "ok.jsonl")
    result = follow_once("--once", tmp_path)
    assert result.returncode == 2
    assert f"{tmp_path / 'junk.jsonl'} is not a moola log: no valid record (1 bad line)" in result.stdout
    assert f"{tmp_path / 'empty.jsonl'} holds no record yet: not a log to check" in result.stdout
    assert "ok.jsonl;" not in result.stdout


def test_a_folder_overview_shows_the_alert_that_decided_a_verdict_even_when_it_resolved(tmp_path):
    """A review's case: a row said verdict error beside a firing warning, the exploding error that decided the
    verdict having resolved. The row shows the alert that decided it, said to have resolved; of two alerts that
    decide it alike, the one firing now (the resolved one used to win on its rule)."""
    from logs import LogBuilder

    for name, mean in (("resolved", lambda peak: 1.5), ("firing", lambda peak: (1.5 + peak) / 2)):
        log = LogBuilder(name).start()
        for epoch in range(1, 10):  # a layer explodes for three samples, then settles; the mean norm stays large
            peak = 40.0 * epoch if epoch <= 3 else 1.5
            log.grad(epoch, mean(peak), peak, {"a": 1.5, "b": peak}).epoch(epoch)
        log.end().write(tmp_path / f"{name}.jsonl")
    result = follow_once("--once", tmp_path)
    assert result.returncode == 1

    def cells(log: str) -> list[str]:
        (row,) = [line for line in result.stdout.splitlines() if log in line and "│" in line]
        return [cell.strip() for cell in row.split("│")]

    resolved, firing = cells("resolved.jsonl"), cells("firing.jsonl")
    assert "error" in resolved and resolved[-2].startswith("resolved: Exploding gradients in 1 layer "), resolved
    # The mean norm's error fires (the run's error is now), the layer's resolved.
    assert "error" in firing and firing[-2].startswith("Mean gradient norm 60.75: exploding"), firing


@pytest.mark.parametrize("stop", ["C-c", "SIGTERM"])
def test_leaving_the_live_view_by_a_signal_prints_the_whole_view(terminal, stop):
    """The live view is on the terminal's alternate screen, gone when follow ends: Ctrl-C or a SIGTERM (the
    only ways to leave a plain follow) must leave the whole view printed, as --once prints it."""
    log = SAMPLES / "exploding_gradients.jsonl"
    term = terminal(f"{WATCH} follow {log}", width=80, height=24)
    term.wait_for("… not shown (")
    if stop == "C-c":
        term.keys("C-c")
    else:
        shell = term._tmux("list-panes", "-F", "#{pane_pid}").split()[0]  # the pane's shell runs follow
        follow = subprocess.run(["pgrep", "-P", shell], capture_output=True, text=True).stdout.split()[0]
        os.kill(int(follow), signal.SIGTERM)
    assert term.exit_code() == 0
    term.wait_for("Layers (8 of 13")  # the whole dashboard: its layer table is the full one
    assert "… not shown (" not in term.screen()


def test_a_200x50_terminal_shows_the_whole_dashboard_as_printed(terminal):
    """Where it all fits, the live view is the dashboard ``--once`` prints, line for line."""
    log = SAMPLES / "exploding_gradients.jsonl"
    live = terminal(f"{WATCH} follow {log}", width=200, height=50)
    printed = terminal(f"{WATCH} follow --once {log}", width=200, height=50)
    live.wait_for("Layers (8 of 13")
    printed.exit_code()
    age = re.compile(r"last record .*? ago")

    def shown(term: Terminal) -> list[str]:
        return [age.sub("last record", line).rstrip() for line in term.screen().splitlines()]

    whole = shown(printed)
    whole = whole[: max(i for i, line in enumerate(whole) if line.startswith("└")) + 1]  # the layer table's end
    assert "→ Reduce learning rate" in "\n".join(whole) and len(whole) > 40
    assert shown(live)[: len(whole)] == whole, "\n".join(shown(live))
    live.keys("C-c")
    assert live.exit_code() == 0


COMPRESS = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}


@pytest.mark.parametrize("suffix", list(COMPRESS))
def test_once_reads_a_compressed_log_decompressed_as_check_does(tmp_path, suffix):
    """A review's case: ``follow --once x.jsonl.gz`` called it "not a moola log: no valid record (75 bad lines)"
    (it read the compressed bytes), while check and the help say LOG may be compressed."""
    plain = LogBuilder().start()
    for epoch in (1, 2, 3):
        plain.grad(epoch, 0.3, 40.0 * epoch, {"a": 0.3, "b": 40.0 * epoch}).epoch(epoch)
    log = tmp_path / f"run.jsonl.{suffix}"
    log.write_bytes(COMPRESS[suffix](b"".join(plain.end().lines())))
    check = subprocess.run([*WATCH.split(), "check", "--json", str(log)], capture_output=True, text=True, cwd=REPO)
    once = follow_once("--once", "--json", log)
    summary = json.loads(once.stdout.splitlines()[-1])["logs"][0]
    assert summary["records"] == json.loads(check.stdout)["records"] == 8 and summary["bad_lines"] == 0, summary
    assert summary["verdict"] == "error" and once.returncode == check.returncode == 1, once.stderr
    shown = follow_once("--once", log)
    assert shown.returncode == 1 and "Exploding gradients in 1 layer" in shown.stdout, shown.stdout
    misnamed = tmp_path / "folder" / "run.jsonl"  # known by its first bytes, in a folder too
    misnamed.parent.mkdir()
    misnamed.write_bytes(log.read_bytes())
    in_folder = json.loads(follow_once("--once", "--json", misnamed.parent).stdout.splitlines()[-1])["logs"][0]
    assert in_folder == {**summary, "log": str(misnamed)}


def test_following_a_compressed_log_live_is_a_usage_error(tmp_path):
    """A compressed file cannot grow: following it would wait forever (it showed "waiting for records")."""
    log = tmp_path / "run.jsonl.gz"
    log.write_bytes(gzip.compress(b"".join(LogBuilder().start().epoch(1).lines())))
    result = subprocess.run([*WATCH.split(), "follow", str(log)], capture_output=True, text=True, cwd=REPO, timeout=30)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        f"moola-watch: error: {log} is gzip-compressed: a compressed log cannot grow, so there is nothing to follow; "
        "read it with follow --once, check or analyze\n"
    )


@pytest.mark.parametrize("content", [b"a,b\n1,2\n", bytes(range(256)) * 4], ids=["csv", "binary"])
def test_the_live_view_of_a_file_with_no_record_says_it_is_not_a_log(tmp_path, terminal, content):
    """A review's case: a CSV or binary file showed "waiting for records" forever, and Ctrl-C left no word that it
    is no log (exit 0: a stopped follow judges nothing)."""
    path = tmp_path / "data.jsonl"
    path.write_bytes(content)
    term = terminal(f"{WATCH} follow {path}", width=200)
    term.wait_for("is not a moola log: no valid record (")
    assert "waiting for records" not in term.screen()
    term.keys("C-c")
    assert term.exit_code() == 0
    term.wait_for(f"{path} is not a moola log: no valid record (")


def test_piped_or_json_follow_of_a_file_with_no_record_says_once_it_is_not_a_log(tmp_path):
    """Without a terminal the dashboard's word is not there: a CSV followed piped said nothing until Ctrl-C. Once
    its lines are read, one line (or one --json notice) says it is no log, and it is still watched."""
    path = tmp_path / "data.csv"
    path.write_bytes(b"a,b\n1,2\n3,4\n")
    said = "not a moola log: no valid record (3 bad lines); still watching it for records"
    for extra in ([], ["--json"]):
        follow = subprocess.Popen([*WATCH.split(), "follow", *extra, str(path)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=REPO)  # fmt: skip
        time.sleep(3.0)
        follow.send_signal(signal.SIGINT)
        out, err = follow.communicate(timeout=30)
        if extra:
            notices = [json.loads(line) for line in out.splitlines() if '"notice"' in line]
            assert [(n["kind"], n["message"]) for n in notices] == [("not_a_log", said)], out
        else:
            assert err.count(said) == 1 and err.startswith(f"moola-watch: {path}: {said}"), err


def test_a_damaged_compressed_log_in_a_followed_folder_is_said_and_the_rest_still_followed(tmp_path):
    """A review's case: one damaged gzip file (named ``*.jsonl``) in a folder ended ``follow DIR`` with a usage error,
    the other logs unjudged. Now its records before the damage are kept, one notice says why no more, ``--once``
    exits 2 (as ``check DIR``), and live the folder's other logs are still followed."""
    damaged = LogBuilder().start()
    for epoch in range(1, 41):
        damaged.grad(epoch, 0.3, 0.4, {"a": 0.3, "b": 0.4}).epoch(epoch)
    whole = gzip.compress(b"".join(damaged.end().lines()))
    (tmp_path / "damaged.jsonl").write_bytes(whole[: len(whole) * 2 // 3])
    good = tmp_path / "good.jsonl"
    good.write_bytes(b"".join(LogBuilder().start().grad(1, 0.3, 0.4, {"a": 0.3, "b": 0.4}).epoch(1).lines()))
    once = follow_once("--once", "--json", tmp_path)
    assert once.returncode == 2, once.stderr
    lines = [json.loads(line) for line in once.stdout.splitlines()]
    notices = [(n["log"], n["kind"]) for n in lines if n["event"] == "notice"]
    assert notices == [(str(tmp_path / "damaged.jsonl"), "unreadable")], lines
    logs = {Path(log["log"]).name: log for log in lines[-1]["logs"]}
    assert set(logs) == {"damaged.jsonl", "good.jsonl"} and logs["good.jsonl"]["records"] == 3
    assert 1 < logs["damaged.jsonl"]["records"] < 82, logs["damaged.jsonl"]  # those before the damage
    said = follow_once("--once", tmp_path)
    assert said.returncode == 2 and "damaged.jsonl: cannot be read to its end: it is gzip-compressed" in said.stderr
    assert f"{tmp_path / 'damaged.jsonl'} cannot be read to its end" in said.stdout and "not judged" in said.stdout
    follow = subprocess.Popen([*WATCH.split(), "follow", str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=REPO)  # fmt: skip
    time.sleep(3.0)
    with good.open("ab") as out:  # the live log goes on: its exploding layer is still told
        out.write(b"".join(LogBuilder().grad(2, 0.3, 40.0, {"a": 0.3, "b": 40.0}).lines()))
    time.sleep(3.0)
    follow.send_signal(signal.SIGINT)
    out, err = follow.communicate(timeout=30)
    assert "Exploding gradients in 1 layer" in out and "[good.jsonl]" in out, (out, err)
    assert err.count("cannot be read to its end") == 1, err


def test_a_damaged_compressed_rotated_part_of_a_followed_log_is_said_and_its_rows_are_not_judged(tmp_path):
    """A review's case: logrotate's ``compress`` layout (``run.jsonl.1.gz`` cut short beside the live ``run.jsonl``)
    still ended ``follow DIR`` with a usage error; and a damaged log with records before the damage showed a verdict
    (``stale``, ``error``) in the overview while the line under it said it was not judged."""
    lines = (SAMPLES / "pointer_collapse.jsonl").read_bytes().splitlines(keepends=True)
    whole = gzip.compress(b"".join(lines[:30]))
    (tmp_path / "run.jsonl.1.gz").write_bytes(whole[: len(whole) * 2 // 3])
    (tmp_path / "run.jsonl").write_bytes(b"".join(lines[30:]))
    shutil.copy(SAMPLES / "healthy.jsonl", tmp_path / "good.jsonl")
    once = follow_once("--once", tmp_path)
    assert once.returncode == 2, once.stderr
    said = f"{tmp_path / 'run.jsonl'}: cannot be read whole: {tmp_path / 'run.jsonl.1.gz'} is gzip-compressed"
    assert once.stderr.count(said) == 1, once.stderr
    rows = {line.split("│")[1].strip(): line for line in once.stdout.splitlines() if line.startswith("│")}
    assert "not judged" in rows["run.jsonl"] and "cannot be read whole" in rows["run.jsonl"], once.stdout
    assert "healthy" in rows["good.jsonl"]
