"""`moola-watch check` as a CI gate, through the real CLI: lines nobody judged are no pass, a reader closing the pipe
early changes nothing, a rotated log is read whole, stdin and compressed logs are read, and a run no log holds is
an error that every output shows."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from helpers import REPO, run_cli
from logs import LogBuilder, collapse_scenario, healthy_scenario

from moola_watch import sources


def watch(*args: object, **kwargs) -> subprocess.CompletedProcess:
    return run_cli("moola_watch.cli", *map(str, args), **kwargs)


def check_json(*args: object, **kwargs) -> tuple[subprocess.CompletedProcess, list[dict]]:
    result = watch("check", "--json", *args, **kwargs)
    return result, [json.loads(line) for line in result.stdout.splitlines()]


def with_line(builder: LogBuilder, index: int, line: bytes) -> bytes:
    """The builder's log with ``line`` put before its record ``index``."""
    lines = builder.lines()
    return b"".join([*lines[:index], line, *lines[index:]])


# ------------------------------------------------------------------------------------------------ bad lines


def no_std(builder: LogBuilder) -> bytes:
    """Every grad_stats record without its std_norm: none of them is judged."""
    for record in builder.records:
        if record["kind"] == "grad_stats":
            del record["std_norm"]
    return b"".join(builder.lines())


def newer_schema(builder: LogBuilder) -> bytes:
    """A second run, written by a newer writer: none of its records is judged."""
    newer = collapse_scenario()
    for record in newer.records:
        record["schema"] = 2
        record["run"] = "newer"
    return b"".join(builder.lines() + newer.lines())


def garbage(builder: LogBuilder) -> bytes:
    return b"".join(builder.lines()) + b"not a record\n" * 3


@pytest.mark.parametrize(
    ("make", "count", "reason"),
    [
        (no_std, 4, "grad_stats record has no 'std_norm'"),
        (newer_schema, len(collapse_scenario().records), "schema 2 is newer than this reader (1)"),
        (garbage, 3, "not JSON"),
    ],
    ids=["field_missing", "newer_schema", "garbage"],
)
def test_lines_nobody_judged_fail_the_log_unless_max_bad_lines_accepts_them(tmp_path, make, count, reason):
    log = tmp_path / "log.jsonl"
    log.write_bytes(make(healthy_scenario()))
    result = watch("check", log)
    assert result.returncode == 1, result.stdout
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"FAIL  {log}  verdict=")
    assert f"bad_lines={count} ({count} lines not judged, the first at line " in first and reason in first
    assert first.endswith(f"; --max-bad-lines {count} accepts them)")

    result, (report,) = check_json(log)
    assert result.returncode == 1
    assert (report["bad_lines"], report["bad_lines_counted"], report["max_bad_lines"], report["bad_lines_fail"]) == (
        count, count, 0, True,
    )  # fmt: skip
    result, (report,) = check_json("--max-bad-lines", count, log)
    assert report["bad_lines_fail"] is False and result.returncode in (0, 3)  # (no_std: nothing left measured)
    assert f"accepted: --max-bad-lines {count}" in report["bad_lines_summary"]
    assert watch("check", "--max-bad-lines", count - 1, log).returncode == 1


def test_max_bad_lines_is_read_from_the_config_and_the_flag_beats_it(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_bytes(garbage(healthy_scenario()))
    config = tmp_path / "moola-watch.toml"
    config.write_text("max-bad-lines = 3\n[thresholds]\nwindow = 10\n")
    assert watch("check", "--config", config, log).returncode == 0
    assert watch("check", "--config", config, "--max-bad-lines", 2, log).returncode == 1
    config.write_text("max_bad_lines = -1\n")
    result = watch("check", "--config", config, log)
    assert result.returncode == 2 and "max-bad-lines must be a whole number of at least 0, got -1" in result.stderr
    config.write_text("[thresholds]\nmax-bad-lines = 3\n")  # in the table: where to put it instead
    result = watch("check", "--config", config, log)
    assert result.returncode == 2 and "(max-bad-lines goes at the top of the file, before any table)" in result.stderr


def test_only_a_cut_off_last_line_is_not_counted(tmp_path):
    """A writer killed mid-write leaves its last line cut: normal. The same cut line with more after it is not."""
    healthy = healthy_scenario()
    cut = healthy.lines()[-1][:30]
    log = tmp_path / "killed.jsonl"
    log.write_bytes(b"".join(healthy.lines()) + cut)
    result = watch("check", log)
    assert result.returncode == 0, result.stdout
    assert "bad_lines=1 (a line cut off mid-write (a writer stopped): not counted)" in result.stdout
    result, (report,) = check_json(log)
    assert (report["bad_lines"], report["bad_lines_counted"], report["bad_lines_fail"]) == (1, 0, False)
    middle = tmp_path / "middle.jsonl"
    middle.write_bytes(with_line(healthy, 5, cut + b"\n"))
    assert watch("check", middle).returncode == 1


def test_a_line_cut_by_a_crash_then_a_new_run_appended_by_a_real_writer_is_not_counted(tmp_path):
    """A trainer killed mid-write, then resumed into the same log: the writer ends the cut line with a newline
    before its run_start. That cut line is the crash's, not a record lost from a run that went on."""
    torch = pytest.importorskip("torch")
    from moola.utils.monitoring import GradientMonitor

    log = tmp_path / "resumed.jsonl"
    log.write_bytes(b"".join(healthy_scenario().lines()) + healthy_scenario().lines()[-1][:30])
    model = torch.nn.Linear(4, 2)
    with GradientMonitor(every_n_steps=1, log_path=log, echo=lambda _line: None) as monitor:
        for _step in range(3):
            model(torch.randn(8, 4)).pow(2).mean().backward()
            monitor.on_before_optimizer_step(model)
            model.zero_grad()
    result, (report,) = check_json(log)
    assert result.returncode == 0 and report["bad_lines"] == 1 and report["bad_lines_counted"] == 0, report
    assert report["bad_line_categories"] == {"cut_off": 1}
    assert "cut off by a crash before a new run began" in report["bad_line_details"][0]["reason"]
    junk = tmp_path / "junk.jsonl"  # a line that never began as a record is no crash's: it counts
    junk.write_bytes(b"".join(healthy_scenario().lines()) + b"this is not json at all\n" + log.read_bytes())
    result, (report,) = check_json(junk)
    assert result.returncode == 1 and report["bad_lines_counted"] == 1, report


def test_a_log_whose_lines_a_shipper_sent_twice_is_judged_as_the_log_it_copies(tmp_path):
    """An at-least-once log shipper (or `awk '{print; print}'`): every line twice in a row. One pre-clip spike
    must not be confirmed by its own copy, nor the repeated run_start make a second run."""
    log = LogBuilder().start()
    for step in range(1, 13):
        peak = 12.0 if step == 6 else 0.8
        log.grad(step, 0.3, peak, {"encoder.weight": 0.3, "head.weight": peak})
    once = tmp_path / "once.jsonl"
    log.end().write(once)
    twice = tmp_path / "twice.jsonl"
    twice.write_bytes(b"".join(line + line for line in log.lines()))
    (_, (original,)), (result, (copied,)) = check_json(once), check_json(twice)
    assert result.returncode == 0 and original["verdict"] == copied["verdict"] and len(copied["runs"]) == 1, copied
    assert copied["bad_line_categories"] == {"repeated": len(log.lines())} and copied["bad_lines_counted"] == 0
    assert "the same as the line before (sent twice): taken once, not counted" in watch("check", twice).stdout


def test_junit_fails_a_log_whose_bad_lines_fail_it(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_bytes(garbage(healthy_scenario()))
    junit = tmp_path / "junit.xml"
    assert watch("check", "--junit", junit, log).returncode == 1
    root = ET.parse(junit).getroot()
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("2", "1", "0")
    (failure,) = root.iter("failure")
    assert failure.get("type") == "bad_lines" and failure.get("message").startswith("bad_lines=3: 3 lines not judged")
    assert failure.text.startswith(f"line {len(healthy_scenario().records) + 1}: not JSON")
    assert watch("check", "--max-bad-lines", 3, "--junit", junit, log).returncode == 0
    assert ET.parse(junit).getroot().get("failures") == "0"


def test_follow_once_and_exit_on_end_judge_bad_lines_as_check_does(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_bytes(garbage(healthy_scenario()))
    once = watch("follow", "--once", log, timeout=60)
    assert once.returncode == 1
    assert f"{log}: bad_lines=3 (3 lines not judged" in " ".join(once.stdout.split())
    assert watch("follow", "--once", "--max-bad-lines", 3, log, timeout=60).returncode == 0
    assert watch("follow", "--exit-on-end", "--poll", log, timeout=60).returncode == 1
    assert watch("follow", "--exit-on-end", "--poll", "--max-bad-lines", 3, log, timeout=60).returncode == 0


# ------------------------------------------------------------------------------------------------ broken pipe


def closed_early(*args: object, command: str = "check") -> tuple[int, str]:
    """Run check (or ``command``) with stdout a real pipe whose reader closes it after a few bytes; its exit code
    and stderr."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    process = subprocess.Popen(
        [sys.executable, "-m", "moola_watch.cli", command, *map(str, args)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert process.stdout.read(20)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    return process.wait(timeout=120), stderr


def test_a_reader_closing_the_pipe_early_changes_neither_the_exit_code_nor_the_junit_file(tmp_path):
    healthy = [healthy_scenario().write(tmp_path / f"healthy{i:02}.jsonl") for i in range(12)]
    collapse = collapse_scenario().write(tmp_path / "zz_collapse.jsonl")  # judged last, after the reader left
    junit = tmp_path / "junit.xml"
    code, stderr = closed_early("--json", "--junit", junit, *healthy, collapse)
    assert code == 1 and "Traceback" not in stderr and "Broken" not in stderr, stderr
    root = ET.parse(junit).getroot()
    assert (root.get("tests"), root.get("failures")) == ("13", "1")
    code, stderr = closed_early(*healthy)  # text: Rich's own handling exited 1, whatever the verdict
    assert code == 0 and "Traceback" not in stderr, stderr
    code, _ = closed_early(*healthy, collapse)
    assert code == 1


@pytest.mark.parametrize("output", [[], ["--json"]], ids=["text", "json"])
def test_follow_once_keeps_its_exit_code_when_its_reader_leaves_early(tmp_path, output):
    """follow --once judges a log as check does: its reader leaving (`| head -1` under pipefail) gave 1 for a
    healthy log, or 0 for a failing one."""
    healthy = healthy_scenario().write(tmp_path / "healthy.jsonl")
    collapse = collapse_scenario().write(tmp_path / "collapse.jsonl")
    assert closed_early("--once", *output, healthy, command="follow")[0] == 0
    assert closed_early("--once", *output, collapse, command="follow")[0] == 1


# ------------------------------------------------------------------------------------------------ rotated logs


def rotated(
    folder: Path, names: tuple[str, str, str] = ("run.jsonl.2.gz", "run.jsonl.1", "run.jsonl")
) -> tuple[Path, bytes]:
    """A collapsing run rotated twice, logrotate's way (the oldest part compressed), into parts of these
    ``names``, oldest first: each new file opens with the run's run_start marked continued; the newest holds only
    that and the run_end. Also the parts joined."""
    records = collapse_scenario().lines()
    header = json.dumps({**json.loads(records[0]), "continued": True}).encode() + b"\n"
    middle = len(records) // 2
    parts = dict(zip(names, (b"".join(records[:middle]), header + b"".join(records[middle:-1]), header + records[-1]),
                     strict=True))  # fmt: skip
    folder.mkdir()
    for name, data in parts.items():
        (folder / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return folder, b"".join(parts.values())


def test_a_folder_reads_a_rotated_logs_parts_oldest_first_as_one_log(tmp_path):
    folder, joined = rotated(tmp_path / "runs")
    whole = tmp_path / "cat.jsonl"
    whole.write_bytes(joined)
    result, (report,) = check_json(folder)
    _, (expected,) = check_json(whole)
    assert result.returncode == 1 and report["verdict"] == expected["verdict"] == "error"
    assert report["log"] == str(folder / "run.jsonl")
    assert report["parts"] == [str(folder / name) for name in ("run.jsonl.2.gz", "run.jsonl.1", "run.jsonl")]
    assert report["alerts"] == expected["alerts"] and report["records"] == expected["records"]
    text = watch("check", folder).stdout.splitlines()[0]
    assert text.startswith(f"FAIL  {folder / 'run.jsonl'}  parts=run.jsonl.2.gz,run.jsonl.1,run.jsonl  verdict=error")


@pytest.mark.parametrize(
    "dates",
    [("20241231.gz", "20250101"), ("2024-12-31.gz", "2025-01-01"), ("1735603200.gz", "1735689600")],
    ids=["%Y%m%d", "%Y-%m-%d", "%s"],
)
def test_logrotates_dated_parts_are_read_oldest_date_first(tmp_path, dates):
    """logrotate's ``dateext`` (RHEL's default) names parts by date, in its ``dateformat``: read in date order
    before the current file, whatever order the folder lists them in. Before, ``run.jsonl-2025-01-01`` was not a
    part at all: only the current file was judged (healthy, where the older parts hold a collapse)."""
    names = (f"run.jsonl-{dates[0]}", f"run.jsonl-{dates[1]}", "run.jsonl")
    folder, joined = rotated(tmp_path / "runs", names)
    result, (report,) = check_json(folder)
    assert result.returncode == 1 and report["parts"] == [str(folder / name) for name in names], report
    whole = tmp_path / "cat.jsonl"
    whole.write_bytes(joined)
    assert report["alerts"] == check_json(whole)[1][0]["alerts"]


def test_a_dated_part_is_a_date_of_8_digits_or_more_whatever_its_separators_and_no_other_suffix_is(tmp_path):
    """logrotate's ``dateformat`` may be ``-%Y%m%d%H``, ``-%Y_%m_%d``, ``-%Y%m%d-%s``, ...: each log's parts in its
    own format, read oldest date first. A suffix of fewer digits, or not digits, names no part."""
    logs = {
        "a.jsonl": ["a.jsonl-2024123123", "a.jsonl-2025010100.gz", "a.jsonl-2025010101", "a.jsonl"],
        "b.jsonl": ["b.jsonl-2024_12_31.gz", "b.jsonl-2025_01_01", "b.jsonl"],
        "c.jsonl": ["c.jsonl-20241231-1735603200.xz", "c.jsonl-20250101-1735689600", "c.jsonl"],
        "d.jsonl": ["d.jsonl"],
        "d.jsonl-2": ["d.jsonl-2"], "d.jsonl-2025-01": ["d.jsonl-2025-01"], "d.jsonl-backup": ["d.jsonl-backup"],
        "d.jsonl-2025--01-01": ["d.jsonl-2025--01-01"], "d.jsonl-20250101-": ["d.jsonl-20250101-"],
    }  # fmt: skip
    for name in (name for parts in logs.values() for name in parts):
        (tmp_path / name).write_bytes(b"")
    found = {log.name: [part.name for part in parts] for log, parts in sources.directory_logs(tmp_path)}
    assert found == {name: parts for name, parts in logs.items() if name.endswith(".jsonl")}, found


def test_numbered_and_dated_parts_of_one_log_are_read_by_when_each_was_modified_and_a_note_says_so(tmp_path):
    """Numbered and dated parts of one log are in no order a name tells: its rotated parts are read oldest
    modified first, the current file last, and one note says so; check, analyze, follow and load agree. Before,
    check and analyze refused the whole folder (exit 2: a healthy log beside it was not judged either) and follow
    read only the current file."""
    names = ("run.jsonl.1", "run.jsonl-20250102", "run.jsonl")  # oldest first by time, not as the names sort
    folder, joined = rotated(tmp_path / "runs", names)
    for age, name in enumerate(names):
        os.utime(folder / name, (1_700_000_000 + age, 1_700_000_000 + age))
    healthy_scenario().write(folder / "other.jsonl")
    whole = tmp_path / "cat.jsonl"
    whole.write_bytes(joined)
    expected = check_json(whole)[1][0]["alerts"]
    note = (
        f"{folder}: the rotated log run.jsonl has numbered (run.jsonl.1) and dated (run.jsonl-DATE) parts, whose "
        "order no name tells: read in the order they were last modified, run.jsonl.1, run.jsonl-20250102, run.jsonl"
    )
    result, reports = check_json(folder)
    assert result.returncode == 1 and [r["verdict"] for r in reports] == ["healthy", "error"], result.stderr
    assert reports[1]["parts"] == [str(folder / name) for name in names] and reports[1]["alerts"] == expected
    assert result.stderr == f"moola-watch: note: {note}\n"
    analyzed = watch("analyze", "--json", folder)
    assert [json.loads(line)["verdict"] for line in analyzed.stdout.splitlines()] == ["healthy", "error"]
    assert analyzed.stderr == f"moola-watch: note: {note}\n"
    followed = watch("follow", "--once", "--json", folder)
    events = [json.loads(line) for line in followed.stdout.splitlines()]
    assert [e["message"] for e in events if e["event"] == "notice"] == [note], followed.stdout[-2000:]
    assert followed.returncode == 1 and [log["verdict"] for log in events[-1]["logs"]] == ["healthy", "error"]


def test_a_kept_copy_of_the_log_is_not_read_as_a_rotated_part(tmp_path):
    """``cp run.jsonl run.jsonl-20261130`` during a run (and a gzip'd copy at its end) names dated parts, but a
    rotation never leaves a part whose bytes begin the next one: each copy is dropped with a note, and the run
    is judged once, as the live file alone. Before, its records were read two and three times over, the run
    judged again as ``...#2``. A real rotated part beside them is still read."""
    folder = tmp_path / "runs"
    folder.mkdir()
    live = collapse_scenario().lines()
    (folder / "run.jsonl").write_bytes(b"".join(live))
    (folder / "run.jsonl-20261130").write_bytes(b"".join(live[: 2 * len(live) // 3]))
    (folder / "run.jsonl-20261201.gz").write_bytes(gzip.compress(b"".join(live)))
    healthy = healthy_scenario().lines()
    (folder / "other.jsonl-20261129").write_bytes(b"".join(healthy[:5]))
    (folder / "other.jsonl").write_bytes(b"".join(healthy[5:]))
    _, (expected,) = check_json(folder / "run.jsonl")
    result, reports = check_json(folder)
    assert [r["verdict"] for r in reports] == ["healthy", "error"], result.stdout
    assert reports[0]["parts"] == [str(folder / "other.jsonl-20261129"), str(folder / "other.jsonl")]
    assert reports[1]["log"] == str(folder / "run.jsonl") and "parts" not in reports[1], reports[1]
    assert [reports[1][key] for key in ("records", "alerts")] == [expected[key] for key in ("records", "alerts")]
    notes = [f"moola-watch: note: {folder / older} begins {newer} byte for byte: a copy of it, not a rotated "
             f"part, so it is not read (its records are in {newer})"
             for older, newer in (("run.jsonl-20261130", "run.jsonl-20261201.gz"),
                                  ("run.jsonl-20261201.gz", "run.jsonl"))]  # fmt: skip
    assert result.stderr.splitlines() == notes
    analyzed = watch("analyze", "--json", folder)
    assert [json.loads(line)["verdict"] for line in analyzed.stdout.splitlines()] == ["healthy", "error"]
    followed = watch("follow", "--once", "--json", folder)
    events = [json.loads(line) for line in followed.stdout.splitlines()]
    assert [e["message"] for e in events if e["event"] == "notice"] == [n.split("note: ", 1)[1] for n in notes]
    assert [(log["verdict"], log["records"]) for log in events[-1]["logs"]] == [
        ("healthy", reports[0]["records"]),
        ("error", expected["records"]),
    ], events[-1]


def test_a_copy_dated_before_a_real_part_or_named_as_one_is_dropped_too(tmp_path):
    """A review's cases: a backup named by the run's start date sorts before logrotate's part named by its
    rotation date (its records were read twice); a backup with the same date as a compressed part made the whole
    folder a usage error (exit 2, no log judged). Each is a copy of a later file: dropped with a note."""
    lines = collapse_scenario().lines()
    header = json.dumps({**json.loads(lines[0]), "continued": True}).encode() + b"\n"
    rotated, live = b"".join(lines[:9]), header + b"".join(lines[9:])
    (whole := tmp_path / "whole.jsonl").write_bytes(rotated + live)
    expected = check_json(whole)[1][0]
    for case, files in {
        "before": {"run.jsonl-20261128": live, "run.jsonl-20261129": rotated},
        "same-date": {"run.jsonl-20261130": live, "run.jsonl-20261130.gz": gzip.compress(rotated)},
    }.items():
        folder = tmp_path / case
        folder.mkdir()
        (folder / "run.jsonl").write_bytes(live)
        for name, data in files.items():
            (folder / name).write_bytes(data)
        result, (report,) = check_json(folder)
        copy = next(name for name in files if files[name] == live)
        real = next(name for name in files if name != copy)
        assert report["parts"] == [str(folder / real), str(folder / "run.jsonl")], (case, report)
        assert [report[key] for key in ("records", "alerts")] == [expected[key] for key in ("records", "alerts")]
        assert result.stderr == (
            f"moola-watch: note: {folder / copy} begins run.jsonl byte for byte: a copy of it, "
            "not a rotated part, so it is not read (its records are in run.jsonl)\n"
        ), case


def test_only_a_part_whose_every_byte_begins_the_next_is_a_copy(tmp_path):
    """Longer than a read chunk, equal but for its last byte, empty, or gone: not a copy; kept to be read."""
    head = b"x" * (sources.CHUNK + 10)
    parts = {"a.jsonl-20260101": b"", "a.jsonl-20260102": head[:-1] + b"y", "a.jsonl-20260103": head,
             "a.jsonl-20260104": head + b"z", "a.jsonl": head + b"zz"}  # fmt: skip
    for name, data in parts.items():
        (tmp_path / name).write_bytes(data)
    paths = [tmp_path / name for name in parts]
    kept = sources.without_copies([*paths[:1], tmp_path / "a.jsonl-20251231", *paths[1:]])
    assert [path.name for path in kept] == ["a.jsonl-20260101", "a.jsonl-20251231", "a.jsonl-20260102", "a.jsonl"]


def test_a_part_whose_last_line_was_cut_keeps_the_next_parts_first_line_whole(tmp_path):
    """A killed run's log rotated, then a new run in the new file: joined like cat, the cut line swallowed the new
    run's run_start (its thresholds lost, one bad line counted). Each part's end is a line's end."""
    folder = tmp_path / "runs"
    folder.mkdir()
    killed = healthy_scenario().lines()
    (folder / "run.jsonl.1").write_bytes(b"".join(killed[:-1]) + killed[-1][:30])
    fresh = LogBuilder("fresh").start()
    fresh.records[0]["thresholds"] = {"window": 7}
    (folder / "run.jsonl").write_bytes(b"".join(fresh.grad(1, 0.3, 0.5).end().lines()))
    result, (report,) = check_json(folder)
    assert result.returncode == 0 and report["bad_lines_counted"] == 0 and len(report["runs"]) == 2, report
    assert report["runs"][1]["thresholds_from"].startswith("recorded in run_start")


def test_a_whole_last_record_without_a_final_newline_is_a_record(tmp_path):
    """Another tool that wrote no newline after its last record: the run's run_end is read, not a cut-off line."""
    log = tmp_path / "noeol.jsonl"
    log.write_bytes(b"".join(healthy_scenario().lines()).rstrip(b"\n"))
    result, (report,) = check_json(log)
    assert result.returncode == 0 and report["status"] == "completed" and report["bad_lines"] == 0, report


@pytest.mark.parametrize("mode", ["--once", "--exit-on-end"])
def test_follow_reads_a_folders_rotated_parts_first_as_check_does(tmp_path, mode):
    """follow --once or --exit-on-end on a folder read only run.jsonl (the run's end): healthy, exit 0, where check
    read the collapse in the older parts and failed."""
    folder, _ = rotated(tmp_path / "runs")
    result = watch("follow", mode, "--json", folder)
    (summary,) = [event for event in map(json.loads, result.stdout.splitlines()) if event["event"] == "summary"]
    assert result.returncode == 1 and [log["verdict"] for log in summary["logs"]] == ["error"], result.stdout[-2000:]


def test_a_rotated_part_named_alone_is_read_alone_and_a_note_says_so(tmp_path):
    folder, _ = rotated(tmp_path / "runs")
    result = watch("check", folder / "run.jsonl")
    assert result.returncode == 0  # the newest part holds only the run's end
    assert (
        f"moola-watch: note: {folder / 'run.jsonl'} is one part of the rotated log {folder / 'run.jsonl'} (parts, "
        "oldest first: run.jsonl.2.gz, run.jsonl.1, run.jsonl); only this part is read. Give its folder"
    ) in result.stderr


# ------------------------------------------------------------------------------------------------ stdin, compressed


@pytest.mark.parametrize(
    ("suffix", "compress"),
    [(".gz", gzip.compress), (".bz2", bz2.compress), (".xz", lzma.compress), ("", gzip.compress)],
    ids=["gzip", "bzip2", "xz", "gzip_named_jsonl"],
)
def test_compressed_logs_are_read_decompressed(tmp_path, suffix, compress):
    data = b"".join(collapse_scenario().lines())
    log = tmp_path / f"log.jsonl{suffix}"
    log.write_bytes(compress(data))
    plain = tmp_path / "plain.jsonl"
    plain.write_bytes(data)
    result, (report,) = check_json(log)
    _, (expected,) = check_json(plain)
    assert result.returncode == 1 and report["verdict"] == "error" and report["bad_lines"] == 0
    assert report["alerts"] == expected["alerts"]


def test_stdin_is_read_as_a_log(tmp_path):
    data = b"".join(collapse_scenario().lines())
    result = subprocess.run(
        [sys.executable, "-m", "moola_watch.cli", "check", "--json", "-"], input=gzip.compress(data),
        cwd=REPO, capture_output=True, timeout=120,
    )  # fmt: skip
    report = json.loads(result.stdout)
    assert result.returncode == 1 and report["log"] == "-" and report["verdict"] == "error"
    analyzed = subprocess.run(
        [sys.executable, "-m", "moola_watch.cli", "analyze", "--json", "-"], input=data, cwd=REPO,
        capture_output=True, timeout=120,
    )  # fmt: skip
    assert analyzed.returncode == 1 and json.loads(analyzed.stdout)["verdict"] == "error"
    follow = watch("follow", "--once", "-")
    assert follow.returncode == 2 and follow.stderr.count("\n") == 1 and "not stdin" in follow.stderr


def test_zstd_and_damaged_compressed_logs_are_one_line_errors(tmp_path):
    zst = tmp_path / "log.jsonl.zst"
    zst.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 40)
    result, (report,) = check_json(zst)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert f"decompress it first: zstd -d {zst}" in result.stderr
    assert report == {"log": str(zst), "verdict": "unreadable", "error": result.stderr.split("error: ", 1)[1].strip()}
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gzip.compress(b"".join(healthy_scenario().lines()))[:-30])
    result = watch("check", cut)
    assert result.returncode == 2 and "gzip-compressed, but its data is damaged or cut short" in result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------------------------------------ --run, unreadable


def test_a_run_the_log_does_not_hold_is_an_error_in_json_and_junit(tmp_path):
    log = healthy_scenario().write(tmp_path / "log.jsonl")
    junit = tmp_path / "junit.xml"
    result, (report,) = check_json("--run", "typo", "--junit", junit, log)
    assert result.returncode == 2
    assert report["verdict"] == "no_such_run" and report["run"] == "typo" and report["runs_in_log"] == ["run-1"]
    assert report["error"] == f"no run 'typo' in {log} (runs: run-1)"
    root = ET.parse(junit).getroot()
    assert (root.get("tests"), root.get("errors")) == ("1", "1")
    case = root.find("testsuite/testcase")
    assert case.get("name") == "typo" and case.find("error").get("type") == "no_such_run"


def test_run_over_a_folder_judges_only_the_logs_holding_it(tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    healthy_scenario().write(folder / "a.jsonl")
    collapse = collapse_scenario()
    collapse.run = "second"
    for record in collapse.records:
        record["run"] = "second"
    collapse.write(folder / "b.jsonl")
    result, reports = check_json("--run", "second", folder)
    assert result.returncode == 1 and [r["log"] for r in reports] == [str(folder / "b.jsonl")]
    assert watch("check", "--run", "run-1", folder).returncode == 0
    result, reports = check_json("--run", "third", folder)
    assert result.returncode == 2 and [r["verdict"] for r in reports] == ["no_such_run", "no_such_run"]


def test_an_unreadable_log_in_json_and_junit_says_why(tmp_path):
    junit = tmp_path / "junit.xml"
    result, (report,) = check_json("--junit", junit, tmp_path / "missing.jsonl")
    assert result.returncode == 2
    why = f"cannot read {tmp_path / 'missing.jsonl'}: No such file or directory"
    assert report == {"log": str(tmp_path / "missing.jsonl"), "verdict": "unreadable", "error": why}
    error = ET.parse(junit).getroot().find("testsuite/testcase/error")
    assert error.get("type") == "unreadable" and error.get("message") == f"the log could not be read: {why}"


def test_junit_shows_a_dash_for_a_position_the_run_never_recorded(tmp_path):
    log = LogBuilder(t0=1000.0).start()  # written long ago, no run_end: stale since its start
    log.add("grad_stats", layer_norms={"a": 0.3}, total_norm=0.3, mean_norm=0.3, std_norm=0.0, min_norm=0.3,
            max_norm=0.3, nonfinite_count=0)  # fmt: skip
    path = log.write(tmp_path / "log.jsonl")
    junit = tmp_path / "junit.xml"
    assert watch("check", "--fail-on", "warning", "--junit", junit, path).returncode == 1
    case = ET.parse(junit).getroot().find("testsuite/testcase")
    out = case.find("system-out").text
    assert out.startswith("status=stale at epoch -, step -;"), out
    assert case.find("failure").text.startswith("warning firing stale (run) since the start: No record for ")
