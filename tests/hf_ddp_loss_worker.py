"""One rank of a torchrun job for the HF Trainer's epoch loss under DDP: a tiny GPT-2 (a model the Trainer gives
``num_items_in_batch``) with gradient accumulation and no loss logged in an epoch; rank 0 saves the Trainer's
training loss beside the log.

    torchrun --standalone --nproc-per-node 2 tests/hf_ddp_loss_worker.py OUT_DIR
"""

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import transformers
from test_transformers_integration import Tokens

from moola.integrations.transformers import GradientMonitorCallback


def main() -> None:
    out = Path(sys.argv[1])
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=40, n_positions=16, n_embd=16, n_layer=1,
                                                                 n_head=2))  # fmt: skip
    args = transformers.TrainingArguments(
        output_dir=str(out / "trainer"), num_train_epochs=2, per_device_train_batch_size=4,
        gradient_accumulation_steps=2, logging_steps=1000, report_to=[], save_strategy="no", use_cpu=True,
        ddp_backend="gloo", disable_tqdm=True, seed=0,
    )  # fmt: skip
    callback = GradientMonitorCallback(log_path=out / "run.jsonl", every_n_steps=2)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Tokens(64), callbacks=[callback])
    result = trainer.train()
    if trainer.is_world_process_zero():
        (out / "trainer.json").write_text(json.dumps({"training_loss": result.training_loss}))
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()  # as in hf_ddp_worker.py: leave without finalizing (gloo can abort it)
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
