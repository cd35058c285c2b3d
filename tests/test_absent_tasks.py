"""A task that is not in every batch (no labels for it there) or switched off for a while (a weight of 0 in a
warm-up) is healthy: the samples it was not in say nothing of its balance. Real loops, the real ``check``."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import run_cli
from torch import nn

from moola.utils.monitoring import GradientMonitor
from moola_watch.rules.evidence import measured_nothing

STEPS = 240


def aux_labelled_sometimes(log, unlabelled: str) -> float:
    """Two tasks; the aux task has labels on 30% of the batches. On the others its loss is, as users write it,
    ``unlabelled``: "nan" (a mean over none, left out of the total) or "zero" (a masked mean: 0, no gradient).
    Returns the aux task's held-out accuracy (about 0.75 when it learns; 0.5 is the majority class)."""
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(8, 16), nn.Tanh())
    heads = nn.ModuleDict({"main": nn.Linear(16, 1), "aux": nn.Linear(16, 3)})
    model = nn.ModuleDict({"trunk": trunk, "heads": heads})
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(1)
    none = torch.zeros(32, dtype=torch.bool)
    with GradientMonitor(every_n_steps=5, balance_every_n_steps=1, log_path=log, echo=lambda _line: None) as monitor:
        monitor.watch_optimizer(optimizer)
        for step in range(STEPS):
            monitor.on_epoch_start(step // 30 + 1)
            x = torch.randn(32, 8, generator=generator)
            h = trunk(x)
            labels = (x[:, 2] > 0).long() + (x[:, 3] > 0).long()
            losses = {"main": nn.functional.mse_loss(heads["main"](h), x[:, :1] * 2 + x[:, 1:2])}
            logits = heads["aux"](h)
            if torch.rand((), generator=generator) < 0.3:
                losses["aux"] = nn.functional.cross_entropy(logits, labels)
            elif unlabelled == "nan":
                losses["aux"] = nn.functional.cross_entropy(logits[none], labels[none])
            else:
                per_example = nn.functional.cross_entropy(logits, labels, reduction="none")
                losses["aux"] = (per_example * none).sum() / none.sum().clamp(min=1)
            monitor.on_before_backward(model, losses)
            sum(loss for loss in losses.values() if not torch.isnan(loss)).backward()
            monitor.on_before_optimizer_step(model)
            optimizer.step()
            optimizer.zero_grad()
    with torch.no_grad():
        x = torch.randn(2000, 8, generator=generator)
        labels = (x[:, 2] > 0).long() + (x[:, 3] > 0).long()
        return (heads["aux"](trunk(x)).argmax(1) == labels).float().mean().item()


def check(log) -> tuple[int, dict]:
    result = run_cli("moola_watch.cli", "check", "--json", str(log))
    return result.returncode, json.loads(result.stdout)


@pytest.mark.parametrize("unlabelled", ["nan", "zero"])
def test_a_task_without_labels_in_most_batches_is_not_called_starving(tmp_path, unlabelled):
    log = tmp_path / f"{unlabelled}.jsonl"
    accuracy = aux_labelled_sometimes(log, unlabelled)
    code, report = check(log)
    collapse = [a for a in report["alerts"] if a["rule"] == "collapse"]
    assert accuracy > 0.65  # it learned (held out)
    assert code == 0 and not [a for a in collapse if a["severity"] == "error"], collapse
    # Its head gets no gradient on the batches it sat out (exactly 0): that is no vanishing layer.
    assert not [a for a in report["alerts"] if a["rule"] == "vanishing"], report["alerts"]


def test_a_task_switched_off_by_a_weight_of_0_is_not_starving_and_halts_nothing(tmp_path):
    """A curriculum: the aux weight is 0 for the first 60 steps, then ramps to 1. With halt_on="error" the
    run goes on to its end (it was halted at step 50 for a starving collapse), and check passes it."""
    torch.manual_seed(0)
    trunk, a, b = nn.Sequential(nn.Linear(8, 16), nn.Tanh()), nn.Linear(16, 2), nn.Linear(16, 1)
    model = nn.ModuleDict({"trunk": trunk, "a": a, "b": b})
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    log = tmp_path / "warmup.jsonl"
    with GradientMonitor(every_n_steps=5, log_path=log, halt_on="error", echo=lambda _line: None) as monitor:
        monitor.watch_optimizer(optimizer)
        for step in range(1, 181):
            monitor.on_epoch_start((step - 1) // 30 + 1)
            x = torch.randn(32, 8, generator=generator)
            h = trunk(x)
            losses = {"main": nn.functional.mse_loss(b(h).squeeze(1), x[:, 0] + x[:, 1]),
                      "aux": nn.functional.cross_entropy(a(h), (x[:, 2] > 0).long())}  # fmt: skip
            monitor.backward(model, losses, {"main": 1.0, "aux": min(1.0, max(0.0, (step - 60) / 30))})
            monitor.on_before_optimizer_step(model)
            assert not monitor.should_stop, monitor.halt_reason
            optimizer.step()
            optimizer.zero_grad()
    code, report = check(log)
    assert code == 0 and report["runs"][0]["status"] == "completed", report["alerts"]
    assert not [a for a in report["alerts"] if a["rule"] == "vanishing"], report["alerts"]  # its idle head


def test_what_a_task_measured_nothing_in_a_sample_is():
    assert measured_nothing(0.0, math.nan, 1.0) and measured_nothing(math.inf, 0.5, 1.0)
    assert measured_nothing(0.0, 0.0, 1.0) and measured_nothing(0.0, 0.7, 0.0)
    assert not measured_nothing(0.0, 0.7, 1.0)  # a loss and a weight, yet nothing reached the shared layers
    assert not measured_nothing(1e-9, 0.7, 0.002) and not measured_nothing(0.3, None, None)
