"""One rank of a torchrun job for the HF Trainer's ``halt_on`` under DDP: two regression heads on one trunk,
statistics every 5 steps and task balance every step; only rank 1's thresholds let its balance probe raise a
collapse error (on a step whose statistics are not due), as one rank's own batches can. Each rank writes its own
log and prints the step it stopped at.

    torchrun --standalone --nproc-per-node 2 tests/hf_halt_worker.py OUT_DIR
"""

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import transformers
from torch import nn

from moola.integrations.transformers import GradientMonitorCallback
from moola_watch.rules import Thresholds

RANK = int(os.environ.get("RANK", "0"))


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk, self.a, self.b = nn.Linear(8, 16), nn.Linear(16, 1), nn.Linear(16, 1)

    def forward(self, x: torch.Tensor, ya: torch.Tensor, yb: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(x).tanh()
        self.task_losses = {"a": nn.functional.mse_loss(self.a(h).squeeze(1), ya),
                            "b": nn.functional.mse_loss(self.b(h).squeeze(1), yb)}  # fmt: skip
        self.task_weights = {"a": 1.0, "b": 1e-4 if RANK == 1 else 1.0}  # rank 1 records b as starved
        return {"loss": self.task_losses["a"] + self.task_losses["b"]}


class Data(torch.utils.data.Dataset):
    def __init__(self, count: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x, self.ya, self.yb = (torch.randn(count, *shape, generator=generator) for shape in ((8,), (), ()))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "ya": self.ya[i], "yb": self.yb[i]}


def main() -> None:
    out = Path(sys.argv[1])
    torch.manual_seed(0)
    args = transformers.TrainingArguments(
        output_dir=str(out / "trainer"), max_steps=20, per_device_train_batch_size=4, learning_rate=1e-7,
        logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, ddp_backend="gloo", disable_tqdm=True,
        seed=0, ddp_timeout=60, remove_unused_columns=False,
    )  # fmt: skip
    quiet = Thresholds(window=3, collapse_high=1e9, balance_high=1e8, significant=1e8)  # rank 0 never alerts
    callback = GradientMonitorCallback(log_path=out / "run.jsonl", every_n_steps=5, balance_every_n_steps=1,
                                       halt_on="error", per_rank=True, echo=None,
                                       thresholds=Thresholds(window=3) if RANK == 1 else quiet)  # fmt: skip
    trainer = transformers.Trainer(model=TwoHeads(), args=args, train_dataset=Data(400), callbacks=[callback])
    with callback:
        trainer.train()
    print(f"rank {RANK} stopped at step {trainer.state.global_step}", flush=True)
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)  # see dist_worker.py: gloo's threads can abort a finalizing interpreter


if __name__ == "__main__":
    main()
