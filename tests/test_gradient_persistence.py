"""A task's gradient persistence: the cosine of its gradient on the shared parameters with the previous balance
sample's, measured by the trainer and read by the collapse verdict. A task at the floor its data allow (a noisy
regression) has a flat loss and a small share of the update like a starving one, but its gradient is mini-batch
noise around a minimum; a starving task's keeps asking the same change of the shared layers."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from helpers import run_cli
from logs import LogBuilder
from test_rules import collapse_alerts
from torch import nn

from moola.utils.monitoring import task_balance
from moola.utils.monitoring.gradient_diagnostics import GradientMonitor
from moola.utils.monitoring.task_balance import compute_task_balance
from moola_watch import rules


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(6, 5), nn.Tanh())
        self.a = nn.Linear(5, 1)
        self.b = nn.Linear(5, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        shared = self.trunk(x)
        return {"a": self.a(shared), "b": self.b(shared)}


def losses_of(model: TwoHeads, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 6, generator=generator)
    out = model(x)
    return {"a": F.mse_loss(out["a"], x[:, :1]), "b": F.mse_loss(out["b"], x[:, 1:2] * x[:, 2:3])}


def trunk_gradient(model: TwoHeads, loss: torch.Tensor) -> torch.Tensor:
    grads = torch.autograd.grad(loss, list(model.trunk.parameters()), retain_graph=True)
    return torch.cat([g.reshape(-1) for g in grads]).double()


def test_persistence_is_each_tasks_cosine_with_its_previous_gradient_on_the_same_parameters():
    torch.manual_seed(0)
    model = TwoHeads()
    first = compute_task_balance(losses_of(model, 1), model, previous={})
    assert first.persistence == {} and set(first.directions) == {"a", "b"}
    again = compute_task_balance(losses_of(model, 1), model, before=first.parameters, previous=first.directions)
    assert again.persistence == pytest.approx({"a": 1.0, "b": 1.0})  # the same batch: the same gradient
    before = {task: trunk_gradient(model, loss) for task, loss in losses_of(model, 1).items()}
    now_losses = losses_of(model, 2)
    now = {task: trunk_gradient(model, loss) for task, loss in now_losses.items()}
    other = compute_task_balance(now_losses, model, before=first.parameters, previous=first.directions)
    expected = {task: float(F.cosine_similarity(now[task], before[task], dim=0)) for task in now}
    assert other.persistence == pytest.approx(expected, abs=1e-12)
    assert max(abs(value) for value in expected.values()) < 0.99  # another batch: not the same direction


def test_a_large_scope_keeps_a_strided_sample_and_a_changed_scope_or_a_representation_compares_nothing(monkeypatch):
    torch.manual_seed(0)
    model = TwoHeads()  # 35 shared values
    monkeypatch.setattr(task_balance, "DIRECTION_SAMPLE", 8)  # a stride of 5: 7 values kept per task
    first = compute_task_balance(losses_of(model, 1), model, previous={})
    assert {task: tuple(d.shape) for task, d in first.directions.items()} == {"a": (7,), "b": (7,)}
    now_losses = losses_of(model, 2)
    sampled = {task: trunk_gradient(model, loss)[::5] for task, loss in now_losses.items()}
    other = compute_task_balance(now_losses, model, before=first.parameters, previous=first.directions)
    expected = {t: float(F.cosine_similarity(sampled[t], first.directions[t], dim=0)) for t in sampled}
    assert other.persistence == pytest.approx(expected, abs=1e-12)
    head_only = compute_task_balance(
        losses_of(model, 2), model, shared_parameters=[model.trunk[0].weight], before=first.parameters,
        previous=first.directions,
    )  # fmt: skip
    assert head_only.persistence == {}  # other parameters than last time: nothing to compare with
    x = torch.randn(4, 6)
    representation = model.trunk(x)
    at_representation = compute_task_balance(
        {"a": model.a(representation).pow(2).mean(), "b": model.b(representation).pow(2).mean()}, model,
        representation=representation, previous=first.directions,
    )  # fmt: skip
    assert at_representation.persistence == {} and at_representation.directions == {}


def train_monitored(path, epochs: int = 4) -> list[dict]:
    """A monitored loop as a user writes one: the optimizer watched, two steps an epoch."""
    torch.manual_seed(0)
    model = TwoHeads()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with GradientMonitor(1, log_path=path, task_balance_frequency=1, run_id="persist") as monitor:
        monitor.watch_optimizer(optimizer)
        monitor.on_run_start(model, model_name="two_heads")
        for epoch in range(1, epochs + 1):
            monitor.on_epoch_start(epoch)
            for batch in range(2):
                losses = losses_of(model, 10 * epoch + batch)
                monitor.on_before_backward(model, losses, {"a": 1.0, "b": 1.0})
                optimizer.zero_grad()
                sum(losses.values()).backward()
                optimizer.step()
            monitor.on_epoch_end(epoch, train_loss=sum(losses.values()).detach().item())
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_monitor_records_persistence_from_the_second_balance_sample_and_the_watcher_reads_it(tmp_path):
    records = train_monitored(tmp_path / "run.jsonl")
    balances = [r for r in records if r["kind"] == "task_balance"]
    assert len(balances) >= 3 and "persistence" not in balances[0]
    for record in balances[1:]:
        assert set(record["persistence"]) == {"a", "b"}
        assert all(-1.0 <= value <= 1.0 for value in record["persistence"].values())
    analyzed = run_cli("moola_watch.cli", "analyze", str(tmp_path / "run.jsonl"), "--csv", str(tmp_path / "csv"))
    assert analyzed.returncode == 0, analyzed.stderr
    (balance_csv,) = (tmp_path / "csv").glob("*balance*.csv")
    header = balance_csv.read_text().splitlines()[0].split(",")
    assert {"persistence_a", "persistence_b"} <= set(header)


def persistent_log(persistence: float | None, *, level: float = 0.65, end: bool = False) -> LogBuilder:
    """The type task dominated (ratio 8), 0.5% of the update, its loss 1.0 at first and flat at ``level`` from the
    second sample on (0.65: it learned a third, as a noisy regression at its floor does); each sample's
    ``persistence`` of the type task as given (None: not recorded, an older writer)."""
    log = LogBuilder().start()
    for i in range(1, 13):
        losses = {"type": 1.0 if i == 1 else level, "pointer": 0.8 * 0.8**i}
        fields = {} if persistence is None else {"persistence": {"type": persistence, "pointer": 0.9}}
        log.balance(i, 8.0, shares={"pointer": 0.995, "type": 0.005}, losses=losses, **fields)
        log.epoch(i, task_losses=losses)
    return log.end() if end else log


def test_a_task_at_its_floor_is_a_warning_and_one_that_persists_or_never_learned_an_error():
    (noise,) = collapse_alerts(rules.replay(persistent_log(0.05).records))
    assert noise.severity == "warning" and noise.subject == "type"
    assert "gradients dominated and the type loss stalled, but its gradient on the shared parameters is " in (
        noise.message
    )
    assert "mean cosine 0.05" in noise.message and noise.recommendation.startswith("Not urgent while the")
    # its loss stalled: not urgent because it sits at its floor, not "while it learns" (an outside review's find)
    assert "task sits at its floor; if its held-out metric lags: " in noise.recommendation
    assert "learns" not in noise.recommendation
    (starving,) = collapse_alerts(rules.replay(persistent_log(0.8).records))
    assert starving.severity == "error" and "its gradient's direction kept (cosine at least 0.5)" in starving.message
    assert "mean cosine 0.80" in starving.message
    (older,) = collapse_alerts(rules.replay(persistent_log(None).records))
    assert older.severity == "error" and "cosine" not in older.message  # a log without it: judged as before
    # Noise at 98% of its first loss: stuck at a chance-level plateau from the start, not at a floor it reached
    (stuck,) = collapse_alerts(rules.replay(persistent_log(0.05, level=0.98).records))
    assert stuck.severity == "error" and "mean cosine 0.05" in stuck.message


@pytest.mark.parametrize(("persistence", "severity"), [(0.05, "warning"), (0.4, "error")])
def test_a_high_floor_is_a_floor_when_the_gradient_is_pure_noise(persistence: float, severity: str) -> None:
    """A regression of low R^2 ends at 85% of its first loss, above floor_rate: a gradient of pure noise (below
    noise_persistence) says it is done; one that still has some direction (0.4) is starving."""
    (alert,) = collapse_alerts(rules.replay(persistent_log(persistence, level=0.85).records))
    assert alert.severity == severity, alert.message
    assert ("mini-batch noise around a minimum" in alert.message) == (severity == "warning")
    (alert,) = collapse_alerts(rules.replay(persistent_log(0.05, level=0.85).records, rules.Thresholds(noise_rate=0.8)))
    assert alert.severity == "error"  # 85% of its first loss is above the 80% asked


def test_the_end_of_run_verdict_leaves_a_task_at_its_floor_alone():
    """A run ended with the type task below a fair share, its loss high: starved unless it sits at its floor.
    ``check`` through the real CLI: exit 1 for the starving run, 0 for the one at its floor."""
    th = rules.Thresholds(balance_high=1e6, collapse_high=1e7)  # no window verdict: the end's alone
    (ended,) = collapse_alerts(rules.replay(persistent_log(0.8, end=True).records, th))
    assert ended.severity == "error" and "the run ended with the type task starved" in ended.message
    assert "mean cosine 0.80" in ended.message
    assert collapse_alerts(rules.replay(persistent_log(0.05, end=True).records, th)) == []


@pytest.mark.parametrize(("persistence", "code"), [(0.05, 0), (0.8, 1)])
def test_check_passes_a_task_at_its_floor_and_fails_a_starving_one(tmp_path, persistence, code):
    log = persistent_log(persistence, end=True).write(tmp_path / "run.jsonl")
    result = run_cli("moola_watch.cli", "check", str(log))
    assert result.returncode == code, result.stdout + result.stderr
    assert ("mini-batch noise" in result.stdout) == (persistence < 0.5)


def test_the_threshold_is_a_cosine_a_config_and_a_flag_can_set():
    assert rules.Thresholds().starve_persistence == pytest.approx(0.5)
    with pytest.raises(ValueError, match="starve_persistence is a fraction, at most 1"):
        rules.Thresholds(starve_persistence=1.5)
    (alert,) = collapse_alerts(rules.replay(persistent_log(0.6).records, rules.Thresholds(starve_persistence=0.7)))
    assert alert.severity == "warning"
    (alert,) = collapse_alerts(
        rules.replay(persistent_log(0.05).records, rules.Thresholds(floor_rate=0.6, noise_persistence=0.05))
    )
    assert alert.severity == "error"  # 65% of its first loss is not at a floor reached below 60%, and 0.05 not noise
    with pytest.raises(ValueError, match="noise_persistence is a fraction, at most 1"):
        rules.Thresholds(noise_persistence=2)
    flagged = run_cli("moola_watch.cli", "check", "--starve-persistence", "0.9", "--help")
    assert flagged.returncode == 0 and "--starve-persistence COSINE" in flagged.stdout


def test_a_dominated_task_is_not_starving_when_no_task_learns():
    """A learning rate of 0: every loss flat at its first, one task's gradient dominating. No competition starved
    the dominated task, and re-weighting would change nothing: a warning that says so, and what to check."""
    log = LogBuilder().start()
    for i in range(1, 13):
        losses = {"type": 0.7, "pointer": 0.8}
        log.balance(i, 8.0, shares={"pointer": 0.995, "type": 0.005}, losses=losses).epoch(i, task_losses=losses)
    (collapse,) = collapse_alerts(rules.replay(log.end().records))
    assert collapse.severity == "warning" and "but no other task learns either" in collapse.message
    assert collapse.recommendation.startswith("Check that the model trains at all: the learning rate (0?)")


def test_a_noisy_dominant_task_learns_and_the_error_says_kept_only_of_a_kept_direction():
    """The dominant task on noisy labels ends at 91% of its first loss, all it can learn: it learns, so the
    dominated task still starves (an outside review's run was excused as 'no other task learns'). A noisy
    gradient on a task still near its first loss is an error, whose words do not claim a kept direction."""
    log = LogBuilder().start()
    for i in range(1, 13):
        losses = {"type": 0.7, "pointer": 0.8 if i == 1 else 0.73}  # the pointer task: 91% of its first
        fields = {"persistence": {"type": 0.06, "pointer": 0.1}}
        log.balance(i, 8.0, shares={"pointer": 0.995, "type": 0.005}, losses=losses, **fields)
        log.epoch(i, task_losses=losses)
    (collapse,) = collapse_alerts(rules.replay(log.records))
    assert collapse.severity == "error" and "no other task learns" not in collapse.message
    assert "direction kept" not in collapse.message and "mean cosine 0.06" in collapse.message


def test_a_task_labelled_on_alternate_batches_is_compared_with_its_last_labelled_gradient(tmp_path):
    """Every step measured, task b labelled on every other batch (its masked loss 0 there, no gradient): its
    persistence compares its labelled batches with each other, not with the zero of the unlabelled one between."""
    torch.manual_seed(0)
    model = TwoHeads()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    path = tmp_path / "masked.jsonl"
    with GradientMonitor(every_n_steps=1, log_path=path) as monitor:
        monitor.watch_optimizer(optimizer)
        for step in range(8):
            losses = losses_of(model, step)
            if step % 2:
                losses["b"] = losses["b"] * 0.0  # no labels for b in this batch
            monitor.on_before_backward(model, losses)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
    balances = [json.loads(line) for line in path.read_text().splitlines() if '"task_balance"' in line]
    labelled = [record for record in balances[1:] if record["step"] % 2]  # steps 1, 3, ...: b labelled
    assert len(labelled) >= 3 and all("b" in record["persistence"] for record in labelled[1:])
