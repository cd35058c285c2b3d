"""The Lightning callback on a real ``lightning.Trainer`` (CPU): what it records, when, under which step, and
what ``moola-watch check`` concludes from the log."""

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
from helpers import run_cli, run_readme_example, strict_lines
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

lightning = pytest.importorskip("lightning")

from lightning.pytorch.utilities.model_helpers import is_overridden  # noqa: E402

from moola.integrations.lightning import SANITY_CHECK_WORDS, GradientMonitorCallback  # noqa: E402

STEPS = 40
EVERY = 4
BATCH = 4


class TwoTaskModule(lightning.LightningModule):
    """A shared trunk, a classification head and a regression head; ``training_step`` exposes the per-task
    losses as ``task_losses`` and their weights as ``task_weights``."""

    def __init__(
        self, weights: dict[str, float], fail_at: int | None = None, interrupt_at: int | None = None,
        terminate_at: int | None = None,
    ):  # fmt: skip
        super().__init__()
        self.save_hyperparameters()
        self.trunk = nn.Sequential(nn.Linear(6, 16), nn.Tanh())
        self.cls = nn.Linear(16, 3)
        self.reg = nn.Linear(16, 1)
        self.task_weights = weights

    def training_step(self, batch, batch_idx):
        if batch_idx == self.hparams.fail_at:
            raise RuntimeError("data loader returned garbage")
        if batch_idx == self.hparams.interrupt_at:
            raise KeyboardInterrupt
        if batch_idx == self.hparams.terminate_at:
            os.kill(os.getpid(), signal.SIGTERM)  # a scheduler stopping the job: Lightning's handler takes it
        x, labels, target = batch
        h = self.trunk(x)
        self.task_losses = {
            "cls": nn.functional.cross_entropy(self.cls(h), labels),
            "reg": nn.functional.mse_loss(self.reg(h).squeeze(1), target),
        }
        loss = sum(self.task_weights[name] * value for name, value in self.task_losses.items())
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)  # step size independent of the loss scale


def loader() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(STEPS * BATCH, 6, generator=generator)
    labels = (x[:, 1] > 0).long() + (x[:, 2] > 0).long()
    return DataLoader(TensorDataset(x, labels, x[:, 0] * 0.5), batch_size=BATCH)


def fit(tmp_path, weights, module=TwoTaskModule, monitor_options=None, **module_options) -> list[dict]:
    """One epoch of ``STEPS`` optimizer steps under the callback (with ``monitor_options``; validated on the same
    batches when ``module`` has a ``validation_step``); the log's records."""
    torch.manual_seed(0)
    log = tmp_path / "run.jsonl"
    trainer = lightning.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[GradientMonitorCallback(log_path=log, every_n_steps=EVERY, **(monitor_options or {}))],
    )
    validates = is_overridden("validation_step", module, lightning.LightningModule)
    trainer.fit(module(weights, **module_options), loader(), loader() if validates else None)
    return strict_lines(log)


def check(tmp_path, log: str = "run.jsonl") -> tuple[int, dict]:
    result = run_cli("moola_watch.cli", "check", "--json", str(tmp_path / log))
    return result.returncode, json.loads(result.stdout.splitlines()[0])


def test_training_floors_given_to_the_callback_are_recorded_and_judge_the_run(tmp_path):
    """The callback hands task_floors to the monitor it makes at fit start: run_start records them, check uses."""
    records = fit(tmp_path, {"cls": 1.0, "reg": 1.0}, monitor_options={"task_floors": {"cls": 0.5, "reg": 0.1}})
    assert records[0]["task_floors"] == {"cls": 0.5, "reg": 0.1}
    _code, report = check(tmp_path)
    assert report["runs"][0]["task_floors"] == {"cls": 0.5, "reg": 0.1}


@pytest.mark.parametrize(
    ("options", "words"),
    [({"end_at_exit": True}, "end_at_exit is not an option here"), ({"threshold": 1}, "no option 'threshold'")],
)
def test_an_option_the_monitor_cannot_take_is_refused_when_the_callback_is_made(tmp_path, options, words):
    """Not at fit start, when the monitor is made: end_at_exit the callback sets itself (a duplicate argument
    then), a misspelt option the monitor does not take."""
    with pytest.raises(TypeError, match=words):
        GradientMonitorCallback(tmp_path / "run.jsonl", every_n_steps=EVERY, **options)


def test_records_every_n_steps_numbered_by_global_step(tmp_path):
    records = fit(tmp_path, {"cls": 1.0, "reg": 1.0})
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end"
    start = records[0]
    assert start["model"] == "TwoTaskModule"
    assert start["parameters"] == ["trunk.0.weight", "trunk.0.bias", "cls.weight", "cls.bias", "reg.weight", "reg.bias"]
    assert start["config"]["max_epochs"] == 1 and start["config"]["hparams"]["weights"] == {"cls": 1.0, "reg": 1.0}
    expected_steps = list(range(EVERY, STEPS + 1, EVERY))  # trainer.global_step once each measured step is taken
    grads = [r for r in records if r["kind"] == "grad_stats"]
    balances = [r for r in records if r["kind"] == "task_balance"]
    assert [r["step"] for r in grads] == expected_steps
    assert [r["step"] for r in balances] == expected_steps
    assert all(r["epoch"] == 1 for r in grads + balances)
    assert set(grads[0]["layer_norms"]) == set(start["parameters"])
    assert all(math.isfinite(r["total_norm"]) and r["total_norm"] > 0 for r in grads)
    assert set(balances[0]["norms"]) == {"cls", "reg"}
    assert balances[0]["scope"].startswith("shared parameters") and "2 tensors" in balances[0]["scope"]
    (epoch,) = [r for r in records if r["kind"] == "epoch"]
    assert epoch["epoch"] == 1 and epoch["step"] == STEPS and epoch["train_loss"] > 0
    assert records[-1]["status"] == "completed" and records[-1]["step"] == STEPS


def test_a_fit_resumed_from_a_checkpoint_says_where_it_began(tmp_path):
    """run_start is written once Lightning restored the checkpoint's loop: its first step is the resumed one, so a
    watcher knows the run's first losses are not its tasks' start (and a fresh fit's are)."""

    def trainer(log: Path, epochs: int) -> lightning.Trainer:
        return lightning.Trainer(
            accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, callbacks=[GradientMonitorCallback(log_path=log, every_n_steps=EVERY)],
        )  # fmt: skip

    torch.manual_seed(0)
    first = trainer(tmp_path / "first.jsonl", 1)
    first.fit(TwoTaskModule({"cls": 1.0, "reg": 1.0}), loader())
    first.save_checkpoint(tmp_path / "one-epoch.ckpt")
    trainer(tmp_path / "resumed.jsonl", 2).fit(
        TwoTaskModule({"cls": 1.0, "reg": 1.0}), loader(), ckpt_path=tmp_path / "one-epoch.ckpt"
    )
    starts = [strict_lines(tmp_path / name)[0] for name in ("first.jsonl", "resumed.jsonl")]
    assert [(start["first_step"], start["first_epoch"]) for start in starts] == [(1, 1), (STEPS + 1, 2)]
    resumed = [r for r in strict_lines(tmp_path / "resumed.jsonl") if r["kind"] == "grad_stats"]
    assert resumed[0]["step"] == STEPS + EVERY


class ManualTwoOptimizers(TwoTaskModule):
    """Manual optimisation stepping two optimizers each batch: Lightning's global_step moves by two a batch."""

    def __init__(self, weights: dict[str, float]):
        super().__init__(weights)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        trunk_and_cls, reg = self.optimizers()
        x, labels, target = batch
        h = self.trunk(x)
        self.task_losses = {
            "cls": nn.functional.cross_entropy(self.cls(h), labels),
            "reg": nn.functional.mse_loss(self.reg(h).squeeze(1), target),
        }
        loss = sum(self.task_weights[name] * value for name, value in self.task_losses.items())
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        self.manual_backward(loss)
        for optimizer in (trunk_and_cls, reg):
            optimizer.step()
            optimizer.zero_grad()

    def configure_optimizers(self):
        shared = [*self.trunk.parameters(), *self.cls.parameters()]
        return torch.optim.Adam(shared, lr=1e-3), torch.optim.Adam(self.reg.parameters(), lr=1e-3)


def one_epoch(module: lightning.LightningModule, **trainer_options) -> None:
    """Fit ``module`` for one epoch on CPU, seeded, with nothing but ``trainer_options`` (callbacks, plugins)."""
    torch.manual_seed(0)
    lightning.Trainer(
        accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, **trainer_options,
    ).fit(module, loader())  # fmt: skip


def assert_same_weights(plain: nn.Module, monitored: nn.Module) -> None:
    for (name, a), b in zip(plain.state_dict().items(), monitored.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def fit_manual(log: Path, module: lightning.LightningModule, **trainer_options) -> list[dict]:
    """One epoch of ``module`` (manual optimization) under the callback; the log's records."""
    one_epoch(module, callbacks=[GradientMonitorCallback(log_path=log, every_n_steps=EVERY)], **trainer_options)
    return strict_lines(log)


def test_manual_optimisation_with_two_optimizers_measures_every_gradient_of_a_batch(tmp_path):
    """global_step moves by two a batch: the probe and the statistics both run at a batch's first optimizer
    step, always at an odd global_step + 1 (an even every_n_steps must not mean never), under one step number.
    Before, the statistics landed on the second optimizer's step, after the first had stepped and zeroed its
    gradients: every record held the reg head alone, never the trunk."""
    torch.manual_seed(0)
    records = fit_manual(tmp_path / "manual.jsonl", ManualTwoOptimizers({"cls": 1.0, "reg": 1.0}))
    balances = [r["step"] for r in records if r["kind"] == "task_balance"]
    grads = [r for r in records if r["kind"] == "grad_stats"]
    assert balances == list(range(EVERY + 1, 2 * STEPS, EVERY)), balances  # the first odd step past each multiple
    assert [r["step"] for r in grads] == balances
    assert all(set(r["layer_norms"]) == set(records[0]["parameters"]) for r in grads), grads[0]["layer_norms"]
    (epoch,) = [r for r in records if r["kind"] == "epoch"]
    assert epoch["step"] == records[-1]["step"] == 2 * STEPS  # trainer.global_step: every optimizer's steps


class ManualSeeingNorms(ManualTwoOptimizers):
    """Keeps, per batch (by global_step + 1 as it began), the unscaled gradient norm of every parameter after the
    backward, before any optimizer steps: what the batch's record must hold."""

    def __init__(self, weights: dict[str, float]):
        super().__init__(weights)
        self.seen: dict[int, dict[str, float]] = {}

    def manual_backward(self, loss, *args, **kwargs):
        super().manual_backward(loss, *args, **kwargs)
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        scale = scaler.get_scale() if scaler is not None else 1.0
        self.seen[self.trainer.global_step + 1] = {
            name: p.grad.norm().item() / scale for name, p in self.named_parameters() if p.grad is not None
        }


def test_manual_optimisation_under_16_mixed_measures_every_gradient_unscaled(tmp_path):
    """At the first optimizer's step the precision plugin has unscaled that optimizer's gradients alone: the
    other optimizer's still carry the GradScaler's scale (65536), and are recorded divided by it."""
    from lightning.pytorch.plugins import MixedPrecision

    torch.manual_seed(0)
    module = ManualSeeingNorms({"cls": 1.0, "reg": 1.0})
    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    grads = [r for r in fit_manual(tmp_path / "run.jsonl", module, plugins=[plugin]) if r["kind"] == "grad_stats"]
    assert [r["step"] for r in grads] == list(range(EVERY + 1, 2 * STEPS, EVERY))
    for record in grads:
        assert record["amp"]["scale"] >= 1024 and not record["amp"]["overflow"]
        assert record["layer_norms"] == pytest.approx(module.seen[record["step"]], rel=1e-4), record["step"]


def test_manual_optimisation_with_the_callback_trains_the_same_weights(tmp_path):
    torch.manual_seed(0)
    plain = ManualTwoOptimizers({"cls": 1.0, "reg": 1.0})
    one_epoch(plain)
    torch.manual_seed(0)
    monitored = ManualTwoOptimizers({"cls": 1.0, "reg": 1.0})
    fit_manual(tmp_path / "run.jsonl", monitored)
    assert_same_weights(plain, monitored)


class AlternatingUpdates(ManualTwoOptimizers):
    """A GAN's shape: each optimizer gets its own backward, between the two steps."""

    def training_step(self, batch, batch_idx):
        trunk_and_cls, reg = self.optimizers()
        x, labels, target = batch
        trunk_and_cls.zero_grad()
        self.manual_backward(nn.functional.cross_entropy(self.cls(self.trunk(x)), labels))
        trunk_and_cls.step()
        reg.zero_grad()
        self.manual_backward(nn.functional.mse_loss(self.reg(self.trunk(x).detach()).squeeze(1), target))
        reg.step()


def test_gradients_made_after_a_batchs_first_step_are_named_as_not_measured(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="moola"):
        records = fit_manual(tmp_path / "run.jsonl", AlternatingUpdates({"cls": 1.0, "reg": 1.0}))
    grads = [r for r in records if r["kind"] == "grad_stats"]
    assert grads and all({"trunk.0.weight", "cls.weight"} <= set(r["layer_norms"]) for r in grads)
    warnings = [m for m in caplog.messages if "not measured" in m]
    assert len(warnings) == 1 and "reg.weight, reg.bias were computed after it" in warnings[0], caplog.messages


@pytest.mark.slow
def test_measuring_leaves_the_training_unchanged(tmp_path):
    """The balance probe runs before each measured step's backward: the trained weights are those of a fit
    without the callback."""
    torch.manual_seed(0)
    plain = TwoTaskModule({"cls": 1.0, "reg": 1.0})
    one_epoch(plain)
    torch.manual_seed(0)
    monitored = TwoTaskModule({"cls": 1.0, "reg": 1.0})
    one_epoch(monitored, callbacks=[GradientMonitorCallback(log_path=tmp_path / "m.jsonl", every_n_steps=1)])
    assert_same_weights(plain, monitored)


@pytest.mark.parametrize(("weights", "starved"), [({"cls": 1e4, "reg": 1.0}, "reg"), ({"cls": 1.0, "reg": 1e4}, "cls")])
def test_check_names_the_starved_task(tmp_path, weights, starved):
    fit(tmp_path, weights)
    code, verdict = check(tmp_path)
    assert code == 1, verdict
    subjects = {alert["subject"] for alert in verdict["alerts"] if alert["rule"] == "collapse"}
    assert subjects == {starved}, verdict["alerts"]


def test_check_raises_no_collapse_for_balanced_tasks(tmp_path):
    records = fit(tmp_path, {"cls": 1.0, "reg": 1.0})
    ratios = [max(r["norms"].values()) / min(r["norms"].values()) for r in records if r["kind"] == "task_balance"]
    assert max(ratios) < 5, ratios  # the premise: neither task's gradient is dominated
    code, verdict = check(tmp_path)
    assert not [alert for alert in verdict["alerts"] if alert["rule"] == "collapse"], verdict["alerts"]
    assert code == 0 and verdict["status"] == "completed", verdict


def test_an_exception_ends_the_run_failed(tmp_path):
    with pytest.raises(RuntimeError, match="garbage"):
        fit(tmp_path, {"cls": 1.0, "reg": 1.0}, fail_at=10)
    end = strict_lines(tmp_path / "run.jsonl")[-1]
    assert end["kind"] == "run_end" and end["status"] == "failed"
    assert end["error"] == "RuntimeError: data loader returned garbage"
    assert end["step"] == 10


class FailingValidation(TwoTaskModule):
    def validation_step(self, batch, batch_idx):
        raise RuntimeError("validation set missing")


def test_a_fit_that_fails_in_its_sanity_check_names_its_module(tmp_path):
    with pytest.raises(RuntimeError, match="validation set missing"):
        fit(tmp_path, {"cls": 1.0, "reg": 1.0}, module=FailingValidation)
    start, end = strict_lines(tmp_path / "run.jsonl")
    # Before, the run failed before training started, and its run_start said model "unknown", no parameters.
    assert start["model"] == "FailingValidation" and start["parameter_count"] == 180
    assert end["status"] == "failed" and end["step"] == 0
    assert end["error"] == f"RuntimeError: validation set missing ({SANITY_CHECK_WORDS})"
    judged = run_cli("moola_watch.cli", "check", str(tmp_path / "run.jsonl"))
    assert judged.returncode == 1 and "before the first training step" in judged.stdout, judged.stdout


class FailingLateValidation(TwoTaskModule):
    def validation_step(self, batch, batch_idx):
        if self.current_epoch == 2:
            raise RuntimeError("validation set missing")
        x, labels, _target = batch
        self.log("val_acc", (self.cls(self.trunk(x)).argmax(1) == labels).float().mean())


def test_a_fit_that_fails_in_a_later_validation_says_its_metrics_are_from_an_earlier_epoch(tmp_path):
    """Epoch 3's validation raises: epoch 3 has no epoch record, so the last metrics are epoch 2's; check says so
    beside the run that got to epoch 3 (an outside review read them as the failed epoch's)."""
    torch.manual_seed(0)
    log = tmp_path / "run.jsonl"
    trainer = lightning.Trainer(
        accelerator="cpu", devices=1, max_epochs=3, limit_train_batches=5, limit_val_batches=2,
        num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[GradientMonitorCallback(log_path=log, every_n_steps=EVERY)],
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="validation set missing"):
        trainer.fit(FailingLateValidation({"cls": 1.0, "reg": 1.0}), loader(), loader())
    records = strict_lines(log)
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2]
    assert records[-1]["status"] == "failed" and records[-1]["epoch"] == 3
    judged = run_cli("moola_watch.cli", "check", str(log))
    assert "val_acc=" in judged.stdout and "(epoch 2; the run got to epoch 3)" in judged.stdout, judged.stdout
    code, report = check(tmp_path)
    assert code == 1 and report["runs"][0]["metrics_epoch"] == 2 and report["runs"][0]["epoch"] == 3


@pytest.fixture
def sigint_restored():
    """Lightning ignores SIGINT after a KeyboardInterrupt (so that a second Ctrl-C cannot cut its shutdown):
    give pytest its handler back."""
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


def test_ctrl_c_ends_the_run_interrupted(tmp_path, sigint_restored):
    with pytest.raises(SystemExit):  # Lightning's graceful shutdown after a KeyboardInterrupt
        fit(tmp_path, {"cls": 1.0, "reg": 1.0}, interrupt_at=9)
    end = strict_lines(tmp_path / "run.jsonl")[-1]
    assert end["kind"] == "run_end" and end["status"] == "interrupted" and end["step"] == 9


def test_sigterm_ends_the_run_interrupted_not_failed(tmp_path):
    """Lightning turns SIGTERM into its SIGTERMException (a SystemExit): the job was stopped, to be resumed; it
    did not fail (a failed run is an error that pages someone)."""
    with pytest.raises(SystemExit):
        fit(tmp_path, {"cls": 1.0, "reg": 1.0}, terminate_at=9)
    end = strict_lines(tmp_path / "run.jsonl")[-1]
    assert end["kind"] == "run_end" and end["status"] == "interrupted" and end["error"].startswith("SIGTERM: ")
    code, report = check(tmp_path)
    assert code == 0 and report["verdict"] == "warning" and report["status"] == "interrupted"


class NormSeeingModule(TwoTaskModule):
    """Records the total gradient norm the module itself sees in its ``on_before_optimizer_step`` (called right
    after the callbacks', before clipping)."""

    def __init__(self, weights):
        super().__init__(weights)
        self.seen: list[float] = []

    def on_before_optimizer_step(self, optimizer):
        self.seen.append(torch.nn.utils.get_total_norm([p.grad for p in self.parameters()]).item())


def test_16_mixed_gradients_are_measured_unscaled_and_before_clipping(tmp_path):
    """Under 16-mixed with a GradScaler (a CPU one here), the recorded norms are the unscaled ones, not 65536
    times larger, and the pre-clip ones although the trainer clips at 1e-3."""
    from lightning.pytorch.plugins import MixedPrecision

    torch.manual_seed(0)
    module = NormSeeingModule({"cls": 1.0, "reg": 1.0})
    lightning.Trainer(
        accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, gradient_clip_val=1e-3,
        plugins=[MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))],
        callbacks=[GradientMonitorCallback(log_path=tmp_path / "run.jsonl", every_n_steps=EVERY)],
    ).fit(module, loader())  # fmt: skip
    grads = [r for r in strict_lines(tmp_path / "run.jsonl") if r["kind"] == "grad_stats"]
    assert len(grads) == STEPS // EVERY
    for record in grads:
        assert record["amp"]["scale"] >= 1024 and not record["amp"]["overflow"]
        assert record["total_norm"] == pytest.approx(module.seen[record["step"] - 1], rel=1e-5)
        assert record["total_norm"] > 100 * 1e-3  # so the clip did scale these gradients afterwards


@pytest.mark.slow
def test_under_ddp_every_rank_measures_and_rank_0_alone_writes(tmp_path):
    """Two CPU processes (gloo): one run in the log, written by rank 0, every record of it whole."""
    torch.manual_seed(0)
    trainer = lightning.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
        callbacks=[GradientMonitorCallback(log_path=tmp_path / "run.jsonl", every_n_steps=EVERY)],
    )  # fmt: skip
    try:
        trainer.fit(TwoTaskModule({"cls": 1.0, "reg": 1.0}), loader())
    except torch.multiprocessing.ProcessExitedException as exc:
        # Gloo's worker threads can abort a spawned process as its interpreter finalizes, after all its work is
        # done ("terminate called without an active exception", pytorch/pytorch#179291; tests/dist_worker.py
        # leaves by os._exit for it). Nothing else is excused: the log below must still be whole and complete.
        if exc.signal_name != "SIGABRT":
            raise
    records = strict_lines(tmp_path / "run.jsonl")
    assert [r["kind"] for r in records].count("run_start") == 1
    assert records[0]["rank"] == 0 and records[0]["world_size"] == 2
    steps = list(range(EVERY, STEPS // 2 + 1, EVERY))  # each rank takes half the batches
    assert [r["step"] for r in records if r["kind"] == "grad_stats"] == steps
    assert [r["step"] for r in records if r["kind"] == "task_balance"] == steps
    assert records[-1]["kind"] == "run_end" and records[-1]["status"] == "completed"


@pytest.mark.slow
def test_readme_lightning_example_runs_as_written_and_check_says_what_the_readme_shows(tmp_path):
    """The README's transcript: the explosion fails the run; the dominated cls task is a warning (its loss still
    fell over the last window), its held-out accuracy beside the verdict."""
    run_readme_example("lightning example", tmp_path)
    code, verdict = check(tmp_path, "runs/lightning.jsonl")
    errors = {alert["rule"] for alert in verdict["alerts"] if alert["counts_as"] == "error"}
    assert code == 1 and errors == {"exploding", "norm_level"}
    collapse = [alert for alert in verdict["alerts"] if alert["rule"] == "collapse"]
    assert [(alert["subject"], alert["counts_as"]) for alert in collapse] == [("cls", "warning")]
    assert "gradients dominated, but the cls loss is still falling" in collapse[0]["message"]
    weighted = verdict["runs"][0]["metrics"]["val_cls_acc"]
    # "With `TwoTasks()` (both weights 1) the same run passes", and its classifier learns more.
    balanced = tmp_path / "balanced"
    balanced.mkdir()
    run_readme_example("lightning example", balanced, edit=("TwoTasks(reg_weight=1e4)", "TwoTasks()"))
    code, verdict = check(balanced, "runs/lightning.jsonl")
    assert code == 0 and verdict["runs"][0]["verdict"] == "healthy"
    assert verdict["runs"][0]["metrics"]["val_cls_acc"] > weighted + 0.05


class ValidatedEveryOtherEpoch(TwoTaskModule):
    """Logs the training loss per step and per epoch, and a validation metric that names the epoch it was
    computed in; validation runs every second epoch."""

    def log(self, name, value, **options):
        if name == "train_loss":
            options = {**options, "on_step": True, "on_epoch": True}
        super().log(name, value, **options)

    def validation_step(self, batch, batch_idx):
        self.log("val_computed_in_epoch", float(self.current_epoch + 1))


def test_epoch_records_hold_only_what_the_epoch_computed(tmp_path):
    """Lightning keeps every metric's last value: an epoch without validation must not record the previous
    validation's numbers as its own, and ``X_step``/``X_epoch`` twins of ``X`` are not metrics."""
    log = tmp_path / "run.jsonl"
    trainer = lightning.Trainer(
        accelerator="cpu", devices=1, max_epochs=4, check_val_every_n_epoch=2, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, limit_train_batches=5,
        limit_val_batches=2, callbacks=[GradientMonitorCallback(log_path=log, every_n_steps=EVERY)],
    )  # fmt: skip
    trainer.fit(ValidatedEveryOtherEpoch({"cls": 1.0, "reg": 1.0}), loader(), loader())
    epochs = [r for r in strict_lines(log) if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4]
    assert [r.get("metrics", {}) for r in epochs] == [
        {},
        {"val_computed_in_epoch": 2.0},
        {},
        {"val_computed_in_epoch": 4.0},
    ]
    assert all(r["train_loss"] > 0 for r in epochs)


class ConfiguredModule(TwoTaskModule):
    """Hyperparameters of the kinds a real module saves: a path, a dtype, a device."""

    def __init__(self, weights: dict[str, float], data_dir: Path, dtype: torch.dtype, device: torch.device):
        super().__init__(weights)
        self.save_hyperparameters()


def test_hyperparameters_of_any_type_are_recorded_as_text_and_never_stop_the_fit(tmp_path):
    torch.manual_seed(0)
    log = tmp_path / "run.jsonl"
    trainer = lightning.Trainer(accelerator="cpu", devices=1, max_steps=8, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False,
                                callbacks=[GradientMonitorCallback(log_path=log, every_n_steps=EVERY)])  # fmt: skip
    trainer.fit(
        ConfiguredModule({"cls": 1.0, "reg": 1.0}, tmp_path / "data", torch.float16, torch.device("cpu")), loader()
    )
    records = strict_lines(log)
    hparams = records[0]["config"]["hparams"]
    assert records[0]["kind"] == "run_start" and records[-1]["status"] == "completed"
    assert hparams["data_dir"] == str(tmp_path / "data") and hparams["dtype"] == "torch.float16"
    assert hparams["device"] == "cpu" and hparams["weights"] == {"cls": 1.0, "reg": 1.0}


class NaNAtBatch5(TwoTaskModule):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if batch_idx == 5 else loss


def test_halt_on_stops_the_fit_after_the_step_whose_gradients_raised_the_alert(tmp_path):
    """halt_on passes through the callback: the fit ends after the step whose gradients turned NaN (a callback
    cannot skip the step itself), and run_end says why, instead of training on to the end of the epoch."""
    torch.manual_seed(0)
    log = tmp_path / "run.jsonl"
    callback = GradientMonitorCallback(log_path=log, every_n_steps=1, halt_on="critical")
    quiet = {"enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False}
    trainer = lightning.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, callbacks=[callback], **quiet)
    trainer.fit(NaNAtBatch5({"cls": 1.0, "reg": 1.0}), loader())
    assert trainer.global_step == 6
    end = strict_lines(log)[-1]
    assert end["status"] == "failed" and end["error"].startswith(
        "halted on critical alert nonfinite (gradients) at step 6"
    )


class LossesOnEvenBatches(TwoTaskModule):
    """Odd batches come from a source without regression labels: ``training_step`` sets ``task_losses`` only on
    even batches (the attribute then still holds the previous batch's losses, whose graph backward has freed).
    ``set_at`` keeps, per optimizer step, the losses this step set."""

    def __init__(self, weights: dict[str, float]):
        super().__init__(weights)
        self.set_at: dict[int, dict[str, float]] = {}

    def training_step(self, batch, batch_idx):
        if batch_idx % 2 == 0:
            loss = super().training_step(batch, batch_idx)
            self.set_at[self.trainer.global_step + 1] = {k: v.item() for k, v in self.task_losses.items()}
            return loss
        x, labels, _ = batch
        loss = nn.functional.cross_entropy(self.cls(self.trunk(x)), labels)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss


def test_task_losses_of_an_earlier_step_are_never_measured_as_this_steps(tmp_path, capfd, caplog):
    torch.manual_seed(0)
    log = tmp_path / "run.jsonl"
    module = LossesOnEvenBatches({"cls": 1.0, "reg": 1.0})
    trainer = lightning.Trainer(accelerator="cpu", devices=1, max_steps=12, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False,
                                callbacks=[GradientMonitorCallback(log_path=log, every_n_steps=1)])  # fmt: skip
    trainer.fit(module, loader())
    balances = [r for r in strict_lines(log) if r["kind"] == "task_balance"]
    assert [r["step"] for r in balances] == sorted(module.set_at) == [1, 3, 5, 7, 9, 11]
    for record in balances:  # each measured the losses its own step set
        assert record["losses"] == pytest.approx(module.set_at[record["step"]]), record["step"]
    captured = capfd.readouterr()
    assert "could not be measured" not in captured.out + captured.err + caplog.text


class LossLoggedAs(TwoTaskModule):
    """Logs the training loss under ``loss_name`` (Lightning's common ``train/loss``, ...) and a validation
    metric under ``val/cls_acc``."""

    def __init__(self, weights: dict[str, float], loss_name: str):
        super().__init__(weights)
        self.loss_name = loss_name

    def log(self, name, value, **options):
        super().log(self.loss_name if name == "train_loss" else name, value, **options)

    def validation_step(self, batch, batch_idx):
        x, labels, _ = batch
        self.log("val/cls_acc", (self.cls(self.trunk(x)).argmax(1) == labels).float().mean())


def fit_logging(tmp_path, loss_name: str) -> list[dict]:
    """Two short epochs of :class:`LossLoggedAs`, validated each; the log's records."""
    torch.manual_seed(0)
    log = tmp_path / "run.jsonl"
    trainer = lightning.Trainer(
        accelerator="cpu", devices=1, max_epochs=2, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_train_batches=5, limit_val_batches=2,
        callbacks=[GradientMonitorCallback(log_path=log, every_n_steps=EVERY)],
    )  # fmt: skip
    trainer.fit(LossLoggedAs({"cls": 1.0, "reg": 1.0}, loss_name), loader(), loader())
    return strict_lines(log)


@pytest.mark.parametrize("loss_name", ["train/loss", "train_loss_epoch", "train/loss_epoch"])
def test_a_training_loss_logged_under_a_common_name_makes_the_epoch_records(tmp_path, loss_name):
    """Before, only ``train_loss`` and ``loss`` were known: ``train/loss`` cost every epoch record, the validation
    metrics with them, without a word."""
    epochs = [r for r in fit_logging(tmp_path, loss_name) if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert all(r["train_loss"] > 0 and set(r["metrics"]) == {"val/cls_acc"} for r in epochs), epochs


def test_an_epoch_without_a_training_loss_is_one_warning_naming_what_was_logged(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="moola"):
        records = fit_logging(tmp_path, "objective")
    assert not [r for r in records if r["kind"] == "epoch"]  # the record contract requires train_loss
    assert records[-1]["kind"] == "run_end" and records[-1]["status"] == "completed"
    (warning,) = [m for m in caplog.messages if "no epoch record" in m]
    assert warning.startswith("WARNING: epoch 1: the LightningModule logged no training loss (it logged ")
    assert "objective" in warning and "val/cls_acc" in warning and 'self.log("train_loss"' in warning


def test_a_fit_that_failed_and_was_resumed_from_its_checkpoint_into_its_log_passes_check(tmp_path):
    """A review's case: Lightning ends a fit that raised ``failed``, so a crash followed by a resume from the last
    checkpoint into the same log failed ``check`` for ever (the same history after a kill -9 passed). The failure
    is now a warning naming the run that resumed it, and the resuming run decides."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    log = tmp_path / "run.jsonl"

    def trainer(*callbacks: lightning.Callback) -> lightning.Trainer:
        return lightning.Trainer(
            accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=bool(callbacks),
            enable_progress_bar=False, enable_model_summary=False,
            callbacks=[GradientMonitorCallback(log_path=log, every_n_steps=EVERY), *callbacks],
        )  # fmt: skip

    torch.manual_seed(0)
    every_10 = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=10, save_top_k=-1)
    with pytest.raises(RuntimeError, match="garbage"):
        trainer(every_10).fit(TwoTaskModule({"cls": 1.0, "reg": 1.0}, fail_at=25), loader())
    (last,) = [path for path in (tmp_path / "ckpt").iterdir() if "step=20" in path.name]
    trainer().fit(TwoTaskModule({"cls": 1.0, "reg": 1.0}), loader(), ckpt_path=last)
    code, report = check(tmp_path)
    failed, resumed = report["runs"]
    assert code == 0 and (failed["status"], resumed["status"]) == ("failed", "completed"), report
    (warning,) = [
        alert for alert in report["alerts"] if alert["severity"] == "warning" and alert["rule"] == "run_failed"
    ]
    assert warning["message"] == (
        f"Run failed and was resumed by run {resumed['run']}; its error: RuntimeError: data loader returned garbage"
    )


class LossLoggedHow(TwoTaskModule):
    """Logs its training loss ``how``: per step only (``self.log``'s default in ``training_step``), so on every
    other batch, per epoch only, or both; remembers each value it logged, by epoch."""

    def __init__(self, weights: dict[str, float], how: str):
        super().__init__(weights)
        self.how, self.calls, self.logged = how, 0, {}

    def log(self, name, value, **options):
        if name != "train_loss":
            return super().log(name, value, **options)
        self.calls += 1
        if self.how == "every other step" and self.calls % 2 == 0:
            return None
        self.logged.setdefault(self.current_epoch + 1, []).append(value.item())
        if self.how in ("per step", "every other step"):
            return super().log(name, value)
        return super().log(name, value, on_step=self.how == "per step and epoch", on_epoch=True)


@pytest.mark.parametrize("how", ["per step", "every other step", "per epoch", "per step and epoch"])
def test_an_epoch_records_the_mean_of_a_loss_logged_per_step_not_its_last_batchs(tmp_path, how):
    """A review's case: ``self.log("train_loss", loss)`` in ``training_step`` logs per step only, and the epoch
    record held the epoch's last batch's loss. It holds the mean of the values the epoch logged, as one logged
    with ``on_epoch=True`` does (Lightning's own mean: all batches here are as large)."""
    torch.manual_seed(0)
    log = tmp_path / "run.jsonl"
    module = LossLoggedHow({"cls": 1.0, "reg": 1.0}, how)
    lightning.Trainer(
        accelerator="cpu", devices=1, max_epochs=2, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_train_batches=6,
        callbacks=[GradientMonitorCallback(log_path=log, every_n_steps=EVERY)],
    ).fit(module, loader())  # fmt: skip
    epochs = [r for r in strict_lines(log) if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    for record in epochs:
        logged = module.logged[record["epoch"]]
        assert len(logged) == (3 if how == "every other step" else 6)
        assert record["train_loss"] == pytest.approx(sum(logged) / len(logged), rel=1e-5), (logged, record)
