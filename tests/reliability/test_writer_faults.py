"""Faults on the trainer side: the run completes, the summary prints, good records stay good."""

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from processes import REPO, wait_for_epochs
from torch import nn

from moola.utils.monitoring import GradientMonitor
from moola_watch.schema import Rejected, decode_record


def lines_of(path):
    return [decode_record(line) for line in path.read_bytes().splitlines()]


def check_json(path, *args):
    result = subprocess.run(
        [sys.executable, "-m", "moola_watch.cli", "check", "--json", *args, str(path)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return json.loads(result.stdout)


def test_log_deleted_mid_run_is_started_afresh(tmp_path, trainer):
    log = tmp_path / "run.jsonl"
    process = trainer(log, 12)
    wait_for_epochs(log, 3)
    log.unlink()
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, out
    assert out.count("was deleted or replaced; writing a new file there") == 1
    assert "[PHASE 4] Gradient Monitoring Summary:" in out
    records = lines_of(log)
    assert not [r for r in records if isinstance(r, Rejected)]
    assert records[-1]["kind"] == "run_end" and records[-1]["status"] == "completed"
    assert [r["epoch"] for r in records if r["kind"] == "epoch"][-1] == 12


def test_log_directory_removed_mid_run_warns_once_and_training_completes(tmp_path, trainer):
    log = tmp_path / "logs" / "run.jsonl"
    process = trainer(log, 10)
    wait_for_epochs(log, 3)
    shutil.rmtree(log.parent)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, out
    assert out.count("cannot be written (No such file or directory)") == 1
    assert "Done: val type accuracy" in out and "[PHASE 4] Gradient Monitoring Summary:" in out
    assert not log.parent.exists()  # a removed directory is not silently recreated


def test_a_fifo_as_the_log_path_is_a_warning_and_training_completes(tmp_path):
    """A named pipe at the log's path: opening it for writing waits for a reader, forever. Before, the trainer
    hung before its first step."""
    log = tmp_path / "run.jsonl"
    os.mkfifo(log)
    result = subprocess.run(
        [sys.executable, "-m", "moola.cli", "train", "--predict-pointers", "--monitor-gradients", "--n-samples", "64",
         "--epochs", "2", "--grad-log", str(log)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("cannot be written (it is a pipe (FIFO), which would stall training until read)") == 1
    assert "[PHASE 4] Gradient Monitoring Summary:" in result.stdout and "Done:" in result.stdout


def test_disk_full_on_a_real_tmpfs(tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    script = (
        f"mount -t tmpfs -o size=12k tmpfs {mount} && cd {REPO} && {sys.executable} -m moola.cli train "
        f"--predict-pointers --monitor-gradients --n-samples 160 --epochs 6 --gradient-log-freq 1 "
        f"--task-balance-freq 1 --grad-log {mount}/run.jsonl; "
    )
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("cannot make a private mount namespace here (unshare -m)")
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", script + f"cp {mount}/run.jsonl {tmp_path}/kept.jsonl"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("cannot be written (No space left on device)") == 1
    assert "[PHASE 4] Gradient Monitoring Summary:" in result.stdout and "Done:" in result.stdout
    kept = (tmp_path / "kept.jsonl").read_bytes()
    assert kept.endswith(b"\n")  # the partial line of the failed write was taken back
    records = [decode_record(line) for line in kept.splitlines()]
    assert records and not [r for r in records if isinstance(r, Rejected)]


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 3)

    def forward(self, x):
        return self.a(x).sum()


def test_descriptor_closed_under_the_writer(tmp_path):
    log = tmp_path / "run.jsonl"
    model = Tiny()
    echoed: list[str] = []
    monitor = GradientMonitor(1, log_path=log, echo=echoed.append)
    for epoch in range(1, 4):
        model.zero_grad()
        model(torch.randn(2, 3)).backward()
        monitor.update(epoch, model)
        if epoch == 1:
            os.close(monitor._output.writer._fd)  # the fault: something closed our descriptor
    summary = monitor.on_run_end()
    assert sum("cannot be written (Bad file descriptor)" in line for line in echoed) == 1
    assert summary.grad_samples == 3 and any("Gradient Monitoring Summary" in line for line in echoed)
    records = lines_of(log)
    assert [r["kind"] for r in records] == ["run_start", "grad_stats"]


def test_losses_sharing_no_parameters_warn_instead_of_crashing():
    class Apart(nn.Module):
        def __init__(self):
            super().__init__()
            self.p, self.t = nn.Linear(2, 1), nn.Linear(2, 1)

    model, echoed = Apart(), []
    monitor = GradientMonitor(every_n_steps=1, warn=echoed.append)
    x = torch.randn(4, 2)
    for _ in range(2):
        losses = {"pointer": model.p(x).sum(), "type": model.t(x).sum()}
        assert monitor.on_before_backward(model, losses) is None
        assert monitor.backward(model, losses) is None  # the step still gets its gradients
        assert model.p.weight.grad is not None
        monitor.on_before_optimizer_step(model)
    assert sum("share no trainable parameters" in line for line in echoed) == 1


def test_appending_after_a_crashed_run_keeps_the_cut_line_one_bad_line(tmp_path, trainer):
    log = tmp_path / "run.jsonl"
    shutil.copy(REPO / "sample_logs" / "killed_midway.jsonl", log)
    before = check_json(log)
    process = trainer(log, 3)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, out
    after = check_json(log)
    assert after["bad_lines"] == before["bad_lines"] == 1
    assert len(after["runs"]) == 2 and after["runs"][1]["status"] == "completed"
    new_lines = log.read_bytes().splitlines()[before["records"] + 1 :]
    assert after["records"] == before["records"] + len(new_lines)


def test_kill_9_leaves_only_whole_records_and_the_run_is_dead_not_completed(tmp_path, trainer):
    """On the trainer's host the watcher sees its writer is gone: the run died (an error, exit 1), at once. A
    copy of the log (its writer wrote the original) is unterminated, then stale once quiet."""
    log = tmp_path / "run.jsonl"
    process = trainer(log, 200)
    wait_for_epochs(log, 4)
    process.send_signal(signal.SIGKILL)
    process.wait()
    lines = log.read_bytes().splitlines()
    report = check_json(log)
    assert report["bad_lines"] == 0 and report["records"] == len(lines)
    assert report["status"] == "dead" and report["verdict"] == "error"
    (died,) = report["alerts"]
    assert died["rule"] == "run_died" and died["state"] == "firing" and f"(pid {process.pid} on " in died["message"]
    copied = tmp_path / "elsewhere" / "run.jsonl"  # a copy: its writer never wrote there, so it cannot die there
    copied.parent.mkdir()
    shutil.copy(log, copied)
    report = check_json(copied)
    assert report["status"] == "running" and report["verdict"] == "unterminated"
    # Stale once the silence outlasts twice the run's longest wait between records (however busy the machine).
    times = [json.loads(line)["time"] for line in lines]
    longest = max(b - a for a, b in itertools.pairwise(times))
    time.sleep(max(0.0, times[-1] + 2 * longest + 0.5 - time.time()))
    stale = check_json(copied, "--stale-seconds", "0")
    assert stale["status"] == "stale" and [a["rule"] for a in stale["alerts"]] == ["stale"]


def test_a_second_writer_on_the_same_log_is_refused(tmp_path, trainer):
    log = tmp_path / "run.jsonl"
    first = trainer(log, 500)
    wait_for_epochs(log, 2)
    second = trainer(log, 2)
    out2, _ = second.communicate(timeout=120)
    first.send_signal(signal.SIGINT)  # the first run was still writing all along; stop it now
    first.communicate(timeout=60)
    assert first.returncode == 130 and second.returncode == 0
    assert out2.count("another process is writing this log") == 1 and "Done:" in out2
    records = lines_of(log)
    assert not [r for r in records if isinstance(r, Rejected)]
    assert len({r["run"] for r in records}) == 1 and records[-1]["status"] == "interrupted"
