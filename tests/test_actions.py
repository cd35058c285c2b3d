"""Acting on alerts in the trainer: the user's callback, halting before the bad step, checkpoints worth keeping,
and automatic loss balancing."""

import io
import math

import pytest
import torch
from helpers import run_cli, strict_lines
from torch import nn

from moola.balancing import LossBalancer
from moola.checkpoints import AlertCheckpointer, load_checkpoint, weights_finite
from moola.utils.monitoring import GradientMonitor, TaskGradients


def test_nan_gradients_halt_the_cli_before_the_step_with_a_finite_checkpoint(tmp_path):
    log, directory = tmp_path / "run.jsonl", tmp_path / "ckpt"
    # A learning rate of 1e30 without clipping: the weights blow up and the gradients turn NaN on their own.
    result = run_cli(
        "moola.cli", "train", "--predict-pointers", "--monitor-gradients", "--every-n-steps", "1",
        "--epochs", "3", "--n-samples", "120", "--lr", "1e30", "--grad-clip", "0",
        "--halt-on", "critical", "--checkpoint-on-alert", str(directory), "--grad-log", str(log),
    )  # fmt: skip
    assert result.returncode == 3, result.stdout[-2000:] + result.stderr[-2000:]
    assert "moola: halted on critical alert nonfinite (gradients) at step " in result.stdout
    records = strict_lines(log)
    alert = next(r for r in records if r["kind"] == "alert" and r["rule"] == "nonfinite")
    assert not [r for r in records if r["kind"] == "grad_stats" and r["step"] > alert["step"]]  # within one
    end = records[-1]
    assert end["kind"] == "run_end" and end["status"] == "failed" and end["error"].startswith("halted on critical")
    saved = sorted(p.name for p in directory.iterdir())
    assert saved == [f"alert-nonfinite-step{alert['step']}.pt"]
    state = load_checkpoint(directory / saved[0])
    assert state["alert"]["rule"] == "nonfinite" and "optimizer" in state
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_acting_flags_without_monitoring_are_a_usage_error():
    result = run_cli("moola.cli", "train", "--epochs", "1", "--halt-on", "error")
    assert result.returncode == 2 and "--halt-on need --monitor-gradients" in result.stderr


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 2)


def nan_step(model):
    model.zero_grad()
    model.layer(torch.randn(4, 3)).sum().backward()
    model.layer.weight.grad[0, 0] = math.nan


def test_on_alert_is_called_once_per_firing_and_a_broken_callback_is_one_warning():
    model, seen, warned = Net(), [], []

    def callback(alert):
        seen.append((alert.rule, alert.severity))
        raise RuntimeError("pager down")

    monitor = GradientMonitor(every_n_steps=1, stream=io.BytesIO(), on_alert=callback, warn=warned.append)
    for _ in range(3):
        nan_step(model)
        monitor.on_before_optimizer_step(model)
    assert seen.count(("nonfinite", "critical")) == 1  # one condition, one alert, three bad steps
    assert len(warned) == 1 and "on_alert raised RuntimeError: pager down" in warned[0]
    assert not monitor.should_stop  # no halt_on: the user's loop decides


def test_the_last_good_checkpoint_is_never_overwritten_after_a_nonfinite_gradient(tmp_path):
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    checkpointer = AlertCheckpointer(tmp_path, model, optimizer)
    monitor = GradientMonitor(every_n_steps=1, stream=io.BytesIO(), on_alert=checkpointer, halt_on="critical")
    model.layer(torch.randn(4, 3)).sum().backward()
    monitor.on_before_optimizer_step(model)
    optimizer.step()
    checkpointer.keep(step=1)
    good = model.layer.weight.detach().clone()
    nan_step(model)
    monitor.on_before_optimizer_step(model)
    assert monitor.should_stop and monitor.halted_by.rule == "nonfinite"
    with torch.no_grad():
        model.layer.weight.fill_(math.nan)  # what applying the step would have done
    checkpointer.keep(step=2)
    assert torch.equal(load_checkpoint(tmp_path / "last-good.pt")["model"]["layer.weight"], good)
    assert not weights_finite(model)


def test_an_alert_on_weights_a_step_not_measured_already_made_non_finite_warns_and_saves_nothing(tmp_path, caplog):
    """Measured every 10 steps, a NaN applied on step 4 is seen at step 10: the weights are NaN by then. That is a
    WARNING naming the last good checkpoint (it was an INFO line nobody sees), and no alert checkpoint of NaNs."""
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    checkpointer = AlertCheckpointer(tmp_path, model, optimizer)
    monitor = GradientMonitor(every_n_steps=1, stream=io.BytesIO(), on_alert=checkpointer, halt_on="critical")
    with torch.no_grad():
        model.layer.weight.fill_(math.nan)  # a step not measured applied a NaN gradient
    nan_step(model)
    with caplog.at_level("WARNING", logger="moola"):
        monitor.on_before_optimizer_step(model)
    assert monitor.should_stop and not list(tmp_path.glob("alert-*.pt"))
    (warning,) = [r for r in caplog.records if r.levelname == "WARNING" and "already non-finite" in r.getMessage()]
    assert "last-good.pt" in warning.getMessage() and "did not measure" in warning.getMessage()


def balance_of(norms, losses=None):
    return TaskGradients(
        ratio=None, norms=norms, raw_norms=norms, cosine=None, scope="test", losses=losses or dict.fromkeys(norms, 1.0),
        cosines={}, shares={}, weights=dict.fromkeys(norms, 1.0),
    )  # fmt: skip


def test_the_ratio_balancer_moves_toward_the_band_damped_and_keeps_the_total():
    balancer = LossBalancer({"type": 1.0, "pointer": 8.0}, method="ratio")
    assert balancer.update(balance_of({"type": 1.0, "pointer": 1.5})) is None  # inside the band: leave it
    new = balancer.update(balance_of({"type": 1.0, "pointer": 16.0}))
    assert new is not None and math.fsum(new.values()) == pytest.approx(9.0)
    assert new["pointer"] / new["type"] < 8.0 / 1.0 / 2.0 * 1.01  # moved, at most 2x per weight per update
    with pytest.raises(ValueError, match="unknown balancing method"):
        LossBalancer({"a": 1.0}, method="magic")


def test_gradnorm_gives_the_task_that_learned_less_more_gradient():
    balancer = LossBalancer({"a": 1.0, "b": 1.0}, method="gradnorm")
    assert balancer.update(balance_of({"a": 1.0, "b": 1.0}, {"a": 2.0, "b": 2.0})) is None  # same rates
    new = balancer.update(balance_of({"a": 1.0, "b": 1.0}, {"a": 1.0, "b": 2.0}))  # a learned, b did not
    assert new is not None and new["b"] > new["a"]


def test_synchronise_without_torch_distributed_leaves_the_weights():
    balancer = LossBalancer({"type": 1.0, "pointer": 8.0})
    balancer.synchronise()
    assert balancer.weights == {"type": 1.0, "pointer": 8.0}


def trained(tmp_path, name, *flags):
    """A hidden-size-4 run of the spec's trainer (where the tasks compete); its log's records."""
    log = tmp_path / f"{name}.jsonl"
    result = run_cli(
        "moola.cli", "train", "--predict-pointers", "--monitor-gradients", "--hidden-size", "4", "--epochs", "15",
        "--every-n-steps", "5", "--seed", "0", "--grad-log", str(log), *flags,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return strict_lines(log)


@pytest.mark.slow
def test_auto_balance_brings_a_starved_run_into_the_band_and_its_task_back(tmp_path):
    balanced = trained(tmp_path, "balanced")
    starved = trained(tmp_path, "starved", "--loss-beta", "50")
    rescued = trained(tmp_path, "rescued", "--loss-beta", "50", "--auto-balance", "ratio")

    def type_acc(records):
        return [r for r in records if r["kind"] == "epoch"][-1]["metrics"]["type_acc"]

    def final_ratio(records):
        ratios = [r["ratio"] for r in records if r["kind"] == "task_balance"]
        return sum(ratios[-10:]) / 10

    changes = [r for r in rescued if r["kind"] == "loss_weights"]
    assert changes and changes[0]["method"] == "ratio" and changes[-1]["weights"]["pointer"] < 50
    assert 0.5 <= final_ratio(rescued) <= 2.0 < final_ratio(starved)
    gap = type_acc(balanced) - type_acc(starved)
    assert gap > 0.1  # the type task really starves at 1 / 50
    assert (type_acc(rescued) - type_acc(starved)) / gap >= 0.45  # the README's worst seed: +48%


def test_analyze_and_the_dashboard_show_the_weights_an_auto_balancer_set(tmp_path):
    from logs import LogBuilder

    log = LogBuilder().start()
    weights = {"type": 1.0, "pointer": 50.0}
    for epoch in range(1, 5):
        log.grad(epoch, 0.3, 0.6).balance(epoch, 40.0 / epoch, weights=dict(weights))
        new = {"type": weights["type"] * 2, "pointer": weights["pointer"] * 0.8}
        log.add("loss_weights", epoch=epoch, step=epoch * 10, weights=new, previous=weights, method="ratio")
        weights = new
    path = log.end().write(tmp_path / "balanced.jsonl")
    analyzed = run_cli("moola_watch.cli", "analyze", str(path), env={"COLUMNS": "160"})
    assert analyzed.returncode in (0, 1), analyzed.stderr
    assert "loss weights" in analyzed.stdout and "type 8 pointer 25.6" in analyzed.stdout
    shown = run_cli("moola_watch.cli", "follow", "--once", str(path), env={"COLUMNS": "160"})
    assert "type 1 -> 16  pointer 50 -> 20.5" in shown.stdout, shown.stdout
