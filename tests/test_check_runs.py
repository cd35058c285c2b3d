"""Issue 13 through the real `moola-watch` CLI: one run at a time, each by its own thresholds; nothing measured is
not a pass; labelled runs of three model families get the verdict their held-out metrics call for."""

import json
import re
import time

import pytest
from helpers import REPO, run_cli
from logs import LogBuilder, collapse_scenario, exploding_scenario, healthy_scenario, recovered_collapse_scenario
from rich.console import Console

from moola_watch.analyze import scan_log
from moola_watch.dashboard import LogView, ViewOptions, header
from moola_watch.rules import Thresholds

PINNED = REPO / "tests" / "data" / "detection"


def check(*args):
    result = run_cli("moola_watch.cli", "check", *map(str, args))
    return result, [json.loads(line) for line in result.stdout.splitlines()] if "--json" in args else []


def two_runs(tmp_path):
    """A healthy run, then a collapsing one, in one file."""
    log = tmp_path / "two.jsonl"
    healthy, collapse = healthy_scenario(), collapse_scenario()
    healthy.run, collapse.run = "first", "second"
    for builder in (healthy, collapse):
        for record in builder.records:
            record["run"] = builder.run
    log.write_bytes(b"".join(healthy.lines() + collapse.lines()))
    return log


def test_a_count_of_one_takes_a_singular_noun(tmp_path):
    """A review's case: "1 run(s)", "in 1 layers": one of a thing is said as one."""
    log = exploding_scenario().write(tmp_path / "one.jsonl")
    result, _ = check(log)
    assert result.returncode == 1
    assert f"FAIL  {log}  verdict=error  1 run  records=" in result.stdout, result.stdout
    assert "Exploding gradients in 1 layer (norm > 10): b" in result.stdout, result.stdout


def test_a_log_of_two_runs_is_judged_run_by_run(tmp_path):
    log = two_runs(tmp_path)
    result, _ = check(log)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"FAIL  {log}  verdict=error  2 runs")
    first = next(i for i, line in enumerate(lines) if line.startswith("  run first "))
    second = next(i for i, line in enumerate(lines) if line.startswith("  run second "))
    assert "verdict=healthy" in lines[first] and "verdict=error" in lines[second]
    assert second == first + 1 and any("collapse (type)" in line for line in lines[second + 1 :])

    result, (report,) = check("--json", "--run", "first", log)
    assert result.returncode == 0 and report["verdict"] == "healthy" and report["alerts"] == []
    assert [run["run"] for run in report["runs"]] == ["first"]
    result, (report,) = check("--json", "--latest", log)
    assert result.returncode == 1 and [run["run"] for run in report["runs"]] == ["second"]
    assert {alert["run"] for alert in report["alerts"]} == {"second"}
    result, _ = check("--run", "third", log)
    assert result.returncode == 2 and "no run 'third'" in result.stderr and "first, second" in result.stderr

    analyzed = run_cli("moola_watch.cli", "analyze", str(log), "--csv", str(tmp_path / "csv"))
    assert analyzed.returncode == 1
    for name in ("grad", "balance", "epochs", "alerts", "runs"):
        assert (tmp_path / "csv" / f"two.{name}.csv").read_text().startswith("run,")


def test_check_json_top_level_speaks_of_the_run_that_decided_the_verdict(tmp_path):
    """A collapse, then a healthy run: the log's verdict is the collapse's error, and so are the top-level run,
    status and summary beside it (they were the last, healthy run's); ``runs`` still lists both."""
    log = tmp_path / "collapse-then-healthy.jsonl"
    collapse, healthy = collapse_scenario(), healthy_scenario()
    for builder, run in ((collapse, "collapsed"), (healthy, "fine")):
        for record in builder.records:
            record["run"] = run
    log.write_bytes(b"".join(collapse.lines() + healthy.lines()))
    result, (report,) = check("--json", log)
    assert result.returncode == 1 and report["verdict"] == "error"
    assert [run["run"] for run in report["runs"]] == ["collapsed", "fine"]
    collapsed = report["runs"][0]
    assert report["run"] == "collapsed" and collapsed["verdict"] == "error"
    assert report["summary"] == collapsed["summary"] and report["summary"]["alerts_fired"] >= 1
    assert report["status"] == collapsed["status"]
    result, (report,) = check("--json", "--run", "fine", log)  # one run chosen: it decides
    assert report["verdict"] == "healthy" and report["run"] == "fine" and report["summary"]["alerts_fired"] == 0


def test_the_dashboard_header_names_the_run_its_alerts_belong_to(tmp_path):
    scan = scan_log(two_runs(tmp_path))
    console = Console(width=160, record=True)
    console.print(header(LogView(scan), "second", ViewOptions()))
    text = console.export_text()
    assert "run second (2 of 2 runs in this log; --run ID for another)" in text
    assert "thresholds: watcher defaults (the run recorded none)" in text
    second = len(collapse_scenario().records)
    assert f"   {second} records," in text and second < scan.records  # the run's own count, not the log's


def test_a_run_is_judged_by_the_thresholds_it_recorded_unless_a_flag_says_otherwise(tmp_path):
    log = LogBuilder().add("run_start", model="m", config={}, thresholds={"collapse_high": 3.0, "window": 4})
    for epoch in range(1, 7):
        log.balance(epoch, 4.0)
    path = log.end().write(tmp_path / "log.jsonl")
    result, (report,) = check("--json", path)
    (run,) = report["runs"]
    assert run["thresholds_from"] == "recorded in run_start"
    assert run["thresholds"]["collapse_high"] == 3.0 and run["thresholds"]["window"] == 4
    assert [a["rule"] for a in report["alerts"] if a["rule"] == "collapse"] == ["collapse"]  # 4 > 3, 4 samples
    result, (report,) = check("--json", "--collapse-high", "5", path)
    assert report["runs"][0]["thresholds_from"] == (
        "recorded in run_start, except collapse_high (set by a flag or --config)"
    )
    assert report["runs"][0]["thresholds"]["window"] == 4 and "collapse" not in {a["rule"] for a in report["alerts"]}
    result, _ = check("--collapse-high", "5", path)
    assert "thresholds: recorded in run_start, except collapse_high (set by a flag or --config)" in result.stdout


def test_a_flag_out_of_order_beside_recorded_values_sets_aside_those_alone_and_says_so(tmp_path):
    """A review's case: ``--balance-high 4`` on a run that recorded collapse_high 3 threw all of its recorded
    thresholds away ("watcher defaults (recorded thresholds unusable...)"): its exploding bound of 50 went back to
    10, and its layers at 20 failed the check. The flag wins; only the recorded values of its band give way."""
    log = LogBuilder().add("run_start", model="m", config={},
                           thresholds={"collapse_high": 3.0, "balance_high": 1.5, "exploding": 50.0})  # fmt: skip
    for epoch in range(1, 4):
        log.grad(epoch, 0.3, 20.0, {"a": 0.3, "b": 20.0})
    path = log.end().write(tmp_path / "log.jsonl")
    result, (report,) = check("--json", "--balance-high", "4", path)
    (run,) = report["runs"]
    assert result.returncode == 0 and report["verdict"] == "healthy", report
    assert run["thresholds"]["exploding"] == 50.0 and run["thresholds"]["balance_high"] == 4.0
    assert run["thresholds"]["collapse_high"] == 5.0  # the watcher's: the recorded 3 is below the flag's 4
    assert run["thresholds_from"] == (
        "recorded in run_start, except balance_high (set by a flag or --config); recorded but not used: "
        "collapse_high 3.0: out of order (need collapse_low <= balance_low <= balance_high <= collapse_high)"
    )


def test_a_recorded_threshold_an_older_trainer_allowed_out_of_order_gives_way_alone(tmp_path):
    """A review's case: this watcher checks more orders than the trainers before it. A run that recorded a display
    band inverted (healthy_norm_low 1.0 above healthy_norm_high 0.5) beside exploding 1000 was judged wholly by the
    watcher's defaults: exploding 10 failed its layers at 20. Only the band gives way, and the line says so; a
    recorded value out of range (starve_share 5, from before it had to be a fraction) too."""
    log = LogBuilder().add("run_start", model="m", config={}, thresholds={
        "healthy_norm_low": 1.0, "exploding": 1000.0, "norm_large": 100.0, "norm_exploding": 1000.0,
        "starve_share": 5.0})  # fmt: skip
    for epoch in range(1, 4):
        log.grad(epoch, 30.0, 20.0, {"a": 0.3, "b": 20.0})
    result, (report,) = check("--json", log.end().write(tmp_path / "log.jsonl"))
    (run,) = report["runs"]
    assert result.returncode == 0 and report["verdict"] == "healthy", report["alerts"]
    assert run["thresholds"]["exploding"] == 1000.0 and run["thresholds"]["norm_exploding"] == 1000.0
    assert run["thresholds"]["healthy_norm_low"] == 0.1
    assert run["thresholds"]["starve_share"] == Thresholds().starve_share
    assert run["thresholds_from"].startswith("recorded in run_start; recorded but not used: healthy_norm_low 1.0: "
                                             "out of order (need healthy_norm_low <= healthy_norm_high); ")  # fmt: skip
    assert "starve_share 5.0: threshold starve_share is a fraction, at most 1" in run["thresholds_from"]


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--vanishing", "100", "--exploding", "1"], "need vanishing <= exploding, got vanishing 100, exploding 1"),
        (["--norm-low", "3", "--norm-large", "1", "--norm-exploding", "0.5"],
         "need norm_low <= norm_large <= norm_exploding, got norm_low 3, norm_large 1, norm_exploding 0.5"),
        (["--healthy-norm-low", "5", "--healthy-norm-high", "0.1"],
         "need healthy_norm_low <= healthy_norm_high, got healthy_norm_low 5, healthy_norm_high 0.1"),
        (["--starve-share", "7"], "threshold starve_share is a fraction, at most 1 (0.07 for 7%), got 7.0"),
        (["--config", "window"], "threshold window must be a whole number from 1 to 1,000,000, got 10000000000"),
    ],
)  # fmt: skip
def test_thresholds_that_contradict_each_other_or_overflow_are_a_one_line_usage_error(tmp_path, flags, said):
    """A review's case: each of these ran as if sensible (every layer "vanishing (norm < 100)", a mean norm of
    0.54 "exploding"), and a window of 1e20 from a config ended in a traceback."""
    if flags[0] == "--config":
        (tmp_path / "c.toml").write_text("[thresholds]\nwindow = 10000000000\n")
        flags = ["--config", str(tmp_path / "c.toml")]
    result = run_cli("moola_watch.cli", "check", *flags, str(REPO / "sample_logs" / "healthy.jsonl"))
    assert result.returncode == 2 and result.stderr.startswith("moola-watch: error: ") and said in result.stderr
    if flags[0] == "--config":  # an error in the config's own values names the file
        assert result.stderr.startswith(f"moola-watch: error: config {flags[1]}: [thresholds] "), result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_a_run_restarted_under_the_same_id_is_a_second_run(tmp_path):
    """A fixed run_id appending to its own log: the crashed first attempt and the restart are two runs, and the
    collapse window of the first does not run on into the second (the fast reader gives the same answer)."""
    crashed, restarted = collapse_scenario(), healthy_scenario()
    for builder in (crashed, restarted):
        builder.run = "exp1"
        for record in builder.records:
            record["run"] = "exp1"
    crashed.records = [r for r in crashed.records if r["kind"] != "run_end"]
    crashed.end("failed", error="RuntimeError: boom")
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"".join(crashed.lines() + restarted.lines()))
    result, (report,) = check("--json", path)
    assert result.returncode == 1  # the first attempt's failure and collapse
    runs = {run["run"]: run for run in report["runs"]}
    assert list(runs) == ["exp1", "exp1#2"]
    assert runs["exp1"]["status"] == "failed" and runs["exp1#2"]["status"] == "completed"
    assert runs["exp1#2"]["verdict"] == "healthy"
    assert {a["run"] for a in report["alerts"] if a["rule"] == "collapse"} == {"exp1"}
    fast, streamed = scan_log(path, frames=True), scan_log(path, frames=True, fast=False)
    assert fast.report() == streamed.report()
    assert list(scan_log(path, frames=True).columns.frames()["grad"]["run"].unique()) == ["exp1", "exp1#2"]


def test_runs_killed_before_a_later_run_in_their_log_are_unterminated_not_running(tmp_path):
    """One process writes a log at a time (the writer locks it): a run without run_end that a later run followed
    has ended. It is unterminated, never stale, and only the last run can still be running."""
    log = tmp_path / "killed.jsonl"
    now = time.time()
    lines = []
    for index, run in enumerate(("first", "second", "third")):
        builder = LogBuilder(run, t0=now - 3000 + 1000 * index).start().grad(1, 0.3, 0.4).grad(2, 0.3, 0.4)
        lines += builder.lines()
    log.write_bytes(b"".join(lines))
    result, reports = check("--json", log)
    (report,) = reports
    assert result.returncode == 0  # a stale run is a warning: check fails on errors by default
    statuses = {run["run"]: (run["status"], run["verdict"]) for run in report["runs"]}
    assert statuses == {
        "first": ("unterminated", "unterminated"), "second": ("unterminated", "unterminated"),
        "third": ("stale", "warning"),
    }, statuses  # fmt: skip
    alerts = [(alert["run"], alert["rule"]) for alert in report["alerts"]]
    assert alerts == [("third", "stale")], alerts


def test_a_nan_gradient_written_as_a_bare_nan_token_is_judged_not_dropped(tmp_path):
    """Python's json.dumps writes NaN and Infinity as bare tokens: another writer's non-finite gradient, the very
    thing to catch, was a bad line and the log passed."""
    lines = (REPO / "sample_logs" / "healthy.jsonl").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if '"grad_stats"' in line)
    record = json.loads(lines[at])
    record["layer_norms"][next(iter(record["layer_norms"]))] = float("nan")
    record["max_norm"] = float("inf")
    lines[at] = json.dumps(record)
    assert "NaN" in lines[at] and "Infinity" in lines[at]
    log = tmp_path / "bare.jsonl"
    log.write_text("\n".join(lines) + "\n")
    result, (report,) = check("--json", log)
    assert result.returncode == 1 and report["verdict"] == "critical" and report["bad_lines"] == 0, report


def test_two_logs_with_byte_order_marks_joined_by_cat_are_two_runs_and_no_bad_line(tmp_path):
    """The second file's byte order mark is mid-file: its run_start was a bad line, its run merged into nothing."""
    joined = tmp_path / "joined.jsonl"
    joined.write_bytes(b"".join(b"\xef\xbb\xbf" + (REPO / "sample_logs" / name).read_bytes()
                                for name in ("healthy.jsonl", "exploding_gradients.jsonl")))  # fmt: skip
    result, (report,) = check("--json", joined)
    assert report["bad_lines"] == 0 and len(report["runs"]) == 2 and result.returncode == 1, report
    assert [run["verdict"] for run in report["runs"]] == ["healthy", "error"]


def test_a_file_that_is_not_a_log_exits_2(tmp_path):
    path = tmp_path / "notes.jsonl"
    path.write_text("this is not\na moola log\n")
    result, (report,) = check("--json", path)
    assert result.returncode == 2 and report["verdict"] == "not_a_log" and report["bad_lines"] == 2
    assert "is not a moola log: no valid record (2 bad lines)" in result.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert check(empty)[0].returncode == 2
    assert run_cli("moola_watch.cli", "analyze", str(path)).returncode == 2


@pytest.mark.parametrize("content", [b"", b"this is not\na moola log\n"], ids=["empty", "foreign"])
def test_no_command_passes_a_file_that_is_not_a_log(tmp_path, content):
    """What check calls not a log is an error everywhere: no HTML page of 0 runs, no silent export, no
    'waiting' from --once, and an <error> (not <skipped>) in JUnit."""
    path = tmp_path / "log.jsonl"
    path.write_bytes(content)
    html = tmp_path / "report.html"
    report = run_cli("moola_watch.cli", "report", str(path), "-o", str(html))
    assert report.returncode == 2 and not html.exists()
    exported = run_cli("moola_watch.cli", "export", str(path), "--tensorboard", str(tmp_path / "tb"))
    assert exported.returncode == 2
    once = run_cli("moola_watch.cli", "follow", "--once", str(path))
    assert once.returncode == 2 and "Traceback" not in once.stderr
    assert ("is not a moola log: no valid record (2 bad lines)" if content else "holds no record yet") in once.stderr
    xml = tmp_path / "junit.xml"
    assert check("--junit", xml, path)[0].returncode == 2
    why = f"is not a moola log: no valid record ({2 if content else 0} bad lines)"  # check's own line
    assert f'<error message="{path} {why}" type="not_a_log"' in xml.read_text(), xml.read_text()
    assert "skipped" not in xml.read_text().replace('skipped="0"', "")


def newer_moolas_log(path):
    """A healthy run as a newer moola would write it (schema 2), its last line cut off mid-write."""
    log = healthy_scenario()
    for record in log.records:
        record["schema"] = 2
    path.write_bytes(b"".join(log.lines()) + b'{"schema":2,"kind":"epo')
    return path


NEWER = "is a log of a newer moola (schema 2; this moola-watch reads up to schema 1): upgrade moola-watch to read it"


def test_a_log_of_a_newer_moola_says_to_upgrade_not_that_it_is_no_log(tmp_path):
    """A review's case: a schema-2 log was called "not a moola log: no valid record (94 bad lines)" by every
    command. It is still not judged (exit 2), and each says why in the same words."""
    path = newer_moolas_log(tmp_path / "run.jsonl")
    result, (report,) = check("--json", path)
    assert result.returncode == 2 and report["error"] == f"{path} {NEWER}", report
    assert result.stderr == f"moola-watch: error: {path} {NEWER}\n"
    once = run_cli("moola_watch.cli", "follow", "--once", str(path))
    assert once.returncode == 2 and once.stderr == f"moola-watch: error: {path} {NEWER}\n"
    html = run_cli("moola_watch.cli", "report", str(path), "-o", str(tmp_path / "report.html"))
    assert html.returncode == 2 and f"{path} {NEWER}" in html.stderr
    folder = run_cli("moola_watch.cli", "follow", "--once", str(tmp_path))  # a folder names the log too
    assert folder.returncode == 2 and folder.stderr == f"moola-watch: error: {path} {NEWER}\n", folder.stderr
    # Another tool's lines beside a few of a newer schema: most are not a moola's, so it is not a log.
    path.write_bytes(b"a,b\n1,2\n3,4\n" + newer_moolas_log(tmp_path / "x").read_bytes().splitlines()[0] + b"\n")
    junit = tmp_path / "junit.xml"
    assert check("--junit", junit, newer_moolas_log(tmp_path / "y.jsonl"))[0].returncode == 2
    assert f'<error message="{tmp_path / "y.jsonl"} {NEWER}" type="not_a_log"' in junit.read_text()
    result, _ = check(path)
    assert result.returncode == 2 and "is not a moola log: no valid record (4 bad lines)" in result.stderr


def test_a_run_that_measured_nothing_is_not_a_pass(tmp_path):
    """Epoch records alone (a callback whose every_n_steps outlasted a short run) measured no gradient."""
    path = LogBuilder().start().epoch(1).epoch(2).end().write(tmp_path / "log.jsonl")
    result, _ = check(path)
    assert result.returncode == 3
    assert result.stdout.startswith(f"EMPTY  {path}  verdict=no_measurements")
    result, (report,) = check("--json", path)
    assert result.returncode == 3 and report["runs"][0]["verdict"] == "no_measurements"
    both = two_runs(tmp_path)
    assert check(path, both)[0].returncode == 1  # an alert elsewhere is the more telling exit code


@pytest.mark.parametrize("ending", ["none", "interrupted", "failed"])
def test_a_run_that_measured_nothing_stays_no_pass_whatever_warnings_its_silence_or_end_raise(tmp_path, ending):
    """A run_start alone goes stale (a warning) once its records are old; an interrupted one warns: neither
    makes a run that checked nothing pass. A failed run is an error, the more telling word."""
    log = LogBuilder(t0=1000.0).start()  # written long ago: stale by now
    if ending != "none":
        log.end(ending, error="boom" if ending == "failed" else None)
    result, (report,) = check("--json", log.write(tmp_path / "log.jsonl"))
    if ending == "failed":
        assert result.returncode == 1 and report["verdict"] == "error"
    else:
        assert result.returncode == 3 and report["verdict"] == "no_measurements", report
        assert report["alerts"]  # the warning is still shown


@pytest.mark.parametrize("label", json.loads((PINNED / "labels.json").read_text()), ids=lambda row: row["log"])
def test_labelled_runs_get_the_verdict_their_held_out_metrics_call_for(label):
    """Real runs of the corpus (benchmarks/detection_corpus.py), two per family and two LSTMs whose pointer task
    starved while its loss crept down (the verdict names it only at the run's end); in the healthy ones the old
    rule (dominance alone, at error) fired, the new verdict stays a warning. Of three tasks: a run whose weight 100
    starved the other two (both named), and a healthy one whose error at the first full window resolved when the
    starving task began to learn (a warning in the verdict). Of the digits and diabetes families: a starved run
    each, a healthy digits run with one task dominated, and two healthy diabetes runs whose dominated regression sat
    at the floor its data allow (its gradient noise: an error before the trainer recorded persistence). Of the floor
    family: a starved run and a healthy one whose dominated regression ended at 93% of its
    first batch loss, above floor_rate, its gradient pure noise (an error before the floor's second branch). Of the
    noisy family: a starved run and a healthy one whose flipped-label task, dominated, ended at 94% of its first
    epoch's loss with a gradient of pure noise (an error at session 21's noise_rate 0.9)."""
    result, (report,) = check("--json", PINNED / label["log"])
    collapse = [a for a in report["alerts"] if a["rule"] == "collapse"]
    errors = [a for a in collapse if a["counts_as"] == "error"]  # a collapse that resolved is a warning
    if label["label"] == "starved":
        assert result.returncode == 1 and sorted(a["subject"] for a in errors) == sorted(label["starved_tasks"])
        for error in errors:
            starving = f"the run ended with the {error['subject']} task starved" in error["message"]
            assert starving or "is starving" in error["message"]
            assert "(from " in error["recommendation"]
    else:  # other rules may fire (hidden size 4 LSTMs do explode now and then); collapse stays a warning
        assert collapse and not errors


def test_check_help_lists_the_declared_rules_and_the_starvation_thresholds():
    result = run_cli("moola_watch.cli", "check", "--help")
    assert result.returncode == 0
    assert "--starve-share" in result.stdout and "--starve-drop" in result.stdout and "--latest" in result.stdout
    collapse = [line for line in result.stdout.splitlines() if re.match(r"\s*collapse\s+(warning|error)\s", line)]
    assert len(collapse) == 3 and all("error" in line and "starv" in line for line in collapse)
    assert "--final-share" in result.stdout and "--final-rate" in result.stdout


def test_a_collapse_that_resolved_before_the_run_ended_is_a_warning_in_the_verdict_not_a_failure(tmp_path):
    """Starvation is judged on the outcome: the episode is shown (at its worst words), but a task that recovered
    does not fail the run; a NaN step that passed still would (tests above)."""
    path = recovered_collapse_scenario().write(tmp_path / "recovered.jsonl")
    result, (report,) = check("--json", path)
    (collapse,) = [a for a in report["alerts"] if a["rule"] == "collapse"]
    assert collapse["severity"] == "error" and collapse["state"] == "resolved" and collapse["counts_as"] == "warning"
    assert result.returncode == 0 and report["runs"][0]["verdict"] == "warning"
    text = run_cli("moola_watch.cli", "check", str(path)).stdout
    assert "error    resolved collapse (pointer) since epoch 10, step 100 (recovered: counts as a warning)" in text
    junit = tmp_path / "junit.xml"
    assert run_cli("moola_watch.cli", "check", "--junit", str(junit), str(path)).returncode == 0
    assert "<failure" not in junit.read_text()


def test_the_rest_of_a_rotated_run_that_holds_only_its_end_is_not_a_run_that_measured_nothing(tmp_path):
    """A log rotated just before the run ended: the new file holds the run's start marked continued (the
    measurements are in the old file) and its run_end. 'No measurements' would fail a run that measured."""
    builder = LogBuilder("r").start()
    builder.records[0]["continued"] = True
    rest = builder.end().write(tmp_path / "train.jsonl")
    result, (report,) = check("--json", rest)
    assert result.returncode == 0 and report["verdict"] == "healthy", report
    fresh = LogBuilder("r").start().end().write(tmp_path / "fresh.jsonl")  # not continued: nothing measured
    result, (report,) = check("--json", fresh)
    assert result.returncode == 3 and report["verdict"] == "no_measurements"


@pytest.mark.parametrize(("first_step", "state"), [(101, "resolved"), (1, "firing")])
def test_an_interrupted_run_that_a_later_run_resumed_has_its_interruption_resolved(tmp_path, first_step, state):
    """Ctrl-C, then a run resumed from a checkpoint appending to the same log (its run_start says it began at
    step 101): the first run's 'Resume or rerun training' was done, so it resolves; a fresh restart (step 1) did
    not resume it, and it stays firing."""
    interrupted = LogBuilder("first").start()
    interrupted.grad(1, 0.3, 0.5).grad(2, 0.3, 0.5).end("interrupted")
    resumed = LogBuilder("second", t0=1_700_000_100.0).start()
    resumed.records[0].update(first_step=first_step, first_epoch=1)
    resumed.grad(3, 0.3, 0.5).end()
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"".join(interrupted.lines() + resumed.lines()))
    report = json.loads(run_cli("moola_watch", "check", "--json", "--run", "first", str(log)).stdout)
    (interruption,) = [alert for alert in report["alerts"] if alert["rule"] == "run_interrupted"]
    assert interruption["state"] == state


@pytest.mark.parametrize("hook", ["never called", "called after zero_grad"])
def test_a_run_that_measured_its_balance_but_never_its_gradients_says_so(tmp_path, hook):
    """An outside review's loops: task balance through monitor.backward, but the gradient hook never called, or
    called after zero_grad() (no gradient to measure). The log held 20 balance samples and no grad_stats, and
    check called it healthy: NaN, exploding and vanishing gradients had never been looked for."""
    import torch
    from torch import nn

    from moola.utils.monitoring import GradientMonitor

    torch.manual_seed(0)
    trunk, a, b = nn.Linear(4, 8), nn.Linear(8, 1), nn.Linear(8, 1)
    model = nn.ModuleDict({"trunk": trunk, "a": a, "b": b})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    log = tmp_path / "train.jsonl"
    warnings: list[str] = []
    with GradientMonitor(every_n_steps=1, log_path=log, warn=warnings.append, echo=lambda _line: None) as monitor:
        monitor.watch_optimizer(optimizer)  # counts the steps (the README's loop)
        for _step in range(12):
            x = torch.randn(8, 4)
            h = trunk(x).relu()
            monitor.backward(model, {"a": a(h).pow(2).mean(), "b": b(h).abs().mean()}, {"a": 1.0, "b": 1.0})
            optimizer.step()
            optimizer.zero_grad()
            if hook == "called after zero_grad":
                monitor.on_before_optimizer_step(model)
    if hook == "called after zero_grad":
        assert any("no parameter has a gradient" in line for line in warnings), warnings
    result, (report,) = check("--json", log)
    assert result.returncode == 0 and report["verdict"] == "warning", report  # a warning: the balance was judged
    (alert,) = [alert for alert in report["alerts"] if alert["rule"] == "grads_unmeasured"]
    assert "No gradient statistics in this run (12 task balance samples" in alert["message"]
    assert "on_before_optimizer_step(model) after backward()" in alert["recommendation"]
    plain, _ = check(log)
    assert "grads_unmeasured (gradients)" in plain.stdout and "verdict=warning" in plain.stdout


def test_the_rest_of_a_rotated_run_with_balance_samples_alone_is_not_said_to_lack_gradients(tmp_path):
    """A rotated run's new part may hold balance samples and none of the rarer gradient samples: those are in the
    part before it."""
    builder = LogBuilder("r").start()
    builder.records[0]["continued"] = True
    for epoch in range(1, 4):
        builder.balance(epoch, 1.5)
    result, (report,) = check("--json", builder.end().write(tmp_path / "train.jsonl"))
    assert result.returncode == 0 and report["alerts"], report  # its window never filled: a warning
    assert not [alert for alert in report["alerts"] if alert["rule"] == "grads_unmeasured"], report
