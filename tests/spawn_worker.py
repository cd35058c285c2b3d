"""Two ranks started by ``torch.multiprocessing.spawn`` (which sets no RANK), each making its monitor before its
process group, rank 0 the later: only rank 0 must write the log.

    python tests/spawn_worker.py OUT_DIR
"""

import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from moola.utils.monitoring import GradientMonitor


def worker(rank: int, out: Path) -> None:
    warnings: list[str] = []
    time.sleep(0.5 if rank == 0 else 0.0)  # rank 1 reaches its monitor first
    monitor = GradientMonitor(every_n_steps=1, log_path=out / "run.jsonl", warn=warnings.append, echo=None)
    dist.init_process_group("gloo", init_method=f"file://{out / 'store'}", rank=rank, world_size=2)
    model = nn.parallel.DistributedDataParallel(nn.Linear(4, 2))
    with monitor:
        model(torch.randn(8, 4)).pow(2).mean().backward()
        monitor.on_before_optimizer_step(model)
    (out / f"warnings.rank{rank}.txt").write_text("\n".join(warnings))
    (out / f"pid.rank{rank}.txt").write_text(str(os.getpid()))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(worker, args=(Path(sys.argv[1]),), nprocs=2)
