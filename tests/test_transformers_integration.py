"""The HF Trainer callback on a real ``transformers.Trainer`` (CPU, a tiny BERT built from a config, nothing
downloaded): pre-clip norms equal to the Trainer's own logged ``grad_norm`` at the same steps, and task balance
from a multi-task model."""

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import REPO, run_cli, run_readme_example, strict_lines
from torch import nn

transformers = pytest.importorskip("transformers")

from moola.integrations.transformers import GradientMonitorCallback  # noqa: E402

STEPS = 30
EVERY = 3
MAX_GRAD_NORM = 1e-4  # far below the gradients' norm (about 0.1 at the least): every step is clipped


def tiny_bert(num_labels: int = 2) -> transformers.BertForSequenceClassification:
    config = transformers.BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=16, num_labels=num_labels,
    )  # fmt: skip
    return transformers.BertForSequenceClassification(config)


class Sentences(torch.utils.data.Dataset):
    """Random token sequences labelled by whether token 5 occurs in them; ``target`` is a regression label."""

    def __init__(self, count: int):
        generator = torch.Generator().manual_seed(0)
        self.input_ids = torch.randint(0, 64, (count, 12), generator=generator)
        self.labels = (self.input_ids == 5).any(1).long()
        self.target = self.input_ids.float().mean(1) / 64

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.input_ids[i], "labels": self.labels[i], "target": self.target[i]}


def train(tmp_path, model, accumulation: int = 1, trainer_class=None, callback=None):
    torch.manual_seed(0)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=STEPS, per_device_train_batch_size=4, learning_rate=1e-3,
        gradient_accumulation_steps=accumulation, max_grad_norm=MAX_GRAD_NORM, logging_steps=1, report_to=[],
        save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0,
    )  # fmt: skip
    callback = callback or GradientMonitorCallback(log_path=tmp_path / "run.jsonl", every_n_steps=EVERY)
    trainer = (trainer_class or transformers.Trainer)(
        model=model, args=args, train_dataset=Sentences(STEPS * 4 * accumulation), callbacks=[callback]
    )
    trainer.train()
    return trainer, strict_lines(tmp_path / "run.jsonl")


@pytest.mark.parametrize("accumulation", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_recorded_totals_are_the_trainers_pre_clip_grad_norm(tmp_path, accumulation):
    trainer, records = train(tmp_path, tiny_bert(), accumulation)
    logged = {entry["step"]: entry["grad_norm"] for entry in trainer.state.log_history if "grad_norm" in entry}
    assert sorted(logged) == list(range(1, STEPS + 1))
    grads = [r for r in records if r["kind"] == "grad_stats"]
    assert [r["step"] for r in grads] == list(range(EVERY, STEPS + 1, EVERY))
    for record in grads:
        assert record["total_norm"] == pytest.approx(logged[record["step"]], rel=1e-3)
        assert record["total_norm"] > 100 * MAX_GRAD_NORM  # the clip scaled these gradients down afterwards
    names = records[0]["parameters"]
    assert "bert.embeddings.word_embeddings.weight" in names and "classifier.weight" in names
    assert set(grads[0]["layer_norms"]) <= set(names)
    assert records[0]["config"]["max_grad_norm"] == MAX_GRAD_NORM
    assert records[-1]["kind"] == "run_end" and records[-1]["status"] == "completed"


class TwoTaskBert(nn.Module):
    """A BERT encoder with a classification head and a regression head; ``forward`` exposes its task losses as
    ``task_losses`` (the callback measures their balance right after it)."""

    def __init__(self):
        super().__init__()
        self.encoder = tiny_bert().bert
        self.cls = nn.Linear(16, 2)
        self.reg = nn.Linear(16, 1)
        self.task_weights = {"cls": 1.0, "reg": 4.0}

    def forward(self, input_ids, labels, target):
        h = self.encoder(input_ids=input_ids).pooler_output
        self.task_losses = {
            "cls": nn.functional.cross_entropy(self.cls(h), labels),
            "reg": nn.functional.mse_loss(self.reg(h).squeeze(1), target),
        }
        return {"loss": sum(self.task_weights[t] * loss for t, loss in self.task_losses.items())}


def test_a_model_that_exposes_task_losses_gets_task_balance(tmp_path):
    _, records = train(tmp_path, TwoTaskBert())
    balances = [r for r in records if r["kind"] == "task_balance"]
    assert [r["step"] for r in balances] == list(range(EVERY, STEPS + 1, EVERY))
    assert all(r["weights"] == {"cls": 1.0, "reg": 4.0} and set(r["norms"]) == {"cls", "reg"} for r in balances)
    assert "shared parameters" in balances[0]["scope"]


class Heads(TwoTaskBert):
    """Returns its task outputs and leaves the losses to the Trainer's ``compute_loss`` (``regression_scale``
    multiplies the regression output: NaN makes every regression loss NaN)."""

    def __init__(self, regression_scale: float = 1.0):
        super().__init__()
        self.regression_scale = regression_scale

    def forward(self, input_ids, labels, target):
        h = self.encoder(input_ids=input_ids).pooler_output
        return {"logits": self.cls(h), "value": self.reg(h).squeeze(1) * self.regression_scale}


def multitask_trainer(callback: GradientMonitorCallback) -> type[transformers.Trainer]:
    """The README's ``compute_loss`` override: the task losses computed there, given to ``callback``."""

    class MultiTaskTrainer(transformers.Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            outputs = model(**inputs)
            losses = {
                "cls": nn.functional.cross_entropy(outputs["logits"], inputs["labels"]),
                "reg": nn.functional.mse_loss(outputs["value"], inputs["target"]),
            }
            weights = {"cls": 1.0, "reg": 4.0}
            callback.on_task_losses(model, losses, weights)
            loss = sum(weights[t] * value for t, value in losses.items())
            return (loss, outputs) if return_outputs else loss

    return MultiTaskTrainer


def test_a_compute_loss_override_records_task_balance(tmp_path):
    """The documented way for a model that returns its task outputs and leaves the losses to the Trainer."""
    callback = GradientMonitorCallback(log_path=tmp_path / "run.jsonl", every_n_steps=EVERY)
    _, records = train(tmp_path, Heads(), trainer_class=multitask_trainer(callback), callback=callback)
    balances = [r for r in records if r["kind"] == "task_balance"]
    assert [r["step"] for r in balances] == list(range(EVERY, STEPS + 1, EVERY))
    assert balances[0]["weights"] == {"cls": 1.0, "reg": 4.0}


@pytest.mark.slow
def test_measuring_leaves_the_training_unchanged(tmp_path):
    """Hooks on the gradients and a balance probe every step: the trained weights are those of a run without."""
    torch.manual_seed(0)
    plain = TwoTaskBert()
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "plain"), max_steps=10, per_device_train_batch_size=4, learning_rate=1e-3,
        max_grad_norm=MAX_GRAD_NORM, report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0,
    )  # fmt: skip
    transformers.Trainer(model=plain, args=args, train_dataset=Sentences(40)).train()
    torch.manual_seed(0)
    monitored = TwoTaskBert()
    callback = GradientMonitorCallback(log_path=tmp_path / "m.jsonl", every_n_steps=1)
    transformers.Trainer(model=monitored, args=args, train_dataset=Sentences(40), callbacks=[callback]).train()
    assert sum(r["kind"] == "grad_stats" for r in strict_lines(tmp_path / "m.jsonl")) == 10
    for (name, a), b in zip(plain.state_dict().items(), monitored.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def evaluating_trainer(tmp_path, compute_metrics=None) -> transformers.Trainer:
    """A 2-epoch Trainer of the tiny BERT that evaluates after each epoch, monitored into ``run.jsonl``."""
    torch.manual_seed(0)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), num_train_epochs=2, per_device_train_batch_size=4, learning_rate=1e-3,
        logging_steps=2, eval_strategy="epoch", report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True,
        seed=0,
    )  # fmt: skip
    callback = GradientMonitorCallback(log_path=tmp_path / "run.jsonl", every_n_steps=EVERY)
    return transformers.Trainer(
        model=tiny_bert(), args=args, train_dataset=Sentences(40), eval_dataset=Sentences(16),
        compute_metrics=compute_metrics, callbacks=[callback],
    )  # fmt: skip


def test_each_epoch_is_recorded_with_its_training_loss_and_its_own_evaluation(tmp_path):
    """The Trainer evaluates after ``on_epoch_end``: the record of epoch N must hold epoch N's evaluation, and
    its training loss is the mean of the losses logged in it."""

    def accuracy(prediction):
        return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}

    trainer = evaluating_trainer(tmp_path, accuracy)
    trainer.train()
    history = trainer.state.log_history
    epochs = [r for r in strict_lines(tmp_path / "run.jsonl") if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    for record, number in zip(epochs, (1, 2), strict=True):
        evaluation = next(h for h in history if "eval_loss" in h and round(h["epoch"]) == number)
        assert record["val_loss"] == pytest.approx(evaluation["eval_loss"])
        assert record["metrics"] == {"eval_accuracy": pytest.approx(evaluation["eval_accuracy"])}
        losses = [h["loss"] for h in history if "loss" in h and number - 1 < h["epoch"] <= number]
        assert losses and record["train_loss"] == pytest.approx(sum(losses) / len(losses))


def test_a_failed_train_inside_with_ends_the_run_failed(tmp_path):
    class Failing(TwoTaskBert):
        def forward(self, input_ids, labels, target):
            if self.training and getattr(self, "calls", 0) == 4:
                raise RuntimeError("out of memory")
            self.calls = getattr(self, "calls", 0) + 1
            return super().forward(input_ids, labels, target)

    callback = GradientMonitorCallback(log_path=tmp_path / "run.jsonl", every_n_steps=EVERY)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=STEPS, per_device_train_batch_size=4, report_to=[],
        save_strategy="no", use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    trainer = transformers.Trainer(model=Failing(), args=args, train_dataset=Sentences(40), callbacks=[callback])
    with pytest.raises(RuntimeError, match="out of memory"), callback:
        trainer.train()
    end = strict_lines(tmp_path / "run.jsonl")[-1]
    assert end["kind"] == "run_end" and end["status"] == "failed" and end["error"] == "RuntimeError: out of memory"


def test_fp16_gradients_that_are_still_scaled_are_recorded_unscaled(tmp_path):
    """Under fp16 the Trainer's (accelerate's) optimizer carries a GradScaler and the gradients keep its scale
    until the clip, past the callbacks' last look. The Trainer's fp16 mode needs a GPU; its parts do not: a real
    GradScaler scales a real backward as accelerate's does, and the recorded norms are those of the unscaled
    gradients, not 65536 times larger. An overflowing step is recorded as the scaler's, not the model's."""
    callback = GradientMonitorCallback(log_path=tmp_path / "run.jsonl", every_n_steps=1)
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True)
    state, control = transformers.TrainerState(), transformers.TrainerControl()
    torch.manual_seed(0)
    model, reference = tiny_bert(), tiny_bert()
    reference.load_state_dict(model.state_dict())
    model.eval(), reference.eval()  # the same forward in both: no dropout masks
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    callback.on_train_begin(args, state, control, model=model, optimizer=SimpleNamespace(scaler=scaler))
    batch = {"input_ids": torch.randint(0, 64, (2, 12)), "labels": torch.tensor([0, 1])}
    callback.on_step_begin(args, state, control)
    scaler.scale(model(**batch).loss).backward()
    reference(**batch).loss.backward()
    state.global_step = 1
    callback.on_step_begin(args, state, control)
    model.zero_grad()
    scaler.scale(model(**batch).loss * float("inf")).backward()
    callback.on_train_end(args, state, control)
    first, overflow = [r for r in strict_lines(tmp_path / "run.jsonl") if r["kind"] == "grad_stats"]
    expected = torch.linalg.vector_norm(
        torch.stack([p.grad.norm() for p in reference.parameters() if p.grad is not None])
    )
    assert first["total_norm"] == pytest.approx(expected.item(), rel=1e-5)
    assert first["amp"] == {"scale": 65536.0, "overflow": False}
    assert overflow["amp"]["overflow"] is True and overflow["nonfinite_count"] > 0


def torchrun_two_ranks(worker: str, out: Path) -> None:
    """Run ``tests/WORKER OUT`` as two CPU processes under torchrun (gloo); it must succeed."""
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(REPO / "tests" / worker), str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO / "tests")},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.slow
def test_under_ddp_an_unlogged_epochs_loss_is_the_trainers_not_a_share_of_it(tmp_path):
    """With average_tokens_across_devices a returned loss is divided by every rank's items (the Trainer multiplies
    it back by the number of processes): rank 0's epoch loss from its forwards is the loss, not half of it."""
    torchrun_two_ranks("hf_ddp_loss_worker.py", tmp_path)
    trainer_loss = json.loads((tmp_path / "trainer.json").read_text())["training_loss"]
    epochs = [r for r in strict_lines(tmp_path / "run.jsonl") if r["kind"] == "epoch"]
    assert len(epochs) == 2
    for epoch in epochs:  # rank 0's own batches against the mean over both ranks: close, not a factor 2 apart
        assert epoch["train_loss"] == pytest.approx(trainer_loss, rel=0.02)


@pytest.mark.slow
def test_under_ddp_the_totals_are_the_synchronised_pre_clip_grad_norm(tmp_path):
    """Two CPU processes (gloo): rank 0 alone writes, and its totals are the Trainer's logged grad_norm, i.e. the
    norms after DDP's all-reduce (its own end-of-backward work) and before the clip, not the rank's local ones."""
    torchrun_two_ranks("hf_ddp_worker.py", tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == ["run.jsonl"]
    history = json.loads((tmp_path / "history.json").read_text())
    logged = {entry["step"]: entry["grad_norm"] for entry in history if "grad_norm" in entry}
    records = strict_lines(tmp_path / "run.jsonl")
    assert records[0]["world_size"] == 2 and records[0]["rank"] == 0
    grads = [r for r in records if r["kind"] == "grad_stats"]
    assert [r["step"] for r in grads] == [3, 6, 9, 12]
    for record in grads:
        assert record["total_norm"] == pytest.approx(logged[record["step"]], rel=1e-3)


@pytest.mark.slow
def test_readme_transformers_example_prints_equal_totals(tmp_path):
    lines = [line.split() for line in run_readme_example("transformers example", tmp_path).stdout.splitlines()]
    rows = [(int(words[1]), float(words[4]), float(words[7])) for words in lines if words[:1] == ["step"]]
    assert [step for step, _, _ in rows] == [5, 10, 15, 20, 25, 30]
    assert all(recorded == pytest.approx(logged, rel=1e-3) for _, recorded, logged in rows)
    assert max(recorded for _, recorded, _ in rows) > 0.5  # a clipped step, recorded before the clip


def test_halt_on_stops_the_trainer_after_the_step_whose_gradients_raised_the_alert(tmp_path):
    """halt_on passes through the callback: the Trainer stops at the end of the step whose gradients turned NaN
    (a callback cannot skip the step itself), and run_end says why, instead of training on to max_steps."""

    class NaNAtStep6(TwoTaskBert):
        def forward(self, input_ids, labels, target):
            self.calls = getattr(self, "calls", 0) + 1
            out = super().forward(input_ids, labels, target)
            return {"loss": out["loss"] * float("nan")} if self.calls == 6 else out

    callback = GradientMonitorCallback(log_path=tmp_path / "run.jsonl", every_n_steps=1, halt_on="critical")
    trainer, records = train(tmp_path, NaNAtStep6(), callback=callback)
    assert trainer.state.global_step == 6
    end = records[-1]
    assert end["status"] == "failed" and end["error"].startswith(
        "halted on critical alert nonfinite (gradients) at step 6"
    )


def test_an_epoch_whose_every_loss_was_nan_is_recorded_nan_not_the_trainers_filtered_zero(tmp_path):
    """The Trainer's logging_nan_inf_filter logs a NaN loss as the mean of the finite ones before it: 0.0 in a run
    that never had one. The epoch record says NaN, and check says the training loss was NaN."""

    class NaNAlways(TwoTaskBert):
        def forward(self, input_ids, labels, target):
            return {"loss": super().forward(input_ids, labels, target)["loss"] * float("nan")}

    trainer, records = train(tmp_path, NaNAlways())
    assert {entry["loss"] for entry in trainer.state.log_history if "loss" in entry} == {0.0}  # what it logged
    (epoch,) = [r for r in records if r["kind"] == "epoch"]
    assert epoch["train_loss"] == "nan"  # strict JSON's spelling of NaN in a numeric field
    judged = run_cli("moola_watch.cli", "check", str(tmp_path / "run.jsonl"))
    assert judged.returncode == 1 and "Training loss is nan at epoch 1" in judged.stdout, judged.stdout


class RecordedLosses(TwoTaskBert):
    """Keeps every training forward's loss, so that a test knows each epoch's true mean."""

    def __init__(self, nan_from_call: int | None = None):
        super().__init__()
        self.seen: list[float] = []
        self.nan_from_call = nan_from_call

    def forward(self, input_ids, labels, target):
        loss = super().forward(input_ids, labels, target)["loss"]
        if self.nan_from_call is not None and len(self.seen) + 1 >= self.nan_from_call:
            loss = loss * float("nan")
        if self.training:
            self.seen.append(loss.item())
        return {"loss": loss}


def epochs_of(tmp_path, model, **arguments):
    """Three epochs of 10 steps; the epoch records."""
    torch.manual_seed(0)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), num_train_epochs=3, per_device_train_batch_size=4, learning_rate=3e-3,
        report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0, **arguments,
    )  # fmt: skip
    callback = GradientMonitorCallback(log_path=tmp_path / "run.jsonl", every_n_steps=EVERY)
    transformers.Trainer(model=model, args=args, train_dataset=Sentences(40), callbacks=[callback]).train()
    return [r for r in strict_lines(tmp_path / "run.jsonl") if r["kind"] == "epoch"]


@pytest.mark.parametrize("arguments", [{"logging_steps": 25}, {"logging_steps": 4, "gradient_accumulation_steps": 3}])
def test_an_epochs_loss_is_its_own_when_the_trainers_logging_windows_straddle_epochs(tmp_path, arguments):
    """The Trainer logs the mean over its logging window, which may begin epochs earlier: the epoch record
    holds the mean of the epoch's own forwards' losses (an outside review's run read as rising in its last
    epoch while it fell)."""
    model = RecordedLosses()
    epochs = epochs_of(tmp_path, model, **arguments)
    per_epoch = len(model.seen) // 3
    assert len(epochs) == 3 and len(model.seen) == 3 * per_epoch
    for index, record in enumerate(epochs):
        own = model.seen[index * per_epoch : (index + 1) * per_epoch]
        assert record["train_loss"] == pytest.approx(sum(own) / len(own), rel=1e-5)


def test_an_epoch_in_which_the_loss_turned_nan_is_recorded_nan_not_the_filters_mean(tmp_path):
    model = RecordedLosses(nan_from_call=14)  # epoch 2's fourth forward: the filter logs a mean of what came before
    epochs = epochs_of(tmp_path, model, logging_steps=5)
    assert epochs[0]["train_loss"] == pytest.approx(sum(model.seen[:10]) / 10, rel=1e-5)
    assert [record["train_loss"] for record in epochs[1:]] == ["nan", "nan"]


def test_a_compute_loss_override_whose_every_loss_is_nan_records_nan(tmp_path):
    """The README's compute_loss pattern, where the model returns no loss: the task losses tell."""
    callback = GradientMonitorCallback(log_path=tmp_path / "run.jsonl", every_n_steps=EVERY)
    nan_regression = Heads(regression_scale=float("nan"))
    trainer, records = train(tmp_path, nan_regression, trainer_class=multitask_trainer(callback), callback=callback)
    assert {entry["loss"] for entry in trainer.state.log_history if "loss" in entry} == {0.0}
    assert [r["train_loss"] for r in records if r["kind"] == "epoch"] == ["nan"]


def test_under_ddp_halt_on_stops_every_rank_at_the_step_one_ranks_balance_probe_alerted(tmp_path):
    """Statistics every 5 steps, balance every step: rank 1's probe raises a collapse error on a step whose
    statistics are not due. The ranks still agree: both stop at that step (one alone left the other waiting in
    its next all-reduce), and both logs say why."""
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(REPO / "tests" / "hf_halt_worker.py"), str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # (the two ranks share one stdout: their lines may run together)
    stopped = sorted(re.findall(r"rank (\d) stopped at step (\d+)", result.stdout))
    assert stopped == [("0", "6"), ("1", "6")], result.stdout[-3000:]
    for rank in (0, 1):
        end = strict_lines(tmp_path / f"run.rank{rank}.jsonl")[-1]
        assert end["error"].startswith("halted on error alert collapse (b) at step 6 on rank 1"), end


class Tokens(torch.utils.data.Dataset):
    """Random token sequences, each its own language-modelling target."""

    def __init__(self, count: int):
        self.input_ids = torch.randint(0, 40, (count, 8), generator=torch.Generator().manual_seed(count))

    def __len__(self):
        return len(self.input_ids)

    def __getitem__(self, i):
        return {"input_ids": self.input_ids[i], "labels": self.input_ids[i]}


def test_an_unlogged_epochs_loss_under_accumulation_is_the_trainers_for_a_model_normalising_by_the_step():
    """A causal LM takes ``num_items_in_batch``: each micro-batch's returned loss is normalised by the items of the
    whole accumulated step (a quarter of the step's loss here), so an epoch's loss is their sum per step."""
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=40, n_positions=16, n_embd=16, n_layer=1,
                                                                 n_head=2))  # fmt: skip
    with tempfile.TemporaryDirectory() as out:
        args = transformers.TrainingArguments(
            output_dir=out, num_train_epochs=2, per_device_train_batch_size=4, gradient_accumulation_steps=4,
            logging_steps=100, report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0,
        )  # fmt: skip
        log = Path(out) / "run.jsonl"
        callback = GradientMonitorCallback(log_path=log, every_n_steps=EVERY)
        trainer = transformers.Trainer(model=model, args=args, train_dataset=Tokens(32), callbacks=[callback])
        assert trainer.model_accepts_loss_kwargs
        result = trainer.train()
        epochs = [r for r in strict_lines(log) if r["kind"] == "epoch"]
    assert [r["step"] for r in epochs] == [2, 4]  # two steps of four micro-batches an epoch
    assert sum(r["train_loss"] for r in epochs) / 2 == pytest.approx(result.training_loss, rel=1e-5)


def test_an_epoch_in_which_the_trainer_logged_no_loss_is_recorded_and_check_is_happy(tmp_path):
    """``logging_steps`` (25) longer than an epoch (10 steps): epochs 1 and 2 log no ``loss``. Each still gets
    its record, with the mean of the losses its training forwards returned; ``check`` reads the log as good."""
    torch.manual_seed(0)
    model = tiny_bert()
    returned: list[float] = []
    model.register_forward_hook(lambda m, _a, out: returned.append(out["loss"].item()) if m.training else None)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), num_train_epochs=3, per_device_train_batch_size=4, learning_rate=1e-3,
        logging_steps=25, report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0,
    )  # fmt: skip
    callback = GradientMonitorCallback(log_path=tmp_path / "run.jsonl", every_n_steps=EVERY)
    transformers.Trainer(model=model, args=args, train_dataset=Sentences(40), callbacks=[callback]).train()
    assert len(returned) == 30
    epochs = [r for r in strict_lines(tmp_path / "run.jsonl") if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    assert [r["step"] for r in epochs] == [10, 20, 30]
    assert epochs[0]["train_loss"] == pytest.approx(sum(returned[:10]) / 10, rel=1e-5)
    assert epochs[1]["train_loss"] == pytest.approx(sum(returned[10:20]) / 10, rel=1e-5)
    check = subprocess.run([sys.executable, "-m", "moola_watch.cli", "check", "--json", str(tmp_path / "run.jsonl")],
                           capture_output=True, text=True, cwd=REPO, timeout=60)  # fmt: skip
    report = json.loads(check.stdout.splitlines()[0])
    assert check.returncode == 0 and report["bad_lines"] == 0 and report["verdict"] == "healthy", check.stdout


class FailsOnce(TwoTaskBert):
    """Its ``fail_at``-th training forward raises (a bug the user then fixes: ``fail_at = None``)."""

    def __init__(self, fail_at: int | None):
        super().__init__()
        self.fail_at, self.calls = fail_at, 0

    def forward(self, input_ids, labels, target):
        if self.training:
            self.calls += 1
            if self.calls == self.fail_at:
                raise RuntimeError("shape mismatch")
        return super().forward(input_ids, labels, target)


def one_epoch_args(tmp_path) -> transformers.TrainingArguments:
    return transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), num_train_epochs=1, per_device_train_batch_size=4, report_to=[],
        save_strategy="no", use_cpu=True, disable_tqdm=True,
    )  # fmt: skip


def runs_in(log: Path) -> list[list[dict]]:
    """The log's records, run by run."""
    runs: list[list[dict]] = []
    for record in strict_lines(log):
        if record["kind"] == "run_start":
            runs.append([])
        runs[-1].append(record)
    return runs


@pytest.mark.parametrize("again", ["same trainer", "new trainer and callback", "let go of"])
def test_a_train_that_raised_without_with_ends_failed_and_frees_its_log_for_the_next(tmp_path, again):
    """A review's case, a notebook's: ``trainer.train()`` raises (no ``with callback:``), the user fixes the bug
    and trains again in the same process. The run that raised stayed open, its log locked: the next run wrote
    nothing. Now it ends ``failed`` when the next ``train()`` on its log begins (the exception kept alive, as
    IPython keeps the last one), or when its callback is freed, and the next run writes its log."""
    import gc

    log = tmp_path / "run.jsonl"
    model = FailsOnce(fail_at=6)
    callback = GradientMonitorCallback(log_path=log, every_n_steps=EVERY)
    trainer = transformers.Trainer(model=model, args=one_epoch_args(tmp_path), train_dataset=Sentences(40),
                                   callbacks=[callback])  # fmt: skip
    with pytest.raises(RuntimeError, match="shape mismatch") as raised:
        trainer.train()
    model.fail_at = None
    if again == "let go of":
        del trainer, callback, raised
        gc.collect()
        (failed,) = runs_in(log)
        assert failed[-1]["kind"] == "run_end" and failed[-1]["status"] == "failed"
    if again != "same trainer":
        callback = GradientMonitorCallback(log_path=log, every_n_steps=EVERY)
        trainer = transformers.Trainer(model=model, args=one_epoch_args(tmp_path), train_dataset=Sentences(40),
                                       callbacks=[callback])  # fmt: skip
    trainer.train()
    failed, completed = runs_in(log)
    assert failed[-1]["kind"] == "run_end" and failed[-1]["status"] == "failed" and failed[-1]["step"] == 5
    assert "an exception ended the training loop" in failed[-1]["error"] and "with callback:" in failed[-1]["error"]
    assert [r["step"] for r in completed if r["kind"] == "grad_stats"] == [3, 6, 9]
    assert completed[-1]["kind"] == "run_end" and completed[-1]["status"] == "completed"
    assert [r["kind"] for r in failed].count("run_end") == 1  # the old run's hooks on the model were let go of


SCRIPT_THAT_RAISES = """
import sys
import transformers
from test_transformers_integration import FailsOnce, Sentences, one_epoch_args
from moola.integrations.transformers import GradientMonitorCallback
from pathlib import Path

tmp, how = Path(sys.argv[1]), sys.argv[2]


class Stop(transformers.TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if how == "ctrl-c" and state.global_step == 4:
            raise KeyboardInterrupt


callback = GradientMonitorCallback(log_path=tmp / "run.jsonl", every_n_steps=3)
trainer = transformers.Trainer(model=FailsOnce(fail_at=6 if how == "error" else None), args=one_epoch_args(tmp),
                               train_dataset=Sentences(40), callbacks=[callback, Stop()])
trainer.train()  # no `with callback:`, and nothing catches what it raises
"""


@pytest.mark.parametrize(("how", "status", "error"), [("error", "failed", "RuntimeError: shape mismatch"),
                                                      ("ctrl-c", "interrupted", None)])  # fmt: skip
def test_a_script_whose_train_raises_uncaught_without_with_ends_its_run_with_the_exception(
    tmp_path, how, status, error
):
    """A review's case: without ``with callback:`` a script ended by an ordinary Python exception left no
    ``run_end``, and the watcher called the run killed (the OOM killer, kill -9) or crashed outside Python. The
    uncaught exception is what Python keeps as ``sys.last_value`` when it exits: the run ends with it."""
    script = subprocess.run([sys.executable, "-c", SCRIPT_THAT_RAISES, str(tmp_path), how], capture_output=True,
                            text=True, cwd=Path(__file__).parent, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert script.returncode != 0 and ("shape mismatch" if how == "error" else "KeyboardInterrupt") in script.stderr
    (run,) = runs_in(tmp_path / "run.jsonl")
    end = run[-1]
    assert end["kind"] == "run_end" and (end["status"], end["error"]) == (status, error)
    assert end["step"] == (5 if how == "error" else 4)
    check = subprocess.run([sys.executable, "-m", "moola_watch.cli", "check", "--json", str(tmp_path / "run.jsonl")],
                           capture_output=True, text=True, cwd=REPO, timeout=60)  # fmt: skip
    report = json.loads(check.stdout.splitlines()[0])
    assert report["status"] == status and "run_died" not in {alert["rule"] for alert in report["alerts"]}


@pytest.mark.parametrize("stop", ["evaluation raises", "ctrl-c"])
def test_run_end_is_numbered_with_the_steps_taken_when_the_run_stops_between_two_steps(tmp_path, stop):
    """A review's case: stopped after an optimizer step that measured nothing (measured every 5 steps) and before
    the next began, run_end said one step fewer than the Trainer had taken. It is ``state.global_step``; and
    ``run_start`` says the run began in epoch 1, as Lightning's does."""

    class Stops(transformers.Trainer):
        def evaluate(self, *args, **kwargs):
            raise RuntimeError(f"evaluation failed at step {self.state.global_step}")

    class CtrlC(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 7:
                raise KeyboardInterrupt

    log = tmp_path / "run.jsonl"
    callback = GradientMonitorCallback(log_path=log, every_n_steps=5)
    args = one_epoch_args(tmp_path)
    args.eval_strategy, args.eval_steps = ("steps", 7) if stop == "evaluation raises" else ("no", None)
    trainer = Stops(model=TwoTaskBert(), args=args, train_dataset=Sentences(40), eval_dataset=Sentences(8),
                    callbacks=[callback] + ([CtrlC()] if stop == "ctrl-c" else []))  # fmt: skip
    with pytest.raises((RuntimeError, KeyboardInterrupt)), callback:
        trainer.train()
    (run,) = runs_in(log)
    assert trainer.state.global_step == 7 and run[-1]["kind"] == "run_end" and run[-1]["step"] == 7
    assert (run[0]["first_step"], run[0]["first_epoch"]) == (1, 1)


def test_two_callbacks_of_one_training_on_one_log_do_not_end_each_other(tmp_path):
    """A new run ends an earlier unended run on its log (a train() that raised), but not the run of another
    callback of the same training loop: that is a mistake the lock's warning names, not a run that raised."""
    warned: list[str] = []
    first = GradientMonitorCallback(log_path=tmp_path / "run.jsonl", every_n_steps=EVERY)
    second = GradientMonitorCallback(log_path=tmp_path / "run.jsonl", every_n_steps=EVERY, warn=warned.append)
    args = one_epoch_args(tmp_path)
    args.max_steps = 4
    transformers.Trainer(model=TwoTaskBert(), args=args, train_dataset=Sentences(40), callbacks=[first, second]).train()
    (run,) = runs_in(tmp_path / "run.jsonl")
    assert run[-1]["kind"] == "run_end" and run[-1]["status"] == "completed"
    assert len(warned) == 1 and "cannot be written" in warned[0]


def test_check_shows_the_evaluation_loss_of_a_run_without_compute_metrics(tmp_path):
    """An outside review: the HF callback writes ``eval_loss`` as the epoch's top-level ``val_loss``, and check
    showed only ``metrics``: a Trainer without ``compute_metrics`` (the common case) had no held-out metric next
    to its verdict, although the README promises one."""
    trainer = evaluating_trainer(tmp_path)
    trainer.train()
    last = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h][-1]
    judged = run_cli("moola_watch.cli", "check", str(tmp_path / "run.jsonl"))
    assert f"last epoch's metrics: val_loss={last:.4g}" in judged.stdout, judged.stdout
    report = json.loads(run_cli("moola_watch.cli", "check", "--json", str(tmp_path / "run.jsonl")).stdout)
    assert report["runs"][0]["metrics"] == {"val_loss": pytest.approx(last)}
