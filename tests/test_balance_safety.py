"""The balance probe where the backward or the parameters are not plain: DDP, a GradScaler, loss parameters
outside the model, sparse and complex gradients, compiled models. Each either gives exactly the step a plain
``backward()`` gives, or refuses in one clear message and measures the non-invasive way."""

import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO
from torch import nn

from moola.utils.monitoring import GradientMonitor
from moola.utils.monitoring.task_balance import BalanceUnavailable, RepresentationTap, compute_task_balance
from moola_watch.schema import decode_record

WORKER = Path(__file__).with_name("dist_worker.py")


def plain_step(model, losses, weights):
    sum(weights[n] * loss for n, loss in losses.items()).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
@pytest.mark.parametrize("mode", ["ddp-balance", "ddp-static-balance"])
def test_under_ddp_the_probe_keeps_the_all_reduce(tmp_path, mode):
    """Every step's gradients are the full batch's on both replicas. Under ``static_graph=True`` DDP's first
    iteration queues its delayed all-reduce from the first backward through its output, which the probe's would
    be: that probe is refused in one warning (the replicas drifted apart for the rest of the run), the next one
    measures."""
    from dist_worker import model_and_batch

    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(WORKER), mode, str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"grads.rank{r}.pt") for r in (0, 1)]
    model, x, y = model_and_batch()
    output = model(x)
    expected = plain_step(
        model,
        {
            "first": nn.functional.mse_loss(output[:, 0], y[:, 0]),
            "second": nn.functional.mse_loss(output[:, 1], y[:, 1]),
        },
        {"first": 1.0, "second": 3.0},
    )
    for step in (0, 1):
        for name, grad in expected.items():
            got = [rank["steps"][step]["grads"][name] for rank in ranks]
            assert torch.equal(got[0], got[1]), (step, name)  # the replicas agree
            assert torch.allclose(got[0], grad, rtol=1e-5, atol=1e-7), (step, name)  # and are the full batch's
    static = mode == "ddp-static-balance"
    for rank in ranks:
        assert [step["measured"] for step in rank["steps"]] == [not static, True]
    assert ranks[1]["warnings"] == []  # rank 1 is silent
    if static:
        (warning,) = ranks[0]["warnings"]
        assert "static_graph" in warning and "first iteration" in warning
    else:
        assert ranks[0]["warnings"] == []
    records = [decode_record(line) for line in (tmp_path / "run.jsonl").read_bytes().splitlines()]
    assert [r["kind"] for r in records].count("task_balance") == (1 if static else 2)


class UncertaintyWeighted(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Linear(4, 8)
        self.a, self.b = nn.Linear(8, 1), nn.Linear(8, 1)


def test_a_loss_parameter_outside_the_model_gets_its_gradient():
    torch.manual_seed(0)
    model = UncertaintyWeighted()
    log_vars = nn.Parameter(torch.tensor([0.3, -0.2]))  # Kendall et al.: learned outside the model
    x, y = torch.randn(16, 4), torch.randn(16, 2)

    def losses():
        h = model.trunk(x).tanh()
        mse = [nn.functional.mse_loss(head(h).squeeze(1), y[:, i]) for i, head in enumerate((model.a, model.b))]
        return {name: torch.exp(-log_vars[i]) * mse[i] + log_vars[i] for i, name in enumerate(("a", "b"))}

    expected = plain_step(model, losses(), {"a": 1.0, "b": 1.0})
    expected_log_vars = log_vars.grad.clone()
    model.zero_grad(set_to_none=True)
    log_vars.grad = None
    balance = GradientMonitor(every_n_steps=1, stream=io.BytesIO()).backward(model, losses())
    assert balance is not None
    assert torch.allclose(log_vars.grad, expected_log_vars, rtol=1e-6)
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, expected[name], rtol=1e-5, atol=1e-7), name


class SparseShared(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 8, sparse=True)
        self.a, self.b = nn.Linear(8, 1), nn.Linear(8, 2)


def test_a_shared_sparse_embedding_is_measured_and_the_step_keeps_its_gradients():
    torch.manual_seed(1)
    model = SparseShared()
    tokens, y = torch.randint(0, 50, (12, 5)), torch.randn(12)

    def losses():
        h = model.embed(tokens).mean(1)
        return {"a": nn.functional.mse_loss(model.a(h).squeeze(1), y), "b": model.b(h).logsumexp(1).mean()}

    expected = plain_step(model, losses(), {"a": 1.0, "b": 2.0})
    reference = compute_task_balance(losses(), model, weights={"a": 1.0, "b": 2.0})
    model.zero_grad(set_to_none=True)
    sink = io.BytesIO()
    balance = GradientMonitor(every_n_steps=1, stream=sink).backward(model, losses(), {"a": 1.0, "b": 2.0})
    assert balance is not None and balance.ratio is None
    assert balance.norms["a"] == pytest.approx(reference.norms["a"], rel=1e-5)
    assert model.embed.weight.grad.is_sparse
    assert torch.allclose(model.embed.weight.grad.to_dense(), expected["embed.weight"].to_dense(), rtol=1e-5, atol=1e-7)


def test_complex_parameters_keep_their_imaginary_part():
    torch.manual_seed(2)
    shared = nn.Parameter(torch.randn(6, dtype=torch.complex64))
    holder = nn.Module()
    holder.shared = shared
    z = torch.randn(6, dtype=torch.complex64)
    losses = {"pointer": (shared * z).real.pow(2).sum(), "type": (shared * z.conj()).imag.pow(2).sum()}
    balance = compute_task_balance(losses, holder)
    grads = {n: torch.autograd.grad(loss, shared, retain_graph=True)[0] for n, loss in losses.items()}
    expected_cosine = (
        torch.vdot(grads["pointer"], grads["type"]).real / (grads["pointer"].norm() * grads["type"].norm())
    ).item()
    assert balance.ratio == pytest.approx((grads["pointer"].norm() / grads["type"].norm()).item(), rel=1e-5)
    assert balance.cosine == pytest.approx(expected_cosine, rel=1e-4, abs=1e-6)


def test_a_compiled_model_asks_for_shared_parameters_instead_of_guessing():
    torch.manual_seed(3)
    eager = UncertaintyWeighted()
    compiled = torch.compile(eager, backend="aot_eager")

    class Forward(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            h = self.inner.trunk(x).tanh()
            return self.inner.a(h).sum(), self.inner.b(h).pow(2).sum()

    x = torch.randn(8, 4)
    whole = torch.compile(Forward(eager), backend="aot_eager")
    a, b = whole(x)
    warned: list[str] = []
    monitor = GradientMonitor(every_n_steps=1, stream=io.BytesIO(), warn=warned.append)
    assert monitor.on_before_backward(compiled, {"a": a, "b": b}) is None
    assert len(warned) == 1 and "shared_parameters=" in warned[0]
    measured = compute_task_balance({"a": a, "b": b}, compiled, shared_parameters=list(eager.trunk.parameters()))
    h = eager.trunk(x).tanh()
    expected = compute_task_balance({"a": eager.a(h).sum(), "b": eager.b(h).pow(2).sum()}, eager)
    assert measured.norms["a"] == pytest.approx(expected.norms["a"], rel=1e-5)
    assert measured.norms["b"] == pytest.approx(expected.norms["b"], rel=1e-5)


def test_the_representation_tap_divides_out_the_loss_scale():
    torch.manual_seed(4)
    model = UncertaintyWeighted()
    x = torch.randn(8, 4)
    weights = {"a": 2.0, "b": 0.5}
    h = model.trunk(x).tanh()
    expected = compute_task_balance(
        {"a": model.a(h).sum(), "b": model.b(h).pow(2).sum()}, model, weights=weights, representation=h
    )
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    h = model.trunk(x).tanh()
    tap = RepresentationTap(h)
    losses = {"a": model.a(tap.input("a")).sum(), "b": model.b(tap.input("b")).pow(2).sum()}
    scaler.scale(sum(weights[n] * loss for n, loss in losses.items())).backward()
    tapped = tap.balance(losses, weights, scaler=scaler)
    for name in weights:
        assert tapped.norms[name] == pytest.approx(expected.norms[name], rel=1e-5)


def test_with_a_grad_scaler_the_step_gets_the_scaled_backward_it_would_have_had():
    torch.manual_seed(5)
    model = UncertaintyWeighted()
    x = torch.randn(8, 4)

    def losses():
        h = model.trunk(x).tanh()
        return {"a": model.a(h).sum(), "b": model.b(h).pow(2).sum()}

    scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
    scaler.scale(losses()["a"] + losses()["b"]).backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    balance = GradientMonitor(every_n_steps=1, stream=io.BytesIO()).backward(model, losses(), scaler=scaler)
    assert balance is not None and balance.norms["a"] > 0
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, expected[name], rtol=1e-5), name


class ReluHeads(nn.Module):
    """A Linear/ReLU trunk: compiled for training, its backward frees what it saved (donated buffers)."""

    def __init__(self):
        super().__init__()
        self.trunk, self.a, self.b = nn.Linear(8, 16), nn.Linear(16, 1), nn.Linear(16, 1)

    def forward(self, x):
        h = self.trunk(x).relu()
        return self.a(h).squeeze(1), self.b(h).squeeze(1)


def compiled_steps(monitor, donated_buffer: bool):
    """Four monitored steps of a compiled ReluHeads; the gradient of its last step. The first step's backward
    is a plain one (no probe is due), so aot_autograd compiles the backward graph that donates its buffers."""
    import torch._functorch.config as functorch_config

    torch.manual_seed(5)
    eager = ReluHeads()
    with functorch_config.patch(donated_buffer=donated_buffer):
        compiled = torch.compile(eager, backend="aot_eager")
        for _ in range(4):
            x = torch.randn(16, 8)
            a, b = compiled(x)
            losses = {"a": nn.functional.mse_loss(a, x[:, 0]), "b": nn.functional.mse_loss(b, x[:, 1])}
            eager.zero_grad()
            monitor.backward(compiled, losses, shared_parameters=list(eager.trunk.parameters()))
            monitor.on_before_optimizer_step(compiled)
    return [p.grad.clone() for p in eager.parameters()]


def test_a_compiled_model_that_donates_its_buffers_says_how_to_measure_and_trains_on():
    """torch.compile frees the saved tensors of a training graph in its backward: the probe's retain_graph cannot
    be honoured. One warning names the fix, the steps train as they would without moola, and with the fix the
    balance is measured; the layers keep the names of the model compiled."""
    warned: list[str] = []
    sink = io.BytesIO()
    donated = GradientMonitor(every_n_steps=2, stream=sink, warn=warned.append, echo=lambda _line: None)
    grads = compiled_steps(donated, donated_buffer=True)
    assert len(warned) == 1 and "torch._functorch.config.donated_buffer = False" in warned[0], warned
    records = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert not [r for r in records if r["kind"] == "task_balance"]
    assert "trunk.weight" in next(r for r in records if r["kind"] == "grad_stats")["layer_norms"]
    plain = GradientMonitor(every_n_steps=1, stream=io.BytesIO(), enabled=False)
    assert all(torch.equal(g, h) for g, h in zip(grads, compiled_steps(plain, donated_buffer=True), strict=True))
    fixed_sink = io.BytesIO()
    fixed = GradientMonitor(every_n_steps=2, stream=fixed_sink, warn=warned.append, echo=lambda _line: None)
    compiled_steps(fixed, donated_buffer=False)
    kinds = [json.loads(line)["kind"] for line in fixed_sink.getvalue().splitlines()]
    assert kinds.count("task_balance") == 2 and len(warned) == 1


def test_a_task_whose_head_reads_a_detached_input_is_left_out_of_the_others_balance():
    torch.manual_seed(6)
    trunk, heads = nn.Linear(8, 16), nn.ModuleList([nn.Linear(16, 1) for _ in range(3)])
    model = nn.ModuleDict({"trunk": trunk, "heads": heads})
    x = torch.randn(16, 8)
    h = trunk(x).relu()
    losses = {name: heads[i](h.detach() if name == "c" else h).pow(2).mean() for i, name in enumerate("abc")}
    monitor = GradientMonitor(every_n_steps=1, stream=io.BytesIO(), echo=lambda _line: None)
    balance = monitor.on_before_backward(model, losses)
    assert balance is not None and balance.left_out == ("c",) and set(balance.norms) == {"a", "b"}
    alone = compute_task_balance({name: losses[name] for name in "ab"}, model)  # as if c were not there
    assert balance.norms == pytest.approx(alone.norms) and balance.shares == pytest.approx(alone.shares)
    assert balance.scope == f"{alone.scope}; left out: c (no gradient on them)"
    with pytest.raises(BalanceUnavailable, match="the a and c tasks reach no parameter another task reaches"):
        compute_task_balance({name: losses[name] for name in "ac"}, model)  # one task left to balance: none


def two_heads(seed: int = 0) -> nn.ModuleDict:
    torch.manual_seed(seed)
    return nn.ModuleDict({"trunk": nn.Linear(4, 8), "a": nn.Linear(8, 1), "b": nn.Linear(8, 1)})


def train_three_steps(monitor: GradientMonitor | None, task_losses) -> nn.ModuleDict:
    """Three SGD steps of a user's own loop (its own scalar total and backward); ``task_losses`` turns the two
    per-sample loss vectors into what the user hands the monitor."""
    model = two_heads()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        h = model["trunk"](torch.randn(32, 4, generator=generator))
        per_sample = ((model["a"](h).squeeze(1) - 1) ** 2, (model["b"](h).squeeze(1) + 1) ** 2)
        optimizer.zero_grad()
        if monitor is not None:
            monitor.on_before_backward(model, task_losses(*per_sample))
        (per_sample[0].mean() + per_sample[1].mean()).backward()
        if monitor is not None:
            monitor.on_before_optimizer_step(model)
        optimizer.step()
    return model


def test_integer_task_names_are_measured_under_their_text():
    out, warnings = io.BytesIO(), []
    monitor = GradientMonitor(every_n_steps=1, stream=out, warn=warnings.append)
    train_three_steps(monitor, lambda a, b: {0: a.mean(), 1: b.mean()})
    balances = [r for r in map(decode_record, out.getvalue().splitlines()) if r["kind"] == "task_balance"]
    assert warnings == [] and len(balances) == 3
    assert set(balances[0]["norms"]) == {"0", "1"} and set(balances[0]["losses"]) == {"0", "1"}


def test_a_per_sample_loss_vector_is_one_clear_warning_and_the_training_is_unchanged():
    plain = train_three_steps(None, lambda a, b: {})
    warnings: list[str] = []
    monitor = GradientMonitor(every_n_steps=1, stream=io.BytesIO(), warn=warnings.append)
    monitored = train_three_steps(monitor, lambda a, b: {"type": a, "pointer": b.mean()})
    assert warnings == ["WARNING: task balance: task loss 'type' has shape (32,): pass a scalar (call .mean())"]
    for (name, a), b in zip(plain.state_dict().items(), monitored.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_a_task_name_that_is_not_text_or_a_whole_number_is_named_in_the_warning():
    with pytest.raises(BalanceUnavailable, match=r"^task name \(1, 2\) is a tuple: name each task with a string$"):
        model = two_heads()
        h = model["trunk"](torch.randn(8, 4))
        compute_task_balance({(1, 2): model["a"](h).mean(), "b": model["b"](h).mean()}, model)


def test_a_first_task_loss_that_is_a_number_is_one_clear_warning_and_the_training_is_unchanged():
    plain = train_three_steps(None, lambda a, b: {})
    warnings: list[str] = []
    monitor = GradientMonitor(every_n_steps=1, stream=io.BytesIO(), warn=warnings.append)
    monitored = train_three_steps(monitor, lambda a, b: {"b": 0.5, "a": a.mean()})
    assert warnings == ["WARNING: task balance: task loss 'b' is a float: pass the loss tensor"]
    for (name, a), b in zip(plain.state_dict().items(), monitored.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_a_one_element_loss_beside_a_scalar_one_is_measured_as_a_scalar():
    out, warnings = io.BytesIO(), []
    monitor = GradientMonitor(every_n_steps=1, stream=out, warn=warnings.append)
    train_three_steps(monitor, lambda a, b: {"a": a.mean().reshape(1), "b": b.mean()})
    balances = [r for r in map(decode_record, out.getvalue().splitlines()) if r["kind"] == "task_balance"]
    assert warnings == [] and len(balances) == 3 and set(balances[0]["norms"]) == {"a", "b"}


class ReentrantTrunk(nn.Module):
    """Two heads on a trunk whose second layer is checkpointed the old way (use_reentrant=True, the HF Trainer's
    gradient_checkpointing_enable() in older transformers)."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(6, 16), nn.Linear(16, 16)
        self.cls, self.reg = nn.Linear(16, 3), nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from torch.utils.checkpoint import checkpoint

        features = checkpoint(lambda h: torch.relu(self.second(h)), torch.relu(self.first(x)), use_reentrant=True)
        labels = torch.randint(0, 3, (x.shape[0],))
        losses = {"cls": nn.functional.cross_entropy(self.cls(features), labels),
                  "reg": self.reg(features).pow(2).mean()}  # fmt: skip
        return features, losses


def test_reentrant_checkpointing_says_how_to_measure_and_the_representation_scope_does():
    """autograd.grad cannot go through a reentrant checkpoint: one warning that names both ways out, the step's
    gradients untouched; measured at the representation the heads read (after the checkpointed blocks), it works."""
    torch.manual_seed(0)
    model, warnings = ReentrantTrunk(), []
    monitor = GradientMonitor(every_n_steps=1, stream=io.BytesIO(), warn=warnings.append)
    features, losses = model(torch.randn(8, 6))
    assert monitor.on_before_backward(model, losses) is None
    (warning,) = warnings
    assert "use_reentrant=True" in warning and "use_reentrant': False" in warning and "representation=" in warning
    sum(losses.values()).backward()
    assert model.second.weight.grad is not None and model.second.weight.grad.norm() > 0
    monitor.on_before_optimizer_step(model)  # the next step
    model.zero_grad()
    features, losses = model(torch.randn(8, 6))
    balance = monitor.on_before_backward(model, losses, representation=features)
    assert balance is not None and set(balance.norms) == {"cls", "reg"} and len(warnings) == 1


def test_a_rule_that_fails_is_one_warning_and_the_training_and_its_log_go_on(monkeypatch):
    """The trainer runs the watcher's rules in-process: a defect in one (a division by a window mean of 0 was
    one) must cost the live alerts, not the run or its records."""
    from moola_watch.rules import engine

    def broken(ev, record, th):
        raise ZeroDivisionError("float division by zero")

    rules = engine._BY_KIND["task_balance"]
    monkeypatch.setitem(engine._BY_KIND, "task_balance", (*rules, dataclasses.replace(rules[0], evaluate=broken)))
    plain = train_three_steps(None, lambda a, b: {})
    out, warnings = io.BytesIO(), []
    monitor = GradientMonitor(every_n_steps=1, stream=out, warn=warnings.append)
    monitored = train_three_steps(monitor, lambda a, b: {"a": a.mean(), "b": b.mean()})
    assert len(warnings) == 1 and warnings[0].startswith(
        "WARNING: moola's rules failed on a task_balance record (ZeroDivisionError: float division by zero)"
    )
    kinds = [r["kind"] for r in map(decode_record, out.getvalue().splitlines())]
    assert kinds.count("task_balance") == 3 and kinds.count("grad_stats") == 3
    for (name, a), b in zip(plain.state_dict().items(), monitored.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
