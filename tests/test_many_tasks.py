"""Any number of tasks: the monitor records every norm, cosine and share; the watcher names the dominated one."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detached_head_run import STEPS
from helpers import REPO, run_cli
from torch import nn

from moola.utils.monitoring import GradientMonitor
from moola.utils.monitoring.gradient_diagnostics import compute_task_balance
from moola_watch.schema import decode_record


class ThreeHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(6, 16), nn.Tanh())
        self.heads = nn.ModuleDict({name: nn.Linear(16, 1) for name in ("price", "volume", "regime")})

    def forward(self, x):
        h = self.trunk(x)
        return {name: head(h).squeeze(1) for name, head in self.heads.items()}


def losses_of(model, x, y):
    outputs = model(x)
    return {name: nn.functional.mse_loss(outputs[name], y[:, i]) for i, name in enumerate(outputs)}


def test_balance_of_three_tasks_matches_its_definition():
    torch.manual_seed(0)
    model = ThreeHeads()
    x, y = torch.randn(32, 6), torch.randn(32, 3)
    losses = losses_of(model, x, y)
    weights = {"price": 1.0, "volume": 0.5, "regime": 2.0}
    balance = compute_task_balance(losses, model, weights=weights)
    shared = list(model.trunk.parameters())
    grads = {
        n: torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, shared, retain_graph=True)])
        for n, loss in losses.items()
    }
    total = sum(weights[n] * grads[n] for n in grads)
    for name, g in grads.items():
        assert balance.norms[name] == pytest.approx(weights[name] * g.norm().item(), rel=1e-6)
        assert balance.shares[name] == pytest.approx(
            (weights[name] * g @ total).item() / (total @ total).item(), rel=1e-5
        )
    assert set(balance.cosines) == {"price|volume", "price|regime", "regime|volume"}
    assert balance.cosines["price|regime"] == pytest.approx(
        (grads["price"] @ grads["regime"]).item() / (grads["price"].norm() * grads["regime"].norm()).item(), rel=1e-5
    )
    assert math.fsum(balance.shares.values()) == pytest.approx(1.0)
    assert balance.ratio is None and math.isnan(float(balance))


def test_a_dominated_task_is_named_by_the_trainer_log_and_the_watcher(tmp_path):
    torch.manual_seed(1)
    model = ThreeHeads()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    weights = {"price": 1.0, "volume": 1.0, "regime": 0.001}  # the regime task is all but silenced
    # Targets the trunk can learn: on pure noise the regime task's gradient is noise too (nothing to starve of)
    mixing = torch.randn(6, 3)
    log = tmp_path / "three.jsonl"
    with GradientMonitor(every_n_steps=1, log_path=log) as monitor:
        monitor.watch_optimizer(optimizer)
        for _step in range(14):
            x = torch.randn(32, 6)
            y = torch.tanh(x @ mixing)
            losses = losses_of(model, x, y)
            monitor.on_before_backward(model, losses, weights)
            optimizer.zero_grad()
            sum(weights[n] * loss for n, loss in losses.items()).backward()
            monitor.on_before_optimizer_step(model)
            optimizer.step()
    records = [decode_record(line) for line in log.read_bytes().splitlines()]
    balance = [r for r in records if r["kind"] == "task_balance"]
    assert len(balance) == 14
    for record in balance:
        assert len(record["norms"]) == 3 and len(record["cosines"]) == 3 and "ratio" not in record
        assert math.fsum(record["shares"].values()) == pytest.approx(1.0)
    result = run_cli("moola_watch.cli", "check", "--json", str(log))
    report = json.loads(result.stdout)
    assert result.returncode == 1 and report["verdict"] == "error"
    collapse = [a for a in report["alerts"] if a["rule"] == "collapse"]
    assert [a["subject"] for a in collapse] == ["regime"] and collapse[0]["first_step"] == 10
    assert collapse[0]["message"].startswith("TASK COLLAPSE: regime task dominated")
    assert report["summary"]["balance"]["state"] == "dominated"
    shown = run_cli("moola_watch.cli", "follow", "--once", str(log), env={"COLUMNS": "140"})
    assert "Task balance, 3 tasks" in shown.stdout and "regime task dominated" in shown.stdout
    analyzed = run_cli("moola_watch.cli", "analyze", str(log), env={"COLUMNS": "160"})
    assert "Task balance, 3 tasks" in analyzed.stdout


def masked_run(log, names, *, nan_at=None, unlabelled=lambda step: step % 10 == 3):
    """Balanced heads on one trunk, monitored every step. The last task is unlabelled on some batches (its
    masked loss 0, its gradient 0); with ``nan_at``, the second task's loss is NaN at that step, which is then
    skipped, as a loop guarding against NaN does."""
    torch.manual_seed(0)
    trunk, heads = nn.Linear(8, 16), nn.ModuleList([nn.Linear(16, 1) for _ in names])
    model = nn.ModuleDict({"trunk": trunk, "heads": heads})
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    with GradientMonitor(every_n_steps=1, log_path=log, echo=lambda _line: None) as monitor:
        monitor.watch_optimizer(optimizer)
        for step in range(60):
            x = torch.randn(16, 8)
            h = trunk(x).relu()
            losses = {}
            for j, task in enumerate(names):
                error = (heads[j](h).squeeze(1) - x[:, j]).pow(2)
                labelled = j < len(names) - 1 or not unlabelled(step)
                mask = torch.full((16,), float(labelled))
                losses[task] = (error * mask).sum() / mask.sum().clamp(min=1)
            if step == nan_at:
                losses[names[1]] = losses[names[1]] * math.nan
            monitor.backward(model, losses)
            if step == nan_at:
                optimizer.zero_grad()
                continue
            monitor.on_before_optimizer_step(model)
            optimizer.step()
            optimizer.zero_grad()


@pytest.mark.parametrize("names", [("a", "b", "c"), ("pointer", "type")])
def test_a_batch_now_and_then_without_a_tasks_labels_is_not_collapse(tmp_path, names):
    """A task masked out on one batch in ten has no gradient there (an infinite ratio): the window is judged on
    the batches that measured it. One labelled on a batch in ten only is not dominated either: the batches
    without its labels (a masked loss of 0, no gradient) are samples it was not in, and the spec's pointer/type
    ratio, which has no such notion, still calls its window a collapse."""
    log = tmp_path / "masked.jsonl"
    masked_run(log, names)
    report = json.loads(run_cli("moola_watch.cli", "check", "--json", str(log)).stdout)
    assert not [alert for alert in report["alerts"] if alert["rule"] in ("collapse", "imbalance")], report["alerts"]
    rarely = tmp_path / "rarely-labelled.jsonl"
    masked_run(rarely, names, unlabelled=lambda step: step % 10 != 3)
    report = json.loads(run_cli("moola_watch.cli", "check", "--json", str(rarely)).stdout)
    collapsed = [alert["subject"] for alert in report["alerts"] if alert["rule"] == "collapse"]
    assert collapsed == ([names[-1]] if names == ("pointer", "type") else []), report["alerts"]


def test_one_nan_task_loss_is_not_a_collapse_of_that_task(tmp_path):
    log = tmp_path / "nan.jsonl"
    masked_run(log, ("a", "b", "c"), nan_at=35, unlabelled=lambda step: False)
    report = json.loads(run_cli("moola_watch.cli", "check", "--json", str(log)).stdout)
    assert not [alert for alert in report["alerts"] if alert["rule"] in ("collapse", "imbalance")], report["alerts"]


@pytest.mark.parametrize("tasks", [3, 2])
def test_a_head_cut_off_the_trunk_mid_run_is_a_left_out_warning_and_its_old_window_is_not_judged(tmp_path, tasks):
    """Head c reads the trunk until step 20, then a detached input: from step 20 it is left out of the balance
    (the records say so), one warning says since when, and no collapse is judged on its window from before. Of
    two tasks, the other is then measured alone on the layers they shared (the balance stopped, and its last
    window called the other task starved at the run's end)."""
    log = tmp_path / "cut.jsonl"
    script = Path(__file__).with_name("detached_head_run.py")
    run = subprocess.run([sys.executable, str(script), str(log), "20", str(tasks)], cwd=REPO, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    balance = [r for r in map(decode_record, log.read_bytes().splitlines()) if r["kind"] == "task_balance"]
    assert [r["step"] for r in balance if r.get("left_out") == ["c"]] == list(range(20, 41))
    result = run_cli("moola_watch.cli", "check", "--json", str(log))
    report = json.loads(result.stdout)
    (left_out,) = [a for a in report["alerts"] if a["rule"] == "left_out"]
    assert left_out["subject"] == "c" and left_out["severity"] == "warning" and left_out["state"] == "firing"
    assert "since step 20 (it had one until step 19)" in left_out["message"]
    assert result.returncode == 0 and not [a for a in report["alerts"] if a["rule"] == "collapse"]


def test_a_head_on_a_detached_input_is_left_out_and_the_others_balance_is_recorded_and_judged(tmp_path):
    log = tmp_path / "detached.jsonl"
    script = Path(__file__).with_name("detached_head_run.py")
    run = subprocess.run([sys.executable, str(script), str(log)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    warned = [line for line in run.stderr.splitlines() if "WARNING" in line]
    assert len(warned) == 1, run.stderr[-2000:]
    assert "the c task gets no gradient on the parameters the other tasks share" in warned[0]
    assert "left out of the balance, measured for a, b" in warned[0]
    records = [decode_record(line) for line in log.read_bytes().splitlines()]
    balance = [r for r in records if r["kind"] == "task_balance"]
    assert [r["step"] for r in balance] == list(range(1, STEPS + 1))  # every probe, for the tasks that share
    for record in balance:
        assert set(record["norms"]) == set(record["shares"]) == set(record["losses"]) == {"a", "b"}
        assert math.fsum(record["shares"].values()) == pytest.approx(1.0)
        assert record["scope"].endswith("; left out: c (no gradient on them)")
    result = run_cli("moola_watch.cli", "check", "--json", str(log))
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["runs"][0]["summary"]["balance_samples"] == STEPS
    assert not [a for a in report["alerts"] if a["rule"] in ("collapse", "imbalance") or a["subject"] == "c"]
