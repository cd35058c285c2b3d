"""The rough edges a new user hit, each through the real CLI (issue 16)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import pytest
from helpers import REPO, run_cli
from logs import LogBuilder, collapse_scenario, healthy_scenario

from moola_watch.analyze import ALERT_COLUMNS, alert_json, scan_log
from moola_watch.durations import human_duration
from moola_watch.options import THRESHOLD_HELP
from moola_watch.rules import Thresholds

SAMPLE = REPO / "sample_logs" / "pointer_collapse.jsonl"


def watch(*args: object, columns: int = 120) -> subprocess.CompletedProcess:
    return run_cli("moola_watch.cli", *map(str, args), env={"COLUMNS": str(columns)})


# ------------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[threshold]\nwindow = 3\n", "unknown key(s) threshold; the valid tables are [thresholds], [notify]"),
        ("window = 3\n", "unknown key(s) window; the valid tables are [thresholds], [notify]"),
        ("[thresholds]\ncolapse-high = 3\n", "unknown threshold(s): colapse-high; valid keys of [thresholds]: "),
    ],
)
def test_config_with_unknown_keys_is_an_error_listing_the_valid_ones(tmp_path: Path, toml: str, expected: str) -> None:
    config = tmp_path / "moola-watch.toml"
    config.write_text(toml)
    result = watch("check", "--config", config, healthy_scenario().write(tmp_path / "log.jsonl"))
    assert result.returncode == 2 and expected in result.stderr and "Traceback" not in result.stderr
    if "valid keys" in expected:
        assert "collapse-high" in result.stderr and "stale-seconds" in result.stderr


@pytest.mark.parametrize("key", ["collapse-high", "collapse_high"])
def test_config_keys_accept_the_flags_spelling(tmp_path: Path, key: str) -> None:
    config = tmp_path / "moola-watch.toml"
    config.write_text(f"[thresholds]\n{key} = 1.2\nbalance-high = 1.0\n")
    log = healthy_scenario().write(tmp_path / "log.jsonl")
    assert watch("check", log).returncode == 0
    # The ratio now collapses (a warning: the scenario's tasks both still learn); the config was read.
    result = watch("check", "--fail-on", "warning", "--config", config, log)
    assert result.returncode == 1 and "collapse" in result.stdout, result.stderr


# ------------------------------------------------------------------------------------------------ flags


def test_window_zero_and_negative_say_the_same(tmp_path: Path) -> None:
    log = healthy_scenario().write(tmp_path / "log.jsonl")
    messages = []
    for value in ("0", "-3"):
        result = watch("check", "--window", value, log)
        assert result.returncode == 2
        messages.append(result.stderr.splitlines()[-1].replace(value, "N"))
    assert (
        messages[0]
        == messages[1]
        == "moola-watch check: error: argument --window: must be a whole number of at least 1, got N"
    )


def test_device_gpu_is_a_one_line_error() -> None:
    result = run_cli("moola.cli", "train", "--device", "gpu", "--epochs", "1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == "moola: error: --device 'gpu' is not a device: use cpu, cuda, cuda:N or auto\n"


def test_help_explains_each_threshold_in_words() -> None:
    help_text = watch("check", "--help", columns=200).stdout
    assert "TH_" not in help_text
    flowing = re.sub(r"\s+", " ", help_text)
    for item in fields(Thresholds):
        metavar, words = THRESHOLD_HELP[item.name]
        assert f" --{item.name.replace('_', '-')} {metavar} {words} (default: {item.default:g}) " in flowing
    assert flowing.count("(default:") == len(fields(Thresholds)) + 1  # and --fail-on's


def test_train_help_tells_each_default_once_and_only_real_ones() -> None:
    help_text = re.sub(r"\s+", " ", run_cli("moola.cli", "train", "--help").stdout)
    assert "(default: runs/<run id>.jsonl)" in help_text and "(default: 30)" in help_text
    for bogus in ("(default: None)", "(default: False)", "(default: True)", ") (default"):
        assert bogus not in help_text


# ------------------------------------------------------------------------------------------------ follow


def test_once_before_the_log_works_as_follow_once() -> None:
    short, full = watch("--once", SAMPLE), watch("follow", "--once", SAMPLE)
    assert short.returncode == full.returncode == 1, short.stderr

    def untimed(text: str) -> str:
        return re.sub(r"\d\d:\d\d:\d\d|\d+ (d|h|min|s)\b", "T", text)

    assert untimed(short.stdout) == untimed(full.stdout) and "TASK COLLAPSE" in short.stdout


def test_once_on_a_missing_path_is_an_error(tmp_path: Path) -> None:
    result = watch("--once", tmp_path / "missing.jsonl")
    assert result.returncode == 2
    assert "missing.jsonl does not exist (without --once, follow waits for it to appear)" in result.stderr


def test_follow_on_a_missing_path_says_so_and_how_it_waits(tmp_path: Path) -> None:
    log = tmp_path / "later.jsonl"
    follower = subprocess.Popen(
        [sys.executable, "-m", "moola_watch.cli", "follow", "--exit-on-end", str(log)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        first = follower.stderr.readline()
        assert "later.jsonl: file does not exist yet; waiting for it, checking every 0.25 s" in first
        assert f"at once on any change in {tmp_path}" in first and "Ctrl-C to stop" in first
        healthy_scenario().write(log)
        assert follower.wait(timeout=30) == 0
    finally:
        follower.kill()


def test_layer_table_counts_what_it_shows() -> None:
    assert "Layers (4 of 13: the largest and smallest norms)" in watch("--once", "--top", "2", SAMPLE).stdout
    assert "Layers (all 13)" in watch("--once", "--top", "10", SAMPLE).stdout
    filtered = watch("--once", "--top", "1", "--layers", "^encoder", SAMPLE).stdout
    assert "Layers (2 of 8 matching --layers, 13 in all" in filtered


def test_layer_table_flags_as_the_rules_do_and_leaves_out_biases_zero_by_construction(tmp_path: Path) -> None:
    norms = {"attn.key.weight": 0.3, "attn.key.bias": 1e-14, "dead.weight": 1e-12, "dead.bias": 1e-13}
    norms |= {f"block{i}.weight": 0.2 + i / 100 for i in range(6)}
    builder = LogBuilder().start()
    for epoch in (1, 2, 3):  # the vanishing rule confirms over 3 samples
        builder.grad(epoch, 0.2, 0.3, norms)
    log = builder.end().write(tmp_path / "log.jsonl")
    table = watch("--once", "--top", "2", log).stdout
    assert "Layers (4 of 10: the largest and smallest norms); 1 bias zero by construction not shown" in table
    assert "attn.key.bias" not in table  # the key bias's gradient is zero by construction: not vanishing
    rows = table[table.index("Layers (") :].splitlines()
    assert [line.split()[1] for line in rows if "vanishing" in line] == ["dead.weight", "dead.bias"]
    alerts = watch("check", log).stdout
    assert "Vanishing gradients in 2 layers (norm < 1e-07): dead.weight, dead.bias" in alerts


def test_offline_views_leave_biases_zero_by_construction_out_of_the_smallest(tmp_path: Path) -> None:
    from moola_watch import load
    from moola_watch.html_report.heatmap import choose_rows

    norms = {"attn.key.weight": 0.3, "attn.key.bias": 1e-14, "dead.weight": 1e-9, "dead.bias": 1e-10}
    # More layers than the ten largest: the smallest are of the others (no layer is in both).
    norms |= {f"block{i}.weight": 0.2 + i / 100 for i in range(20)}
    log = LogBuilder().start().grad(1, 0.2, 0.3, norms).grad(2, 0.2, 0.3, norms).end().write(tmp_path / "log.jsonl")
    report = json.loads(watch("analyze", "--json", log).stdout.splitlines()[0])
    smallest = [row["layer"] for row in report["worst_layers"]["smallest"]]
    assert smallest[:2] == ["dead.bias", "dead.weight"] and "attn.key.bias" not in smallest
    rows = choose_rows(load(log)["layers"], center=-0.8, max_rows=4, worst=2, th=Thresholds())
    assert rows.labels[:2] == ["worst: dead.bias", "worst: dead.weight"]


def test_a_big_models_heatmap_rows_follow_the_module_order_not_the_order_the_extremes_were_first_named():
    import pandas as pd

    from moola_watch.html_report.heatmap import choose_rows

    named = [["blocks.30.w", "blocks.2.w"], ["blocks.10.w", "blocks.1.w"], ["blocks.20.w", "blocks.3.w"]]
    layers = pd.DataFrame([{"epoch": 1, "step": step, "layer": name, "norm": 0.3}
                           for step, names in enumerate(named) for name in names])  # fmt: skip
    rows = choose_rows(layers, center=-0.5, max_rows=10, worst=0)
    assert rows.labels == ["blocks.1.w", "blocks.2.w", "blocks.3.w", "blocks.10.w", "blocks.20.w", "blocks.30.w"]


def test_durations_over_a_minute_are_in_human_units(tmp_path: Path) -> None:
    log = LogBuilder(t0=time.time() - 2 * 86400 - 3 * 3600 - 600).start().epoch(1).write(tmp_path / "log.jsonl")
    result = watch("check", log)
    assert "No record for 2 d 03 h and no run_end" in result.stdout
    assert "last record 2 d 03 h ago" in watch("--once", log).stdout
    assert [human_duration(s) for s in (59.4, 60, 3599, 3600, 86399, 90061)] == [
        "59 s", "1 min 00 s", "59 min 59 s", "1 h 00 min", "23 h 59 min", "1 d 01 h"
    ]  # fmt: skip


# ------------------------------------------------------------------------------------------------ analyze


def test_csv_of_logs_with_the_same_name_do_not_overwrite(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    healthy_scenario().write(tmp_path / "a" / "run.jsonl")
    collapse_scenario().write(tmp_path / "b" / "run.jsonl")
    result = run_cli("moola_watch.cli", "analyze", "a/run.jsonl", "b/run.jsonl", "--csv", "out", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    tables = ("alerts", "balance", "epochs", "grad", "layers", "runs")
    assert names == sorted(f"{label}.{t}.csv" for label in ("a-run", "b-run") for t in tables)
    assert "collapse" in (tmp_path / "out" / "b-run.alerts.csv").read_text()


def test_an_empty_table_is_a_csv_with_its_header(tmp_path: Path) -> None:
    single_task = LogBuilder().start().grad(1, 0.2, 0.5).epoch(1).end().write(tmp_path / "single.jsonl")
    assert watch("analyze", single_task, "--csv", tmp_path / "csv").returncode == 0
    assert (tmp_path / "csv" / "single.balance.csv").read_text() == "run,epoch,step,time,ratio,cosine,scope\n"
    assert (tmp_path / "csv" / "single.alerts.csv").read_text() == ",".join(ALERT_COLUMNS) + "\n"


def test_alert_columns_are_the_alerts_json_keys(tmp_path: Path) -> None:
    scan = scan_log(collapse_scenario().write(tmp_path / "log.jsonl"))
    run, alert = scan.alerts()[0]
    assert tuple(alert_json(run, alert)) == ALERT_COLUMNS


def test_analyze_at_80_columns_stays_readable() -> None:
    result = watch("analyze", SAMPLE, columns=80)
    lines = result.stdout.splitlines()
    hint = f"Plots: moola-watch report {SAMPLE} -o report.html"  # a command to paste: one line, the terminal wraps it
    assert lines[-1] == hint and max(map(len, lines[:-1])) <= 80, lines[-1]
    layers = {"encoder.weight_ih_l0_reverse", "encoder.weight_hh_l0_reverse", "encoder.bias_ih_l0_reverse"}
    assert all(any(f" {name} " in line for line in lines) for name in layers)  # never folded
    start = next(i for i, line in enumerate(lines) if line.startswith("Task balance"))
    start = next(i for i in range(start, len(lines)) if lines[i].startswith("┡"))  # the title may take two lines
    rows = [line for line in lines[start + 1 : start + 13]]
    assert all(re.match(r"│ +\d+ │ +\d+ │", row) for row in rows), rows  # one line per sample
    assert "Task collapse → Urgent: increase alpha by 2x or decrease beta by 0.5x" in result.stdout


# ------------------------------------------------------------------------------------------------ README


def ignored(path: str) -> bool:
    """Whether git ignores ``path`` (what a run writes, such as ``runs/``): it exists only once something wrote it."""
    return subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0


def test_readme_points_inside_the_repository() -> None:
    readme = (REPO / "README.md").read_text("utf-8")
    links = re.findall(r"\]\(([^)#]+)\)", readme)
    # A path under a folder of the repository's own, not one the README's commands write (the demo's runs/,
    # there after the README's first command, gone in a fresh clone).
    paths = [p for p in re.findall(r"`([\w.-]*/[\w./-]*)`", readme) if (REPO / p.split("/")[0]).exists()]
    paths = [p for p in paths if not ignored(p)]
    assert "../" not in readme
    for target in [link for link in links if "://" not in link] + paths:
        resolved = (REPO / target).resolve()
        assert resolved.is_relative_to(REPO) and resolved.exists(), target


# ------------------------------------------------------------------------------------------------ folders


def test_check_and_analyze_take_a_folder_as_its_logs_as_follow_does(tmp_path: Path) -> None:
    """A folder is its ``*.jsonl`` logs. The plots hint names them all, whole, on one line, however long their
    paths (it was cut at 200 characters with an ellipsis, and broken in two at the terminal's width: a command
    that could not be pasted)."""
    folder = tmp_path / ("a-sweep-folder-with-a-long-name-" * 3) / "runs"
    folder.mkdir(parents=True)
    healthy_scenario().write(folder / "a.jsonl")
    collapse_scenario().write(folder / "b.jsonl")
    (folder / "notes.txt").write_text("not a log, not a *.jsonl")
    result = watch("check", "--json", folder)
    assert result.returncode == 1, result.stderr
    assert [json.loads(line)["log"] for line in result.stdout.splitlines()] == [str(folder / "a.jsonl"),
                                                                                str(folder / "b.jsonl")]  # fmt: skip
    analyzed = watch("analyze", folder)
    hint = f"moola-watch report {folder / 'a.jsonl'} {folder / 'b.jsonl'} -o report.html"
    assert len(hint) > 250 and analyzed.returncode == 1 and f"Plots: {hint}" in analyzed.stdout.splitlines()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = watch("check", empty)
    assert result.returncode == 2
    assert result.stderr.strip() == f"moola-watch: error: {empty} is a directory with no *.jsonl log in it"


def test_analyze_of_a_missing_log_gives_the_error_and_no_hint_to_plot_it(tmp_path: Path) -> None:
    result = watch("analyze", tmp_path / "missing.jsonl")
    assert result.returncode == 2 and "No such file or directory" in result.stderr
    assert "moola-watch report" not in result.stdout


def test_follow_once_on_a_folder_calls_another_tools_file_not_a_log(tmp_path: Path) -> None:
    healthy_scenario().write(tmp_path / "run.jsonl")
    (tmp_path / "metrics.jsonl").write_text('{"loss": 0.5}\n')
    followed = watch("--once", tmp_path)
    (row,) = [line for line in followed.stdout.splitlines() if "metrics.jsonl" in line and "│" in line]
    assert "not a log" in row and "waiting" not in row
    said = f"{tmp_path / 'metrics.jsonl'} is not a moola log: no valid record (1 bad line)"  # under the view
    assert said in followed.stdout.splitlines()
    assert followed.returncode == watch("check", tmp_path).returncode == 2  # --once exits as check does


def test_follow_once_with_an_unknown_run_prints_only_the_error(tmp_path: Path) -> None:
    log = collapse_scenario().write(tmp_path / "log.jsonl")
    result = watch("--once", "--run", "nope", log)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == f"moola-watch: error: no run 'nope' in {log} (runs: run-1)"


def test_follow_once_with_run_naming_a_log_of_a_folder_exits_as_check_on_that_log(tmp_path: Path) -> None:
    collapse_scenario().write(tmp_path / "collapsed.jsonl")
    healthy_scenario().write(tmp_path / "fine.jsonl")
    assert watch("check", tmp_path / "collapsed.jsonl").returncode == 1
    assert watch("--once", "--run", "collapsed", tmp_path).returncode == 1  # the dashboard's run, by log name
    assert watch("--once", "--run", "fine", tmp_path).returncode == 0


def test_an_output_file_that_is_a_log_read_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """A review's case: ``report a.jsonl -o a.jsonl`` and ``check b.jsonl --junit b.jsonl`` replaced the training's
    only record with HTML or XML, exit 0 (a tab-completion slip). A log read from a folder, or through a link, too."""
    logs = tmp_path / "runs"
    logs.mkdir()
    for name in ("a.jsonl", "b.jsonl"):
        shutil.copy(SAMPLE, logs / name)
    (tmp_path / "link.jsonl").symlink_to(logs / "a.jsonl")
    kept = (logs / "a.jsonl").read_bytes()
    for args, flag in ((["report", str(logs / "a.jsonl"), "-o", str(logs / "a.jsonl")], "-o/--output"),
                       (["check", str(logs), "--junit", str(logs / "b.jsonl")], "--junit"),
                       (["report", str(logs), "-o", str(tmp_path / "link.jsonl")], "-o/--output")):  # fmt: skip
        result = run_cli("moola_watch.cli", *args)
        assert result.returncode == 2 and result.stderr.startswith(f"moola-watch: error: {flag} "), result.stderr
        assert "which this command reads: writing there would overwrite it" in result.stderr
    with (logs / "a.jsonl").open("rb") as stdin:  # the log on stdin: check - --junit a.jsonl < a.jsonl
        command = [sys.executable, "-m", "moola_watch.cli", "check", "-", "--junit", str(logs / "a.jsonl")]
        piped = subprocess.run(command, stdin=stdin, capture_output=True, text=True, cwd=REPO)
    assert piped.returncode == 2 and "is the file on stdin (-), which this command reads" in piped.stderr
    assert (logs / "a.jsonl").read_bytes() == kept and (logs / "b.jsonl").read_bytes() == kept
    fine = run_cli("moola_watch.cli", "report", str(logs), "-o", str(tmp_path / "report.html"))
    assert fine.returncode != 2 and (tmp_path / "report.html").exists(), fine.stderr  # (1: the runs fail)


@pytest.mark.parametrize("command", ["check", "analyze", "report", "export", "follow"])
def test_every_command_that_reads_a_config_judges_its_notify_table(tmp_path: Path, command: str) -> None:
    """A review's case: ``check --config`` ignored a broken [notify] table, so CI passed the config on which
    ``follow`` then failed at 2 a.m.; and the error did not say which file."""
    config = tmp_path / "moola-watch.toml"
    config.write_text('[notify]\nnotify_on = "sometimes"\n')
    extra = {"report": ["-o", str(tmp_path / "r.html")], "export": ["--tensorboard", str(tmp_path / "tb")],
             "follow": ["--once"]}  # fmt: skip
    result = run_cli("moola_watch.cli", command, "--config", str(config), str(SAMPLE), *extra.get(command, []))
    assert result.returncode == 2 and result.stderr.startswith(f"moola-watch: error: config {config}: [notify] "), (
        result.stderr
    )
    assert "notify_on must be one of" in result.stderr
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "tb").exists()


def test_analyze_quotes_its_hint_names_stdin_csvs_and_says_which_thresholds_judged(tmp_path: Path) -> None:
    """A review's cases: the plots hint split a path with a space in two, ``--csv -`` made a folder named ``-``,
    CSVs read from stdin were named ``-.grad.csv`` (awkward to rm), and analyze said nothing of the thresholds
    that judged the run (check does)."""
    spaced = tmp_path / "r un" / "t.jsonl"
    spaced.parent.mkdir()
    shutil.copy(SAMPLE, spaced)
    result = run_cli("moola_watch.cli", "analyze", str(spaced))
    assert f"Plots: moola-watch report '{spaced}' -o report.html" in result.stdout
    shutil.copy(SAMPLE, tmp_path / "-x.jsonl")  # a name taken for an option unless it says where it is
    dashed = run_cli("moola_watch.cli", "analyze", "./-x.jsonl", cwd=tmp_path)
    assert "Plots: moola-watch report ./-x.jsonl -o report.html" in dashed.stdout, dashed.stdout[-300:]
    assert "thresholds: recorded in run_start" in result.stdout
    refused = run_cli("moola_watch.cli", "analyze", str(SAMPLE), "--csv", "-")
    assert refused.returncode == 2 and "--csv takes a directory" in refused.stderr and not Path("-").exists()
    piped = subprocess.run([sys.executable, "-m", "moola_watch.cli", "analyze", "-", "--csv", str(tmp_path / "csv")],
                           input=SAMPLE.read_bytes(), capture_output=True, cwd=REPO)  # fmt: skip
    assert piped.returncode in (0, 1) and (tmp_path / "csv" / "stdin.grad.csv").exists(), piped.stderr
