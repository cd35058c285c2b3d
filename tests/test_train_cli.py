"""The real `python -m moola.cli train` in subprocesses, as a user runs it."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import REPO, run_cli, strict_lines

from moola_watch.schema import Rejected, decode_record


def decoded(path):
    records = [decode_record(line) for line in path.read_bytes().splitlines()]
    assert not [r for r in records if isinstance(r, Rejected)]
    return records


def test_monitored_run_writes_a_strict_log_and_the_spec_console(tmp_path, small_train_args):
    log = tmp_path / "run.jsonl"
    result = run_cli("moola.cli", *small_train_args, "--grad-log", str(log))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for expected in (
        "[PHASE 4] Gradient monitoring enabled (log frequency: 4 epochs)",
        f"[PHASE 4] Gradient log: {log}",
        "Epoch 4 Gradient Stats:\n  Mean norm: ",
        "\n  Max norm:  ",
        "[PHASE 4] Gradient Monitoring Summary:\n  Mean gradient norm: ",
        "  Max gradient norm: ",
        "Epoch 12/12 - loss",
    ):
        assert expected in out, expected
    assert "Epoch 3 Gradient Stats" not in out
    strict_lines(log)  # the stdlib accepts every line with NaN/Infinity tokens refused
    records = decoded(log)
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end" and records[-1]["status"] == "completed"
    assert kinds.count("grad_stats") == 3 and kinds.count("task_balance") == 12 and kinds.count("epoch") == 12
    start = records[0]
    assert start["config"]["alpha"] == 1.0 and start["thresholds"]["collapse_high"] == 5.0
    assert "encoder.weight_hh_l0" in start["parameters"]
    balance = next(r for r in records if r["kind"] == "task_balance")
    assert set(balance["norms"]) == {"pointer", "type"} and -1.0 <= balance["cosine"] <= 1.0
    assert balance["ratio"] == pytest.approx(balance["norms"]["pointer"] / balance["norms"]["type"])
    epoch = next(r for r in records if r["kind"] == "epoch")
    assert {"type_acc", "pointer_err_bars"} <= set(epoch["metrics"]) and set(epoch["task_losses"]) == {
        "type",
        "pointer",
    }


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--loss-beta", "TASK COLLAPSE: Pointer task dominating"),
        ("--loss-alpha", "TASK COLLAPSE: Type task dominating"),
    ],
)
def test_heavy_loss_weight_collapses_the_other_task(tmp_path, small_train_args, flag, message):
    log = tmp_path / "run.jsonl"
    result = run_cli("moola.cli", *small_train_args, flag, "50", "--grad-log", str(log))
    assert result.returncode == 0, result.stderr
    assert f"[PHASE 4] {message}" in result.stdout
    assert f"TASK COLLAPSE DETECTED: {message.split(': ')[1]}" in result.stdout
    collapse = [r for r in decoded(log) if r["kind"] == "alert" and r["rule"] == "collapse"]
    assert collapse and collapse[0]["state"] == "firing" and collapse[0]["message"].startswith(message)
    urgent = {"error": "Urgent: ", "warning": "Not urgent while the "}  # a warning's task still learns
    assert all(alert["recommendation"].startswith(urgent[alert["severity"]]) for alert in collapse), collapse
    # The watcher replays the same rules on the log and reaches the trainer's verdict.
    check = run_cli("moola_watch.cli", "check", "--json", str(log))
    report = json.loads(check.stdout)
    assert check.returncode == 1 and report["verdict"] == "error" and report["status"] == "completed"
    watched = next(a for a in report["alerts"] if a["rule"] == "collapse")
    assert watched["message"].startswith(message) and watched["first_step"] == collapse[0]["step"]


@pytest.mark.parametrize(("flag", "off"), [("--loss-beta", "pointer"), ("--loss-alpha", "type")])
def test_a_task_switched_off_with_weight_0_trains_and_is_not_called_a_collapse(tmp_path, small_train_args, flag, off):
    """An ablation (one task's weight 0): the pointer/type ratio is 0 or infinite. With the pointer off, the
    trainer's own rules divided by the window's mean ratio of 0 and the run died at the first full window."""
    log = tmp_path / "run.jsonl"
    result = run_cli("moola.cli", *small_train_args, flag, "0", "--grad-log", str(log))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "rules failed" not in result.stdout
    assert "TASK COLLAPSE" not in result.stdout
    check = run_cli("moola_watch.cli", "check", "--json", str(log))
    report = json.loads(check.stdout)
    assert report["status"] == "completed" and report["verdict"] == "warning", check.stdout
    assert not [a for a in report["alerts"] if a["rule"] == "collapse"]
    unjudged = [a for a in report["alerts"] if a["rule"] == "balance_unmeasured"]
    assert unjudged and f"The balance of the {off} task was never judged" in unjudged[0]["message"]


def test_task_floors_from_the_command_line_are_recorded_and_a_bad_one_is_a_one_line_usage_error(
    tmp_path, small_train_args
):
    """``--task-floor`` (from a run on each task alone) goes in run_start, where ``check`` reads it."""
    log = tmp_path / "run.jsonl"
    floors = ("--task-floor", "type=0.6", "--task-floor", "pointer=0")
    result = run_cli("moola.cli", *small_train_args, "--epochs", "2", *floors, "--grad-log", str(log))
    assert result.returncode == 0, result.stderr
    start = json.loads(log.read_bytes().splitlines()[0])
    assert start["kind"] == "run_start" and start["task_floors"] == {"type": 0.6, "pointer": 0.0}
    unmonitored = [arg for arg in small_train_args if arg != "--monitor-gradients"]
    for args, words in (
        (
            (*small_train_args, "--task-floor", "type=-1"),
            "the type floor must be a finite loss of at least 0",
        ),
        ((*small_train_args, "--task-floor", "speed=1"), "must be TASK=LOSS with TASK type or pointer"),
        (
            (*small_train_args, "--task-floor", "type=nan"),
            "the type floor must be a finite loss of at least 0",
        ),
        ((*unmonitored, "--task-floor", "type=0.6"), "--task-floor need --monitor-gradients"),
    ):
        refused = run_cli("moola.cli", *args, "--grad-log", str(tmp_path / "never.jsonl"))
        assert refused.returncode == 2 and words in refused.stderr.splitlines()[-1]
        assert not (tmp_path / "never.jsonl").exists()


def test_floors_reads_each_tasks_floor_off_its_run_alone_and_the_flags_it_prints_judge_the_pair(
    tmp_path, small_train_args
):
    """A user's way to floors: train each task alone (the other weight 0), `moola-watch floors` on those logs
    gives each task's mean training loss over its last 3 epochs and the flags; a run of both tasks together,
    a file that is not a log and a missing one are said so, exit 2, the good logs' floors still printed."""
    alone = {}
    for task, flag in (("type", "--loss-beta"), ("pointer", "--loss-alpha")):
        alone[task] = tmp_path / f"{task}-alone.jsonl"
        trained = run_cli("moola.cli", *small_train_args, "--epochs", "5", flag, "0", "--grad-log", str(alone[task]))
        assert trained.returncode == 0, trained.stderr
    expected = {}
    for task, log in alone.items():
        epochs = [json.loads(line) for line in log.read_bytes().splitlines() if b'"kind":"epoch"' in line]
        expected[task] = sum(e["task_losses"][task] for e in epochs[-3:]) / 3
    result = run_cli("moola_watch.cli", "floors", str(alone["type"]), str(alone["pointer"]))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    first = json.loads(next(line for line in alone["type"].read_bytes().splitlines() if b'"kind":"epoch"' in line))
    first = first["task_losses"]["type"]
    assert (f"type {expected['type']:.4g}  (the mean training loss of its last 3 epochs, "
            f"{expected['type'] / first:.0%} of its first epoch's {first:.4g})") in lines[0]  # fmt: skip
    assert lines[-1] == f"--task-floor=type={expected['type']:.4g} --task-floor=pointer={expected['pointer']:.4g}"
    together = tmp_path / "together.jsonl"
    assert run_cli("moola.cli", *small_train_args, "--epochs", "2", "--grad-log", str(together)).returncode == 0
    foreign = tmp_path / "notes.txt"
    foreign.write_text("not a log\n")
    mixed = run_cli(
        "moola_watch.cli", "floors", str(together), str(foreign), str(alone["type"]), str(tmp_path / "gone.jsonl")
    )
    assert mixed.returncode == 2
    assert "skipped: it trained type, pointer together, not one task alone" in mixed.stdout
    assert mixed.stdout.splitlines()[-1] == f"--task-floor=type={expected['type']:.4g}"
    errors = mixed.stderr.splitlines()
    assert len(errors) == 3 and "together.jsonl: no run trained one task alone and recorded its training" in errors[0]
    assert "notes.txt is not a moola log" in errors[1] and "cannot read" in errors[2]
    checked = json.loads(run_cli("moola_watch.cli", "check", "--json", *lines[-1].split(), str(together)).stdout)
    assert checked["runs"][0]["task_floors"] == {task: float(f"{loss:.4g}") for task, loss in expected.items()}


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory nobody may create files in; for root (which ignores modes) made immutable."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    immutable = os.geteuid() == 0
    if immutable and subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
        pytest.skip("running as root without chattr: cannot make a read-only directory")
    yield locked
    if immutable:
        subprocess.run(["chattr", "-i", str(locked)], check=True)


def test_log_in_a_read_only_directory_warns_once_and_training_completes(read_only_dir, small_train_args):
    log = read_only_dir / "run.jsonl"
    result = run_cli("moola.cli", *small_train_args, "--epochs", "4", "--grad-log", str(log))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("cannot be written") == 1
    assert "training continues without it" in result.stdout
    assert "[PHASE 4] Gradient Monitoring Summary:" in result.stdout and "Done: val type accuracy" in result.stdout
    assert not log.exists()
    # a review's case: the closing line still said "analyze: moola-watch analyze" a log that holds nothing of it
    assert f"Gradient log: none written to {log} (see the warning above)" in result.stdout
    assert "moola-watch analyze" not in result.stdout


def test_a_directory_as_the_grad_log_is_a_usage_error_before_training(tmp_path, small_train_args):
    """Before, it warned, trained unlogged, and the closing line said `moola-watch analyze DIR`: every other log
    in that directory."""
    result = run_cli("moola.cli", *small_train_args, "--grad-log", str(tmp_path))
    assert result.returncode == 2 and result.stdout == "", result.stdout
    assert result.stderr == (
        f"moola: error: --grad-log {tmp_path} is a directory: give the log file, such as {tmp_path / 'run.jsonl'}\n"
    )


def test_balance_scopes_are_recorded(tmp_path, small_train_args):
    for scope, prefix in (("shared", "shared parameters ("), ("representation", "shared representation (")):
        log = tmp_path / f"{scope}.jsonl"
        result = run_cli(
            "moola.cli", *small_train_args, "--epochs", "2", "--balance-scope", scope, "--grad-log", str(log)
        )
        assert result.returncode == 0, result.stderr
        balance = [r for r in decoded(log) if r["kind"] == "task_balance"]
        assert len(balance) == 2 and all(r["scope"].startswith(prefix) for r in balance)
        assert all(r["ratio"] > 0 for r in balance)


def test_default_log_goes_under_runs(tmp_path, small_train_args):
    result = run_cli("moola.cli", *small_train_args, "--epochs", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    logs = list((tmp_path / "runs").glob("enhanced_simple_lstm-*.jsonl"))
    assert len(logs) == 1 and str(logs[0].relative_to(tmp_path)) in result.stdout
    assert decoded(logs[0])[-1]["status"] == "completed"


def test_bad_data_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.npz"
    X = np.random.default_rng(0).normal(size=(20, 30, 4))
    X[3, 7, 1] = np.nan
    np.savez(bad, X=X, y=np.arange(20) % 2, expansion_start=np.zeros(20, int), expansion_end=np.ones(20, int))
    result = run_cli("moola.cli", "train", "--data", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip() == f"moola: error: {bad}: X has NaN or infinite values (first at sample 3, bar 7)"
    np.savez(
        bad, X=np.nan_to_num(X) + 5, y=np.arange(20) % 2, expansion_start=np.full(20, 40), expansion_end=np.full(20, 41)
    )
    result = run_cli("moola.cli", "train", "--data", str(bad))
    assert result.returncode == 2 and "expansion_start[0] = 40 is outside the window (0..29)" in result.stderr


def test_own_npz_data_trains(tmp_path):
    from moola.data import make_synthetic

    data = make_synthetic(60, seed=3)
    path = tmp_path / "mine.npz"
    labels = np.array(data.classes)[data.y]
    np.savez(path, X=data.X, y=labels, expansion_start=data.expansion_start, expansion_end=data.expansion_end)
    result = run_cli("moola.cli", "train", "--data", str(path), "--predict-pointers", "--epochs", "2")
    assert result.returncode == 0, result.stderr
    assert "Done: val type accuracy" in result.stdout


def test_help_explains_every_flag_with_its_default():
    result = run_cli("moola.cli", "train", "--help")
    assert result.returncode == 0
    for flag in (
        "--model",
        "--device",
        "--predict-pointers",
        "--monitor-gradients",
        "--no-monitor-gradients",
        "--gradient-log-freq",
        "--loss-alpha",
        "--loss-beta",
        "--epochs",
        "--grad-log",
        "--seed",
        "--lr",
        "--batch-size",
        "--n-samples",
        "--data",
        "--task-balance-freq",
    ):
        assert flag in result.stdout, flag
    assert "(default: 10)" in result.stdout and "(default: 1.0)" in result.stdout


def test_cuda_requested_without_cuda_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run_cli("moola.cli", "train", "--device", "cuda")
    assert result.returncode == 2 and "CUDA is not available" in result.stderr


def test_ctrl_c_marks_the_log_interrupted(tmp_path):
    log = tmp_path / "run.jsonl"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "moola.cli",
            "train",
            "--predict-pointers",
            "--monitor-gradients",
            "--gradient-log-freq",
            "1",
            "--epochs",
            "500",
            "--grad-log",
            str(log),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not log.exists() or b'"kind":"epoch"' not in log.read_bytes()):
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 130, out
    assert "interrupted" in out and "Traceback" not in out
    end = decoded(log)[-1]
    assert end["kind"] == "run_end" and end["status"] == "interrupted"


def test_a_negative_learning_rate_and_a_file_that_is_not_npz_are_one_line_each(tmp_path):
    result = run_cli("moola.cli", "train", "--lr", "-1", "--epochs", "1")
    assert result.returncode == 2 and "argument --lr: must be a number above 0" in result.stderr
    text = tmp_path / "notes.txt"
    text.write_text("not arrays")
    result = run_cli("moola.cli", "train", "--data", str(text), "--epochs", "1")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "pickle" not in result.stderr
    assert "not an .npz archive of arrays" in result.stderr


def test_a_reader_that_goes_away_does_not_end_the_training(tmp_path, small_train_args):
    """`moola train ... | head -3`: the pipe closes after three lines; the run goes on to the end, quietly."""
    log = tmp_path / "run.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "moola.cli", *small_train_args, "--grad-log", str(log)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    for _ in range(3):
        process.stdout.readline()
    process.stdout.close()  # what `head` does once it has its lines
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr
    records = decoded(log)
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == list(range(1, 13))
    assert records[-1]["kind"] == "run_end" and records[-1]["status"] == "completed"
