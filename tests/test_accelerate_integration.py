"""The README's accelerate loop, extracted and run as written: the plain GradientMonitor's hooks in an
``accelerator.backward`` loop with gradient accumulation and clipping."""

import subprocess
import sys

import pytest
from helpers import REPO, strict_lines

pytest.importorskip("accelerate")


def test_readme_accelerate_example_runs_as_written(tmp_path):
    readme = (REPO / "README.md").read_text("utf-8")
    start = readme.index("<!-- accelerate example -->")
    code = readme[start:].split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "accelerate_loop.py"
    script.write_text(code, "utf-8")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    records = strict_lines(tmp_path / "runs" / "accelerate.jsonl")
    optimizer_steps = list(range(10, 51, 10))  # 100 micro-batches, 2 per optimizer step, every 10th step
    grads = [r for r in records if r["kind"] == "grad_stats"]
    assert [r["step"] for r in grads] == optimizer_steps
    assert [r["step"] for r in records if r["kind"] == "task_balance"] == optimizer_steps
    assert max(r["total_norm"] for r in grads) > 1.0  # measured before accelerator.clip_grad_norm_(..., 1.0)
    names = ["trunk.weight", "trunk.bias", "cls.weight", "cls.bias", "reg.weight", "reg.bias"]
    assert records[0]["parameters"] == names
    assert records[-1]["kind"] == "run_end" and records[-1]["status"] == "completed"
