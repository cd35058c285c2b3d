"""The trainer API as a library user drives it from a plain step-based loop: when it measures, what it says,
what it records, on models that are not the project's LSTM."""

import io
import json
import logging
import math
import subprocess
import sys

import pytest
import torch
from helpers import REPO, run_cli, strict_lines
from torch import nn

from moola.utils.monitoring import GradientMonitor
from moola.utils.monitoring.console import console_lines
from moola.utils.monitoring.records import MAX_LAYER_NORMS, compact_layer_norms
from moola_watch.schema import MAX_LINE_BYTES, Rejected, decode_record


class TwoHeadMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(6, 16), nn.ReLU())
        self.cls = nn.Linear(16, 3)
        self.reg = nn.Linear(16, 1)

    def forward(self, x):
        h = self.trunk(x)
        return self.cls(h), self.reg(h).squeeze(1)


def task_losses(model, x, labels, target):
    logits, value = model(x)
    return {"cls": nn.functional.cross_entropy(logits, labels), "reg": nn.functional.mse_loss(value, target)}


def records_of(data: bytes) -> list[dict]:
    records = [decode_record(line) for line in data.splitlines()]
    assert records and not any(isinstance(r, Rejected) for r in records), records
    return records


def plain_loop(monitor, *, steps=40, accumulate=1, seed=0):
    """One epoch of ``steps`` optimizer steps, each over ``accumulate`` micro-batches."""
    torch.manual_seed(seed)
    model = TwoHeadMLP()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    monitor.watch_optimizer(optimizer)
    weights = {"cls": 1.0, "reg": 0.5}
    with monitor:
        for _step in range(steps):
            for _micro in range(accumulate):
                x = torch.randn(8, 6)
                losses = task_losses(model, x, torch.randint(0, 3, (8,)), x[:, 0])
                monitor.backward(model, losses, weights)
            monitor.on_before_optimizer_step(model)
            optimizer.step()
            optimizer.zero_grad()
        monitor.on_epoch_end(1, train_loss=0.5)
    return model


def test_every_n_steps_measures_on_optimizer_steps_and_throttles_balance(capsys):
    sink = io.BytesIO()
    plain_loop(GradientMonitor(every_n_steps=4, balance_every_n_steps=8, stream=sink), accumulate=2)
    records = records_of(sink.getvalue())
    assert [r["step"] for r in records if r["kind"] == "grad_stats"] == list(range(4, 41, 4))
    assert [r["step"] for r in records if r["kind"] == "task_balance"] == list(range(8, 41, 8))
    assert all(isinstance(r.get("step"), int) for r in records if r["kind"] != "run_start")
    assert records[-1]["kind"] == "run_end" and records[-2]["kind"] == "epoch" and records[-2]["step"] == 40
    out, err = capsys.readouterr()
    assert out == "" and err == ""  # a library is quiet unless asked


def test_at_step_takes_a_frameworks_step_count_for_balance_and_statistics():
    """A framework resumed at global step 1003 numbers and schedules both probes by its own count."""
    sink = io.BytesIO()
    monitor = GradientMonitor(every_n_steps=4, stream=sink)
    model = TwoHeadMLP()
    with monitor:
        for global_step in range(1003, 1011):  # optimizer steps already taken, as Lightning's global_step
            x = torch.randn(8, 6)
            losses = task_losses(model, x, torch.randint(0, 3, (8,)), x[:, 0])
            monitor.at_step(global_step + 1)
            monitor.on_before_backward(model, losses)
            sum(losses.values()).backward()
            monitor.on_before_optimizer_step(model, step=global_step + 1)
            model.zero_grad()
    records = records_of(sink.getvalue())
    assert [r["step"] for r in records if r["kind"] == "task_balance"] == [1004, 1008]
    assert [r["step"] for r in records if r["kind"] == "grad_stats"] == [1004, 1008]
    assert records[-1]["step"] == 1011


def test_console_lines_are_logging_records_a_user_can_turn_on(caplog):
    with caplog.at_level(logging.INFO, logger="moola"):
        plain_loop(GradientMonitor(every_n_steps=20, stream=io.BytesIO()), steps=20)
    text = caplog.text
    assert "Step 20 Gradient Stats:" in text and "[PHASE 4] Task balance at step 20" in text
    echoed: list[str] = []
    with console_lines(echoed.append):
        plain_loop(GradientMonitor(every_n_steps=20, stream=io.BytesIO()), steps=20)
    assert any("[PHASE 4] Gradient Monitoring Summary:" in line for line in echoed)


def test_the_monitors_backward_gives_exactly_the_gradients_of_a_plain_backward():
    weights = {"cls": 1.0, "reg": 0.5}
    x = torch.randn(8, 6)
    labels, target = torch.randint(0, 3, (8,)), x[:, 0]
    torch.manual_seed(1)
    reference = TwoHeadMLP()
    model = TwoHeadMLP()
    model.load_state_dict(reference.state_dict())
    losses = task_losses(reference, x, labels, target)
    sum(weights[n] * loss for n, loss in losses.items()).backward()
    monitor = GradientMonitor(every_n_steps=1, stream=io.BytesIO())
    balance = monitor.backward(model, task_losses(model, x, labels, target), weights)
    assert balance is not None and set(balance.norms) == {"cls", "reg"}
    for (name, expected), actual in zip(reference.named_parameters(), model.parameters(), strict=True):
        assert torch.equal(actual.grad, expected.grad), name  # bit for bit: it is the plain backward


def test_a_weight_for_a_task_without_a_loss_in_this_batch_is_left_out_with_one_note_and_training_goes_on():
    """A run's weights name every task; a batch may hold only some (labels on a third of the batches, one task a
    batch). The step gets the gradients of the loop's own ``sum(weights[t] * losses[t] for t in losses)``, and
    one note names the unused weight (a misspelt task would show there). Before, ``backward`` raised ValueError
    and ended the run at the first batch without some task's labels."""
    x = torch.randn(8, 6)
    labels, target = torch.randint(0, 3, (8,)), x[:, 0]
    torch.manual_seed(1)
    reference = TwoHeadMLP()
    model = TwoHeadMLP()
    model.load_state_dict(reference.state_dict())
    weights = {"cls": 1.0, "reg": 0.5, "rank": 2.0}
    (weights["cls"] * task_losses(reference, x, labels, target)["cls"]).backward()
    warned: list[str] = []
    monitor = GradientMonitor(every_n_steps=1, stream=io.BytesIO(), warn=warned.append)
    for _ in range(2):
        model.zero_grad()
        only_cls = {"cls": task_losses(model, x, labels, target)["cls"]}
        monitor.backward(model, only_cls, weights)
        monitor.on_before_optimizer_step(model)
    for (name, expected), actual in zip(reference.named_parameters(), model.parameters(), strict=True):
        assert (actual.grad is None) == (expected.grad is None), name
        assert actual.grad is None or torch.equal(actual.grad, expected.grad), name
    assert warned == ["note: weights name tasks without a loss in this step: rank, reg (losses: cls); their "
                      "weights are left out of its total, as a sum over the losses leaves them"]  # fmt: skip


def test_epoch_values_from_a_real_loop_are_recorded_not_raised():
    sink, warned = io.BytesIO(), []
    with GradientMonitor(every_n_steps=1, stream=sink, warn=warned.append) as monitor:
        monitor.on_epoch_end(
            1,
            train_loss=torch.tensor(0.5),
            lr=[1e-3],
            metrics={"f1": None, "acc": torch.tensor(0.75), "auc": torch.tensor([0.9])},
            task_losses={"cls": torch.tensor(0.4, dtype=torch.float64)},
        )
        monitor.on_epoch_end(2, train_loss=0.4, lr=[1e-3, 1e-4])
    epochs = [r for r in records_of(sink.getvalue()) if r["kind"] == "epoch"]
    assert epochs[0]["train_loss"] == 0.5 and epochs[0]["lr"] == 1e-3
    assert epochs[0]["metrics"] == {"acc": 0.75, "auc": pytest.approx(0.9)}
    assert epochs[1]["lr"] == 1e-3 and epochs[1]["lrs"] == [1e-3, 1e-4]
    assert any("metrics['f1'] is None" in line for line in warned)


def test_a_run_that_fails_before_measuring_still_has_a_start_and_an_end(tmp_path):
    log = tmp_path / "run.jsonl"
    with pytest.raises(RuntimeError), GradientMonitor(every_n_steps=1, log_path=log):
        raise RuntimeError("CUDA out of memory while loading data")
    records = records_of(log.read_bytes())
    assert [r["kind"] for r in records] == ["run_start", "run_end"]
    assert records[1]["status"] == "failed" and "out of memory" in records[1]["error"]
    result = run_cli("moola_watch.cli", "check", "--fail-on", "warning", str(log))
    assert result.returncode != 0, result.stdout


class Experts(nn.Module):
    """MoE-shaped: thousands of small experts, 2 tensors each."""

    def __init__(self, count):
        super().__init__()
        self.experts = nn.ModuleList(nn.Linear(1, 1) for _ in range(count))


def test_a_model_of_20k_tensors_writes_records_the_watcher_reads_with_every_fault(tmp_path):
    model = Experts(10_500)
    for p in model.parameters():
        p.grad = torch.full_like(p, math.nan)
    model.experts[7].weight.grad.fill_(0.5)
    log = tmp_path / "moe.jsonl"
    with GradientMonitor(every_n_steps=1, log_path=log) as monitor:
        stats = monitor.on_before_optimizer_step(model)
    assert stats is not None and stats["nonfinite_count"] == 21_000 - 1
    assert max(len(line) for line in log.read_bytes().splitlines()) < MAX_LINE_BYTES
    grad = next(r for r in records_of(log.read_bytes()) if r["kind"] == "grad_stats")
    assert grad["layer_groups"] == {
        "depth": 1,
        "tensors": 21_000,
        "groups": 1,
        "top": 20,
        "sizes": [21_000],
        "with_weights": True,
    }
    assert math.isnan(grad["layer_norms"]["experts"]) and "experts.7.weight" in grad["top_layers"]
    result = run_cli("moola_watch.cli", "check", str(log))
    assert result.returncode == 1 and "nonfinite" in result.stdout, result.stdout


class Blocks(nn.Module):
    """A stack of small blocks whose summed output every block feeds (no block shadows another's gradient)."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(count))
        self.out = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(sum(torch.tanh(layer(x)) for layer in self.layers) / len(self.layers))


def test_a_model_of_more_tensors_than_a_record_names_is_judged_by_its_tensors_not_its_groups(tmp_path):
    """Beyond max_layer_norms the record's layer_norms are module groups, each the L2 norm of many tensors: the
    layer rules judge the tensors the record names (top_layers), so a group of healthy tensors is not
    'exploding', a vanishing tensor is not hidden in its group, and alerts name tensors."""
    torch.manual_seed(0)
    model = Blocks(600)  # 1202 tensors, grouped into 2 module groups (layers, out) at a limit of 100
    log = tmp_path / "blocks.jsonl"
    with GradientMonitor(every_n_steps=1, log_path=log, max_layer_norms=100) as monitor:
        for step in range(1, 8):
            model.zero_grad()
            model(torch.randn(16, 4)).pow(2).mean().backward()
            for p in model.parameters():
                p.grad.mul_(0.3 / max(torch.linalg.vector_norm(p.grad).item(), 1e-12))  # each tensor 0.3
            if step >= 4:
                model.layers[40].weight.grad.mul_(1e-9)  # one dead layer, its module's bias with it
                model.layers[40].bias.grad.mul_(1e-9)
            monitor.on_before_optimizer_step(model)
    grad = [r for r in strict_lines(log) if r["kind"] == "grad_stats"][-1]
    assert grad["layer_groups"] == {
        "depth": 1,
        "tensors": 1202,
        "groups": 2,
        "top": 20,
        "sizes": [1200, 2],
        "with_weights": True,
    }
    assert grad["layer_norms"]["layers"] > 10 > grad["max_norm"]  # the group's L2 norm is beyond the bound
    assert {"layers.40.weight", "layers.40.bias"} <= set(grad["top_layers"])
    result = run_cli("moola_watch.cli", "check", "--json", str(log))
    alerts = {(a["rule"], a["first_step"]): a for a in json.loads(result.stdout.splitlines()[0])["alerts"]}
    assert ("exploding", 1) not in alerts and set(alerts) == {("vanishing", 4)}, alerts
    assert alerts[("vanishing", 4)]["layers"] == ["layers.40.weight", "layers.40.bias"]
    # The offline tables are of the tensors named too: the dead layer is among the smallest, no group is largest.
    worst = json.loads(run_cli("moola_watch.cli", "analyze", "--json", str(log)).stdout.splitlines()[0])["worst_layers"]
    assert {row["layer"] for row in worst["smallest"][:2]} == {"layers.40.weight", "layers.40.bias"}
    assert max(row["peak"] for row in worst["largest"]) == pytest.approx(0.3)
    # Named only from step 4 (the records name their model's extremes): its norms are over 4 of the 7 samples,
    # and the table says so rather than pass a tensor named once off as last = peak = lowest over the run.
    dead = next(row for row in worst["smallest"] if row["layer"] == "layers.40.weight")
    assert (dead["seen"], dead["samples"]) == (4, 7)
    shown = run_cli("moola_watch.cli", "analyze", str(log)).stdout
    assert "seen: the samples that named the tensor" in shown and "4/7" in shown, shown


def test_more_exploding_tensors_than_a_big_models_record_names_are_counted_as_at_least_that_many(tmp_path):
    model, log = Blocks(600), tmp_path / "blocks.jsonl"
    with GradientMonitor(every_n_steps=1, log_path=log, max_layer_norms=100, echo=lambda _line: None) as monitor:
        for _step in range(4):  # past the exploding rule's confirmation
            for p in model.parameters():
                p.grad = torch.full_like(p, 0.01)
            for layer in model.layers[:30]:
                layer.weight.grad.fill_(10.0)  # 30 tensors of norm 40, beyond the bound of 10
            monitor.on_before_optimizer_step(model)
    result = run_cli("moola_watch.cli", "check", str(log))
    assert "Exploding gradients in at least 20 layers (norm > 10): layers.0.weight" in result.stdout, result.stdout


def test_a_big_models_record_names_the_smallest_tensors_that_are_not_zero_by_construction():
    """Biases before a normalization (or attention key biases) get no gradient by construction: named among the
    smallest, they would hide the one dead layer the watcher must see."""
    norms = {f"layers.{i}.{kind}": 0.3 if kind == "weight" else 1e-14 for i in range(30) for kind in ("weight", "bias")}
    norms["dead.weight"] = 1e-9
    top = compact_layer_norms(norms, limit=10, top=3, vanishing=1e-7)["top_layers"]
    assert "dead.weight" in top and not any(name.endswith(".bias") for name in top), top
    # BitFit: only biases are measured, a key bias's rounding error is not named, a dead unit's exact 0 is
    bitfit = {f"layers.{i}.{kind}.bias": 1e-13 if kind == "k" else 0.01 for i in range(30) for kind in "kv"}
    top = compact_layer_norms({**bitfit, "dead.bias": 0.0}, limit=10, top=3, vanishing=1e-7)["top_layers"]
    assert "dead.bias" in top and not any(".k." in name for name in top), top


def test_a_big_models_statistics_are_measured_under_a_vanishing_bound_above_the_default_exploding_one(tmp_path):
    """A review's case: with thresholds that judge layers by vanishing 20 and exploding 1000 (both valid), a model
    of more tensors than max_layer_norms recorded no grad_stats at all: grouping its norms made thresholds of the
    vanishing bound alone beside the default exploding 10, which are out of order. The layer helpers too."""
    from moola_watch.rules import Thresholds, exploding_layers, vanishing_layers

    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(40)])
    warned: list[str] = []
    monitor = GradientMonitor(every_n_steps=1, log_path=tmp_path / "run.jsonl", max_layer_norms=50,
                              thresholds=Thresholds(vanishing=20.0, exploding=1000.0), warn=warned.append)  # fmt: skip
    monitor.on_run_start(model)
    model(torch.randn(4, 2)).sum().backward()
    monitor.on_before_optimizer_step(model)
    monitor.on_run_end()
    kinds = [json.loads(line)["kind"] for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    assert "grad_stats" in kinds and not warned, (kinds, warned)
    assert vanishing_layers({"a": 5.0, "b": 30.0}, threshold=20) == ["a"]
    assert exploding_layers({"a": 5.0, "b": 1e-9}, threshold=1e-8) == ["a"]


class SelfAttention(nn.Module):
    """One softmax self-attention block and a ReLU layer: ``key.bias`` gets no gradient by construction (softmax
    over the keys ignores a shift common to them all). ``dead``: every unit of ``hidden`` is off, so it and all
    before it get none at all."""

    def __init__(self, dim: int = 16, dead: bool = False) -> None:
        super().__init__()
        self.embed = nn.Linear(8, dim)
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.hidden = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 3)
        if dead:
            nn.init.constant_(self.hidden.bias, -100.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        scores = self.query(h) @ self.key(h).transpose(1, 2) / h.shape[-1] ** 0.5
        h = torch.relu(self.hidden(torch.softmax(scores, dim=-1) @ self.value(h)))
        return self.head(h.mean(1))


def bitfit_vanishing(dead: bool, max_layer_norms: int) -> list[list[str]]:
    """BitFit (every weight frozen, the biases trained) for 20 steps; the layers of each vanishing alert fired."""
    torch.manual_seed(0)
    model = SelfAttention(dead=dead)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.endswith("bias"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    with GradientMonitor(every_n_steps=1, echo=lambda _line: None, max_layer_norms=max_layer_norms) as m:
        m.watch_optimizer(optimizer)
        for _ in range(20):
            x = torch.randn(8, 6, 8)
            nn.functional.cross_entropy(model(x), (x[:, 0, 0] > 0).long()).backward()
            m.on_before_optimizer_step(model)
            optimizer.step()
            optimizer.zero_grad()
    return [list(alert.layers) for alert in m.engine.alerts if alert.rule == "vanishing"]


@pytest.mark.parametrize("max_layer_norms", [MAX_LAYER_NORMS, 3])  # 3: the record names its extreme tensors
def test_a_bitfit_run_raises_no_vanishing_alert_and_a_dead_layer_in_one_still_does(max_layer_norms):
    # Before, key.bias was vanishing: the rule took a bias for zero by construction only when its module's weight
    # got gradient, and a frozen weight gets none. Its gradient is rounding error (1e-13), a dead unit's exactly 0.
    assert bitfit_vanishing(dead=False, max_layer_norms=max_layer_norms) == []
    (flagged,) = bitfit_vanishing(dead=True, max_layer_norms=max_layer_norms)
    assert "hidden.bias" in flagged and "key.bias" in flagged and "head.bias" not in flagged  # all behind it: 0


class LoRALinear(nn.Module):
    """A frozen linear layer with a trained low-rank update, PEFT's way: ``B`` starts at zero."""

    def __init__(self, width: int, rank: int = 2) -> None:
        super().__init__()
        self.base = nn.Linear(width, width).requires_grad_(False)
        self.lora_A = nn.Linear(width, rank, bias=False)
        self.lora_B = nn.Linear(rank, width, bias=False)
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_B(self.lora_A(x))


def lora_vanishing(dead_input: bool) -> list[list[str]]:
    """A LoRA fine-tune for 15 steps (lr 1e-7: B stays young); the layers of each vanishing alert fired."""
    torch.manual_seed(0)
    model = nn.Sequential(LoRALinear(8), nn.ReLU(), LoRALinear(8), nn.Linear(8, 1).requires_grad_(False))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-7)
    with GradientMonitor(every_n_steps=1, echo=lambda _line: None) as monitor:
        for _ in range(15):
            x = torch.randn(16, 8) * (0.0 if dead_input else 1.0)
            model(x).pow(2).mean().backward()
            monitor.on_before_optimizer_step(model)
            optimizer.step()
            optimizer.zero_grad()
    return [list(alert.layers) for alert in monitor.engine.alerts if alert.rule == "vanishing"]


def test_a_lora_a_matrix_gated_by_a_young_b_is_not_vanishing_and_one_with_no_gradient_through_b_still_is():
    """LoRA's B starts at zero and A's gradient passes through it: a healthy LoRA run had every A called vanishing
    for as long as B was small. A whose B gets no gradient either (nothing reaches them: a zero input) is."""
    assert lora_vanishing(dead_input=False) == []
    (flagged,) = lora_vanishing(dead_input=True)
    assert "0.lora_A.weight" in flagged and "0.lora_B.weight" in flagged


def test_a_big_models_vanishing_biases_are_flagged_when_their_trained_weights_vanish_too(tmp_path):
    """A model past max_layer_norms whose smallest tensors are biases: the record names them with their modules'
    weights, so the watcher sees the weights trained and vanishing, not missing (a frozen weight is not
    measured). A record of the old form, the biases without their weights, is judged as before: vanishing."""
    torch.manual_seed(0)
    layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(60))
    log = tmp_path / "big.jsonl"
    with GradientMonitor(every_n_steps=1, log_path=log, max_layer_norms=20) as monitor:
        for _ in range(3):
            x = torch.randn(16, 4)
            sum((1e-10 if i < 30 else 0.02) * layer(10 * x) for i, layer in enumerate(layers)).pow(2).mean().backward()
            monitor.on_before_optimizer_step(layers)
            layers.zero_grad()
    records = strict_lines(log)
    top = next(r["top_layers"] for r in records if r["kind"] == "grad_stats")
    assert {name.rpartition(".")[0] for name in top if name.endswith("bias")} <= {
        name.rpartition(".")[0] for name in top if name.endswith("weight")
    }
    old_form = tmp_path / "old.jsonl"
    for record in records:
        if record["kind"] == "grad_stats":
            record["top_layers"] = {k: v for k, v in record["top_layers"].items() if k.endswith("bias") or v > 1e-7}
            del record["layer_groups"]["with_weights"]
    old_form.write_text("".join(json.dumps(record) + "\n" for record in records))
    for path in (log, old_form):
        result = run_cli("moola_watch", "check", str(path))
        assert "Vanishing gradients in at least" in result.stdout and " 0.bias" in result.stdout, result.stdout


def test_a_layer_added_or_replaced_after_the_first_measurement_is_measured():
    model = TwoHeadMLP()
    monitor = GradientMonitor(every_n_steps=1, stream=io.BytesIO())
    x = torch.randn(4, 6)

    def step():
        model.zero_grad(set_to_none=True)
        logits, value = model(x)
        extra = model.adapter(x).sum() if hasattr(model, "adapter") else 0
        (logits.sum() + value.sum() + extra).backward()
        return monitor.on_before_optimizer_step(model)["layer_norms"]

    step()
    model.adapter = nn.Linear(6, 1)  # a new head after the first update (a LoRA adapter, say)
    assert "adapter.weight" in step()
    stale = model.reg.weight
    stale.grad = torch.full_like(stale, 100.0)  # what the old, detached parameter would still report
    model.reg.weight = nn.Parameter(torch.zeros_like(stale))
    norms = step()
    assert norms["reg.weight"] == pytest.approx(model.reg.weight.grad.norm().item())


def test_readme_loop_example_runs_as_written(tmp_path):
    """The README's plain-loop example, extracted and run in a fresh process."""
    readme = (REPO / "README.md").read_text("utf-8")
    start = readme.index("<!-- plain-loop example -->")
    code = readme[start:].split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "loop.py"
    script.write_text(code, "utf-8")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    records = records_of((tmp_path / "runs" / "mtl.jsonl").read_bytes())
    assert [r["step"] for r in records if r["kind"] == "grad_stats"] == list(range(50, 201, 50))
    assert {r["epoch"] for r in records if r["kind"] in ("grad_stats", "epoch", "run_end")} == {1}
    assert "WARNING" not in result.stderr  # the example says what it does: nothing is left out


def test_a_loop_that_calls_only_on_epoch_end_gets_each_records_own_epoch():
    """The records after ``on_epoch_end(e)`` belong to epoch e + 1, not e; those before the first end to none;
    ``run_end`` is the last epoch's, not the one after it."""
    sink = io.BytesIO()
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with GradientMonitor(every_n_steps=1, stream=sink, echo=lambda _line: None) as monitor:
        monitor.watch_optimizer(optimizer)
        for epoch in range(1, 4):
            for _ in range(2):
                model(torch.randn(8, 4)).pow(2).mean().backward()
                monitor.on_before_optimizer_step(model)
                optimizer.step()
                optimizer.zero_grad()
            monitor.on_epoch_end(epoch, train_loss=0.5)
    records = records_of(sink.getvalue())
    # (An alert record, when a random batch's norm leaves the healthy band, is beside the point here.)
    assert [(r["kind"], r["epoch"]) for r in records if r["kind"] not in ("run_start", "alert")] == [
        ("grad_stats", None), ("grad_stats", None), ("epoch", 1), ("grad_stats", 2), ("grad_stats", 2),
        ("epoch", 2), ("grad_stats", 3), ("grad_stats", 3), ("epoch", 3), ("run_end", 3),
    ]  # fmt: skip


# ---------------------------------------------------------------- found by an outside review, on other loops


def test_clamping_hooks_and_learnable_weights_see_the_plain_backward():
    torch.manual_seed(7)
    x, labels = torch.randn(8, 6), torch.randint(0, 3, (8,))
    models = [TwoHeadMLP(), TwoHeadMLP()]
    models[1].load_state_dict(models[0].state_dict())
    log_vars = [nn.Parameter(torch.tensor([0.2, -0.3])) for _ in models]
    for model in models:  # per-parameter gradient clipping: not linear in the incoming gradient
        model.trunk[0].weight.register_hook(lambda g: g.clamp(-0.01, 0.01))

    def weighted(model, log_var):
        losses = task_losses(model, x, labels, x[:, 0])
        return losses, {"cls": torch.exp(-log_var[0]), "reg": torch.exp(-log_var[1])}

    losses, weights = weighted(models[0], log_vars[0])
    sum(weights[n] * loss for n, loss in losses.items()).backward()
    losses, weights = weighted(models[1], log_vars[1])
    assert GradientMonitor(every_n_steps=1, stream=io.BytesIO()).backward(models[1], losses, weights) is not None
    for expected, actual in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(actual.grad, expected.grad)
    assert log_vars[1].grad is not None and torch.equal(log_vars[1].grad, log_vars[0].grad)


def test_two_optimizers_count_one_step_and_an_accelerate_optimizer_is_counted_by_what_it_wraps():
    from accelerate import Accelerator

    model = TwoHeadMLP()
    sink = io.BytesIO()
    monitor = GradientMonitor(every_n_steps=2, stream=sink)
    dense = torch.optim.SGD(list(model.trunk.parameters()), lr=0.01)
    heads = torch.optim.SGD(list(model.cls.parameters()) + list(model.reg.parameters()), lr=0.01)
    monitor.watch_optimizer(dense)
    monitor.watch_optimizer(heads)
    for _ in range(6):
        x = torch.randn(4, 6)
        sum(task_losses(model, x, torch.randint(0, 3, (4,)), x[:, 0]).values()).backward()
        monitor.on_before_optimizer_step(model)
        dense.step()
        heads.step()
    assert [r["step"] for r in records_of(sink.getvalue()) if r["kind"] == "grad_stats"] == [2, 4, 6]
    accelerator = Accelerator(cpu=True)
    wrapped = accelerator.prepare(torch.optim.SGD(model.parameters(), lr=0.01))
    counting = GradientMonitor(every_n_steps=1, stream=io.BytesIO())
    counting.watch_optimizer(wrapped)
    wrapped.step()
    assert counting.steps_done == 1


def rebuilt_optimizer_loop(monitor, watch_new: bool, steps=(12, 40)):
    """An outside review's loop: AdamW for a phase, then a new SGD on the same model (rebuilt after unfreezing,
    say), given to ``watch_optimizer`` or not; the steps each record carries."""
    torch.manual_seed(0)
    model = TwoHeadMLP()
    for phase, optimizer in enumerate((torch.optim.AdamW(model.parameters()), torch.optim.SGD(model.parameters()))):
        if phase == 0 or watch_new:
            monitor.watch_optimizer(optimizer)
        for _ in range(steps[phase]):
            x = torch.randn(8, 6)
            monitor.backward(model, task_losses(model, x, torch.randint(0, 3, (8,)), x[:, 0]))
            monitor.on_before_optimizer_step(model)
            optimizer.step()
            optimizer.zero_grad()


def test_an_optimizer_watched_after_the_first_stepped_replaces_it_and_an_unwatched_one_is_said_and_counted():
    """A second watch_optimizer was ignored, and the first optimizer never stepped again: every later record
    said its last step, and nothing more was measured (an exploding phase after it went unseen)."""
    sink, warnings = io.BytesIO(), []
    with GradientMonitor(every_n_steps=4, stream=sink, warn=warnings.append, echo=lambda _line: None) as monitor:
        rebuilt_optimizer_loop(monitor, watch_new=True)
    grads = [r["step"] for r in records_of(sink.getvalue()) if r["kind"] == "grad_stats"]
    assert grads == list(range(4, 53, 4)) and not warnings, (grads, warnings)
    sink, warnings = io.BytesIO(), []
    with GradientMonitor(every_n_steps=4, stream=sink, warn=warnings.append, echo=lambda _line: None) as monitor:
        rebuilt_optimizer_loop(monitor, watch_new=False)
    grads = [r["step"] for r in records_of(sink.getvalue()) if r["kind"] == "grad_stats"]
    assert grads == [4, 8, 12, 45, 48, 52], grads  # steps 13-44 stalled: from the 32nd call on, calls count
    (warning,) = [line for line in warnings if "has not stepped" in line]
    assert "the last 32 calls" in warning and "from step 45" in warning and "watch_optimizer(new)" in warning


def test_a_scaler_that_skips_every_step_is_measured_every_time_and_critical_once_no_scale_helps(tmp_path):
    model = TwoHeadMLP()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    log = tmp_path / "overflow.jsonl"
    with GradientMonitor(every_n_steps=1, log_path=log) as monitor:
        monitor.watch_optimizer(optimizer)
        for _ in range(14):
            x = torch.randn(4, 6)
            losses = task_losses(model, x, torch.randint(0, 3, (4,)), x[:, 0])
            scaler.scale(losses["reg"] * math.inf).backward()
            scaler.unscale_(optimizer)
            monitor.on_before_optimizer_step(model, scaler=scaler)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
    lines = log.read_bytes().splitlines(keepends=True)
    grads = [r for r in records_of(b"".join(lines)) if r["kind"] == "grad_stats"]
    assert len(grads) == 14 and all(r["amp"]["overflow"] and r["step"] == 1 for r in grads)
    assert [r["amp"]["scale"] for r in grads][9:12] == [2.0, 1.0, 0.5]
    calibrating = tmp_path / "first-eight.jsonl"  # scale 1024 down to 8: could still be the scale calibrating
    calibrating.write_bytes(b"".join(lines[:9]))
    assert run_cli("moola_watch.cli", "check", str(calibrating)).returncode == 0
    result = run_cli("moola_watch.cli", "check", "--fail-on", "warning", str(calibrating))
    assert result.returncode == 1 and "amp_overflow" in result.stdout, result.stdout
    result = run_cli("moola_watch.cli", "check", str(log))  # below a scale of 1: a real NaN, and critical
    assert result.returncode == 1 and "critical firing   amp_overflow" in result.stdout, result.stdout
    assert "no overflow but a real NaN/Inf" in result.stdout


def test_frozen_layers_holding_zeroed_gradients_are_not_vanishing():
    model = TwoHeadMLP()
    x = torch.randn(4, 6)
    sum(task_losses(model, x, torch.randint(0, 3, (4,)), x[:, 0]).values()).backward()
    model.trunk.requires_grad_(False)
    model.zero_grad(set_to_none=False)  # the frozen trunk keeps zero tensors as its .grad
    sum(task_losses(model, x, torch.randint(0, 3, (4,)), x[:, 0]).values()).backward()
    stats = GradientMonitor(every_n_steps=1, stream=io.BytesIO()).on_before_optimizer_step(model)
    assert not any(name.startswith("trunk") for name in stats["layer_norms"]) and stats["min_norm"] > 0


def test_an_epoch_before_any_measurement_still_opens_the_log_with_the_runs_thresholds(tmp_path):
    from moola_watch.rules import Thresholds

    log = tmp_path / "run.jsonl"
    with GradientMonitor(3, log_path=log, thresholds=Thresholds(exploding=1000.0)) as monitor:
        monitor.on_epoch_end(1, train_loss=0.5)
    records = records_of(log.read_bytes())
    assert records[0]["kind"] == "run_start" and records[0]["thresholds"]["exploding"] == 1000.0


@pytest.mark.parametrize("spec_epochs", [False, True])
def test_a_model_given_to_a_hook_before_the_first_record_is_named_when_an_epochs_record_comes_first(spec_epochs):
    """Measured every 100 steps (or, the spec's way, every 10th epoch from epoch 1), the first record is the first
    epoch's: its ``run_start`` still names the model the step hooks were given all along, and its parameters."""
    sink = io.BytesIO()
    model = TwoHeadMLP()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    options = {"log_frequency": 10} if spec_epochs else {"every_n_steps": 100}
    with GradientMonitor(**options, stream=sink, echo=lambda _line: None) as monitor:
        for epoch in (1, 2):
            for _ in range(5):
                x = torch.randn(8, 6)
                losses = task_losses(model, x, torch.randint(0, 3, (8,)), x[:, 0])
                monitor.backward(model, losses)
                if spec_epochs:
                    monitor.update(epoch, model)
                else:
                    monitor.on_before_optimizer_step(model)
                optimizer.step()
                optimizer.zero_grad()
            monitor.on_epoch_end(epoch, train_loss=0.5)
    start, first = records_of(sink.getvalue())[:2]
    assert first["kind"] == "epoch"  # nothing was measured yet
    # Before, the model the hooks were given was forgotten: model "unknown", no parameters, a count of 0.
    assert start["model"] == "TwoHeadMLP" and start["parameters"][:2] == ["trunk.0.weight", "trunk.0.bias"]
    assert start["parameter_count"] == sum(p.numel() for p in model.parameters())


def test_an_evaluation_under_no_grad_uses_no_probe_and_a_loss_without_a_graph_is_named():
    model = TwoHeadMLP()
    x = torch.randn(4, 6)
    warned: list[str] = []
    monitor = GradientMonitor(every_n_steps=1, stream=io.BytesIO(), warn=warned.append)
    with torch.no_grad():
        assert monitor.on_before_backward(model, task_losses(model, x, torch.randint(0, 3, (4,)), x[:, 0])) is None
    assert warned == [] and monitor.balance_due()  # the step's real probe is still to come
    losses = task_losses(model, x, torch.randint(0, 3, (4,)), x[:, 0])
    losses["aux"] = torch.zeros((), requires_grad=True)  # a constant with requires_grad: no graph
    assert monitor.on_before_backward(model, losses) is None
    assert len(warned) == 1 and "'aux' loss has no autograd graph" in warned[0]


def test_steps_never_go_back_in_a_log():
    sink = io.BytesIO()
    model = TwoHeadMLP()
    x = torch.randn(4, 6)
    with GradientMonitor(every_n_steps=1, stream=sink) as monitor:
        monitor.backward(model, task_losses(model, x, torch.randint(0, 3, (4,)), x[:, 0]))  # a probe at step 1
    steps = [r["step"] for r in records_of(sink.getvalue()) if r.get("step") is not None]
    assert steps == sorted(steps) and steps[-1] == 1


def test_a_model_cast_after_the_first_measurement_is_measured_in_its_new_dtype():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    monitor = GradientMonitor(every_n_steps=1, stream=io.BytesIO())
    model(torch.randn(3, 4)).sum().backward()
    monitor.on_before_optimizer_step(model)
    model.to(torch.bfloat16)  # registers nothing: the plan must read the dtype off the gradients
    model.zero_grad(set_to_none=True)
    model(torch.randn(3, 4, dtype=torch.bfloat16)).float().sum().backward()
    norms = monitor.on_before_optimizer_step(model)["layer_norms"]
    for name, p in model.named_parameters():
        assert norms[name] == torch.linalg.vector_norm(p.grad.float()).item(), name  # widened, as planned anew


def test_part_of_a_model_cast_after_the_first_measurement_keeps_float32_norms():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 64), nn.Linear(64, 2))
    monitor = GradientMonitor(every_n_steps=1, stream=io.BytesIO())
    model(torch.randn(3, 4)).sum().backward()
    monitor.on_before_optimizer_step(model)
    model[1].to(torch.bfloat16)  # one layer only: the plan still holds one (device, dtype) group
    model.zero_grad(set_to_none=True)
    model[1](model[0](torch.randn(3, 4)).bfloat16()).float().pow(2).sum().backward()
    norms = monitor.on_before_optimizer_step(model)["layer_norms"]
    for name, p in model.named_parameters():
        assert norms[name] == pytest.approx(torch.linalg.vector_norm(p.grad.float()).item(), rel=1e-6), name


def test_numpy_and_tensor_counts_are_kept_as_numbers(tmp_path):
    """Loops count with numpy (np.arange) or tensors (a global step buffer): the records keep those counts."""
    import numpy as np

    model = nn.Linear(3, 1)
    model(torch.randn(4, 3)).sum().backward()
    with GradientMonitor(every_n_steps=1, log_path=tmp_path / "run.jsonl") as monitor:
        monitor.on_epoch_start(np.int64(2))
        monitor.at_step(np.int64(5))
        monitor.on_before_optimizer_step(model)
        monitor.on_before_optimizer_step(model, step=torch.tensor(7))
        monitor.update(np.int32(3), model)
    grads = [r for r in strict_lines(tmp_path / "run.jsonl") if r["kind"] == "grad_stats"]
    assert [(r["epoch"], r["step"]) for r in grads] == [(2, 5), (2, 7), (3, 8)]


def test_a_configuration_of_any_values_is_recorded_and_never_raises(tmp_path):
    """What hyperparameters hold in real projects: each value no JSON holds is recorded as its text."""
    import datetime
    import enum
    from pathlib import Path

    class Mode(enum.Enum):
        FAST = "fast"

    config = {"path": Path("/data/x"), "dtype": torch.bfloat16, "device": torch.device("cpu"), "cls": nn.Linear,
              "mode": Mode.FAST, "date": datetime.date(2026, 11, 30), "fn": math.sqrt, "tags": {"a"},
              "raw": b"\x00", "z": 1j, 3: "int key", "nested": {"t": torch.tensor([1.0, 2.0]), "n": None}}  # fmt: skip
    log = tmp_path / "run.jsonl"
    with GradientMonitor(every_n_steps=1, log_path=log) as monitor:
        monitor.on_run_start(nn.Linear(2, 2), config=config)
    (start, end) = strict_lines(log)
    recorded = start["config"]
    assert end["status"] == "completed" and recorded["path"] == "/data/x" and recorded["dtype"] == "torch.bfloat16"
    assert recorded["mode"] == "Mode.FAST" and recorded["date"] == "2026-11-30" and recorded["tags"] == ["a"]
    assert recorded["3"] == "int key" and recorded["nested"] == {"t": [1.0, 2.0], "n": None} and recorded["z"] == "1j"


def test_measuring_every_micro_batch_under_accumulation_is_one_warning_and_the_loop_goes_on():
    """The mistake gradient accumulation invites: on_before_optimizer_step after every micro-batch's backward.
    Its first call measures a partial gradient; the second call of the same step says so, once."""
    warnings: list[str] = []
    monitor = GradientMonitor(every_n_steps=1, stream=io.BytesIO(), warn=warnings.append)
    torch.manual_seed(0)
    model = TwoHeadMLP()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    monitor.watch_optimizer(optimizer)
    with monitor:
        for _step in range(3):
            for _micro in range(2):
                x = torch.randn(8, 6)
                monitor.backward(model, task_losses(model, x, torch.randint(0, 3, (8,)), x[:, 0]))
                monitor.on_before_optimizer_step(model)  # wrong: after each micro-batch
            optimizer.step()
            optimizer.zero_grad()
    (warning,) = warnings
    assert "called again before the optimizer stepped (step 1)" in warning and "partial gradient" in warning


def test_batches_of_one_task_in_turn_are_one_warning_that_the_balance_is_never_measured():
    """Round-robin over datasets: each batch carries one task's loss. The balance needs two tasks' losses of one
    batch: said once; a run whose other task only joins later (one name) says nothing."""
    warnings: list[str] = []
    monitor = GradientMonitor(every_n_steps=1, stream=io.BytesIO(), warn=warnings.append)
    torch.manual_seed(0)
    model = TwoHeadMLP()
    with monitor:
        for step in range(6):
            x = torch.randn(8, 6)
            losses = task_losses(model, x, torch.randint(0, 3, (8,)), x[:, 0])
            task = sorted(losses)[step % 2]
            monitor.backward(model, {task: losses[task]})
            monitor.on_before_optimizer_step(model)
            model.zero_grad()
    (warning,) = warnings
    assert "calls name one task each" in warning and "is not measured" in warning
    joins_late: list[str] = []
    monitor = GradientMonitor(every_n_steps=1, stream=io.BytesIO(), warn=joins_late.append)
    with monitor:
        for step in range(4):
            x = torch.randn(8, 6)
            losses = task_losses(model, x, torch.randint(0, 3, (8,)), x[:, 0])
            monitor.backward(model, losses if step >= 2 else {"cls": losses["cls"]})
            monitor.on_before_optimizer_step(model)
            model.zero_grad()
    assert joins_late == []


def test_a_log_of_batches_of_one_task_in_turn_says_at_its_end_that_the_balance_was_never_judged(tmp_path):
    """The trainer's stderr warning is gone by the time someone runs ``check`` on the log: the log's run_end
    names the tasks, and a run of several tasks with no balance sample is a warning there. A run that measured
    its balance (a window's worth of samples), and a single-task run, have none."""
    torch.manual_seed(0)
    model = TwoHeadMLP()

    def run(path, losses_of_step):
        with GradientMonitor(every_n_steps=1, log_path=path, warn=lambda _message: None) as monitor:
            for step in range(12):
                x = torch.randn(8, 6)
                monitor.backward(model, losses_of_step(step, task_losses(model, x, torch.randint(0, 3, (8,)), x[:, 0])))
                monitor.on_before_optimizer_step(model)
                model.zero_grad()
        return run_cli("moola_watch", "check", str(path))

    in_turn = run(tmp_path / "in_turn.jsonl", lambda step, losses: {(task := sorted(losses)[step % 2]): losses[task]})
    assert strict_lines(tmp_path / "in_turn.jsonl")[-1]["tasks"] == ["cls", "reg"]
    assert in_turn.returncode == 0, in_turn.stdout  # a warning: the gradients were judged
    assert "balance_unmeasured" in in_turn.stdout and "losses of 2 tasks (cls, reg)" in in_turn.stdout
    together = run(tmp_path / "together.jsonl", lambda _step, losses: losses)
    single = run(tmp_path / "single.jsonl", lambda _step, losses: {"cls": losses["cls"]})
    for result in (together, single):
        assert "balance_unmeasured" not in result.stdout and "measured no task balance" not in result.stdout
    assert strict_lines(tmp_path / "single.jsonl")[-1]["tasks"] == ["cls"]


def test_measuring_once_per_accumulated_step_warns_nothing():
    warnings: list[str] = []
    plain_loop(GradientMonitor(every_n_steps=1, stream=io.BytesIO(), warn=warnings.append), steps=6, accumulate=2)
    assert warnings == []


def test_the_runs_own_end_is_not_a_reason_to_halt_it():
    """run_end's run_failed alert goes to on_alert, but the run has ended: it does not set the halt."""
    seen = []
    monitor = GradientMonitor(every_n_steps=1, stream=io.BytesIO(), halt_on="error", on_alert=seen.append)
    monitor.on_run_start(nn.Linear(2, 2))
    monitor.on_run_end("failed", error="RuntimeError: out of memory")
    assert [alert.rule for alert in seen] == ["run_failed"]
    assert monitor.halted_by is None and not monitor.should_stop and monitor.halt_reason is None


def test_a_wrapped_model_is_recorded_under_the_names_and_class_of_the_model_it_wraps():
    """DataParallel (and DDP) prefix every name with ``module.``, torch.compile with ``_orig_mod.``: the same
    model, however wrapped, must give the same layers and model name (run to run, one process or several)."""
    model = TwoHeadMLP()
    wrapped = nn.DataParallel(torch.compile(model))
    x = torch.randn(8, 6)
    sum(task_losses(model, x, torch.randint(0, 3, (8,)), x[:, 0]).values()).backward()
    logs = []
    for measured in (model, wrapped):
        stream = io.BytesIO()
        GradientMonitor(every_n_steps=1, stream=stream, echo=None).on_before_optimizer_step(measured)
        logs.append(records_of(stream.getvalue()))
    (plain_start, plain_stats), (start, stats) = logs
    assert start["model"] == plain_start["model"] == "TwoHeadMLP" and start["parameters"] == plain_start["parameters"]
    assert list(stats["layer_norms"]) == list(plain_stats["layer_norms"]) and "trunk.0.weight" in stats["layer_norms"]


@pytest.mark.parametrize("hook", ["on_before_backward", "backward"])
def test_task_losses_in_a_list_are_refused_in_one_line_naming_what_to_pass(hook):
    model = TwoHeadMLP()
    x = torch.randn(8, 6)
    losses = list(task_losses(model, x, torch.randint(0, 3, (8,)), x[:, 0]).values())
    with pytest.raises(TypeError, match=r"^task losses must be a mapping of task name to loss tensor.*not a list$"):
        getattr(GradientMonitor(every_n_steps=1), hook)(model, losses)
    assert all(p.grad is None for p in model.parameters())  # refused before any backward


def test_the_first_balance_record_carries_the_first_steps_losses_when_it_comes_later():
    """every_n_steps=5: the first balance sample is at step 5, after 4 updates; its record also carries the task
    losses of step 1 (the run's start, GradNorm's L(0)) and that step. Later records do not."""
    torch.manual_seed(0)
    model = TwoHeadMLP()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sink, first = io.BytesIO(), {}
    with GradientMonitor(every_n_steps=5, stream=sink) as monitor:
        monitor.watch_optimizer(optimizer)
        for _ in range(11):
            x = torch.randn(8, 6)
            losses = task_losses(model, x, torch.randint(0, 3, (8,)), x[:, 0])
            first = first or {name: float(loss) for name, loss in losses.items()}
            monitor.backward(model, losses)
            monitor.on_before_optimizer_step(model)
            optimizer.step()
            optimizer.zero_grad()
    balance = [json.loads(line) for line in sink.getvalue().splitlines() if b'"task_balance"' in line]
    assert [r["step"] for r in balance] == [5, 10]
    assert balance[0]["start_step"] == 1 and balance[0]["start_losses"] == pytest.approx(first)
    assert "start_losses" not in balance[1] and "start_step" not in balance[1]


def test_a_first_step_loss_of_more_than_one_number_is_left_out_of_the_start_losses_and_training_goes_on():
    """The probe refuses a loss that is not one number (one warning); the first step's losses are recorded later,
    with the first balance record, and such a loss among them must not raise there: training goes on."""
    torch.manual_seed(0)
    model = TwoHeadMLP()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sink, warned = io.BytesIO(), []
    with GradientMonitor(every_n_steps=3, stream=sink, warn=warned.append) as monitor:
        monitor.watch_optimizer(optimizer)
        for step in range(1, 7):
            x = torch.randn(8, 6)
            losses = task_losses(model, x, torch.randint(0, 3, (8,)), x[:, 0])
            if step == 1:  # per-sample losses for one task, by mistake
                losses["reg"] = (model(x)[1] - x[:, 0]).pow(2)
            monitor.on_before_backward(model, losses)
            sum(loss.mean() for loss in losses.values()).backward()
            monitor.on_before_optimizer_step(model)
            optimizer.step()
            optimizer.zero_grad()
    balance = [json.loads(line) for line in sink.getvalue().splitlines() if b'"task_balance"' in line]
    assert [r["step"] for r in balance] == [3, 6]
    assert balance[0]["start_step"] == 1 and set(balance[0]["start_losses"]) == {"cls"}


def test_a_monitor_let_go_of_is_freed_at_once_with_no_garbage_collector(tmp_path):
    """A review's case: since the monitor was split into parts, its output held the monitor's own on_run_start, a
    cycle: a monitor let go of (its log open) stayed until the garbage collector ran, never with it off."""
    import gc
    import weakref

    model = nn.Linear(2, 2)
    gc.disable()
    try:
        for started in (False, True):
            monitor = GradientMonitor(every_n_steps=1, log_path=tmp_path / f"{started}.jsonl", end_on_sigterm=False)
            if started:
                monitor.on_run_start(model)
                model(torch.randn(3, 2)).sum().backward()
                monitor.on_before_optimizer_step(model)
            freed = weakref.ref(monitor)
            del monitor
            assert freed() is None, f"started={started}"
    finally:
        gc.enable()


def test_task_floors_given_to_the_monitor_are_recorded_judged_in_process_and_a_bad_one_is_refused(tmp_path):
    """Training floors (each task's loss on its own, from a user's single-task runs) go in run_start, where the
    trainer's own rules and the watcher read them; a floor that is not a finite loss is refused before training."""
    log = tmp_path / "floors.jsonl"
    monitor = GradientMonitor(
        every_n_steps=5, log_path=log, echo=lambda _line: None, task_floors={"cls": 1, "reg": 0.2}
    )
    plain_loop(monitor, steps=10)
    start = records_of(log.read_bytes())[0]
    assert start["kind"] == "run_start" and start["task_floors"] == {"cls": 1.0, "reg": 0.2}
    assert monitor.engine.evidence.run.floors == {"cls": 1.0, "reg": 0.2}
    warnings = []
    misspelt = GradientMonitor(every_n_steps=5, log_path=tmp_path / "misspelt.jsonl", echo=lambda _line: None,
                               warn=warnings.append, task_floors={"clss": 1.0, "reg": 0.2})  # fmt: skip
    plain_loop(misspelt, steps=10)
    assert warnings == ["WARNING: task_floors names tasks this balance sample has no loss for: clss (its tasks: cls, "
                        "reg); a floor judges only the task of its name"]  # fmt: skip
    plain = tmp_path / "plain.jsonl"
    plain_loop(GradientMonitor(every_n_steps=5, log_path=plain, echo=lambda _line: None), steps=10)
    assert "task_floors" not in records_of(plain.read_bytes())[0]
    for bad in (math.nan, -0.1, "0.3", True):
        with pytest.raises(
            ValueError, match="task_floors: the reg task's training floor must be a finite loss of at least 0"
        ):
            GradientMonitor(log_path=tmp_path / "never.jsonl", task_floors={"reg": bad})
        assert not (tmp_path / "never.jsonl").exists()


def test_epoch_records_hold_each_tasks_mean_loss_over_the_batches_the_hooks_were_given():
    """An outside review's floors: `moola-watch floors` reads a run's epoch task_losses, which only a loop that
    passed them to on_epoch_end wrote (never the Lightning or HF callbacks): every run on one task alone gave no
    floor. The monitor now keeps the losses its hooks are given; a loop's own task_losses win; a task whose epoch
    held a NaN batch is left out of that epoch's."""
    torch.manual_seed(0)
    model, sink = TwoHeadMLP(), io.BytesIO()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    given: list[dict[str, float]] = [{}, {}, {}]
    with GradientMonitor(every_n_steps=3, stream=sink, echo=lambda _line: None) as monitor:
        for epoch in range(3):
            for batch in range(4):
                x = torch.randn(8, 6)
                losses = task_losses(model, x, torch.randint(0, 3, (8,)), x[:, 0])
                for task, loss in losses.items():
                    given[epoch][task] = given[epoch].get(task, 0.0) + loss.item() / 4
                if epoch == 1 and batch == 2:  # a NaN batch the loop skips (no step on it)
                    monitor.on_before_backward(model, {**losses, "reg": losses["reg"] * math.nan})
                    continue
                monitor.backward(model, losses, {"cls": 1.0, "reg": 0.0 if epoch != 1 else 1.0})
                monitor.on_before_optimizer_step(model)
                optimizer.step()
                optimizer.zero_grad()
            own = {"task_losses": {"cls": 9.0}} if epoch == 2 else {}
            monitor.on_epoch_end(epoch + 1, train_loss=1.0, **own)
    epochs = [r["task_losses"] for r in records_of(sink.getvalue()) if r["kind"] == "epoch"]
    assert epochs[0] == pytest.approx(given[0]) and epochs[1] == pytest.approx({"cls": given[1]["cls"]})
    assert epochs[2] == {"cls": 9.0}


@pytest.mark.parametrize("name", ["a|b", "", "  "])
def test_a_task_name_that_is_blank_or_holds_the_pair_separator_is_refused_in_one_line_before_any_backward(name):
    """An outside review named a task 'a|b' beside 'c': the cosine column read 'cosine_a|b|c' (which pair?), and
    a task named '' was a blank column header in analyze."""
    model = TwoHeadMLP()
    x = torch.randn(8, 6)
    losses = task_losses(model, x, torch.randint(0, 3, (8,)), x[:, 0])
    monitor = GradientMonitor(every_n_steps=1, stream=io.BytesIO())
    with pytest.raises(ValueError, match=r"a task's name must be visible text without '\|'") as refused:
        monitor.backward(model, {name: losses["cls"], "c": losses["reg"]})
    assert repr(name) in str(refused.value) and "\n" not in str(refused.value)
    assert all(parameter.grad is None for parameter in model.parameters())
