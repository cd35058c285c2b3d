"""A labelled corpus of three model shapes the detection corpus does not have (an outside review's): a tiny
Transformer, a 1D CNN and an MLP on a table, each trained with the README's plain loop (``monitor.backward``,
``on_before_optimizer_step``, ``optimizer.step``) and ``GradientMonitor(every_n_steps=N)``, as a user would.

    cd benchmarks && ../.venv/bin/python outside_corpus.py   # about 8 minutes on one core (216 runs + 48 alone)
    cd benchmarks && ../.venv/bin/python outside_corpus.py --families wine   # one family; the others are kept

Families (a shared trunk of a small width, where the tasks compete, or 16; one head per task; the grid task's
weight over ``GRID``, the other's 1; seeds 0-3):

* ``tfm``: a 1-layer ``nn.TransformerEncoder`` (a [CLS] token read by the heads) on random sequences of 10
  tokens of 6: ``mode`` (the most frequent token, accuracy) + ``total`` (the standardised sum of the tokens,
  MSE); d_model 4 or 16; the ``total`` weight over the grid.
* ``cnn``: two 1D convolutions and a global max pool on synthetic signals (a sinusoid of one of 4 frequencies,
  a Gaussian bump of random amplitude and place, noise): ``freq`` (the frequency, accuracy; a cross-entropy
  near 1.4) + ``amp`` (10 x the bump's amplitude, MSE, left unstandardised: a loss about 30x the other's);
  2 or 16 channels; the ``freq`` weight over the grid.
* ``wine``: an MLP on scikit-learn's wine table: ``cultivar`` (3 classes, accuracy) + ``alcohol`` (standardised,
  regressed from the other 12 columns, MSE); a shared ReLU layer of 2 or 16 units; the ``alcohol`` weight over
  the grid.

Labels come from held-out metrics only, by ``detection_labels.py`` (see ``detection_corpus.py`` for the rule):
a task's achievable progress is the best any run of its family and seed reached, at either width. Each setting
(family, seed, width) also trains each task alone from the same initial weights: its training floor, and the
logs ``moola-watch floors`` reads.

Writes ``OUT/<family>/<run>.jsonl``, ``OUT/<family>/solo/<setting>-<task>.jsonl`` and ``OUT/labels.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from unittest import mock

import detection_labels
import numpy as np
import torch
import torch.nn.functional as F
from detection_corpus import SOLO, Halves, Heads, Split, emptied, held_out, merged, training_floor
from detection_labels import Run
from torch import nn

from moola.utils.monitoring import GradientMonitor

GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)  # the grid task's loss weight
VOCAB, LENGTH = 6, 10  # tfm: token values 0-5 (VOCAB itself is [CLS]), tokens per sequence
SIGNAL, FREQS = 48, (2, 3, 5, 8)  # cnn: samples per signal, and each class's cycles per signal


def _majority(labels: np.ndarray) -> float:
    """The accuracy of predicting the most frequent class of ``labels`` (the trivial predictor's)."""
    return float(np.bincount(labels).max() / len(labels))


def tfm_data(seed: int) -> tuple[Split, dict[str, float]]:
    """Random token sequences (2000 train, 4000 held out) with their ``mode`` and ``total``; the baselines."""
    rng = np.random.default_rng(1000 + seed)
    n_train, n_val = 2000, 4000
    tokens = rng.integers(0, VOCAB, (n_train + n_val, LENGTH))
    counts = np.stack([(tokens == v).sum(1) for v in range(VOCAB)], 1)
    mode = counts.argmax(1)  # a tie goes to the smallest token
    total = tokens.sum(1).astype(np.float64)
    total = (total - total[:n_train].mean()) / total[:n_train].std()
    x = torch.as_tensor(tokens)
    y = {"mode": torch.as_tensor(mode), "total": torch.as_tensor(total[:, None], dtype=torch.float32)}
    split = Split(x[:n_train], x[n_train:], {t: v[:n_train] for t, v in y.items()},
                  {t: v[n_train:] for t, v in y.items()})  # fmt: skip
    return split, {"mode": _majority(mode[n_train:]), "total": float((total[n_train:] ** 2).mean())}


class TinyTransformer(nn.Module):
    """One encoder layer (2 heads, no dropout) over token and position embeddings; the heads read [CLS]."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB + 1, d_model)
        self.pos = nn.Parameter(torch.randn(LENGTH + 1, d_model) * 0.1)
        layer = nn.TransformerEncoderLayer(d_model, nhead=2, dim_feedforward=2 * d_model, dropout=0.0,
                                           batch_first=True)  # fmt: skip
        self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.heads = nn.ModuleDict({"mode": nn.Linear(d_model, VOCAB), "total": nn.Linear(d_model, 1)})

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        cls = torch.full((tokens.shape[0], 1), VOCAB, dtype=tokens.dtype)
        shared = self.encoder(self.embed(torch.cat([cls, tokens], 1)) + self.pos)[:, 0]
        return {task: head(shared) for task, head in self.heads.items()}


def cnn_data(seed: int) -> tuple[Split, dict[str, float]]:
    """Synthetic signals (1500 train, 4000 held out) with their ``freq`` class and ``amp``; the baselines."""
    rng = np.random.default_rng(2000 + seed)
    n_train, n_val = 1500, 4000
    n = n_train + n_val
    t = np.arange(SIGNAL)
    cls = rng.integers(0, len(FREQS), n)
    phase = rng.uniform(0, 2 * math.pi, n)
    wave = np.sin(2 * math.pi * np.asarray(FREQS)[cls, None] * t / SIGNAL + phase[:, None])
    amp = rng.uniform(0, 2, n)
    where = rng.uniform(4, SIGNAL - 4, n)
    bump = amp[:, None] * np.exp(-0.5 * ((t - where[:, None]) / 1.5) ** 2)
    x = torch.as_tensor((wave * 0.7 + bump + rng.normal(0, 0.3, (n, SIGNAL)))[:, None, :], dtype=torch.float32)
    target = 10 * amp
    y = {"freq": torch.as_tensor(cls), "amp": torch.as_tensor(target[:, None], dtype=torch.float32)}
    split = Split(x[:n_train], x[n_train:], {t: v[:n_train] for t, v in y.items()},
                  {t: v[n_train:] for t, v in y.items()})  # fmt: skip
    return split, {"freq": _majority(cls[n_train:]),
                   "amp": float(((target[n_train:] - target[:n_train].mean()) ** 2).mean())}  # fmt: skip


class TinyCNN(nn.Module):
    """Two 1D convolutions of ``channels`` channels, ReLU, max pools; one linear head per task."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv1d(1, channels, 7, padding=3), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(channels, channels, 5, padding=2), nn.ReLU(), nn.AdaptiveMaxPool1d(1), nn.Flatten(),
        )  # fmt: skip
        self.heads = nn.ModuleDict({"freq": nn.Linear(channels, len(FREQS)), "amp": nn.Linear(channels, 1)})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        shared = self.trunk(x)
        return {task: head(shared) for task, head in self.heads.items()}


def wine_data(seed: int) -> tuple[Split, dict[str, float]]:
    """scikit-learn's wine table (118 train, 60 held out): ``cultivar`` and ``alcohol`` (not an input); the
    baselines."""
    from sklearn.datasets import load_wine

    raw = load_wine()
    column = list(raw.feature_names).index("alcohol")
    order = np.random.default_rng(3000 + seed).permutation(len(raw.target))
    train, val = order[:118], order[118:]
    features = np.delete(raw.data, column, axis=1)
    x = torch.as_tensor((features - features[train].mean(0)) / features[train].std(0), dtype=torch.float32)
    alcohol = raw.data[:, column]
    alcohol = (alcohol - alcohol[train].mean()) / alcohol[train].std()
    y = {"cultivar": torch.as_tensor(raw.target), "alcohol": torch.as_tensor(alcohol[:, None], dtype=torch.float32)}
    split = Split(x[train], x[val], {t: v[train] for t, v in y.items()}, {t: v[val] for t, v in y.items()})
    return split, {"cultivar": _majority(raw.target[val]), "alcohol": float((alcohol[val] ** 2).mean())}


@dataclass(frozen=True)
class Family:
    """One model shape: its data (per seed), its model (per trunk width), each task's kind and how it trains."""

    data: Callable[[int], tuple[Split, dict[str, float]]]
    model: Callable[[int], nn.Module]  # trunk width -> a model returning {task: output}
    widths: tuple[int, ...]
    kinds: dict[str, str]  # task -> "ce" (cross-entropy; accuracy held out) or "mse" (MSE both)
    grid_task: str  # the task whose weight goes over GRID; the other's is 1
    epochs: int
    batch_size: int
    lr: float
    every_n_steps: int  # the monitor's statistics and balance cadence, in optimizer steps

    def losses(self, out: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each task's training loss."""
        return {t: F.cross_entropy(out[t], y[t]) if kind == "ce" else F.mse_loss(out[t], y[t])
                for t, kind in self.kinds.items()}  # fmt: skip

    def metrics(self, out: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> dict[str, float]:
        """Each task's held-out metric: accuracy (higher is better) or MSE (lower)."""
        return {t: (out[t].argmax(1) == y[t]).double().mean().item() if kind == "ce"
                else F.mse_loss(out[t], y[t]).item() for t, kind in self.kinds.items()}  # fmt: skip


FAMILIES: dict[str, Family] = {
    "tfm": Family(tfm_data, TinyTransformer, (4, 16), {"mode": "ce", "total": "mse"}, "total",
                  epochs=20, batch_size=64, lr=3e-3, every_n_steps=16),
    "cnn": Family(cnn_data, TinyCNN, (2, 16), {"freq": "ce", "amp": "mse"}, "freq",
                  epochs=20, batch_size=50, lr=3e-3, every_n_steps=10),
    "wine": Family(wine_data, lambda width: Heads(12, (width,), {"cultivar": 3, "alcohol": 1}), (2, 16),
                   {"cultivar": "ce", "alcohol": "mse"}, "alcohol", epochs=40, batch_size=16, lr=3e-3, every_n_steps=5),
}  # fmt: skip
#: family -> {task: whether a higher held-out metric is better}, for ``detection_labels`` (see :func:`label`)
DIRECTIONS = {name: {t: kind == "ce" for t, kind in family.kinds.items()} for name, family in FAMILIES.items()}


def label(runs: list[Run]) -> None:
    """:func:`detection_labels.label` with these families' metric directions: it looks a family's up in its
    module's ``DIRECTIONS`` (the detection corpus's), so they are added there for the call alone."""
    with mock.patch.dict(detection_labels.DIRECTIONS, DIRECTIONS):
        detection_labels.label(runs)


def setting(run: Run) -> str:
    """The run's family, seed and width (``wine-s0-h2``): its id less its weight, and its floor logs' prefix."""
    return Path(run.log).stem.rsplit("-w", 1)[0]


def solo_logs(run: Run) -> list[str]:
    """The logs of ``run``'s setting trained on each task alone (the training floors' runs)."""
    return [str(Path(run.log).parent / SOLO / f"{setting(run)}-{task}.jsonl") for task in run.weights]


def train(
    name: str, model: nn.Module, split: Split, weights: dict[str, float], seed: int, path: Path
) -> tuple[list[int], dict[str, list[float]], Halves]:
    """The README's plain loop with Adam on ``sum(weights[t] * loss_t)``, monitored every ``every_n_steps``
    steps, an epoch record per epoch (training task losses, held-out metrics), logged at ``path`` (the run id is
    its stem). Returns the step at each epoch's end, the held-out metrics, and those on each half of the split."""
    family = FAMILIES[name]
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=family.lr)
    steps: list[int] = []
    history: dict[str, list[float]] = {}
    halves: Halves = {}
    step = 0
    n = len(split.x_train)
    with GradientMonitor(every_n_steps=family.every_n_steps, log_path=path, run_id=path.stem) as monitor:
        monitor.watch_optimizer(optimizer)
        monitor.on_run_start(model, model_name=name, config={"weights": weights, "seed": seed, "lr": family.lr})
        for epoch in range(1, family.epochs + 1):
            monitor.on_epoch_start(epoch)
            model.train()
            sums = dict.fromkeys(weights, 0.0)
            for batch in torch.randperm(n, generator=generator).split(family.batch_size):
                losses = family.losses(model(split.x_train[batch]), {t: y[batch] for t, y in split.y_train.items()})
                monitor.backward(model, losses, weights)
                monitor.on_before_optimizer_step(model)
                optimizer.step()
                optimizer.zero_grad()
                step += 1
                for task, loss in losses.items():
                    sums[task] += loss.item() * len(batch) / n
            model.eval()
            with torch.no_grad():
                measured = held_out(model(split.x_val), split, family.metrics, history, halves)
            steps.append(step)
            monitor.on_epoch_end(epoch, train_loss=sum(weights[t] * v for t, v in sums.items()), task_losses=sums,
                                 metrics=measured, lr=family.lr)  # fmt: skip
    return steps, history, halves


def family_runs(name: str, out: Path, seeds: list[int]) -> Iterator[Run]:
    """Every run of one family, unlabelled: per seed and width, each task alone from the model's initial
    weights (its training floor), then the grid from the same weights."""
    family = FAMILIES[name]
    for seed in seeds:
        split, baselines = family.data(seed)
        for width in family.widths:
            torch.manual_seed(seed)
            initial = family.model(width)
            prefix = f"{name}-s{seed}-h{width}"
            floors = {}
            for task in family.kinds:
                path = out / name / SOLO / f"{prefix}-{task}.jsonl"
                train(name, copy.deepcopy(initial), split, {t: float(t == task) for t in family.kinds}, seed, path)
                floors[task] = training_floor(path, task)
            for weight in GRID:
                weights = {t: weight if t == family.grid_task else 1.0 for t in family.kinds}
                path = out / name / f"{prefix}-w{weight:g}.jsonl"
                steps, history, halves = train(name, copy.deepcopy(initial), split, weights, seed, path)
                yield Run(name, seed, weights, str(path), steps, history, baselines, halves=halves, floors=floors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/outside-corpus"))
    parser.add_argument("--seeds", type=int, default=4, help="seeds per family (0 to this less one)")
    parser.add_argument("--families", default=",".join(FAMILIES),
                        help="the families to build (those already in OUT are kept, and relabelled)")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    built: list[Run] = []
    for name in args.families.split(","):
        emptied(args.out / name)
        began = time.perf_counter()
        runs = list(family_runs(name, args.out, list(range(args.seeds))))
        label(runs)
        built += runs
        counts = {kind: sum(r.label == kind for r in runs) for kind in ("healthy", "starved", "all_poor")}
        print(f"{name}: {len(runs)} runs in {time.perf_counter() - began:.0f} s, {counts}", flush=True)
    labels = args.out / "labels.json"
    labels.write_text(json.dumps([asdict(run) for run in merged(labels, built, tuple(FAMILIES), label)], indent=1))


if __name__ == "__main__":
    main()
