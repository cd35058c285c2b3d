"""Faults on the watcher side: each gives a clear message, a count, and every good record exactly once."""

import json
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from logs import LogBuilder, collapse_scenario
from processes import REPO

from moola_watch import rules, schema
from moola_watch.analyze import LogScan
from moola_watch.tail import BadLine, LineDecoder, LogTail, Notice, RecordItem, read_log


def run_watch(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "moola_watch.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    if check:
        assert result.returncode in (0, 1), result.stderr
    return result


def check_json(path: Path, *args: str) -> dict:
    return json.loads(run_watch("check", "--json", *args, str(path)).stdout)


def good_lines(count: int, run: str = "r") -> list[bytes]:
    log = LogBuilder(run).start()
    for epoch in range(1, count):
        log.epoch(epoch)
    return log.lines()


def test_a_50_mb_single_line_is_skipped_in_bounded_memory(tmp_path):
    path = tmp_path / "big.jsonl"
    good = good_lines(6)
    with path.open("wb") as handle:
        handle.write(b"".join(good[:3]))
        huge = b'{"schema":1,"kind":"epoch","run":"r","time":1,"train_loss":1,"pad":"' + b"x" * 50_000_000 + b'"}'
        handle.write(huge + b"\n")
        handle.write(b"".join(good[3:]))
    # The CLI in a child that reports its own peak RSS (KiB) on stderr. VmHWM, not ru_maxrss: the latter
    # survives exec and would count the forking test process.
    code = (
        "import re, sys; from moola_watch.cli import main; code = main(['check', '--json', sys.argv[1]]); "
        "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1), file=sys.stderr); "
        "sys.exit(code)"
    )
    result = subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO, capture_output=True, text=True)
    report, peak_kib = json.loads(result.stdout), int(result.stderr.split()[-1])
    assert report["records"] == 6 and report["bad_lines"] == 1
    assert report["bad_line_details"][0]["line"] == 4
    assert report["bad_line_details"][0]["reason"] == f"line of {len(huge)} bytes exceeds the 1048576-byte limit"
    assert peak_kib < 150 * 1024, f"peak RSS {peak_kib} KiB: the line was buffered"


def test_a_file_of_nul_bytes(tmp_path):
    path = tmp_path / "nul.jsonl"
    path.write_bytes(b"\0" * 4096)
    result = run_watch("check", "--json", str(path), check=False)  # not a log: nothing measured is not a pass
    report = json.loads(result.stdout)
    assert result.returncode == 2 and "is not a moola log" in result.stderr
    assert report["records"] == 0 and report["bad_lines"] == 1 and report["verdict"] == "not_a_log"
    # NULs before a run_start: what a crash can leave of the line being written (a filesystem that had grown the
    # file but not written it), ended by the next run's writer: a cut-off line, not a record lost
    path.write_bytes(b"\0" * 100 + b"\n" + b"".join(good_lines(4)))
    report = json.loads(run_watch("check", "--json", str(path), check=False).stdout)
    assert report["records"] == 4 and report["bad_line_categories"] == {"cut_off": 1}
    path.write_bytes(b"".join(good_lines(4)) + b"\0" * 100 + b"\n" + good_lines(4)[-1])  # NULs amid a run
    report = json.loads(run_watch("check", "--json", str(path), check=False).stdout)
    assert report["bad_line_categories"] == {"bad_json": 1} and report["bad_lines_fail"]


def test_numbers_as_strings_and_wrong_nesting_are_named(tmp_path):
    path = tmp_path / "wrong.jsonl"
    good = good_lines(3)
    wrong = [
        b'{"schema":1,"kind":"task_balance","run":"r","time":5,"ratio":"6.0","norms":{}}\n',
        b'{"schema":1,"kind":"grad_stats","run":"r","time":6,"layer_norms":{"a":{"b":1}},"total_norm":1,'
        b'"mean_norm":1,"std_norm":0,"min_norm":1,"max_norm":1,"nonfinite_count":0}\n',
    ]
    path.write_bytes(good[0] + wrong[0] + good[1] + wrong[1] + good[2])
    report = check_json(path)
    assert report["records"] == 3 and report["bad_lines"] == 2
    reasons = [d["reason"] for d in report["bad_line_details"]]
    assert reasons[0] == "task_balance.ratio: expected a number, got str '6.0'"
    assert reasons[1].startswith("grad_stats.layer_norms: ['a']: expected a number, got dict")


def test_duplicate_and_backward_steps_of_a_restarted_run(tmp_path):
    path = tmp_path / "restart.jsonl"
    first = collapse_scenario()
    lines = first.lines()
    # The same run restarted from a checkpoint: its epochs 3.. are written again, steps going backwards.
    path.write_bytes(b"".join(lines[:-1]) + b"".join(lines[7:]))
    report = check_json(path)
    assert report["records"] == len(lines) - 1 + len(lines) - 7 and report["bad_lines"] == 0
    assert report["runs"][0]["steps_backwards"] == 1
    assert "collapse" in {a["rule"] for a in report["alerts"]} and report["status"] == "completed"


def test_a_re_pointed_symlink_is_followed_by_name(tmp_path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_bytes(b"".join(good_lines(3, "a")))
    second.write_bytes(b"".join(good_lines(4, "b")))
    link = tmp_path / "current.jsonl"
    link.symlink_to(first)
    tail = LogTail(link)
    items = tail.poll()
    tmp = tmp_path / "new-link"
    tmp.symlink_to(second)
    os.replace(tmp, link)
    items += tail.poll()
    records = [i.record["run"] for i in items if isinstance(i, RecordItem)]
    assert records == ["a"] * 3 + ["b"] * 4
    assert [i.event for i in items if isinstance(i, Notice)] == ["rotated"]


def test_permission_denied_is_a_message_not_a_crash(tmp_path, monkeypatch):
    path = tmp_path / "locked.jsonl"
    path.write_bytes(b"".join(good_lines(2)))
    if os.geteuid() != 0:
        path.chmod(0)
        result = run_watch("check", str(path), check=False)
        assert result.returncode == 2 and "Permission denied" in result.stderr
    # Root reads anything, so the denial is injected where the kernel would give it.
    real_open = os.open

    def deny(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    items = LogTail(path).poll()
    assert [(i.event, i.message) for i in items] == [("error", "cannot open: Permission denied")]


def test_a_directory_of_200_logs(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    for index in range(200):
        log = LogBuilder(f"run{index}").start().grad(1, 0.3, 0.4).epoch(1).end()
        (runs / f"run{index:03}.jsonl").write_bytes(b"".join(log.lines()))
    result = run_watch("follow", "--json", "--once", str(runs))
    summary = json.loads(result.stdout.splitlines()[-1])
    assert len(summary["logs"]) == 200
    assert all(log["records"] == 4 and log["verdict"] == "healthy" for log in summary["logs"])
    check = run_watch("check", *map(str, sorted(runs.iterdir())))
    assert check.returncode == 0 and check.stdout.count("ok  ") == 200


EVIL = "[bold red]boom[/]\x1b[2J\x1b]0;pwned\x07\r\u202e"


def test_untrusted_text_is_inert_in_every_output(tmp_path):
    log = LogBuilder(run=EVIL).start()
    log.records[0]["model"] = EVIL
    log.grad(1, 50.0, 90.0, {EVIL: 90.0, "ok": 10.0}).end("failed", error=EVIL)
    path = log.write(tmp_path / "evil.jsonl")
    outputs = {
        "check": run_watch("check", str(path)),
        "check --json": run_watch("check", "--json", str(path)),
        "analyze": run_watch("analyze", str(path)),
        "analyze --json": run_watch("analyze", "--json", str(path)),
        "follow --once": run_watch("follow", "--once", str(path)),
        "follow --json": run_watch("follow", "--json", "--once", str(path)),
    }
    for name, result in outputs.items():
        for stream in (result.stdout, result.stderr):
            assert "\x1b" not in stream and "\x07" not in stream and "\r" not in stream, name
            assert "\u202e" not in stream, name
        assert "[bold red]boom[/]" in result.stdout, name


def test_no_code_execution_on_the_read_path():
    package = REPO / "moola_watch"
    sources = {str(p.relative_to(package)): p.read_text() for p in package.rglob("*.py")}
    assert "columnar/worker.py" in sources and "rules/engine.py" in sources  # the sub-packages are read too
    # The one process the watcher starts is the user's own --on-alert command: argv from the flag, no shell.
    notify = sources.pop("notify/sinks.py")
    assert notify.count("subprocess.Popen(") == 1 and "shell=" not in notify and "subprocess.run(" not in notify
    source = "\n".join([*sources.values(), notify.replace("subprocess", "")])
    # The decoding worker's pipe carries msgpack bytes: Connection.recv() would unpickle what comes back.
    for forbidden in ("eval(", "exec(", "pickle", "yaml.load", "marshal", "shelve", "subprocess", "os.system",
                      ".recv("):  # fmt: skip
        assert forbidden not in source, forbidden


# ---------------------------------------------------------------------------------------------- fuzzing

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6)
    | st.sampled_from(["nan", "inf", "-inf"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
FIELDS = ["layer_norms", "total_norm", "mean_norm", "std_norm", "min_norm", "max_norm", "nonfinite_count",
          "nonfinite_layers", "ratio", "norms", "cosine", "train_loss", "status", "rule", "severity", "state",
          "subject", "message", "model", "epoch", "step", "time", "error"]  # fmt: skip


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(schema.KINDS), st.dictionaries(st.sampled_from(FIELDS), json_values)), max_size=12
    )
)
def test_arbitrary_records_never_raise_out_of_decode_or_the_rules(records):
    scan = LogScan("fuzz")
    decoder = LineDecoder("fuzz")
    for kind, fields in records:
        payload = {"schema": 1, "kind": kind, "run": "r", "time": 1.0, **fields}
        try:
            line = json.dumps(payload).encode() + b"\n"
        except (ValueError, OverflowError):
            continue
        for item in decoder.feed(line):
            scan.add(item)
    scan.check_stale(1e12)
    scan.report()
    for engine in scan.engines.values():
        engine.summary().lines()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(1, 50), max_size=20))
def test_arbitrary_bytes_in_arbitrary_chunks_decode_like_whole_lines(data, cuts):
    decoder = LineDecoder("fuzz", max_line=64)
    items, start = [], 0
    for cut in cuts:
        items += decoder.feed(data[start : start + cut])
        start += cut
    items += decoder.feed(data[start:]) + decoder.finish()
    whole = LineDecoder("fuzz", max_line=64)
    expected = whole.feed(data) + whole.finish()
    assert [type(i) for i in items] == [type(i) for i in expected]
    assert [i.line_no for i in items] == [i.line_no for i in expected]
    scan = LogScan("fuzz")
    for item in items:
        scan.add(item)
    assert scan.records + scan.bad_lines == len(items)
    assert all(isinstance(i, RecordItem | BadLine) for i in items)


def test_read_log_and_tail_agree_on_a_real_log():
    path = REPO / "sample_logs" / "killed_midway.jsonl"
    streamed = list(read_log(path, chunk_size=97))
    engine = rules.replay([i.record for i in streamed if isinstance(i, RecordItem)])
    assert engine.run.status == "running" and sum(isinstance(i, BadLine) for i in streamed) == 1
