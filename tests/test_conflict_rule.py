"""The conflict rule: a task that ended a completed run no better than it began while another task's gradient
opposed its own (a review's HF Trainer run: c's loss rose 0.232 -> 0.262 with a fair share of the update, its
gradient at cosine -0.5 to -0.94 against b's, and check said nothing of c)."""

import pytest
from helpers import run_cli
from logs import LogBuilder

from moola_watch import rules

NAMES = ("a", "b|x", "c")  # a task whose name holds the pair separator is still one task


def conflicted_run(cosine: float, c_loss, status: str = "completed", samples: int = 12) -> LogBuilder:
    """Three tasks sharing the update fairly; c's gradient at ``cosine`` to b|x's, its batch loss ``c_loss(i)``."""
    log = LogBuilder().start()
    for i in range(1, samples + 1):
        log.add("task_balance", epoch=i, step=i * 10, norms={"a": 1.0, "b|x": 1.2, "c": 0.9},
                shares={"a": 0.35, "b|x": 0.35, "c": 0.3}, losses={"a": 1.0 / i, "b|x": 1.0 / i, "c": c_loss(i)},
                cosines={"a|b|x": 0.1, "a|c": 0.0, "b|x|c": cosine})  # fmt: skip
    return log.end(status)


def conflicts(log: LogBuilder) -> list[rules.Alert]:
    return [alert for alert in rules.replay(log.records).alerts if alert.rule == rules.CONFLICT]


def test_a_task_whose_loss_rose_while_another_opposed_it_is_named_with_the_evidence(tmp_path):
    log = conflicted_run(-0.6, lambda i: 0.232 + 0.003 * i)
    (alert,) = conflicts(log)
    assert alert.subject == "c" and alert.severity == "warning" and alert.state == rules.FIRING
    assert alert.message.startswith("TASK NOT LEARNING: the run ended with the c task's training loss at ")
    assert "opposed the b|x task's (cosine -0.60, the mean of the last 10 balance samples)" in alert.message
    assert alert.recommendation.startswith("Lower the b|x loss weight")
    checked = run_cli("moola_watch.cli", "check", str(log.write(tmp_path / "conflict.jsonl")))
    assert checked.returncode == 0 and "verdict=warning" in checked.stdout and "conflict (c)" in checked.stdout


@pytest.mark.parametrize(
    "log",
    [
        conflicted_run(-0.1, lambda i: 0.232 + 0.003 * i),  # loss rose, but no opposed gradient
        conflicted_run(-0.6, lambda i: 0.232 * 0.97**i),  # opposed, but it learned
        conflicted_run(-0.6, lambda i: 0.232 + 0.003 * i, status="failed"),  # not a completed run's outcome
    ],
    ids=["not-opposed", "learned", "failed"],
)
def test_no_conflict_without_all_of_the_evidence(log):
    assert conflicts(log) == []
