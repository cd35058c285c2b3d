"""The real `moola-watch check` and `analyze` in subprocesses."""

import json
import os
import re
import subprocess
import sys

import pytest
from helpers import REPO, run_cli
from logs import LogBuilder, collapse_scenario, exploding_scenario, healthy_scenario, vanishing_scenario


def check_json(*args):
    result = run_cli("moola_watch.cli", "check", "--json", *map(str, args))
    return result, [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.parametrize(
    ("scenario", "verdict", "rules", "code"),
    [
        (healthy_scenario, "healthy", set(), 0),
        (collapse_scenario, "error", {"collapse"}, 1),
        (vanishing_scenario, "warning", {"vanishing"}, 0),
        (exploding_scenario, "error", {"exploding", "norm_level"}, 1),
    ],
)
def test_check_json_verdicts_of_the_spec_scenarios(tmp_path, scenario, verdict, rules, code):
    log = scenario().write(tmp_path / "log.jsonl")
    result, (report,) = check_json(log)
    assert result.returncode == code, result.stderr
    assert report["verdict"] == verdict and {a["rule"] for a in report["alerts"]} >= rules
    assert report["records"] == len(scenario().records) and report["bad_lines"] == 0
    for alert in report["alerts"]:
        assert {"rule", "severity", "subject", "value", "message", "first_step", "recommendation"} <= set(alert)
    assert report["summary"]["grad_samples"] >= 1


def test_collapse_alert_carries_the_spec_message_and_where_it_began(tmp_path):
    _, (report,) = check_json(collapse_scenario().write(tmp_path / "log.jsonl"))
    collapse = next(a for a in report["alerts"] if a["rule"] == "collapse")
    assert collapse["message"].startswith("TASK COLLAPSE: Pointer task dominating (ratio=6.34 > 5.0)")
    assert collapse["first_step"] == 100 and collapse["severity"] == "error" and collapse["subject"] == "type"


def test_fail_on_warning_and_critical(tmp_path):
    log = vanishing_scenario().write(tmp_path / "log.jsonl")
    assert run_cli("moola_watch.cli", "check", str(log)).returncode == 0
    assert run_cli("moola_watch.cli", "check", "--fail-on", "warning", str(log)).returncode == 1
    log = collapse_scenario().write(tmp_path / "c.jsonl")
    assert run_cli("moola_watch.cli", "check", "--fail-on", "critical", str(log)).returncode == 0


def test_unreadable_and_usage_errors_exit_2(tmp_path):
    result = run_cli("moola_watch.cli", "check", str(tmp_path / "missing.jsonl"))
    assert result.returncode == 2 and "cannot read" in result.stderr and "Traceback" not in result.stderr
    assert run_cli("moola_watch.cli", "check", str(tmp_path)).returncode == 2
    assert run_cli("moola_watch.cli", "check", "--fail-on", "nope", "x").returncode == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[thresholds]\nwindw = 3\n")
    log = healthy_scenario().write(tmp_path / "log.jsonl")
    result = run_cli("moola_watch.cli", "check", "--config", str(bad), str(log))
    assert result.returncode == 2 and "unknown threshold(s): windw" in result.stderr


def test_config_and_flags_override_thresholds(tmp_path):
    log = healthy_scenario().write(tmp_path / "log.jsonl")
    config = tmp_path / "moola-watch.toml"
    config.write_text("[thresholds]\ncollapse_high = 5.0\nbalance_high = 1.0\nconfirm = 1\n")
    result, (report,) = check_json("--config", config, log)
    assert {a["rule"] for a in report["alerts"]} == {"imbalance"} and result.returncode == 0
    result, (report,) = check_json("--config", config, "--collapse-high", "1.2", log)
    # dominance alone (this log records no per-task losses) is a warning: check passes
    assert "collapse" in {a["rule"] for a in report["alerts"]} and result.returncode == 0


def test_bad_lines_are_counted_with_line_numbers(tmp_path):
    log = tmp_path / "log.jsonl"
    lines = healthy_scenario().lines()
    log.write_bytes(b"".join(lines[:3]) + b"garbage\n" + b"".join(lines[3:]) + lines[0][:20])
    _, (report,) = check_json(log)
    assert report["records"] == len(lines) and report["bad_lines"] == 2
    assert report["bad_line_details"][0]["line"] == 4 and report["bad_line_details"][1]["category"] == "cut_off"


def test_killed_run_is_never_healthy(tmp_path):
    log = LogBuilder(t0=1000.0).start().epoch(1).epoch(2).write(tmp_path / "log.jsonl")
    _, (report,) = check_json(log)
    assert report["status"] == "stale" and report["verdict"] == "no_measurements"  # its epochs measured no gradient
    assert [a["rule"] for a in report["alerts"]] == ["stale"]
    measured = LogBuilder(t0=1000.0).start().grad(1, 0.3, 0.5).epoch(1).write(tmp_path / "measured.jsonl")
    _, (report,) = check_json(measured)
    assert report["status"] == "stale" and report["verdict"] == "warning"


def test_analyze_shows_tables_and_writes_csv_and_json(tmp_path):
    log = collapse_scenario().write(tmp_path / "log.jsonl")
    result = run_cli("moola_watch.cli", "analyze", str(log), "--csv", str(tmp_path / "csv"))
    assert result.returncode == 1
    for heading in ("verdict", "Gradient norms", "Worst layers", "Task balance", "Alerts", "TASK COLLAPSE DETECTED"):
        assert heading in result.stdout, heading
    assert "increase alpha by 2x" in result.stdout
    written = sorted(p.name for p in (tmp_path / "csv").iterdir())
    assert written == [f"log.{n}.csv" for n in ("alerts", "balance", "epochs", "grad", "layers", "runs")]
    layers = (tmp_path / "csv" / "log.layers.csv").read_text().splitlines()
    assert layers[0] == "run,epoch,step,layer,norm" and len(layers) == 1 + 10 * 4
    result = run_cli("moola_watch.cli", "analyze", "--json", str(log))
    report = json.loads(result.stdout)
    assert report["verdict"] == "error" and report["worst_layers"]["largest"]


def test_analyze_tables_keep_a_nan_step_name_each_run_and_print_epochs_whole(tmp_path):
    """Long histories are sampled for the terminal: the step with a NaN must be among the rows shown; rows of
    two runs in one log carry their run; a record without an epoch shows '-', not 'nan', and others '3', not
    '3.0'."""
    log = tmp_path / "two.jsonl"
    lines = []
    for run in ("first-run", "second-run"):
        builder = LogBuilder(run).start()
        for step in range(1, 41):
            bad = run == "first-run" and step == 23  # between two evenly spaced rows of 12
            builder.grad(0, 0.3, 0.3, {"a.weight": float("nan") if bad else 0.3, "b.weight": 0.3})
            builder.records[-1].update(step=step, epoch=step // 10 if step > 10 else None)
        lines += builder.end().lines()
    log.write_bytes(b"".join(lines))
    result = run_cli("moola_watch.cli", "analyze", str(log), env={"COLUMNS": "150"})
    table = result.stdout.split("Gradient norms", 1)[1].split("mean norm trend", 1)[0]
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in table.splitlines() if line.startswith("│")]
    # a review's case: 12 rows of 20 read as the whole run; the title says they are some of them
    assert f"Gradient norms: {len(rows)} of 80 records, evenly spaced (analyze --csv DIR has all)" in result.stdout
    header = [cell.strip() for cell in table.splitlines()[2].split("┃")[1:-1]]
    assert header[:3] == ["run", "epoch", "step"], header
    by_step = {(row[0], row[2]): row for row in rows}
    assert by_step[("first-run", "23")][1] == "2" and by_step[("first-run", "23")][-1] == "1", rows
    assert {row[0] for row in rows} == {"first-run", "second-run"}
    assert {row[1] for row in rows if int(row[2]) <= 10} == {"-"} and not any(row[1][-2:] == ".0" for row in rows)


def test_analyze_shows_tasks_whose_names_are_no_identifiers_as_written(tmp_path):
    """Task names as users write them (a hyphen, a space, a dot, a bracket) head their columns, literally."""
    tasks = ("cls-head", "reg head", "a.b", "[bold]x[/bold]")
    log = LogBuilder("[red]run").start()
    for epoch in range(1, 4):
        norms = {task: 0.1 * (i + 1) for i, task in enumerate(tasks)}
        shares = {task: 0.25 for task in tasks}
        log.add("task_balance", epoch=epoch, step=epoch * 10, norms=norms, shares=shares)
    result = run_cli("moola_watch.cli", "analyze", str(log.end().write(tmp_path / "log.jsonl")),
                     env={"COLUMNS": "200"})  # fmt: skip
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    table = result.stdout.split("Task balance, 4 tasks", 1)[1]
    assert all(task in table for task in tasks) and "0.3 / 0.25" in table


def test_watcher_runs_where_torch_cannot_be_imported(tmp_path):
    log = collapse_scenario().write(tmp_path / "log.jsonl")
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import moola_watch.analyze, moola_watch.cli, moola_watch.render, moola_watch.report, moola_watch.tail\n"
        "from moola_watch.cli import main\n"
        f"rc = main(['check', {str(log)!r}]); assert 'torch' not in [m for m in sys.modules if sys.modules[m]]\n"
        f"rc2 = main(['analyze', {str(log)!r}])\n"
        "sys.exit(rc + 10 * rc2)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 11, result.stderr
    assert "TASK COLLAPSE" in result.stdout


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("collapse_high = 9\ncollapse-high = 9\n", "sets collapse_high twice (as collapse_high and collapse-high)"),
        ("window = 2.5\n", "threshold window must be a whole number, got 2.5"),
    ],
)
def test_a_config_that_says_one_threshold_twice_or_a_fraction_of_a_window_is_a_usage_error(tmp_path, config, message):
    (tmp_path / "c.toml").write_text("[thresholds]\n" + config)
    log = healthy_scenario().write(tmp_path / "log.jsonl")
    result = run_cli("moola_watch.cli", "check", "--config", str(tmp_path / "c.toml"), str(log))
    assert result.returncode == 2 and message in result.stderr, result.stderr


@pytest.mark.parametrize(("package", "words"), [("moola_watch", "verdict=healthy"), ("moola", "usage: moola")])
def test_python_dash_m_runs_each_command_where_its_script_is_not_on_the_path(package, words):
    args = ["check", str(REPO / "sample_logs" / "healthy.jsonl")] if package == "moola_watch" else ["--help"]
    result = subprocess.run([sys.executable, "-m", package, *args], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0 and words in result.stdout, result.stderr


def test_once_shows_every_firing_alert_however_many(tmp_path):
    """Eleven tasks dominated by a twelfth: eleven firing collapse alerts, every one listed (a cap of rows
    may hide only pending or resolved ones)."""
    log = LogBuilder().start()
    tasks = [f"task{i:02d}" for i in range(12)]
    for epoch in range(1, 12):
        norms = {task: 100.0 if task == "task00" else 0.01 for task in tasks}
        log.add("task_balance", epoch=epoch, step=epoch * 10, norms=norms)
    result = subprocess.run([sys.executable, "-m", "moola_watch", "--once", str(log.write(tmp_path / "many.jsonl"))],
                            capture_output=True, text=True, cwd=REPO, env={**os.environ, "COLUMNS": "200"})  # fmt: skip
    checked = json.loads(run_cli("moola_watch.cli", "check", "--json", str(tmp_path / "many.jsonl")).stdout)
    firing = [a for a in checked["alerts"] if a["state"] == "firing"]
    rows = re.findall(r"^│ firing ", result.stdout, flags=re.MULTILINE)  # the state column of the alert table
    assert len(firing) >= 11 and len(rows) == len(firing), result.stdout[-3000:]
    assert "more not shown" not in result.stdout


LONG_IDS = ("enhanced_simple_lstm-20261130-101332-9713", "enhanced_simple_lstm-20261130-101327-9710")


def collapse_then_healthy(path, runs=LONG_IDS):
    """Two runs of one log, as a sweep writes them: a collapse, then a healthy run; ids that differ at the end."""
    builders = (collapse_scenario(), healthy_scenario())
    for builder, run in zip(builders, runs, strict=True):
        for record in builder.records:
            record["run"] = run
    path.write_bytes(b"".join(line for builder in builders for line in builder.lines()))
    return path


def test_analyze_worst_layers_are_each_runs_own(tmp_path):
    """A layer that exploded in one run and stayed small in the next: each run has its own row (the text table a
    run column, the JSON a run on every row), never one row with the last norm of one run beside the peak of the
    other."""
    log = tmp_path / "two.jsonl"
    first, second = LogBuilder("first").start(), LogBuilder("second").start()
    for epoch, norm in ((1, 40.0), (2, 0.3)):
        first.grad(epoch, norm, norm, {"w.weight": norm, "v.weight": 0.1})
    for epoch in (1, 2):
        second.grad(epoch, 0.2, 0.2, {"w.weight": 0.2, "v.weight": 0.05})
    log.write_bytes(b"".join(first.end().lines() + second.end().lines()))
    report = json.loads(run_cli("moola_watch.cli", "analyze", "--json", str(log)).stdout)
    rows = {(row["run"], row["layer"]): row for row in report["worst_layers"]["largest"]}
    assert set(rows) == {(run, layer) for run in ("first", "second") for layer in ("w.weight", "v.weight")}
    assert (rows[("first", "w.weight")]["last"], rows[("first", "w.weight")]["peak"]) == (0.3, 40.0)
    assert (rows[("second", "w.weight")]["last"], rows[("second", "w.weight")]["peak"]) == (0.2, 0.2)
    assert report["worst_layers"]["smallest"] == []  # two layers a run, both among its largest already

    shown = run_cli("moola_watch.cli", "analyze", str(log)).stdout
    table = shown.split("Worst layers", 1)[1].split("\n\n", 1)[0].split("Alerts", 1)[0]
    header = next(line for line in table.splitlines() if line.startswith("┃"))
    assert header.split("┃")[1].strip() == "run"
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in table.splitlines() if line.startswith("│")]
    w_rows = [row for row in cells if row[2] == "w.weight"]
    assert {(row[3], row[4]) for row in w_rows} == {("0.3", "40"), ("0.2", "0.2")}  # (largest and smallest)
    assert [row[0] for row in cells if row[0]] == ["first", "second"]  # each run's block begins with its run
    rules_between = [line for line in table.splitlines() if line.startswith("├")]
    assert len(rules_between) == 1  # a rule under the first run's rows, none under the last


def test_analyze_lists_no_layer_among_both_the_largest_and_the_smallest(tmp_path):
    """A review's case: a model of fewer layers than the two lists hold showed the same tensor among the largest
    and among the smallest. The smallest are of the layers not among the largest, in the text and the JSON."""
    log = LogBuilder().start()
    norms = {f"block{index:02d}.weight": 0.01 * (index + 1) for index in range(12)}
    for epoch in (1, 2):
        log.grad(epoch, 0.06, 0.12, norms)
    path = log.end().write(tmp_path / "log.jsonl")
    worst = json.loads(run_cli("moola_watch.cli", "analyze", "--json", str(path)).stdout)["worst_layers"]
    largest, smallest = ([row["layer"] for row in worst[end]] for end in ("largest", "smallest"))
    assert largest == [f"block{index:02d}.weight" for index in range(11, 1, -1)]
    assert smallest == ["block00.weight", "block01.weight"]
    shown = run_cli("moola_watch.cli", "analyze", str(path), env={"COLUMNS": "80"}).stdout
    table = shown.split("Worst layers", 1)[1].split("└", 1)[0]  # to the table's bottom border
    layers = [line.split("│")[2].strip() for line in table.splitlines() if line.startswith("│")]
    assert sorted(layers) == sorted(norms), table  # each layer once


def test_analyze_of_several_runs_reads_at_80_columns(tmp_path):
    """A CI job's 80 columns, two runs with long ids: every line fits, no number is cut (no '3.…'), each run is
    shown by what tells it apart, the alerts' message column is wide enough to read, and each run has its own
    trend line."""
    log = collapse_then_healthy(tmp_path / "two.jsonl")
    result = run_cli("moola_watch.cli", "analyze", str(log), env={"COLUMNS": "80"})
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == f"Plots: moola-watch report {log} -o report.html"  # a command: one line, however long
    assert max(map(len, lines[:-1])) <= 80
    assert not re.search(r"[\d.-]…", result.stdout), result.stdout  # a cut number ends in an ellipsis
    for title in ("Gradient norms", "Task balance"):
        table = result.stdout.split(title, 1)[1].split("└", 1)[0]
        runs = {line.split("│")[1].strip() for line in table.splitlines() if line.startswith("│")} - {""}
        assert runs == {"…101332-9713", "…101327-9710"}, (title, runs)
    for trend in ("mean norm trend (log scale), per run:", "ratio trend (log scale, healthy 0.5-2.0), per run:"):
        at = lines.index(next(line for line in lines if line.startswith(trend)))
        assert [line.split()[0] for line in lines[at + 1 : at + 3]] == ["…101332-9713", "…101327-9710"], trend
    alerts = result.stdout.split("\nAlerts", 1)[1]
    header = next(line for line in alerts.splitlines() if "message / recommendation" in line)
    assert len(header.split("┃")[-2]) >= 32, header  # the message column: 30 cells and its padding
    assert "TASK COLLAPSE: Pointer task" in " ".join(alerts.replace("│", " ").split())
    words = " ".join(result.stdout.replace("│", " ").split())
    assert f"{LONG_IDS[0]} completed (shown as …101332-9713)" in words  # the labels' key


def test_check_tells_a_flapping_rule_once_with_how_often_it_fired_again(tmp_path):
    """A review's case: one task's collapse resolved and fired again six times: six lines buried the alert that
    decided the verdict. The text tells the latest episode (its figures are those to act on: a later one named a
    worse layer the first did not), where and how often it came before; --json keeps each."""
    log = LogBuilder().start()
    epoch = 0
    for cycle in range(3):  # exploding twice running (it is confirmed over two samples), then healthy twice
        for peak in (40.0, 40.0, 0.3, 0.3):
            epoch += 1
            log.grad(epoch, 0.3, peak, {"a": 0.3, f"layer{cycle}": peak})
    path = log.end().write(tmp_path / "flapping.jsonl")
    result = run_cli("moola_watch.cli", "check", str(path))
    exploding = [line for line in result.stdout.splitlines() if "exploding (layers)" in line]
    assert exploding == [
        "    error    resolved exploding (layers) since epoch 9, step 90 (and 2 times before, the first since epoch 1, "
        "step 10, each resolved): Exploding gradients in 1 layer (norm > 10): layer2 -> Reduce learning rate or clip "
        "gradients (clip_grad_norm_)"
    ], result.stdout
    episodes = [a for a in check_json(path)[1][0]["alerts"] if a["rule"] == "exploding"]
    assert [a["first_step"] for a in episodes] == [10, 50, 90]


def test_both_commands_say_their_version_that_of_the_package_even_without_torch():
    """A review's case: ``moola --version`` did not exist, and ``moola-watch --version`` was taken for a log to
    follow. The trainer's says it where torch is not installed too (the watcher's install has none)."""
    version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    for package, name in (("moola_watch.cli", "moola-watch"), ("moola.cli", "moola")):
        result = run_cli(package, "--version")
        assert result.returncode == 0 and result.stdout == f"{name} {version}\n", result.stderr
    code = "import sys; sys.modules['torch'] = None; import importlib.util as u; u.find_spec = lambda n: None\n" \
           "from moola.cli import main; main(['--version'])\n"  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == f"moola {version}\n", result.stderr
