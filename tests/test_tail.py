"""LogTail against a real writer process: every complete valid line is delivered exactly once."""

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from logs import LogBuilder

from moola_watch.tail import BadLine, LineDecoder, LogTail, Notice, RecordItem, Waker, last_run_start, read_log

WRITER = Path(__file__).with_name("log_writer.py")


def records(n: int, run: str = "r", t0: float = 1_700_000_000.0) -> list[bytes]:
    log = LogBuilder(run, t0)
    for i in range(n):
        log.epoch(i)
    return log.lines()


def append(data: bytes) -> list:
    return ["append", data.hex()]


def follow(path: Path, steps: list, *, poll_every: float = 0.003) -> tuple[list, subprocess.CompletedProcess]:
    """Run the writer on ``path`` while polling a LogTail; return every item seen."""
    tail = LogTail(path)
    items = tail.poll()
    writer = subprocess.Popen([sys.executable, str(WRITER), json.dumps(steps), str(path)])
    while writer.poll() is None:
        items += tail.poll()
        time.sleep(poll_every)
    items += tail.poll()
    tail.close()
    assert writer.returncode == 0
    return items, writer


def delivered(items) -> list[dict]:
    return [item.record for item in items if isinstance(item, RecordItem)]


def events(items) -> list[str]:
    return [item.event for item in items if isinstance(item, Notice)]


GAP = ["sleep", 0.08]  # lets the reader see each phase, as a live file grows over time


def test_partial_lines_are_held_back_until_their_newline(tmp_path):
    lines = records(5)
    steps = []
    for line in lines:
        steps += [append(line[:7]), ["sleep", 0.02], append(line[7:20]), ["sleep", 0.02], append(line[20:])]
    items, _ = follow(tmp_path / "log.jsonl", steps)
    assert [r["epoch"] for r in delivered(items)] == [0, 1, 2, 3, 4]
    assert not [i for i in items if isinstance(i, BadLine)]


def test_missing_file_that_appears_later(tmp_path):
    items, _ = follow(tmp_path / "later.jsonl", [["sleep", 0.1], *[append(line) for line in records(3)]])
    assert events(items)[0] == "waiting" and "opened" in events(items)
    assert len(delivered(items)) == 3


def test_truncation_then_new_content(tmp_path):
    old, new = records(6, "old"), records(2, "new", t0=1_800_000_000.0)
    steps = [append(b"".join(old)), GAP, ["truncate"], append(b"".join(new)), GAP]
    items, _ = follow(tmp_path / "log.jsonl", steps)
    assert "truncated" in events(items)
    assert [r["run"] for r in delivered(items)] == ["old"] * 6 + ["new"] * 2


def test_truncate_and_regrow_past_the_old_size_is_detected(tmp_path):
    old, new = records(2, "old"), records(10, "new", t0=1_800_000_000.0)
    steps = [append(b"".join(old)), GAP, ["truncate"], append(b"".join(new)), GAP]
    items, _ = follow(tmp_path / "log.jsonl", steps)
    assert "truncated" in events(items)
    assert [r["run"] for r in delivered(items)] == ["old"] * 2 + ["new"] * 10


def test_rotation_drains_the_old_file_then_reads_the_new(tmp_path):
    first, second = records(4, "a"), records(3, "b", t0=1_800_000_000.0)
    steps = [append(b"".join(first[:2])), GAP, append(b"".join(first[2:])), ["rotate"], append(b"".join(second)), GAP]
    items, _ = follow(tmp_path / "log.jsonl", steps)
    assert "rotated" in events(items)
    assert [r["run"] for r in delivered(items)] == ["a"] * 4 + ["b"] * 3


def test_delete_and_recreate(tmp_path):
    first, second = records(3, "a"), records(3, "b", t0=1_800_000_000.0)
    steps = [append(b"".join(first)), GAP, ["delete"], GAP, append(b"".join(second)), GAP]
    items, _ = follow(tmp_path / "log.jsonl", steps)
    assert events(items).count("deleted") == 1 and events(items)[-1] == "opened"
    assert [r["run"] for r in delivered(items)] == ["a"] * 3 + ["b"] * 3


def test_garbage_and_invalid_utf8_in_the_middle_are_counted_with_line_numbers(tmp_path):
    good = records(4)
    junk = [b"not json at all\n", b"\xff\xfe\xfd{}\n", b'{"schema": 1, "kind": "epoch"}\n', b"\n"]
    steps = [append(good[0]), append(junk[0]), append(good[1]), append(junk[1]), GAP, append(junk[2])]
    steps += [append(good[2]), append(junk[3]), append(good[3])]
    items, _ = follow(tmp_path / "log.jsonl", steps)
    assert len(delivered(items)) == 4
    bad = [(i.line_no, i.rejected.category) for i in items if isinstance(i, BadLine)]
    assert bad == [(2, "bad_json"), (4, "bad_utf8"), (5, "invalid")]


def test_over_long_line_is_skipped_without_buffering_it(tmp_path):
    decoder = LineDecoder("x", max_line=100)
    good = records(2)
    items = decoder.feed(good[0] + b"y" * 60)
    items += decoder.feed(b"y" * 5000)
    assert decoder.pending_bytes == 5060 and len(decoder._partial) <= 101
    items += decoder.feed(b"y\n" + good[1])
    assert [type(i).__name__ for i in items] == ["RecordItem", "BadLine", "RecordItem"]
    assert items[1].rejected.category == "too_long" and "5061 bytes" in items[1].rejected.reason


def test_from_end_skips_history_and_a_half_written_line(tmp_path):
    path = tmp_path / "log.jsonl"
    old = records(3)
    path.write_bytes(b"".join(old) + old[0][:10])
    tail = LogTail(path, from_end=True)
    assert delivered(tail.poll()) == []
    with path.open("ab") as handle:
        handle.write(old[0][10:] + records(1, "new")[0])
    assert [r["run"] for r in delivered(tail.poll())] == ["new"]
    assert not [i for i in tail.poll() if isinstance(i, BadLine)]


def test_read_log_reports_a_cut_off_last_line(tmp_path):
    path = tmp_path / "log.jsonl"
    good = records(3)
    path.write_bytes(b"".join(good) + good[0][:15])
    items = list(read_log(path, chunk_size=17))
    assert len(delivered(items)) == 3 and items[-1].rejected.category == "cut_off"


def test_waker_is_woken_by_a_write_in_the_directory(tmp_path):
    waker = Waker([tmp_path], interval=5.0)
    try:
        assert waker.mode == "watchdog"
        began = time.monotonic()
        subprocess.run([sys.executable, str(WRITER), json.dumps([append(records(1)[0])]), str(tmp_path / "x.jsonl")])
        assert waker.wait() is True and time.monotonic() - began < 4.0
    finally:
        waker.stop()
    polling = Waker([tmp_path], poll=True, interval=0.01)
    assert polling.mode == "poll" and polling.wait() is False


def test_watchdogs_own_stop_race_error_is_not_shown_but_its_other_errors_are(tmp_path, caplog):
    waker = Waker([tmp_path], interval=5.0)
    waker.stop()
    inotify = logging.getLogger("watchdog.observers.inotify")
    inotify.error("InotifyEmitter.queue_events() called when the thread is inactive")
    inotify.error("inotify watch limit reached")
    assert [record.getMessage() for record in caplog.records] == ["inotify watch limit reached"]


def test_a_big_backlog_is_read_a_chunk_per_poll_and_delivered_once(tmp_path):
    path = tmp_path / "backlog.jsonl"
    lines = records(40_000)
    path.write_bytes(b"".join(lines))
    tail = LogTail(path)
    first = tail.poll()
    assert tail.behind and 0 < len(first) < len(lines)
    items = first
    while tail.behind:
        items += tail.poll()
    items += tail.poll()
    assert [r["epoch"] for r in delivered(items)] == list(range(40_000))


def test_the_last_run_start_is_found_backwards_across_chunks(tmp_path):
    """Two runs; an alert whose message names run_start; a line being written at the end; chunks far smaller
    than a line: the second run's run_start, whole, and nothing for a log without one."""
    first, second = LogBuilder("first").start().epoch(1), LogBuilder("second").start().epoch(1).epoch(2)
    second.add("alert", rule="stale", severity="warning", state="firing", subject="run",
               message='no "run_start" here', recommendation="")  # fmt: skip
    log = tmp_path / "two.jsonl"
    log.write_bytes(b"".join(first.lines() + second.lines()) + b'{"schema":1,"kind":"run_start","run":"cut')
    fd = os.open(log, os.O_RDONLY)
    try:
        for chunk in (7, 64, 1 << 20):
            found = last_run_start(fd, log.stat().st_size, chunk=chunk)
            assert found is not None and (found["run"], found["kind"]) == ("second", "run_start"), chunk
        history = len(b"".join(first.lines()))
        assert last_run_start(fd, history, chunk=5)["run"] == "first"
        assert last_run_start(fd, len(first.lines()[0]) - 1, chunk=5) is None  # no whole line before that
    finally:
        os.close(fd)
