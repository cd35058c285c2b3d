"""How benchmarks/detection.py scores a verdict on a labelled run: its first error, and its first alert of any
severity on the task that error names (a warning that the error later confirmed), each against the plateau."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from detection import judge, lead_text, score

PINNED = Path(__file__).resolve().parent / "data" / "detection"


def pinned_run(name: str, plateau: int) -> dict:
    """A pinned corpus run as ``labels.json`` of the corpus holds it, every task's plateau at step ``plateau``."""
    row = next(r for r in json.loads((PINNED / "labels.json").read_text()) if r["log"] == name)
    tasks = [*row["progress"]]
    return {**row, "log": str(PINNED / name), "held_out": True, "plateau_step": dict.fromkeys(tasks, plateau)}


def test_a_starved_task_warned_about_before_its_error_scores_the_warnings_lead_too() -> None:
    # the pointer task starved while its loss crept down: dominance warned long before the error at the end
    outcome = judge(pinned_run("lstm-s0-b0.03.jsonl", plateau=100), {})
    assert outcome.new.tasks == ("pointer",) and outcome.new.at_end
    warned = outcome.warned["pointer"]
    assert warned < outcome.new.step
    assert outcome.warned_lead(outcome.new) == warned - 100
    s = score([outcome], "new")
    assert s.leads == [outcome.new.step - 100] and s.warned_leads == [warned - 100]
    assert "its first alert on that task" in lead_text(s.leads, s.at_end, s.warned_leads)


def test_a_healthy_run_warned_about_has_no_lead_to_score() -> None:
    outcome = judge(pinned_run("lstm-s0-b1.jsonl", plateau=100), {})
    assert outcome.label == "healthy" and not outcome.new.tasks and outcome.warned  # dominance warned
    assert outcome.warned_lead(outcome.new) is None and score([outcome], "new").warned_leads == []
