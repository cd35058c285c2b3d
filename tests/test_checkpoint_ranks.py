"""``moola train --checkpoint-on-alert`` under torchrun: the replicas are identical, so rank 0 alone writes the
checkpoints; the other ranks train on, neither crashing nor waiting."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO

from moola.checkpoints import load_checkpoint

AUDITED_CLI = Path(__file__).with_name("audited_cli.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_under_torchrun_only_rank_0_writes_the_alert_checkpoints(tmp_path):
    checkpoints, renames = tmp_path / "ckpt", tmp_path / "renames.txt"
    result = subprocess.run(
        [*TORCHRUN, str(AUDITED_CLI), "train", "--predict-pointers", "--monitor-gradients", "--every-n-steps", "1",
         "--loss-alpha", "0.0001", "--hidden-size", "4", "--epochs", "4", "--n-samples", "300",
         "--checkpoint-on-alert", str(checkpoints), "--grad-log", str(tmp_path / "run.jsonl")],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "MOOLA_RENAMES": str(renames)},
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]  # both ranks finished the run
    writes = [line.split("\t") for line in renames.read_text().splitlines()]
    assert writes and {rank for rank, _ in writes} == {"0"}, writes  # every checkpoint published by rank 0
    names = sorted(p.name for p in checkpoints.iterdir())
    assert "last-good.pt" in names and any(name.startswith("alert-collapse-") for name in names), names
    assert not [name for name in names if name.endswith(".partial")]
    for name in names:
        assert "model" in load_checkpoint(checkpoints / name), name
