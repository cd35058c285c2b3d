"""One rank of a torchrun job for the distributed tests: a replicated (DDP) or sharded (FSDP2) model measured
by GradientMonitor; ``ddp-balance`` does two steps' backward through ``GradientMonitor.backward`` with a task
balance probe due, and saves this rank's gradients for the test to compare across ranks
(``ddp-static-balance``: the same under ``DDP(static_graph=True)``). ``balancer``: a LossBalancer updated from
this rank's own balance measurement, then synchronised; ``fit-auto-balance``: the trainer's ``fit`` with
automatic balancing and a log per rank. Both save what this rank ended with.

    torchrun --standalone --nproc-per-node 2 tests/dist_worker.py MODE OUT_DIR
    MODE: ddp|ddp-early|fsdp|ddp-per-rank|ddp-balance|ddp-static-balance|balancer|fit-auto-balance

``ddp-early`` makes the monitor before the process group exists (as a loop that makes it before
``Accelerator()``): it must still know from the launcher that only rank 0 writes.
"""

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from moola.balancing import LossBalancer
from moola.data import make_synthetic
from moola.models.enhanced_simple_lstm import EnhancedSimpleLSTM
from moola.utils.monitoring import GradientMonitor, compute_task_balance


def model_and_batch() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The same initial model and the same full batch on every rank (and in the single-process reference)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 2))
    return model, torch.randn(64, 8), torch.randn(64, 2)


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[2])
    early = GradientMonitor(1, log_path=out / "run.jsonl", echo=None) if mode == "ddp-early" else None
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if mode == "balancer":
        balancer_update(out, rank)
    elif mode == "fit-auto-balance":
        fit_auto_balance(out, rank)
    else:
        measured_step(mode, out, rank, world, early)
    dist.barrier()  # rank 0 may still be writing: tearing gloo down under it can abort a process
    dist.destroy_process_group()
    # Gloo's worker threads can still hold tensors when the interpreter finalizes and abort the process
    # ("terminate called without an active exception", pytorch/pytorch#179291) after all the work is done:
    # leave without finalizing, the files being written and closed.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def measured_step(mode: str, out: Path, rank: int, world: int, early: GradientMonitor | None) -> None:
    """One step of the shared model (DDP or FSDP2) on this rank's half of the batch, measured."""
    model, x, y = model_and_batch()
    rows = slice(rank * len(x) // world, (rank + 1) * len(x) // world)  # this rank's half of the batch
    if mode == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (world,))
        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        wrapped, measured = model, model
    else:
        wrapped = nn.parallel.DistributedDataParallel(model, static_graph=mode == "ddp-static-balance")
        measured = wrapped  # as a user passes it: recorded under the names of the model inside, no "module."
    if mode in ("ddp-balance", "ddp-static-balance"):
        balance_step(wrapped, model, x[rows], y[rows], out, rank)
    else:
        nn.functional.mse_loss(wrapped(x[rows]), y[rows]).backward()
        made = early or GradientMonitor(1, log_path=out / "run.jsonl", per_rank=mode == "ddp-per-rank", echo=None)
        with made as monitor:
            monitor.update(1, measured)


def balance_step(wrapped: nn.Module, model: nn.Module, x: torch.Tensor, y: torch.Tensor, out: Path, rank: int) -> None:
    """Two tasks (the two output columns) through DDP; two steps' backward by the monitor with a probe due
    (no optimizer step between them: both steps' gradients are the full batch's)."""
    warnings: list[str] = []
    steps = []
    with GradientMonitor(every_n_steps=1, log_path=out / "run.jsonl", warn=warnings.append) as monitor:
        for _ in range(2):
            output = wrapped(x)
            losses = {
                "first": nn.functional.mse_loss(output[:, 0], y[:, 0]),
                "second": nn.functional.mse_loss(output[:, 1], y[:, 1]),
            }
            balance = monitor.backward(model, losses, {"first": 1.0, "second": 3.0})
            monitor.on_before_optimizer_step(model)
            steps.append({"grads": {n: p.grad.clone() for n, p in model.named_parameters()},
                          "measured": balance is not None})  # fmt: skip
            model.zero_grad(set_to_none=True)
    torch.save({"steps": steps, "warnings": warnings}, out / f"grads.rank{rank}.pt")


def balancer_update(out: Path, rank: int) -> None:
    """Each rank's balancer starts from its own weights and updates from the balance of its own batch, then
    synchronises; then a second round where only rank 0 measured anything."""
    model, x, y = model_and_batch()
    rows = slice(rank * 8, rank * 8 + 8)
    output = model(x[rows])
    losses = {"first": nn.functional.mse_loss(output[:, 0], y[rows, 0]), "second": output[:, 1].pow(2).mean()}
    balancer = LossBalancer({"first": 1.0 + rank, "second": 10.0}, method="ratio")
    balancer.update(compute_task_balance(losses, model, weights=balancer.weights))
    updated = dict(balancer.weights)
    balancer.synchronise()
    synchronised = dict(balancer.weights)
    if rank == 0:
        balancer.update(compute_task_balance(losses, model, weights=balancer.weights))
    balancer.synchronise()  # rank 1 measured nothing this step and still takes part
    torch.save({"updated": updated, "synchronised": synchronised, "second": balancer.weights}, out / f"w{rank}.pt")


def fit_auto_balance(out: Path, rank: int) -> None:
    """The trainer's fit under DDP with gradnorm balancing from a starved type task; this rank's parameters."""
    data = make_synthetic(80, seed=0)
    model = EnhancedSimpleLSTM(hidden_size=8, predict_pointers=True, seed=0)
    model.fit(
        data.X, data.y, data.expansion_start, data.expansion_end, epochs=2, batch_size=16, loss_beta=50.0,
        monitor_gradients=True, every_n_steps=1, auto_balance="gradnorm", grad_log=out / "run.jsonl",
        per_rank_log=True,
    )  # fmt: skip
    assert model.net is not None
    torch.save(model.net.state_dict(), out / f"net.rank{rank}.pt")


if __name__ == "__main__":
    main()
