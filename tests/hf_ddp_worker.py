"""One rank of a torchrun job for the HF Trainer DDP test: a tiny BERT trained by ``transformers.Trainer`` under
the moola callback; rank 0 saves the Trainer's log history beside the log.

    torchrun --standalone --nproc-per-node 2 tests/hf_ddp_worker.py OUT_DIR
"""

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import transformers
from test_transformers_integration import MAX_GRAD_NORM, Sentences, tiny_bert

from moola.integrations.transformers import GradientMonitorCallback


def main() -> None:
    out = Path(sys.argv[1])
    torch.manual_seed(0)
    args = transformers.TrainingArguments(
        output_dir=str(out / "trainer"), max_steps=12, per_device_train_batch_size=4, learning_rate=1e-3,
        max_grad_norm=MAX_GRAD_NORM, logging_steps=1, report_to=[], save_strategy="no", use_cpu=True,
        ddp_backend="gloo", disable_tqdm=True, seed=0,
    )  # fmt: skip
    callback = GradientMonitorCallback(log_path=out / "run.jsonl", every_n_steps=3)
    trainer = transformers.Trainer(model=tiny_bert(), args=args, train_dataset=Sentences(96), callbacks=[callback])
    trainer.train()
    if trainer.is_world_process_zero():
        (out / "history.json").write_text(json.dumps(trainer.state.log_history))
    if dist.is_initialized():
        dist.barrier()  # rank 0 may still be writing: tearing gloo down under it can abort a process
        dist.destroy_process_group()
    # As in dist_worker.py: gloo can abort the interpreter's finalization after all the work is done
    # (pytorch/pytorch#179291); leave without finalizing, the files written and closed.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
