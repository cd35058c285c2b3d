"""The README's accelerate loop, extracted and run as written: the plain GradientMonitor's hooks in an
``accelerator.backward`` loop with gradient accumulation and clipping."""

import pytest
from helpers import run_readme_example, strict_lines

pytest.importorskip("accelerate")


def test_readme_accelerate_example_runs_as_written(tmp_path):
    run_readme_example("accelerate example", tmp_path)
    records = strict_lines(tmp_path / "runs" / "accelerate.jsonl")
    optimizer_steps = list(range(10, 51, 10))  # 100 micro-batches, 2 per optimizer step, every 10th step
    grads = [r for r in records if r["kind"] == "grad_stats"]
    assert [r["step"] for r in grads] == optimizer_steps
    assert [r["step"] for r in records if r["kind"] == "task_balance"] == optimizer_steps
    assert max(r["total_norm"] for r in grads) > 1.0  # measured before accelerator.clip_grad_norm_(..., 1.0)
    names = ["trunk.weight", "trunk.bias", "cls.weight", "cls.bias", "reg.weight", "reg.bias"]
    assert records[0]["parameters"] == names
    assert records[-1]["kind"] == "run_end" and records[-1]["status"] == "completed"
