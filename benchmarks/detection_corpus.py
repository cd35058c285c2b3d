"""The labelled corpus for detection quality: real training runs of eight model families, each a grid of loss
weights x seeds, monitored by moola's ``GradientMonitor``, labelled from held-out metrics only.

    .venv/bin/python benchmarks/detection_corpus.py --out runs/detection-corpus   # about 3 minutes on 2 cores
    .venv/bin/python benchmarks/detection_corpus.py --families trio   # one family; the others' runs are kept

Families (every one has tasks sharing a small trunk, so that the tasks really compete):

* ``lstm``: the project's trainer (``EnhancedSimpleLSTM``) at hidden size 4 on synthetic OHLC windows; type
  classification + pointer regression; ``--loss-beta`` over a grid.
* ``gradnorm``: the GradNorm paper's synthetic regression toy (Chen et al. 2018, section 4): targets
  ``sigma_i * tanh((B + eps_i) x)`` with task scales sigma = (1, 100); the small task's weight over a grid.
* ``cancer``: an MLP on scikit-learn's breast-cancer table: diagnosis classification + regression of the
  mean fractal dimension (its columns removed from the inputs); the regression weight over a grid.
* ``trio``: three tasks on orthogonal projections of synthetic Gaussian inputs (two classifications, one
  regression), one shared ReLU layer of 3 units (they compete) or 32 (they do not); the regression's weight
  over a grid.
* ``digits``: an MLP on scikit-learn's 8x8 digits: 10-class digit classification + regression of the image's
  total ink (nearly independent of the class), a trunk of 32 ReLU units then a shared layer of 6 (they compete)
  or 32 (they do not); the ink weight over a grid. At 32 units a large weight on either task leaves the other
  one gradient-dominated yet healthy, at 6 units often short of its full progress.
* ``diabetes``: an MLP on scikit-learn's diabetes table: three regressions with an irreducible loss floor
  (disease progression, and the ``bmi`` and ``bp`` columns, removed from the inputs, regressed from the other
  eight; a linear model's R^2 is 0.2-0.4: no held-out MSE ends below 60% of the baseline's, and the training
  losses end at 50-85% of their first epoch's), one shared ReLU layer of 3
  units (they compete), 8 (a little) or 32 (they do not); the progression weight over a grid.
* ``floor``: the diabetes family's shape on synthetic data whose held-out split is large enough to trust
  (20000 rows; diabetes' 142 give the same label from each half on under half of its runs): three regressions,
  each ``tanh`` of its own direction of 8 Gaussian inputs plus noise that leaves R^2 about 0.25; the same widths
  and weights.
* ``noisy``: an easy task beside one with an irreducible floor (an outside review's shape): the signs of two
  directions of 8 Gaussian inputs, the second with 30% of its labels flipped (its loss cannot fall below about
  88% of its first), one shared ReLU layer of 2 units (they compete) or 32 (they do not); the easy task's weight
  over a grid.

Ground truth never looks at gradients. For each task, ``progress = (baseline - final) / (baseline - best)`` on the
held-out split, where ``baseline`` is a trivial predictor's metric (majority class, the training mean), ``final``
the mean of the last three epochs' validation metric and ``best`` the best ``final`` any setting of the same family
and seed reached (any weight; for ``trio``, ``digits``, ``diabetes``, ``floor`` and ``noisy`` any trunk width too).
A task below ``STARVED_PROGRESS`` while the others do well is *starved*; every task at or above it: *healthy*; every
task below: *all_poor* (reported, not scored). "The others do well", for any number of tasks: at least one other
task is at or above ``STARVED_PROGRESS``, so that the shared layers served some task and the poor ones lost the
competition for them (of two tasks: the other one is). A run of three tasks can so have two starved tasks (one
weight so large that its task owns the trunk); ``starved_tasks`` lists them, the least progress first, and
``starved`` names that first one. Several poor tasks with none doing well is a model that learned nothing well (too
small, a bad learning rate), not a competition.

Each run's metrics are also taken on each half of its held-out split (alternate rows); a run that each half,
labelled alone, gives the same label and starved task is ``agreed`` (its label is reliable).

Writes ``OUT/<family>/<run>.jsonl`` and ``OUT/labels.json``; the labelling is ``detection_labels.py``'s.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from detection_labels import TAIL_EPOCHS, Run, label
from rich.console import Console
from torch import nn

from moola.data import WindowDataset, make_synthetic
from moola.models.enhanced_simple_lstm import EnhancedSimpleLSTM
from moola.utils.monitoring.gradient_diagnostics import GradientMonitor


def _quiet_monitor(path: Path, run_id: str) -> GradientMonitor:
    return GradientMonitor(1, log_path=path, task_balance_frequency=1, run_id=run_id)


# ---------------------------------------------------------------------------------------------- families


def lstm_runs(out: Path, seeds: list[int], epochs: int) -> Iterator[Run]:
    """The project's trainer at hidden size 4: type + pointer, ``beta`` (pointer weight) over a grid."""
    for seed in seeds:
        data = make_synthetic(600, seed=seed)
        labels = np.unique(data.y, return_counts=True)[1]
        bars = np.stack([data.expansion_start, data.expansion_end], axis=1).astype(np.float64)
        baselines = {
            "type": float(labels.max() / labels.sum()),
            "pointer": float(np.abs(bars - bars.mean(axis=0)).mean()),
        }
        floors = lstm_floors(out, data, seed, epochs)
        for beta in (0.03, 0.1, 0.2, 0.3, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 8.0, 25.0):
            run_id = f"lstm-s{seed}-b{beta:g}"
            path = out / "lstm" / f"{run_id}.jsonl"
            model = EnhancedSimpleLSTM(hidden_size=4, predict_pointers=True, seed=seed)
            halves = _evaluated_in_halves(model)
            model.fit(
                data.X, data.y, data.expansion_start, data.expansion_end,
                epochs=epochs, loss_beta=beta, monitor_gradients=True, gradient_log_freq=5, task_balance_freq=1,
                grad_log=path, run_id=run_id, console=Console(file=io.StringIO()),
            )  # fmt: skip
            steps = [_epoch_steps(path)[e["epoch"]] for e in model.history]
            metrics = {"type": [e["type_acc"] for e in model.history],
                       "pointer": [e["pointer_err_bars"] for e in model.history]}  # fmt: skip
            yield Run("lstm", seed, {"type": 1.0, "pointer": beta}, str(path), steps, metrics, baselines, halves=halves,
                      floors=floors)  # fmt: skip


def lstm_floors(out: Path, data: WindowDataset, seed: int, epochs: int) -> dict[str, float]:
    """Each task's training loss at the end of a run of the trainer on that task's loss alone (the other weight 0)."""
    floors = {}
    for task, (alpha, beta) in {"type": (1.0, 0.0), "pointer": (0.0, 1.0)}.items():
        path = out / "lstm" / SOLO / f"lstm-s{seed}-{task}.jsonl"
        model = EnhancedSimpleLSTM(hidden_size=4, predict_pointers=True, seed=seed)
        model.fit(
            data.X, data.y, data.expansion_start, data.expansion_end,
            epochs=epochs, loss_alpha=alpha, loss_beta=beta, monitor_gradients=True, gradient_log_freq=5,
            task_balance_freq=1, grad_log=path, run_id=path.stem, console=Console(file=io.StringIO()),
        )  # fmt: skip
        floors[task] = training_floor(path, task)
    return floors


def _evaluated_in_halves(model: EnhancedSimpleLSTM) -> Halves:
    """The metrics on each half of the held-out windows, filled at each of ``model``'s per-epoch evaluations (the
    trainer evaluates the whole split; the label's reliability needs each half's figures from the same model)."""
    halves: Halves = {}
    evaluate = model._evaluate

    def in_halves(x: torch.Tensor, y: torch.Tensor, pointers: torch.Tensor | None, idx: np.ndarray, bars: int
                  ) -> dict[str, float]:  # fmt: skip
        for half, rows in half_indices(len(idx)).items():
            row = evaluate(x, y, pointers, idx[rows], bars)
            for task, metric in (("type", "type_acc"), ("pointer", "pointer_err_bars")):
                halves.setdefault(half, {}).setdefault(task, []).append(row[metric])
        return evaluate(x, y, pointers, idx, bars)

    model._evaluate = in_halves  # type: ignore[method-assign]
    return halves


#: Where each family's single-task runs go (under ``OUT/<family>/``): the source of each task's training floor.
SOLO = "solo"


def training_floor(path: Path, task: str) -> float:
    """The task's training loss at the end of the run logged at ``path``: the mean of its last ``TAIL_EPOCHS``
    epoch records' ``task_losses`` (what a user reads off a single-task run)."""
    with path.open("rb") as lines:
        epochs = [r for r in map(json.loads, lines) if r["kind"] == "epoch"]
    return float(np.mean([r["task_losses"][task] for r in epochs[-TAIL_EPOCHS:]]))


def _epoch_steps(path: Path) -> dict[int, int]:
    """Epoch -> the step at its end, from the log's epoch records."""
    with path.open("rb") as lines:
        records = [json.loads(line) for line in lines]
    return {r["epoch"]: r["step"] for r in records if r["kind"] == "epoch"}


class Heads(nn.Module):
    """A shared ReLU trunk and one linear head per task."""

    def __init__(self, inputs: int, widths: tuple[int, ...], outputs: dict[str, int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width in widths:
            layers += [nn.Linear(inputs, width), nn.ReLU()]
            inputs = width
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({name: nn.Linear(inputs, size) for name, size in outputs.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        shared = self.trunk(x)
        return {name: head(shared) for name, head in self.heads.items()}


@dataclass(frozen=True)
class Split:
    """Tensors of a multi-task problem: inputs and per-task targets, train and held-out."""

    x_train: torch.Tensor
    x_val: torch.Tensor
    y_train: dict[str, torch.Tensor]
    y_val: dict[str, torch.Tensor]


Losses = Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor]], dict[str, torch.Tensor]]
Metrics = Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor]], dict[str, float]]


Halves = dict[str, dict[str, list[float]]]  # half of the held-out split ("a", "b") -> task -> metric per epoch


def half_indices(count: int) -> dict[str, slice]:
    """The two halves of a held-out split of ``count`` rows, alternate rows (every split here is in random order)."""
    return {"a": slice(0, count, 2), "b": slice(1, count, 2)}


def held_out(
    predicted: dict[str, torch.Tensor], split: Split, metrics: Metrics, history: dict[str, list[float]], halves: Halves
) -> dict[str, float]:
    """Each task's held-out metric of ``predicted`` (the model's outputs on ``split.x_val``), appended to its
    ``history``, and on each half of the split to ``halves``; returns the whole split's."""
    measured = metrics(predicted, split.y_val)
    for task, value in measured.items():
        history.setdefault(task, []).append(value)
    for half, rows in half_indices(len(split.x_val)).items():
        on_half = metrics({t: p[rows] for t, p in predicted.items()}, {t: y[rows] for t, y in split.y_val.items()})
        for task, value in on_half.items():
            halves.setdefault(half, {}).setdefault(task, []).append(value)
    return measured


def train_heads(
    model: Heads, split: Split, weights: dict[str, float], losses: Losses, metrics: Metrics, *,
    epochs: int, batch_size: int, lr: float, seed: int, path: Path, run_id: str,
) -> tuple[list[int], dict[str, list[float]], Halves]:  # fmt: skip
    """Adam on ``sum(weights[t] * loss_t)``, balance measured on each epoch's first batch, an epoch record per
    epoch (training task losses, held-out metrics). Returns the step at each epoch's end, the metrics, and the
    metrics on each half of the held-out split."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps: list[int] = []
    history: dict[str, list[float]] = {}
    halves: Halves = {}
    step = 0
    with _quiet_monitor(path, run_id) as monitor:
        monitor.watch_optimizer(optimizer)
        monitor.on_run_start(
            model, model_name=run_id.split("-")[0], config={"weights": weights, "seed": seed, "lr": lr}
        )
        for epoch in range(1, epochs + 1):
            monitor.on_epoch_start(epoch)
            sums = dict.fromkeys(weights, 0.0)
            order = torch.randperm(len(split.x_train), generator=generator)
            for batch in order.split(batch_size):
                task_losses = losses(model(split.x_train[batch]), {t: y[batch] for t, y in split.y_train.items()})
                monitor.on_before_backward(model, task_losses, weights)  # the epoch's first batch: throttled
                optimizer.zero_grad(set_to_none=True)
                sum(weights[t] * loss for t, loss in task_losses.items()).backward()
                optimizer.step()
                step += 1
                for task, loss in task_losses.items():
                    sums[task] += loss.item() * len(batch) / len(split.x_train)
            with torch.no_grad():
                measured = held_out(model(split.x_val), split, metrics, history, halves)
            steps.append(step)
            monitor.on_epoch_end(epoch, train_loss=sum(weights[t] * v for t, v in sums.items()),
                                 task_losses=sums, metrics=measured)  # fmt: skip
    return steps, history, halves


def heads_run(
    family: str, seed: int, weights: dict[str, float], run_id: str, model: Heads, split: Split, losses: Losses,
    metrics: Metrics, baselines: dict[str, float], out: Path, *, epochs: int, batch_size: int, lr: float,
) -> Run:  # fmt: skip
    """Train ``model`` (:func:`train_heads`), its log ``out/<family>/<run_id>.jsonl``, and return the run, with
    each task's training floor (:func:`heads_floors`, trained first from the same initial weights)."""
    floors = heads_floors(model, split, weights, losses, metrics, out / family / SOLO, run_id.rsplit("-w", 1)[0],
                          epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)  # fmt: skip
    path = out / family / f"{run_id}.jsonl"
    steps, history, halves = train_heads(model, split, weights, losses, metrics, epochs=epochs,
                                         batch_size=batch_size, lr=lr, seed=seed, path=path, run_id=run_id)  # fmt: skip
    return Run(family, seed, weights, str(path), steps, history, baselines, halves=halves, floors=floors)


#: The training floors of each setting (its family, seed and trunk: a run id less its weight), trained once.
_SOLO_FLOORS: dict[str, dict[str, float]] = {}


def heads_floors(
    model: Heads, split: Split, weights: dict[str, float], losses: Losses, metrics: Metrics, out: Path, key: str,
    *, epochs: int, batch_size: int, lr: float, seed: int,
) -> dict[str, float]:  # fmt: skip
    """Each task's training loss at the end of a run on its loss alone (a copy of ``model`` as it is, the other
    weights 0), once per ``key``: the floor a user would read off a single-task run of the same model."""
    if key in _SOLO_FLOORS:
        return _SOLO_FLOORS[key]
    floors = _SOLO_FLOORS[key] = {}
    for task in weights:
        alone = {t: float(t == task) for t in weights}
        path = out / f"{key}-{task}.jsonl"
        train_heads(copy.deepcopy(model), split, alone, losses, metrics, epochs=epochs, batch_size=batch_size, lr=lr,
                    seed=seed, path=path, run_id=path.stem)  # fmt: skip
        floors[task] = training_floor(path, task)
    return floors


def _mse(out: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {task: F.mse_loss(out[task], target) for task, target in y.items()}


def _mse_metrics(pred: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> dict[str, float]:
    """Each task's held-out MSE (lower is better)."""
    return {task: F.mse_loss(pred[task], target).item() for task, target in y.items()}


def _cross_entropy(out: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {task: F.cross_entropy(out[task], target) for task, target in y.items()}


def _accuracy(pred: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> dict[str, float]:
    """Each task's held-out accuracy (higher is better)."""
    return {task: (pred[task].argmax(dim=1) == target).double().mean().item() for task, target in y.items()}


def gradnorm_runs(out: Path, seeds: list[int], epochs: int) -> Iterator[Run]:
    """GradNorm's toy: ``sigma_i tanh((B + eps_i) x)``, sigma = (1, 100); the small task's weight over a grid.
    Metric: held-out MSE over sigma_i^2 (lower is better); baseline: predicting the training mean."""
    sigmas = {"small": 1.0, "big": 100.0}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        inputs, outputs = 50, 10
        shared = rng.normal(0, 10 / math.sqrt(inputs), (outputs, inputs))
        x = rng.normal(0, 1, (3000, inputs))
        targets = {
            t: s * np.tanh(x @ (shared + rng.normal(0, 7 / math.sqrt(inputs), shared.shape)).T)
            for t, s in sigmas.items()
        }
        as_t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
        split = Split(as_t(x[:2000]), as_t(x[2000:]), {t: as_t(y[:2000]) for t, y in targets.items()},
                      {t: as_t(y[2000:]) for t, y in targets.items()})  # fmt: skip
        baselines = {t: float(((y[2000:] - y[:2000].mean(axis=0)) ** 2).mean() / sigmas[t] ** 2)
                     for t, y in targets.items()}  # fmt: skip

        def metrics(pred: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> dict[str, float]:
            return {t: F.mse_loss(pred[t], y[t]).item() / sigmas[t] ** 2 for t in y}

        for small in (1.0, 1e2, 2e2, 5e2, 1e3, 2e3, 5e3, 1e4, 1e6):
            weights = {"small": small, "big": 1.0}
            run_id = f"gradnorm-s{seed}-w{small:g}"
            torch.manual_seed(seed)
            model = Heads(inputs, (16, 4), {t: outputs for t in sigmas})
            yield heads_run("gradnorm", seed, weights, run_id, model, split, _mse, metrics, baselines, out,
                            epochs=epochs, batch_size=100, lr=3e-3)  # fmt: skip


def cancer_runs(out: Path, seeds: list[int], epochs: int) -> Iterator[Run]:
    """Breast-cancer table: diagnosis (accuracy, higher is better) + fractal-dimension regression (MSE of
    the standardised target; the fractal columns are not inputs, and the target is uncorrelated with the
    diagnosis); the regression weight over a grid, a 4-unit shared layer."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    fractal = np.array(["fractal" in str(name) for name in data.feature_names])
    target = data.data[:, list(data.feature_names).index("mean fractal dimension")]
    features = data.data[:, ~fractal]
    for seed in seeds:
        order = np.random.default_rng(seed).permutation(len(features))
        train, val = order[:400], order[400:]
        mean, std = features[train].mean(axis=0), features[train].std(axis=0)
        x = (features - mean) / std
        reg = (target - target[train].mean()) / target[train].std()
        as_t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
        split = Split(as_t(x[train]), as_t(x[val]),
                      {"diagnosis": torch.as_tensor(data.target[train]), "fractal": as_t(reg[train, None])},
                      {"diagnosis": torch.as_tensor(data.target[val]), "fractal": as_t(reg[val, None])})  # fmt: skip
        counts = np.bincount(data.target[val])
        baselines = {"diagnosis": float(counts.max() / counts.sum()), "fractal": float(((reg[val] - 0) ** 2).mean())}

        def losses(pred: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {"diagnosis": F.cross_entropy(pred["diagnosis"], y["diagnosis"]),
                    "fractal": F.mse_loss(pred["fractal"], y["fractal"])}  # fmt: skip

        def metrics(pred: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> dict[str, float]:
            accuracy = (pred["diagnosis"].argmax(dim=1) == y["diagnosis"]).double().mean().item()
            return {"diagnosis": accuracy, "fractal": F.mse_loss(pred["fractal"], y["fractal"]).item()}

        for weight in (0.001, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0):
            weights = {"diagnosis": 1.0, "fractal": weight}
            run_id = f"cancer-s{seed}-w{weight:g}"
            torch.manual_seed(seed)
            model = Heads(features.shape[1], (2,), {"diagnosis": 2, "fractal": 1})
            yield heads_run("cancer", seed, weights, run_id, model, split, losses, metrics, baselines, out,
                            epochs=epochs, batch_size=32, lr=1e-2)  # fmt: skip


def trio_runs(out: Path, seeds: list[int], epochs: int) -> Iterator[Run]:
    """Three tasks on three orthogonal directions of Gaussian inputs (12 features; 1000 train, 500 held out), so
    that each needs trunk units of its own: ``sign`` (is the first projection positive: accuracy), ``level``
    (``tanh(2 z)`` of the second: MSE) and ``bucket`` (which third of the third projection's distribution:
    accuracy). A one-layer ReLU trunk of 3 units (one per task: they compete) or 32 (room for all: they do not);
    the ``level`` weight over a grid, the others at 1."""
    inputs = 12
    for seed in seeds:
        rng = np.random.default_rng(seed)
        x = rng.normal(0, 1, (1500, inputs))
        z = x @ np.linalg.qr(rng.normal(0, 1, (inputs, 3)))[0]
        tertile = 0.4307  # the standard normal's tertiles are -0.4307 and 0.4307
        targets = {"sign": (z[:, 0] > 0).astype(np.int64), "level": np.tanh(2 * z[:, 1:2]),
                   "bucket": np.digitize(z[:, 2], [-tertile, tertile])}  # fmt: skip
        as_t = lambda a: torch.as_tensor(a, dtype=torch.float32 if a.dtype.kind == "f" else torch.int64)  # noqa: E731
        split = Split(as_t(x[:1000]), as_t(x[1000:]), {t: as_t(y[:1000]) for t, y in targets.items()},
                      {t: as_t(y[1000:]) for t, y in targets.items()})  # fmt: skip
        baselines = {t: float(np.bincount(targets[t][1000:]).max() / 500) for t in ("sign", "bucket")}
        baselines["level"] = float(((targets["level"][1000:] - targets["level"][:1000].mean()) ** 2).mean())

        def losses(pred: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {t: F.mse_loss(pred[t], y[t]) if t == "level" else F.cross_entropy(pred[t], y[t]) for t in y}

        def metrics(pred: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> dict[str, float]:
            return {t: F.mse_loss(pred[t], y[t]).item() if t == "level"
                    else (pred[t].argmax(dim=1) == y[t]).double().mean().item() for t in y}  # fmt: skip

        for width in (3, 32):
            for level in (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0):
                weights = {"sign": 1.0, "level": level, "bucket": 1.0}
                run_id = f"trio-s{seed}-h{width}-w{level:g}"
                torch.manual_seed(seed)
                model = Heads(inputs, (width,), {"sign": 2, "level": 1, "bucket": 3})
                yield heads_run("trio", seed, weights, run_id, model, split, losses, metrics, baselines, out,
                                epochs=epochs, batch_size=50, lr=1e-2)  # fmt: skip


def digits_runs(out: Path, seeds: list[int], epochs: int) -> Iterator[Run]:
    """scikit-learn's 8x8 digits (1200 train, 597 held out): ``digit`` (10 classes: accuracy) + ``ink`` (the image's
    total ink, standardised: MSE; nearly independent of the class, so it needs trunk units of its own), an MLP
    trunk of 32 ReLU units then a shared layer of 6 (the tasks compete: a weight far from 1 starves the other
    task; at 3 units the digits barely learn even alone) or 32 (they do not); the ``ink`` weight over a grid,
    ``digit``'s at 1."""
    from sklearn.datasets import load_digits

    data = load_digits()
    ink = data.data.sum(axis=1)
    for seed in seeds:
        order = np.random.default_rng(seed).permutation(len(data.target))
        train, val = order[:1200], order[1200:]
        x = (data.data - data.data[train].mean()) / data.data[train].std()
        reg = (ink - ink[train].mean()) / ink[train].std()
        as_t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
        split = Split(as_t(x[train]), as_t(x[val]),
                      {"digit": torch.as_tensor(data.target[train]), "ink": as_t(reg[train, None])},
                      {"digit": torch.as_tensor(data.target[val]), "ink": as_t(reg[val, None])})  # fmt: skip
        counts = np.bincount(data.target[val])
        baselines = {"digit": float(counts.max() / counts.sum()), "ink": float((reg[val] ** 2).mean())}

        def losses(pred: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {"digit": F.cross_entropy(pred["digit"], y["digit"]), "ink": F.mse_loss(pred["ink"], y["ink"])}

        def metrics(pred: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> dict[str, float]:
            accuracy = (pred["digit"].argmax(dim=1) == y["digit"]).double().mean().item()
            return {"digit": accuracy, "ink": F.mse_loss(pred["ink"], y["ink"]).item()}

        for width in (6, 32):
            for weight in (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0):
                weights = {"digit": 1.0, "ink": weight}
                run_id = f"digits-s{seed}-h{width}-w{weight:g}"
                torch.manual_seed(seed)
                model = Heads(x.shape[1], (32, width), {"digit": 10, "ink": 1})
                yield heads_run("digits", seed, weights, run_id, model, split, losses, metrics, baselines, out,
                                epochs=epochs, batch_size=200, lr=6e-3)  # fmt: skip


def diabetes_runs(out: Path, seeds: list[int], epochs: int) -> Iterator[Run]:
    """scikit-learn's diabetes table (300 train, 142 held out): three regressions with an irreducible floor (a
    linear model's R^2 is only 0.2-0.4), ``progression`` (the disease-progression target), ``bmi`` and ``bp``
    (those two columns removed from the inputs and regressed from the other eight), each standardised (MSE);
    one shared ReLU layer of 3 units (they compete), 8 (a little) or 32 (they do not); the ``progression``
    weight over a grid, the others at 1."""
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    names = list(data.feature_names)
    columns = {"progression": data.target, "bmi": data.data[:, names.index("bmi")],
               "bp": data.data[:, names.index("bp")]}  # fmt: skip
    features = data.data[:, [i for i, name in enumerate(names) if name not in columns]]
    for seed in seeds:
        order = np.random.default_rng(seed).permutation(len(features))
        train, val = order[:300], order[300:]
        x = (features - features[train].mean(axis=0)) / features[train].std(axis=0)
        targets = {t: ((c - c[train].mean()) / c[train].std())[:, None] for t, c in columns.items()}
        as_t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
        split = Split(as_t(x[train]), as_t(x[val]), {t: as_t(y[train]) for t, y in targets.items()},
                      {t: as_t(y[val]) for t, y in targets.items()})  # fmt: skip
        baselines = {t: float((y[val] ** 2).mean()) for t, y in targets.items()}  # the training mean is 0

        for width in (3, 8, 32):
            for progression in (0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0):
                weights = {"progression": progression, "bmi": 1.0, "bp": 1.0}
                run_id = f"diabetes-s{seed}-h{width}-w{progression:g}"
                torch.manual_seed(seed)
                model = Heads(x.shape[1], (width,), dict.fromkeys(columns, 1))
                yield heads_run("diabetes", seed, weights, run_id, model, split, _mse, _mse_metrics, baselines, out,
                                epochs=epochs, batch_size=64, lr=3e-3)  # fmt: skip


def floor_runs(out: Path, seeds: list[int], epochs: int) -> Iterator[Run]:
    """The diabetes family's shape with a held-out split large enough to trust: three regressions with an
    irreducible floor on synthetic Gaussian inputs (8 features; 1000 train, 20000 held out), each target
    ``tanh`` of its own random direction of the inputs plus noise that leaves the best model an R^2 of about 0.3,
    standardised (MSE); one shared ReLU layer of 3 units (they compete), 8 or 32; the ``a`` weight over a grid,
    the others at 1."""
    inputs, explained = 8, 0.3
    for seed in seeds:
        rng = np.random.default_rng(seed)
        x = rng.normal(0, 1, (21000, inputs))
        signals = {t: np.tanh(x @ rng.normal(0, 1 / math.sqrt(inputs) * 2, inputs)) for t in ("a", "b", "c")}
        targets = {}
        for task, signal in signals.items():
            noisy = signal + rng.normal(0, signal.std() * math.sqrt((1 - explained) / explained), len(signal))
            targets[task] = ((noisy - noisy[:1000].mean()) / noisy[:1000].std())[:, None]
        as_t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
        split = Split(as_t(x[:1000]), as_t(x[1000:]), {t: as_t(y[:1000]) for t, y in targets.items()},
                      {t: as_t(y[1000:]) for t, y in targets.items()})  # fmt: skip
        baselines = {t: float((y[1000:] ** 2).mean()) for t, y in targets.items()}  # the training mean is 0

        for width in (3, 8, 32):
            for weight in (0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0):
                weights = {"a": weight, "b": 1.0, "c": 1.0}
                run_id = f"floor-s{seed}-h{width}-w{weight:g}"
                torch.manual_seed(seed)
                model = Heads(inputs, (width,), dict.fromkeys(targets, 1))
                yield heads_run("floor", seed, weights, run_id, model, split, _mse, _mse_metrics, baselines, out,
                                epochs=epochs, batch_size=64, lr=3e-3)  # fmt: skip


def noisy_runs(out: Path, seeds: list[int], epochs: int) -> Iterator[Run]:
    """An easy task beside one with an irreducible floor, the shape an outside review's false alarms had: on
    synthetic Gaussian inputs (8 features; 1000 train, 20000 held out), ``clean`` is the sign of one random
    direction (its loss can fall near 0) and ``noisy`` the sign of another with 30% of its labels flipped, in
    training and held out alike (its cross-entropy cannot fall much below 0.61 of a first 0.69: a healthy
    ``noisy`` task ends at about 90% of its first loss while ``clean`` ends near 0); accuracy on each (the best
    ``noisy`` reaches is 70%); one shared ReLU layer of 2 units (they compete) or 32 (they do not); the
    ``clean`` weight over a grid, ``noisy``'s at 1."""
    inputs, flipped = 8, 0.3
    for seed in seeds:
        rng = np.random.default_rng(seed)
        x = rng.normal(0, 1, (21000, inputs))
        labels = {task: (x @ rng.normal(0, 1, inputs) > 0).astype(np.int64) for task in ("clean", "noisy")}
        labels["noisy"] = np.where(rng.random(len(x)) < flipped, 1 - labels["noisy"], labels["noisy"])
        as_t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
        split = Split(as_t(x[:1000]), as_t(x[1000:]), {t: torch.as_tensor(y[:1000]) for t, y in labels.items()},
                      {t: torch.as_tensor(y[1000:]) for t, y in labels.items()})  # fmt: skip
        baselines = {t: float(np.bincount(y[1000:]).max() / len(y[1000:])) for t, y in labels.items()}

        for width in (2, 32):
            for weight in (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0):
                weights = {"clean": weight, "noisy": 1.0}
                run_id = f"noisy-s{seed}-h{width}-w{weight:g}"
                torch.manual_seed(seed)
                model = Heads(inputs, (width,), dict.fromkeys(labels, 2))
                yield heads_run("noisy", seed, weights, run_id, model, split, _cross_entropy, _accuracy, baselines, out,
                                epochs=epochs, batch_size=64, lr=3e-3)  # fmt: skip


#: family -> (its runs, epochs); each task's metric direction is in ``detection_labels.DIRECTIONS``
FAMILIES: dict[str, tuple[Callable[[Path, list[int], int], Iterator[Run]], int]] = {
    "lstm": (lstm_runs, 20),
    "gradnorm": (gradnorm_runs, 30),
    "cancer": (cancer_runs, 30),
    "trio": (trio_runs, 30),
    "digits": (digits_runs, 20),
    "diabetes": (diabetes_runs, 20),
    "floor": (floor_runs, 20),
    "noisy": (noisy_runs, 20),
}


def emptied(folder: Path) -> None:
    """Make a family's ``folder`` (and its ``SOLO`` one) with no log in it: the monitor appends, so a rebuild
    must not add a second run to an old log."""
    (folder / SOLO).mkdir(parents=True, exist_ok=True)
    for stale in folder.rglob("*.jsonl"):
        stale.unlink()


def merged(
    path: Path,
    built: list[Run],
    families: Sequence[str] = tuple(FAMILIES),
    relabel: Callable[[list[Run]], None] = label,
) -> list[Run]:
    """``built`` beside the runs of the other families already labelled in ``path`` (their logs kept), all
    relabelled by today's rule (``relabel``) from their recorded metrics, in the order of ``families``."""
    rebuilt = {run.family for run in built}
    kept = [Run(**row) for row in json.loads(path.read_text())] if path.exists() else []
    runs = [run for run in kept if run.family not in rebuilt] + built
    relabel(runs)
    return sorted(runs, key=lambda run: list(families).index(run.family))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/detection-corpus"))
    parser.add_argument(
        "--seeds", type=int, default=10, help="seeds per family (seeds 0-3 choose the numbers, the others are held out)"
    )
    parser.add_argument("--families", default=",".join(FAMILIES),
                        help="the families to build (those already in OUT are kept, and relabelled)")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    built: list[Run] = []
    for name in args.families.split(","):
        make, epochs = FAMILIES[name]
        emptied(args.out / name)
        began = time.perf_counter()
        runs = list(make(args.out, list(range(args.seeds)), epochs))
        label(runs)
        built += runs
        counts = {label: sum(r.label == label for r in runs) for label in ("healthy", "starved", "all_poor")}
        print(f"{name}: {len(runs)} runs in {time.perf_counter() - began:.0f} s, {counts}", flush=True)
    labels = args.out / "labels.json"
    labels.write_text(json.dumps([asdict(run) for run in merged(labels, built)], indent=1))


if __name__ == "__main__":
    main()
