"""torch.distributed with gloo on CPU: rank 0 writes the norms of the full (averaged or sharded) gradients."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dist_worker import model_and_batch
from helpers import REPO, run_cli

from moola.utils.monitoring import compute_gradient_statistics
from moola_watch.schema import decode_record

WORKER = Path(__file__).with_name("dist_worker.py")


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def torchrun(mode: str, out: Path) -> None:
    result = subprocess.run([*TORCHRUN, str(WORKER), mode, str(out)], cwd=REPO, capture_output=True, text=True,
                            timeout=180)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def torchrun_train(*args: str, entry: tuple[str, ...] = ("-m", "moola.cli")) -> subprocess.CompletedProcess:
    """``moola train ARGS`` on two CPU ranks under torchrun (``entry``: the module or script it starts)."""
    return subprocess.run([*TORCHRUN, *entry, "train", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def single_process_reference() -> dict:
    model, x, y = model_and_batch()
    torch.nn.functional.mse_loss(model(x), y).backward()
    return compute_gradient_statistics(model)


def grad_stats(path: Path) -> dict:
    records = [decode_record(line) for line in path.read_bytes().splitlines()]
    return next(r for r in records if isinstance(r, dict) and r["kind"] == "grad_stats")


@pytest.mark.parametrize("mode", ["ddp", "ddp-early", "fsdp"])
def test_rank_0_logs_the_norms_of_the_full_gradients(tmp_path, mode):
    """``ddp-early``: the monitor was made before the process group (before ``Accelerator()``)."""
    if not torch.distributed.is_available():
        pytest.skip("this torch build has no torch.distributed")
    torchrun(mode, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.jsonl"]  # rank 1 wrote nothing
    start = decode_record((tmp_path / "run.jsonl").read_bytes().splitlines()[0])
    assert start["world_size"] == 2 and start["rank"] == 0  # so halting is agreed on by both ranks
    expected, logged = single_process_reference(), grad_stats(tmp_path / "run.jsonl")
    assert logged["total_norm"] == pytest.approx(expected["total_norm"], rel=1e-5)
    assert set(logged["layer_norms"]) == set(expected["layer_norms"])
    for name, norm in expected["layer_norms"].items():
        assert logged["layer_norms"][name] == pytest.approx(norm, rel=1e-5), name


def test_per_rank_writes_one_file_per_rank_with_the_rank_in_every_record(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("this torch build has no torch.distributed")
    torchrun("ddp-per-rank", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.rank0.jsonl", "run.rank1.jsonl"]
    runs = set()
    for rank in (0, 1):
        records = [decode_record(line) for line in (tmp_path / f"run.rank{rank}.jsonl").read_bytes().splitlines()]
        assert records and all(r["rank"] == rank for r in records)
        assert records[0]["world_size"] == 2
        runs |= {r["run"] for r in records}
    assert len(runs) == 1, runs  # one job, one run: rank 0's made-up id in both files
    # The path the job was given holds nothing: the watcher says where the ranks' logs are.
    result = run_cli("moola_watch.cli", "check", str(tmp_path / "run.jsonl"))
    assert result.returncode == 2
    assert "its ranks wrote per-rank logs beside it: run.rank0.jsonl, run.rank1.jsonl" in result.stderr, result.stderr


def test_torchrun_trains_on_two_cpu_ranks_with_one_log_and_one_voice(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("this torch build has no torch.distributed")
    log = tmp_path / "run.jsonl"
    result = torchrun_train(
        "--predict-pointers", "--monitor-gradients", "--epochs", "3", "--n-samples", "120",
        "--gradient-log-freq", "1", "--task-balance-freq", "1", "--grad-log", str(log),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("[PHASE 4] Gradient Monitoring Summary:") == 1  # rank 1 is silent
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.jsonl"]
    records = [decode_record(line) for line in log.read_bytes().splitlines()]
    assert records[0]["world_size"] == 2 and records[0]["config"]["world_size"] == 2
    assert records[-1]["status"] == "completed"
    assert [r["kind"] for r in records].count("task_balance") == 3


@pytest.mark.parametrize("entry", [("-m", "moola.cli"), (str(Path(__file__).with_name("slow_rank0_train.py")),)],
                         ids=["moola", "rank-0-slow-to-finish"])  # fmt: skip
def test_halt_on_under_torchrun_stops_every_rank_at_the_same_step_with_the_reason_in_the_log(tmp_path, entry):
    """A starved task's collapse is seen from each rank's own batches, so one rank halts a step before the
    other: alone, it left the other blocked in the next all-reduce until it crashed. The ranks agree: both stop
    at the same step, exit 3, and rank 0's log says which rank's alert halted the run. Rank 0 writes the log and
    prints while the others are done: the first rank to exit 3 made torchrun SIGTERM rank 0 (exit -15, now and
    then in CI; always when rank 0 is a second slower), so halted ranks wait for each other before they exit."""
    if not torch.distributed.is_available():
        pytest.skip("this torch build has no torch.distributed")
    log = tmp_path / "run.jsonl"
    result = torchrun_train(
        "--predict-pointers", "--monitor-gradients", "--every-n-steps", "1", "--loss-alpha", "0.0001",
        "--hidden-size", "4", "--epochs", "10", "--n-samples", "300", "--halt-on", "error", "--grad-log", str(log),
        entry=entry,
    )  # fmt: skip
    output = result.stdout + result.stderr
    # torchrun itself exits 1 when its workers fail; each rank exited 3 (halted), none lost its peer.
    assert result.returncode == 1 and "Connection" not in output, output[-3000:]
    assert output.count("exitcode  : 3") == 2, output[-3000:]
    records = [decode_record(line) for line in log.read_bytes().splitlines()]
    end = records[-1]
    assert end["kind"] == "run_end" and end["status"] == "failed", end
    assert re.match(r"halted on error alert collapse \(type\) at step \d+ on rank [01]: TASK COLLAPSE", end["error"])


def test_balancers_take_rank_0s_weights_whatever_each_rank_measured(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("this torch build has no torch.distributed")
    torchrun("balancer", tmp_path)
    ranks = [torch.load(tmp_path / f"w{rank}.pt") for rank in (0, 1)]
    assert ranks[0]["updated"] != ranks[1]["updated"]  # each rank's own update: different weights
    assert ranks[0]["synchronised"] == ranks[1]["synchronised"] == ranks[0]["updated"]
    assert ranks[0]["second"] == ranks[1]["second"]  # rank 1 measured nothing and still synchronised


def per_rank_weights(out: Path) -> list[dict]:
    """Each rank's log: the weights every balance measurement used, and every change of the weights, by step."""
    logs = []
    for rank in (0, 1):
        records = [decode_record(line) for line in (out / f"run.rank{rank}.jsonl").read_bytes().splitlines()]
        logs.append({
            "used": [(r["step"], r["weights"]) for r in records if r["kind"] == "task_balance"],
            "changed": [(r["step"], r["weights"]) for r in records if r["kind"] == "loss_weights"],
        })  # fmt: skip
    return logs


def assert_same_weights_on_both_ranks(out: Path) -> None:
    rank0, rank1 = per_rank_weights(out)
    assert len(rank0["used"]) >= 4 and len(rank0["changed"]) >= 2  # measured every step, and rebalanced
    assert rank0 == rank1


def test_torchrun_auto_balance_trains_every_rank_with_rank_0s_weights(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("this torch build has no torch.distributed")
    result = torchrun_train(
        "--predict-pointers", "--monitor-gradients", "--auto-balance", "ratio", "--loss-beta", "50",
        "--epochs", "2", "--n-samples", "80", "--batch-size", "16", "--hidden-size", "8", "--every-n-steps", "1",
        "--per-rank-log", "--grad-log", str(tmp_path / "run.jsonl"),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert_same_weights_on_both_ranks(tmp_path)


def test_fit_with_auto_balance_under_ddp_keeps_the_ranks_identical(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("this torch build has no torch.distributed")
    torchrun("fit-auto-balance", tmp_path)
    assert_same_weights_on_both_ranks(tmp_path)
    nets = [torch.load(tmp_path / f"net.rank{rank}.pt") for rank in (0, 1)]
    assert all(torch.equal(nets[0][name], nets[1][name]) for name in nets[0])


def test_ranks_spawned_without_a_launcher_still_leave_the_log_to_rank_0(tmp_path):
    """torch.multiprocessing.spawn sets no RANK: a monitor made before the process group learns its rank at
    its first record, so the rank that opens the file first is not the one that writes."""
    if not torch.distributed.is_available():
        pytest.skip("this torch build has no torch.distributed")
    result = subprocess.run([sys.executable, str(REPO / "tests" / "spawn_worker.py"), str(tmp_path)],
                            capture_output=True, text=True, timeout=180, cwd=REPO)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    records = [decode_record(line) for line in (tmp_path / "run.jsonl").read_bytes().splitlines()]
    start = records[0]
    assert start["rank"] == 0 and start["world_size"] == 2
    assert start["pid"] == int((tmp_path / "pid.rank0.txt").read_text())
    assert [r["kind"] for r in records] == ["run_start", "grad_stats", "run_end"]
    assert (tmp_path / "warnings.rank0.txt").read_text() == (tmp_path / "warnings.rank1.txt").read_text() == ""
