"""One rank of a torchrun job for the distributed tests: a replicated (DDP) or sharded (FSDP2) model measured
by GradientMonitor.

    torchrun --standalone --nproc-per-node 2 tests/dist_worker.py ddp|fsdp|ddp-per-rank OUT_DIR
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from moola.utils.monitoring import GradientMonitor


def model_and_batch() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The same initial model and the same full batch on every rank (and in the single-process reference)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 2))
    return model, torch.randn(64, 8), torch.randn(64, 2)


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[2])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
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
        wrapped = nn.parallel.DistributedDataParallel(model)
        measured = model  # names without DDP's "module." prefix
    nn.functional.mse_loss(wrapped(x[rows]), y[rows]).backward()
    with GradientMonitor(1, log_path=out / "run.jsonl", per_rank=mode == "ddp-per-rank", echo=None) as monitor:
        monitor.update(1, measured)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
