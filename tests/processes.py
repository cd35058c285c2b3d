"""Trainer subprocesses to disturb while they run (fault-injection tests)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from helpers import REPO

TRAIN = ["train", "--predict-pointers", "--monitor-gradients", "--n-samples", "160", "--gradient-log-freq", "1",
         "--task-balance-freq", "1"]  # fmt: skip


def start_trainer(log: Path, epochs: int = 40, *extra: str) -> subprocess.Popen:
    """``moola train`` writing ``log``, stdout and stderr together as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "moola.cli", *TRAIN, "--epochs", str(epochs), "--grad-log", str(log), *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def wait_for_epochs(log: Path, count: int, timeout: float = 60) -> None:
    """Block until ``log`` holds ``count`` epoch records."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and log.read_bytes().count(b'"kind":"epoch"') >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{log} never reached {count} epoch records")
