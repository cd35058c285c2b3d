"""Log rotation in logrotate's ``create`` mode (rename the log to ``.1``, create a new empty one) while the
trainer's own writer is appending: the writer notices only at its next identity check (up to 64 grad_stats lines
or 0.1 s later) and writes to the renamed file until then. A follower must read the old file to its end, then the
new one: no record lost or repeated, and in order."""

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from helpers import REPO
from torch import nn

from moola.utils.monitoring import GradientMonitor
from moola_watch.rules import Thresholds
from moola_watch.tail import LogTail, Notice, RecordItem

TRAINER_WRITER = Path(__file__).with_name("trainer_writer.py")
WATCH = [sys.executable, "-m", "moola_watch.cli"]
STEPS = 400
PACE_S = 0.002  # a record every 2 ms: dozens of them land in the renamed file before the writer notices


def start_writer(log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(TRAINER_WRITER), str(log), str(STEPS), str(PACE_S)], cwd=REPO,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def logrotate_create(log: Path) -> int:
    """What logrotate's ``create`` does: rename the log away, then create a new empty one. Returns how many
    lines the old file held at the rename."""
    rotated = log.with_name(log.name + ".1")
    os.rename(log, rotated)
    with open(log, "x"):
        pass
    return rotated.read_bytes().count(b"\n")


def wait_for_lines(log: Path, count: int, writer: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not (log.exists() and log.read_bytes().count(b"\n") >= count):
        assert writer.poll() is None and time.monotonic() < deadline, "the writer ended before the rotation"
        time.sleep(0.002)


def lines_in(*paths: Path) -> int:
    return sum(path.read_bytes().count(b"\n") for path in paths)


def test_follow_keeps_the_records_the_writer_put_in_the_renamed_file(tmp_path):
    log = tmp_path / "train.jsonl"
    follow = subprocess.Popen([*WATCH, "follow", "--json", "--exit-on-end", str(log)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert json.loads(follow.stdout.readline())["kind"] == "waiting"  # the follower is up before the writer
        writer = start_writer(log)
        wait_for_lines(log, 100, writer)
        at_rename = logrotate_create(log)
        assert writer.wait(timeout=30) == 0, writer.stderr.read()
        out, err = follow.communicate(timeout=30)
    finally:
        follow.kill()
    old, new = log.with_name("train.jsonl.1"), log
    assert lines_in(old) > at_rename, "the writer put nothing in the renamed file: the case was not exercised"
    assert lines_in(old, new) == STEPS + 2
    summary = json.loads(out.splitlines()[-1])
    assert summary["event"] == "summary", out
    (report,) = summary["logs"]
    assert report["records"] == STEPS + 2 and report["bad_lines"] == 0, (report["records"], err)
    assert [run["status"] for run in report["runs"]] == ["completed"]  # one run, read once, ended


def test_tail_reads_the_renamed_file_to_its_end_then_the_new_one_in_order(tmp_path):
    log = tmp_path / "train.jsonl"
    tail = LogTail(log)
    items = tail.poll()
    writer = start_writer(log)
    rotated = False
    while writer.poll() is None:
        items += tail.poll()
        if not rotated and log.exists() and log.read_bytes().count(b"\n") >= 100:
            at_rename, rotated = logrotate_create(log), True
        time.sleep(0.003)
    deadline = time.monotonic() + 5  # after the writer ends, the follower may wait out the old file's quiet time
    while time.monotonic() < deadline and not tail_on_new_file(items):
        items += tail.poll()
        time.sleep(0.02)
    items += tail.poll()
    tail.close()
    assert writer.returncode == 0 and rotated
    assert lines_in(log.with_name("train.jsonl.1")) > at_rename
    records = [item.record for item in items if isinstance(item, RecordItem)]
    assert [r["kind"] for r in records] == ["run_start"] + ["grad_stats"] * STEPS + ["run_end"]
    assert [r["step"] for r in records[1:-1]] == list(range(STEPS))
    assert [item.event for item in items if isinstance(item, Notice)].count("rotated") == 1


def tail_on_new_file(items: list) -> bool:
    return any(isinstance(item, Notice) and item.event == "rotated" for item in items)


def test_a_renamed_file_is_left_only_when_the_new_one_has_data_or_the_old_one_has_been_quiet(tmp_path):
    """The two ways the writer is known to have moved on, on a clock the test sets."""
    from logs import LogBuilder

    lines = LogBuilder("r").start().grad(1, 0.3, 0.4).grad(2, 0.3, 0.4).grad(3, 0.3, 0.4).lines()
    log, old = tmp_path / "train.jsonl", tmp_path / "train.jsonl.1"
    now = [0.0]
    tail = LogTail(log, retire_quiet_s=1.0, clock=lambda: now[0])
    log.write_bytes(lines[0])
    assert len(tail.poll()) == 1
    logrotate_create(log)
    with open(old, "ab") as late:  # the writer has not noticed yet
        late.write(lines[1])
    assert [i.record["epoch"] for i in tail.poll() if isinstance(i, RecordItem)] == [1]
    now[0] = 0.9
    with open(old, "ab") as late:
        late.write(lines[2])
    assert [i.record["epoch"] for i in tail.poll() if isinstance(i, RecordItem)] == [2]  # growing: still on it
    now[0] = 1.8
    assert tail.poll() == []  # quiet for 0.9 s only
    now[0] = 2.0
    assert [i.event for i in tail.poll() if isinstance(i, Notice)] == ["rotated"]  # quiet 1.1 s, new one empty
    log.write_bytes(lines[3])
    assert [i.record["epoch"] for i in tail.poll() if isinstance(i, RecordItem)] == [3]
    logrotate_create(log)  # again; this time the writer moved on at once
    log.write_bytes(lines[0])
    assert [type(i).__name__ for i in tail.poll()] == ["Notice", "RecordItem"]  # no waiting when the new has data
    tail.close()


def train_rotating(log: Path, steps: int, rotate_at: int, rotate: Callable[[], object],
                   thresholds: Thresholds | None = None) -> list[str]:  # fmt: skip
    """A monitored training loop of ``steps`` steps writing ``log``, calling ``rotate`` after step ``rotate_at``
    (what logrotate does to the file meanwhile); returns the monitor's warnings."""
    torch.manual_seed(0)
    warnings: list[str] = []
    model = nn.Linear(4, 2)
    with GradientMonitor(every_n_steps=1, log_path=log, thresholds=thresholds, warn=warnings.append) as monitor:
        for step in range(steps):
            model.zero_grad()
            model(torch.randn(8, 4)).pow(2).mean().backward()
            monitor.on_before_optimizer_step(model)
            if step == rotate_at:
                rotate()
    return warnings


def test_a_rotated_logs_new_file_opens_with_the_runs_start_and_the_run_goes_on(tmp_path):
    """The trainer's monitor starts the new file with its run_start: the new file alone is judged by the run's
    own thresholds, and read after the old one it is the same run going on, not a restart."""
    log = tmp_path / "train.jsonl"
    warnings = train_rotating(log, 100, 30, lambda: logrotate_create(log), Thresholds(exploding=5.0))
    assert warnings == [f"WARNING: gradient log {log} was deleted or replaced; writing a new file there"]
    old, new = log.with_name("train.jsonl.1"), log
    first = json.loads(new.read_bytes().splitlines()[0])
    assert first == {**json.loads(old.read_bytes().splitlines()[0]), "continued": True}
    check = [*WATCH, "check", "--json"]
    alone = json.loads(subprocess.run([*check, str(new)], cwd=REPO, capture_output=True, text=True).stdout)
    assert alone["runs"][0]["thresholds_from"] == "recorded in run_start"
    assert alone["runs"][0]["thresholds"]["exploding"] == 5.0
    both = tmp_path / "both.jsonl"
    both.write_bytes(old.read_bytes() + new.read_bytes())
    joined = json.loads(subprocess.run([*check, str(both)], cwd=REPO, capture_output=True, text=True).stdout)
    assert [run["run"] for run in joined["runs"]] == [first["run"]]  # one run: the header is not a restart
    assert joined["runs"][0]["records"] == lines_in(old, new) - 1 and joined["runs"][0]["status"] == "completed"


def test_a_log_truncated_under_the_writer_starts_again_with_the_runs_start(tmp_path):
    """logrotate's copytruncate: the log is copied away and truncated in place (same inode). The writer's next
    line lands at the start of the empty file; the run's run_start goes back in front of it."""
    log = tmp_path / "train.jsonl"

    def copytruncate() -> None:
        shutil.copy(log, log.with_name("train.jsonl.1"))
        os.truncate(log, 0)

    warnings = train_rotating(log, 60, 30, copytruncate, Thresholds(exploding=5.0))
    assert warnings == [f"WARNING: gradient log {log} was truncated under the writer; writing on from its start"]
    records = [json.loads(line) for line in log.read_bytes().splitlines()]
    assert records[0]["kind"] == "run_start" and records[0]["continued"] is True
    assert [r["step"] for r in records if r["kind"] == "grad_stats"] == list(range(32, 61))
    check = [*WATCH, "check", "--json", str(log)]
    alone = json.loads(subprocess.run(check, cwd=REPO, capture_output=True, text=True).stdout)
    assert alone["runs"][0]["thresholds_from"] == "recorded in run_start"


def test_a_folder_that_also_follows_the_rotated_file_sees_the_run_go_on_in_the_new_one(tmp_path):
    """Rotated to another *.jsonl name of the followed folder, the old file is a log of its own whose run never
    ends there: its part of the run has ended (continued in the new file), not gone stale."""
    log = tmp_path / "train.jsonl"

    def rename() -> None:
        os.rename(log, tmp_path / "train-1.jsonl")
        time.sleep(0.15)  # the writer checks its path every 0.1 s: the rest goes to the new file

    train_rotating(log, 40, 20, rename)
    time.sleep(1.0)  # older than the staleness bound below, with no run_end in the renamed file
    follow = subprocess.run([*WATCH, "follow", "--once", "--stale-seconds", "0.5", str(tmp_path)], cwd=REPO,
                            capture_output=True, text=True, env={**os.environ, "COLUMNS": "160"})  # fmt: skip
    assert follow.returncode == 0, follow.stderr
    rows = {line.split()[1]: line for line in follow.stdout.splitlines() if "train" in line and "│" in line}
    assert "continued" in rows["train-1.jsonl"] and "stale" not in follow.stdout, follow.stdout
    assert "completed" in rows["train.jsonl"]
