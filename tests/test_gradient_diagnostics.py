import io
import json
import math

import numpy as np
import pytest
import torch
from helpers import run_cli
from torch import nn
from torch.overrides import TorchFunctionMode

from moola.utils.monitoring import (
    GradientMonitor,
    compute_gradient_statistics,
    compute_layer_gradient_norms,
    compute_task_gradient_ratio,
    detect_exploding_gradients,
    detect_task_collapse,
    detect_vanishing_gradients,
)
from moola_watch import schema
from moola_watch.schema import Rejected, decode_record, encode_native, encode_record


class ConvNet(nn.Module):
    """Not the LSTM: conv + batchnorm + linear, one parameter frozen, one without a gradient."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 8, 3)
        self.bn = nn.BatchNorm1d(8)
        self.fc = nn.Linear(8, 4)
        self.unused = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).relu().mean(dim=2))


def backprop(model, seed=0):
    torch.manual_seed(seed)
    model(torch.randn(5, 3, 10)).pow(2).sum().backward()


def test_layer_norms_match_vector_norm_and_total_matches_clip_grad_norm():
    model = ConvNet()
    backprop(model)
    norms = compute_layer_gradient_norms(model)
    expected = {n: torch.linalg.vector_norm(p.grad).item() for n, p in model.named_parameters() if p.grad is not None}
    assert set(norms) == set(expected) and "unused.weight" not in norms
    for name, value in expected.items():
        assert norms[name] == pytest.approx(value, rel=1e-6)
    stats = compute_gradient_statistics(model)
    total = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1e9).item()
    assert stats["total_norm"] == pytest.approx(total, rel=1e-6)
    values = list(expected.values())
    assert stats["max_norm"] == pytest.approx(max(values), rel=1e-6)
    assert stats["min_norm"] == pytest.approx(min(values), rel=1e-6)
    assert stats["mean_norm"] == pytest.approx(sum(values) / len(values), rel=1e-6)
    assert stats["nonfinite_count"] == 0


def test_mixed_dtypes_are_grouped_and_widened():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    model[1].to(torch.bfloat16)
    x = torch.randn(3, 4)
    model[1](model[0](x).to(torch.bfloat16)).float().sum().backward()
    norms = compute_layer_gradient_norms(model)
    for name, p in model.named_parameters():
        assert norms[name] == pytest.approx(torch.linalg.vector_norm(p.grad.float()).item(), rel=1e-3)


def test_nonfinite_gradients_are_counted_not_raised():
    model = ConvNet()
    backprop(model)
    model.fc.weight.grad[0, 0] = math.nan
    model.conv.bias.grad[0] = math.inf
    stats = compute_gradient_statistics(model)
    assert stats["nonfinite_count"] == 2
    assert sorted(stats["nonfinite_layers"]) == ["conv.bias", "fc.weight"]
    assert math.isnan(stats["total_norm"])
    assert math.isfinite(stats["mean_norm"])  # statistics over the finite layers


def test_vanishing_and_exploding_detection_thresholds():
    norms = {"a": 5e-8, "b": 1e-7, "c": 10.0, "d": 10.5, "e": math.inf}
    assert detect_vanishing_gradients(norms) == ["a"]
    assert detect_exploding_gradients(norms) == ["d"]
    assert detect_exploding_gradients(norms, threshold=1.0) == ["c", "d"]


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Linear(6, 8)
        self.pointer = nn.Linear(8, 2)
        self.type_head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.trunk(x).tanh()
        return self.pointer(h), self.type_head(h)


def test_task_ratio_on_shared_parameters_weighted_and_grad_untouched():
    torch.manual_seed(1)
    model = TwoHeads()
    x = torch.randn(16, 6)
    pointer_out, type_out = model(x)
    pointer_loss = pointer_out.pow(2).mean()
    type_loss = nn.functional.cross_entropy(type_out, torch.randint(0, 3, (16,)))
    result = compute_task_gradient_ratio(pointer_loss, type_loss, model, alpha=2.0, beta=0.5)
    shared = list(model.trunk.parameters())
    gp = torch.cat([g.reshape(-1) for g in torch.autograd.grad(pointer_loss, shared, retain_graph=True)])
    gt = torch.cat([g.reshape(-1) for g in torch.autograd.grad(type_loss, shared, retain_graph=True)])
    assert result.raw_norms["pointer"] == pytest.approx(gp.norm().item(), rel=1e-6)
    assert result.norms["type"] == pytest.approx(2.0 * gt.norm().item(), rel=1e-6)
    assert float(result) == pytest.approx(0.5 * gp.norm().item() / (2.0 * gt.norm().item()), rel=1e-6)
    assert result.cosine == pytest.approx(torch.dot(gp, gt).item() / (gp.norm() * gt.norm()).item(), rel=1e-5)
    assert "16 values" not in result.scope and "2 tensors" in result.scope  # found by the graph walk: trunk only
    assert all(p.grad is None for p in model.parameters())
    (pointer_loss + type_loss).backward()  # the graph is still there for the real step
    assert model.trunk.weight.grad is not None


def test_task_ratio_with_zero_type_gradient_is_infinite():
    model = TwoHeads()
    pointer_out, type_out = model(torch.randn(4, 6))
    result = compute_task_gradient_ratio(pointer_out.sum(), type_out.sum() * 0.0, model)
    assert result.ratio == math.inf and result.cosine is None


def test_detect_task_collapse_edges():
    assert detect_task_collapse([6.0] * 9).state == "not_enough_data"
    assert detect_task_collapse([5.0] * 10).state != "pointer_dominating"  # exactly 5.0 is not collapse
    verdict = detect_task_collapse([1.0] * 5 + [7.0] * 10)
    assert verdict.state == "pointer_dominating" and verdict.text == "Pointer task dominating (ratio=7.00 > 5.0)"
    assert detect_task_collapse([0.1] * 10).state == "type_dominating"
    assert detect_task_collapse([3.0] * 4, window_size=4, collapse_threshold=2.5).state == "pointer_dominating"


def read_records(buffer: io.BytesIO) -> list[dict]:
    records = [decode_record(line) for line in buffer.getvalue().splitlines()]
    assert not any(isinstance(r, Rejected) for r in records), records
    return records


def test_monitor_logs_every_nth_epoch_once_and_writes_strict_records():
    model = ConvNet()
    sink = io.BytesIO()
    echoed: list[str] = []
    with GradientMonitor(log_frequency=2, stream=sink, echo=echoed.append, run_id="t") as monitor:
        for epoch in range(1, 6):
            for _batch in range(3):
                model.zero_grad()
                backprop(model, seed=epoch)
                monitor.update(epoch, model)
    records = read_records(sink)
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end"
    assert [r["epoch"] for r in records if r["kind"] == "grad_stats"] == [2, 4]
    assert records[-1]["status"] == "completed"
    text = "\n".join(echoed)
    assert "Epoch 2 Gradient Stats:" in text and "Epoch 3 Gradient Stats:" not in text
    assert "[PHASE 4] Gradient Monitoring Summary:" in text


def test_injected_nan_is_recorded_as_string_with_count():
    model = ConvNet()
    sink = io.BytesIO()
    echoed: list[str] = []
    with GradientMonitor(log_frequency=1, stream=sink, echo=echoed.append) as monitor:
        backprop(model)
        model.fc.bias.grad[1] = math.nan
        monitor.update(1, model)
    raw = next(line for line in sink.getvalue().splitlines() if b'"grad_stats"' in line)
    assert b'"fc.bias":"nan"' in raw and b'"nonfinite_count":1' in raw
    alerts = [r for r in read_records(sink) if r["kind"] == "alert"]
    assert alerts and alerts[0]["rule"] == "nonfinite" and alerts[0]["severity"] == "critical"
    assert any("Non-finite gradients" in line for line in echoed)


def test_exception_in_training_marks_run_failed_and_ctrl_c_interrupted():
    for error, status in ((RuntimeError("boom"), "failed"), (KeyboardInterrupt(), "interrupted")):
        sink = io.BytesIO()
        model = ConvNet()
        with pytest.raises(type(error)), GradientMonitor(log_frequency=1, stream=sink, echo=None) as monitor:
            backprop(model)
            monitor.update(1, model)
            raise error
        end = read_records(sink)[-1]
        assert end["kind"] == "run_end" and end["status"] == status
        if status == "failed":
            assert end["error"] == "RuntimeError: boom"


def test_backward_with_task_balance_gives_the_steps_gradients_and_the_same_balance():
    from moola.utils.monitoring.gradient_diagnostics import backward_with_task_balance

    torch.manual_seed(3)
    model = TwoHeads()
    x, labels = torch.randn(16, 6), torch.randint(0, 3, (16,))

    def losses():
        pointer_out, type_out = model(x)
        return {"pointer": pointer_out.pow(2).mean(), "type": nn.functional.cross_entropy(type_out, labels)}

    weights = {"type": 2.0, "pointer": 0.5}
    first = losses()
    expected_balance = compute_task_gradient_ratio(first["pointer"], first["type"], model, alpha=2.0, beta=0.5)
    (2.0 * first["type"] + 0.5 * first["pointer"]).backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    balance = backward_with_task_balance(losses(), model, weights=weights)
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, expected[name], rtol=1e-6, atol=1e-8), name
    assert balance.ratio == pytest.approx(expected_balance.ratio, rel=1e-6)
    assert balance.cosine == pytest.approx(expected_balance.cosine, rel=1e-5)
    backward_with_task_balance(losses(), model, weights=weights)  # accumulates like backward()
    assert torch.allclose(model.trunk.weight.grad, 2 * expected["trunk.weight"], rtol=1e-6)


def test_representation_scope_measures_at_the_shared_output():
    torch.manual_seed(4)
    model = TwoHeads()
    hidden = model.trunk(torch.randn(8, 6)).tanh()
    pointer_loss, type_loss = model.pointer(hidden).pow(2).mean(), model.type_head(hidden).logsumexp(1).mean()
    result = compute_task_gradient_ratio(pointer_loss, type_loss, model, alpha=3.0, representation=hidden)
    (gp,) = torch.autograd.grad(pointer_loss, hidden, retain_graph=True)
    (gt,) = torch.autograd.grad(type_loss, hidden, retain_graph=True)
    assert result.ratio == pytest.approx(gp.norm().item() / (3.0 * gt.norm().item()), rel=1e-6)
    assert result.scope == "shared representation (8, 8)"
    assert all(p.grad is None for p in model.parameters())


def test_representation_tap_reads_each_tasks_gradient_off_the_steps_backward():
    from moola.utils.monitoring.gradient_diagnostics import RepresentationTap

    torch.manual_seed(5)
    model = TwoHeads()
    x = torch.randn(8, 6)
    hidden = model.trunk(x).tanh()
    pointer_loss, type_loss = model.pointer(hidden).pow(2).mean(), model.type_head(hidden).logsumexp(1).mean()
    expected = compute_task_gradient_ratio(pointer_loss, type_loss, model, alpha=2.0, beta=0.5, representation=hidden)
    model.zero_grad(set_to_none=True)

    hidden = model.trunk(x).tanh()
    tap = RepresentationTap(hidden)
    pointer_loss = model.pointer(tap.input("pointer")).pow(2).mean()
    type_loss = model.type_head(tap.input("type")).logsumexp(1).mean()
    (2.0 * type_loss + 0.5 * pointer_loss).backward()
    tapped = tap.balance({"pointer": pointer_loss, "type": type_loss}, {"type": 2.0, "pointer": 0.5})
    assert tapped.ratio == pytest.approx(expected.ratio, rel=1e-6)
    assert tapped.raw_norms["type"] == pytest.approx(expected.raw_norms["type"], rel=1e-6)
    assert tapped.cosine == pytest.approx(expected.cosine, rel=1e-5)
    assert model.trunk.weight.grad is not None  # the step's own gradients are all there


def test_monitor_measures_a_layer_unfrozen_after_the_first_update():
    model = ConvNet()
    model.fc.requires_grad_(False)
    sink = io.BytesIO()
    monitor = GradientMonitor(1, stream=sink, echo=None)
    backprop(model)
    assert "fc.weight" not in monitor.update(1, model)["layer_norms"]
    model.fc.requires_grad_(True)
    model.zero_grad()
    backprop(model)
    assert "fc.weight" in monitor.update(2, model)["layer_norms"]


def test_amp_norms_are_unscaled_and_an_overflow_is_not_a_model_fault():
    torch.manual_seed(6)
    x, target = torch.randn(16, 4), torch.randn(16, 2)
    reference = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    model.load_state_dict(reference.state_dict())
    nn.functional.mse_loss(reference(x), target).backward()
    expected = compute_layer_gradient_norms(reference)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    sink, echoed = io.BytesIO(), []
    monitor = GradientMonitor(1, stream=sink, echo=echoed.append)
    monitor.watch_optimizer(optimizer)
    for epoch in (1, 2, 3):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.mse_loss(model(x).float(), target)
        scaler.scale(loss).backward()
        if epoch > 1:  # an overflow, as a too-large scale produces
            model[0].weight.grad[0, 0] = math.inf
        scaler.unscale_(optimizer)
        stats = monitor.update(epoch, model, scaler=scaler)
        if epoch == 1:
            for name, norm in expected.items():
                assert stats["layer_norms"][name] == pytest.approx(norm, rel=0.05), name  # bf16 autocast vs fp32
            assert stats["amp"] == {"scale": 4096.0, "overflow": False}
        scaler.step(optimizer)
        scaler.update()
    records = read_records(sink)
    grads = [r for r in records if r["kind"] == "grad_stats"]
    assert [r["amp"]["overflow"] for r in grads] == [False, True, True]
    assert [r["step"] for r in grads] == [1, 2, 2]  # the two overflowed steps were skipped: no optimizer step
    assert grads[2]["amp"]["scale"] < grads[1]["amp"]["scale"]  # the scaler backed off
    summary = monitor.on_run_end()
    alerts = [r for r in read_records(sink) if r["kind"] == "alert"]
    assert [a["rule"] for a in alerts] == ["amp_overflow"]  # persisting overflow; never "nonfinite"
    assert summary.nonfinite_samples == 0 and summary.amp_overflows == 2
    assert any("GradScaler overflow (step skipped)" in line for line in echoed)


def test_gradient_accumulation_counts_optimizer_steps():
    model = ConvNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    sink = io.BytesIO()
    monitor = GradientMonitor(1, stream=sink, echo=None)
    monitor.watch_optimizer(optimizer)
    for epoch in range(1, 4):
        for _micro_batch in range(4):
            backprop(model, seed=epoch)
        monitor.update(epoch, model)
        optimizer.step()
        optimizer.zero_grad()
    monitor.on_run_end()
    steps = [r["step"] for r in read_records(sink) if r["kind"] == "grad_stats"]
    assert steps == [1, 2, 3]


class HostTransfers(TorchFunctionMode):
    """Counts the tensor calls that bring values to the host, which on CUDA wait for the device (a host sync):
    the CPU-side stand-in for ``torch.cuda.set_sync_debug_mode``, which only a GPU can run."""

    SYNCING = frozenset({"tolist", "item", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__", "tensor"})

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.SYNCING:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def test_an_update_brings_everything_to_the_host_in_one_transfer():
    mixed = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    mixed[1].to(torch.bfloat16)
    frozen = ConvNet()
    frozen.fc.bias.requires_grad_(False)
    cases = {"one dtype": ConvNet(), "two dtypes": mixed, "a frozen and an unused parameter": frozen}
    for model in cases.values():
        for p in model.parameters():
            p.grad = torch.rand_like(p)
    frozen.unused.weight.grad = frozen.unused.bias.grad = None
    for label, model in cases.items():
        scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
        scaler.scale(torch.ones(()))  # the scaler now holds its scale as a tensor, as after a step's backward
        monitor = GradientMonitor(every_n_steps=1, stream=io.BytesIO(), echo=lambda _line: None)
        monitor.on_before_optimizer_step(model)  # the first measurement also plans and writes run_start
        for kwargs in ({}, {"scaler": scaler}):
            with HostTransfers() as transfers:
                stats = monitor.on_before_optimizer_step(model, **kwargs)
            assert stats is not None and transfers.calls == ["tolist"], (label, kwargs, transfers.calls)
        assert stats["amp"] == {"scale": 8.0, "overflow": False}


def test_every_record_the_monitor_builds_is_read_back_as_written(monkeypatch):
    """Records the monitor builds skip the field-by-field cleaning and, when all their floats are finite, the
    converting encoder: every line must still be one the watcher accepts, and the very bytes the converting
    encoder gives for what it reads back."""
    native = []
    monkeypatch.setattr(schema, "encode_native", lambda record: native.append(record["kind"]) or encode_native(record))
    sink = io.BytesIO()
    model = ConvNet()
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    scaler.scale(torch.ones(()))
    with GradientMonitor(every_n_steps=1, stream=sink, per_rank=True, echo=lambda _line: None) as monitor:
        backprop(model)
        monitor.on_before_optimizer_step(model)  # healthy: encoded as built
        monitor.on_before_optimizer_step(model, scaler=scaler)
        model.fc.bias.grad[1] = math.nan
        monitor.on_before_optimizer_step(model)  # non-finite: converted
        model.fc.bias.grad[1] = 0.5
        monitor.on_before_optimizer_step(model, step=np.int64(9))  # a user's numpy step: kept, as an int
        monitor.max_layer_norms = 2
        monitor.on_before_optimizer_step(model)  # grouped by module prefix
    lines = sink.getvalue().splitlines()
    for line in lines:
        record = decode_record(line)
        assert not isinstance(record, Rejected), (line, record)
        assert encode_record(record) == line + b"\n"
    grads = [decode_record(line) for line in lines if b'"grad_stats"' in line]
    assert len(grads) == 5 and native == ["grad_stats", "grad_stats", "grad_stats"]
    assert math.isnan(grads[2]["layer_norms"]["fc.bias"]) and grads[3]["step"] == 9
    assert grads[1]["amp"] == {"scale": 4.0, "overflow": False} and all(g["rank"] == 0 for g in grads)
    assert grads[4]["layer_groups"]["tensors"] == 6


def alert_story(alerts):
    """What a user sees of alerts (the stale rule aside: a replay long after the run is judged on today's clock)."""
    return [(a.rule, a.subject, a.state, a.severity, a.first_step, a.message) for a in alerts if a.rule != "stale"]


def test_the_monitors_quiet_records_are_judged_as_a_replay_of_its_log_judges_them(monkeypatch):
    """The monitor hands the engine each record's summary, and a record the gradient rules could find nothing in
    skips them (the every-step fast path). Over healthy, vanishing, exploding, out-of-band and non-finite steps
    (alerts pending, firing, resolving), with and without a GradScaler, its alerts and summary must be those of a
    fresh engine that judges the written log record by record."""
    from moola_watch import rules

    took_fast_path = []
    judge = rules.RuleEngine._quiet
    monkeypatch.setattr(
        rules.RuleEngine,
        "_quiet",
        lambda self, summary: took_fast_path.append(judge(self, summary)) or took_fast_path[-1],
    )
    sink = io.BytesIO()
    model = ConvNet()
    backprop(model)
    torch.manual_seed(0)  # every layer's norm 0.1-0.5: a healthy step, which the fast path takes
    healthy = {
        name: (noise := torch.randn_like(p.grad)) * (0.1 + 0.4 * torch.rand(())) / noise.norm()
        for name, p in model.named_parameters()
        if p.grad is not None
    }
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    scaler.scale(torch.ones(()))
    scales = [1.0] * 3 + [1e-9] * 4 + [1.0] * 2 + [1e3] * 4 + [1.0] + [6.0] * 3 + [1.0] * 2 + [math.nan] + [1.0] * 3
    with GradientMonitor(every_n_steps=1, stream=sink, echo=lambda _line: None) as monitor:
        for step, scale in enumerate(scales):
            for name, p in model.named_parameters():
                if name in healthy:
                    p.grad = healthy[name] * scale
            if step == 6:
                model.fc.bias.grad = model.fc.bias.grad * 1e9  # one layer alone out of the band, the mean in it
            monitor.on_before_optimizer_step(model, scaler=scaler if step % 5 == 0 else None)
            replayed = rules.replay(decode_record(line) for line in sink.getvalue().splitlines())
            assert alert_story(monitor.engine.alerts) == alert_story(replayed.alerts), step
            assert monitor.engine.evidence.layer_flags == replayed.evidence.layer_flags, step
            assert monitor.engine.evidence.nonfinite == replayed.evidence.nonfinite, step
    assert sum(took_fast_path) >= 6, took_fast_path  # healthy steps with no gradient alert open
    fired = {(a.rule, a.state) for a in monitor.engine.alerts}
    assert {("vanishing", "resolved"), ("exploding", "resolved"), ("norm_level", "resolved")} <= fired, fired
    assert ("nonfinite", "resolved") in fired
    final = rules.replay(decode_record(line) for line in sink.getvalue().splitlines() if b'"alert"' not in line)
    assert monitor.engine.summary() == final.summary()


class Branches(nn.Module):
    """``count`` parallel Linear(8, 1) branches whose outputs are summed (scaled so the total gradient does not
    grow with their number): twice ``count`` tensors."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(nn.Linear(8, 1) for _ in range(count))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], 1).sum(1) / len(self.branches) ** 0.5


@pytest.mark.parametrize(("branches", "loss_scale", "spread_thin"), [(1500, 0.1, True), (4, 1e-4, False)])
def test_a_small_mean_norm_spread_over_thousands_of_tensors_is_not_told_to_raise_the_learning_rate(
    tmp_path, branches, loss_scale, spread_thin
):
    """An outside review's model of 2,984 tensors: a total gradient norm of 1.5 and a mean tensor norm of 0.0036,
    under the spec's 0.01, so check said "vanishing -> Increase learning rate". The mean of many tensors' norms
    is small for the same total; a small model whose gradient really is tiny keeps the spec's advice."""
    torch.manual_seed(0)
    model = Branches(branches)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    log = tmp_path / "train.jsonl"
    with GradientMonitor(every_n_steps=1, log_path=log, echo=lambda _line: None) as monitor:
        monitor.watch_optimizer(optimizer)
        for _step in range(4):
            x = torch.randn(16, 8)
            ((model(x) - x[:, 0]).pow(2).mean() * loss_scale).backward()
            monitor.on_before_optimizer_step(model)
            optimizer.step()
            optimizer.zero_grad()
    last = [json.loads(line) for line in log.read_text().splitlines() if '"grad_stats"' in line][-1]
    assert last["mean_norm"] < 0.01 and (last["total_norm"] >= 0.1) == spread_thin, last["total_norm"]
    report = json.loads(run_cli("moola_watch.cli", "check", "--json", str(log)).stdout)
    (alert,) = [alert for alert in report["alerts"] if alert["rule"] == "norm_level"]
    assert "vanishing" in alert["message"]
    if spread_thin:
        assert f"spread over {2 * branches} tensors, not because the gradients vanish" in alert["recommendation"]
        assert "Increase learning rate" not in alert["recommendation"]
    else:
        assert alert["recommendation"] == "Increase learning rate"


def test_gradients_that_explode_then_turn_nan_are_not_said_to_have_stopped_exploding(tmp_path):
    """An outside review's run: a regression target 100x the inputs' scale (its gradients exploded from the first
    step) whose loss turned NaN at step 30. At that step the exploding and norm-level alerts resolved (a NaN is
    not above the bound) and `follow --notify-on error` paged "RESOLVED ERROR exploding"."""
    torch.manual_seed(0)
    trunk, head = nn.Linear(8, 4), nn.Linear(4, 1)
    model = nn.Sequential(trunk, head)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    log = tmp_path / "train.jsonl"
    with GradientMonitor(every_n_steps=5, log_path=log, echo=lambda _line: None) as monitor:
        monitor.watch_optimizer(optimizer)
        for step in range(1, 61):
            x = torch.randn(32, 8)
            loss = nn.functional.mse_loss(model(x).squeeze(1), x[:, 0] * 100)
            (loss * float("nan") if step >= 30 else loss).backward()
            monitor.on_before_optimizer_step(model)
            optimizer.step()
            optimizer.zero_grad()
    result = run_cli("moola_watch.cli", "follow", "--once", "--json", str(log))
    alerts = [event for line in result.stdout.splitlines() if (event := json.loads(line))["event"] == "alert"]
    firing = {(alert["rule"], alert["state"]) for alert in alerts}
    assert {("exploding", "firing"), ("norm_level", "firing"), ("nonfinite", "firing")} <= firing, firing
    assert not [alert for alert in alerts if alert["state"] == "resolved"], alerts
    report = json.loads(run_cli("moola_watch.cli", "check", "--json", str(log)).stdout)
    states = {alert["rule"]: alert["state"] for alert in report["alerts"]}
    assert states == {"exploding": "firing", "norm_level": "firing", "nonfinite": "firing"}, states


def test_a_step_the_loop_skips_for_its_nan_gradients_is_measured_again_when_retried(tmp_path):
    """An outside review's loop: at a NaN loss it called zero_grad() and went on to the next batch without
    stepping. The monitor warned that the hook "was called again before the optimizer stepped ... its first call
    measured a partial gradient" (an accumulation mistake it was not), and the step applied, the retry, was never
    measured. As for a step a GradScaler skips, the retry is measured."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    log, warnings = tmp_path / "train.jsonl", []
    with GradientMonitor(every_n_steps=2, log_path=log, warn=warnings.append, echo=lambda _line: None) as monitor:
        monitor.watch_optimizer(optimizer)
        for batch in range(12):
            x = torch.randn(8, 4)
            loss = model(x).squeeze(1).sub(x[:, 0]).pow(2).mean()
            (loss * float("nan") if batch == 5 else loss).backward()
            monitor.on_before_optimizer_step(model)
            if batch == 5:  # step 6's gradients are NaN: skip it
                optimizer.zero_grad()
                continue
            optimizer.step()
            optimizer.zero_grad()
    assert not [line for line in warnings if "called again" in line], warnings
    stats = [json.loads(line) for line in log.read_text().splitlines() if '"grad_stats"' in line]
    assert [(r["step"], r["nonfinite_count"] > 0) for r in stats] == [
        (2, False), (4, False), (6, True), (6, False), (8, False), (10, False)
    ]  # fmt: skip
