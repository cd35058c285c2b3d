"""EnhancedSimpleLSTM: a dual-task model over OHLC windows, and its training loop with gradient monitoring.

A bidirectional LSTM encoder is shared by two heads: *type* classification (from mean- and max-pooled
encoder states) and *pointer* regression of the expansion's start and end (a soft-argmax over per-bar
scores, so the prediction is a differentiable position in [0, 1] of the window). The training loss is
``alpha * type_loss + beta * pointer_loss`` (see :func:`pointer_loss_fn` for the pointer loss's units).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn
from torch.nn import functional as F

from moola.balancing import LossBalancer
from moola.checkpoints import AlertCheckpointer
from moola.data import N_FEATURES, encode_labels, validate_arrays
from moola.reporting import TrainingReporter
from moola.utils.monitoring.console import LOGGER, PREFIX
from moola.utils.monitoring.distributed import distributed_rank
from moola.utils.monitoring.monitor import GradientMonitor
from moola.utils.monitoring.task_balance import RepresentationTap, TaskGradients
from moola_watch.rules import Thresholds

MODEL_NAME = "enhanced_simple_lstm"


class DualTaskLSTMNet(nn.Module):
    """The network: shared LSTM encoder, type head, optional pointer head."""

    def __init__(
        self,
        n_classes: int,
        *,
        n_features: int = N_FEATURES,
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.1,
        predict_pointers: bool = True,
    ) -> None:
        super().__init__()
        self.encoder = nn.LSTM(
            n_features,
            hidden_size,
            num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        width = hidden_size * (2 if bidirectional else 1)
        self.type_head = nn.Sequential(
            nn.Linear(2 * width, hidden_size), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden_size, n_classes)
        )
        # No bias: a constant added to every bar's score cancels in the softmax, so it could never learn.
        self.pointer_head = nn.Linear(width, 2, bias=False) if predict_pointers else None

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters both heads backpropagate into."""
        return self.encoder.parameters()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (batch, bars, features) -> the shared representation, (batch, bars, width)."""
        states, _ = self.encoder(x)
        return states

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x``: (batch, bars, features) -> type logits (batch, classes) and pointer positions (batch, 2)
        as fractions of the window (start, end), or None without a pointer head."""
        return self.heads(self.encode(x))

    def heads(
        self, states: torch.Tensor, pointer_states: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Both heads on the shared representation (see :meth:`forward`); ``pointer_states``, if given, is
        what the pointer head reads instead (a per-task view, for a :class:`RepresentationTap`)."""
        pooled = torch.cat([states.mean(dim=1), states.amax(dim=1)], dim=1)
        logits = self.type_head(pooled)
        if self.pointer_head is None:
            return logits, None
        pointer_states = states if pointer_states is None else pointer_states
        weights = self.pointer_head(pointer_states).softmax(dim=1)  # (batch, bars, 2): where each pointer sits
        grid = torch.linspace(0.0, 1.0, states.shape[1], device=states.device, dtype=weights.dtype)
        return logits, torch.einsum("btk,t->bk", weights, grid)


def pointer_loss_fn(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Smooth L1 between positions measured in fifths of the window (quadratic within 1% of it).

    In these units an error costs about as much gradient as a misclassification does through the
    cross-entropy, so with alpha = beta = 1 neither task drowns the other at the start of training.
    """
    return F.smooth_l1_loss(predicted * 5.0, target * 5.0, beta=0.05)


def normalize_windows(X: np.ndarray) -> np.ndarray:
    """Prices as percent change from each window's first close, so every window has the same scale."""
    X = np.asarray(X, dtype=np.float32)
    reference = X[:, :1, 3:4]
    reference = np.where(np.abs(reference) > 0, reference, 1.0)
    return (X / reference - 1.0) * 100.0


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` (error if unavailable) or ``auto`` (cuda when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but CUDA is not available here (try --device auto)")
    return torch.device(name)


class EnhancedSimpleLSTM:
    """Estimator around :class:`DualTaskLSTMNet`: ``fit``, ``predict``, ``predict_proba``, ``predict_pointers``."""

    def __init__(
        self,
        *,
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.1,
        predict_pointers: bool = True,
        normalize: bool = True,
        device: str = "cpu",
        seed: int = 0,
    ) -> None:
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.predict_pointers_enabled = predict_pointers
        self.normalize = normalize
        self.device = resolve_device(device)
        self.seed = seed
        self.net: DualTaskLSTMNet | None = None
        self.classes_: np.ndarray | None = None
        self.history: list[dict[str, Any]] = []
        self.monitor: GradientMonitor | None = None

    # ------------------------------------------------------------------ training

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        expansion_start: np.ndarray | None = None,
        expansion_end: np.ndarray | None = None,
        *,
        epochs: int = 30,
        batch_size: int = 32,
        lr: float = 3e-3,
        loss_alpha: float = 1.0,
        loss_beta: float = 1.0,
        grad_clip: float | None = 1.0,
        val_fraction: float = 0.2,
        monitor_gradients: bool = False,
        gradient_log_freq: int = 10,
        task_balance_freq: int = 5,
        balance_scope: str = "shared",
        grad_log: str | Path | None = None,
        thresholds: Thresholds | None = None,
        run_id: str | None = None,
        console: Console | None = None,
        every_n_steps: int | None = None,
        halt_on: str | None = None,
        task_floors: Mapping[str, float] | None = None,
        checkpoint_dir: str | Path | None = None,
        auto_balance: str | None = None,
        per_rank_log: bool = False,
    ) -> EnhancedSimpleLSTM:
        """Train for ``epochs``. With ``monitor_gradients``: gradient statistics every ``gradient_log_freq``
        epochs, task balance every ``task_balance_freq`` epochs (on the epoch's first batch, whose graph is
        reused), epoch records, alerts, and JSONL records appended to ``grad_log`` if given. ``balance_scope``
        is ``shared`` (the shared encoder's parameters; the step's own backward is done from the two task
        passes) or ``representation`` (gradients at the encoder's output: a backward through the heads only).

        ``every_n_steps`` measures by optimizer steps instead (statistics and balance every N steps).
        ``halt_on`` (``critical`` or ``error``) stops training before the step that an alert at or above
        that severity fired on (``self.monitor.halted_by`` says which); ``checkpoint_dir`` keeps
        ``last-good.pt`` (each epoch, until the first non-finite gradient) and saves a checkpoint when a
        collapse or critical alert fires; ``auto_balance`` (``ratio`` or ``gradnorm``, see
        :mod:`moola.balancing`) adjusts the task weights from each balance measurement (under torchrun every
        rank then uses rank 0's). ``per_rank_log``: under torchrun every rank writes its own log
        (``run.rank1.jsonl``, the rank in every record), not only rank 0.
        ``task_floors`` (task -> loss): each task's training loss at the end of a run on it alone, recorded in
        ``run_start`` for the rules (see :class:`~moola.utils.monitoring.GradientMonitor`).

        ``grad_clip`` is the max total gradient norm (None or 0: no clipping); the monitor measures before
        clipping. Raises ``moola.data.DataError`` for unusable arrays.
        """
        validate_arrays(X, y, expansion_start, expansion_end)
        if balance_scope not in ("shared", "representation"):
            raise ValueError(f"balance_scope must be 'shared' or 'representation', got {balance_scope!r}")
        if epochs < 1 or batch_size < 1 or not lr > 0:
            raise ValueError("epochs and batch_size must be at least 1 and lr above 0")
        if (halt_on or checkpoint_dir or auto_balance) and not monitor_gradients:
            raise ValueError("halting, checkpoints on alerts and automatic balancing need gradient monitoring")
        labels, self.classes_ = encode_labels(np.asarray(y))
        multitask = self.predict_pointers_enabled and expansion_start is not None
        console = console or Console()
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)

        inputs = self._prepare(X)
        bars = inputs.shape[1]
        order = rng.permutation(len(labels))
        n_val = round(len(labels) * val_fraction) if len(labels) >= 10 else 0
        rank, world = distributed_rank()
        val_idx, train_idx = order[:n_val], order[n_val:]
        device = self.device
        x_all = torch.as_tensor(inputs, device=device)
        y_all = torch.as_tensor(labels, device=device)
        if multitask:
            assert expansion_start is not None and expansion_end is not None
            pointers = np.stack([expansion_start, expansion_end], axis=1).astype(np.float32) / max(bars - 1, 1)
            p_all = torch.as_tensor(pointers, device=device)
        self.net = DualTaskLSTMNet(
            len(self.classes_),
            n_features=inputs.shape[2],
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            bidirectional=self.bidirectional,
            dropout=self.dropout,
            predict_pointers=multitask,
        ).to(device)
        net = self.net
        optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        config = {
            "lr": lr,
            "batch_size": batch_size,
            "alpha": loss_alpha,
            "beta": loss_beta,
            "epochs": epochs,
            "seed": self.seed,
            "device": str(device),
            "grad_clip": grad_clip or None,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "bars": bars,
            "train_samples": len(train_idx),
            "val_samples": len(val_idx),
            "multitask": multitask,
            "balance_scope": balance_scope,
            "normalize": self.normalize,
            "world_size": world,
        }
        checkpointer = AlertCheckpointer(checkpoint_dir, net, optimizer) if checkpoint_dir else None
        # With monitoring off the monitor is disabled, not absent: its hooks then do only the plain work.
        monitor = GradientMonitor(
            gradient_log_freq,
            every_n_steps=every_n_steps,
            log_path=grad_log,
            thresholds=thresholds,
            task_balance_frequency=task_balance_freq,
            run_id=run_id,
            on_alert=checkpointer,
            halt_on=halt_on,
            task_floors=task_floors,
            enabled=monitor_gradients,
            per_rank=per_rank_log,
        )
        self.monitor = monitor if monitor_gradients else None
        if monitor_gradients:
            every = f"{every_n_steps} steps" if every_n_steps else f"{gradient_log_freq} epochs"
            LOGGER.info(f"{PREFIX} Gradient monitoring enabled (log frequency: {every})")
            if monitor.log_path is not None:
                LOGGER.info(f"{PREFIX} Gradient log: {monitor.log_path}")
        # Under torch.distributed (torchrun): equal shares of the training set per rank, DDP averaging the
        # gradients; the monitor then measures balance before the step's own backward.
        step_net: nn.Module = net
        if world > 1:
            share = len(train_idx) // world
            train_idx = train_idx[rank * share : (rank + 1) * share]
            step_net = nn.parallel.DistributedDataParallel(net)
        generator = torch.Generator().manual_seed(self.seed)
        train_tensor = torch.as_tensor(train_idx)
        balancer = LossBalancer({"type": loss_alpha, "pointer": loss_beta}, method=auto_balance or "ratio")
        tap_scope = balance_scope == "representation" and multitask and world == 1
        reporter = TrainingReporter(console, epochs)
        self.history = []
        with reporter, monitor:
            monitor.on_run_start(net, model_name=MODEL_NAME, config=config)
            for epoch in range(1, epochs + 1):
                began = time.perf_counter()
                net.train()
                monitor.on_epoch_start(epoch)
                sums = torch.zeros(3, dtype=torch.float64, device=device)  # total, type, pointer
                for batch in train_tensor[torch.randperm(len(train_tensor), generator=generator)].split(batch_size):
                    batch = batch.to(device)
                    tap = RepresentationTap(net.encode(x_all[batch])) if tap_scope and monitor.balance_due() else None
                    if tap is not None:
                        logits, positions = net.heads(tap.input("type"), tap.input("pointer"))
                    else:
                        logits, positions = step_net(x_all[batch])
                    losses = {"type": F.cross_entropy(logits, y_all[batch], label_smoothing=0.1)}
                    if positions is not None:
                        losses["pointer"] = pointer_loss_fn(positions, p_all[batch])
                    weights = {name: balancer.weights[name] for name in losses}
                    optimizer.zero_grad(set_to_none=True)
                    if tap is None:
                        balance = monitor.backward(net, losses, weights)
                    else:
                        sum(weights[name] * loss for name, loss in losses.items()).backward()
                        balance = tap.balance(losses, weights)
                        monitor.record_balance(balance)
                    monitor.on_before_optimizer_step(net)
                    if monitor.should_stop:
                        break  # before the step applies what the alert is about
                    if auto_balance:
                        _rebalance(balancer, balance, monitor)
                    if grad_clip:
                        nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
                    optimizer.step()
                    with torch.no_grad():
                        parts = [losses["type"], losses.get("pointer", torch.zeros((), device=device))]
                        total = sum(weights[name] * loss for name, loss in losses.items())
                        sums += torch.stack([total, *parts]).double() * len(batch)
                if monitor.should_stop:
                    break
                train_total, train_type, train_pointer = (sums / len(train_idx)).tolist()
                row = {"epoch": epoch, "train_loss": train_total, "type_loss": train_type}
                if multitask:
                    row["pointer_loss"] = train_pointer
                row.update(
                    self._evaluate(x_all, y_all, p_all if multitask else None, val_idx if n_val else train_idx, bars)
                )
                seconds = time.perf_counter() - began
                self.history.append(row)
                metrics = {k: v for k, v in row.items() if k.startswith(("type_acc", "pointer_err"))}
                monitor.on_epoch_end(
                    epoch,
                    train_loss=train_total,
                    val_loss=row.get("val_loss"),
                    task_losses={"type": train_type, **({"pointer": train_pointer} if multitask else {})},
                    metrics=metrics,
                    lr=optimizer.param_groups[0]["lr"],
                    duration_s=seconds,
                )
                reporter.epoch_done(epoch, _format_metrics(row), seconds)
                if checkpointer is not None:
                    checkpointer.keep(monitor.steps_done, epoch)
        return self

    @torch.no_grad()
    def _evaluate(
        self, x: torch.Tensor, y: torch.Tensor, pointers: torch.Tensor | None, idx: np.ndarray, bars: int
    ) -> dict[str, float]:
        assert self.net is not None
        self.net.eval()
        index = torch.as_tensor(idx, device=x.device)
        logits, positions = self.net(x[index])
        values = [F.cross_entropy(logits, y[index]), (logits.argmax(dim=1) == y[index]).double().mean()]
        if pointers is not None and positions is not None:
            values.append(((positions - pointers[index]).abs() * (bars - 1)).mean())
        numbers = torch.stack([v.double() for v in values]).tolist()
        out = {"val_loss": numbers[0], "type_acc": numbers[1]}
        if len(numbers) > 2:
            out["pointer_err_bars"] = numbers[2]
        return out

    # ------------------------------------------------------------------ inference

    def _prepare(self, X: np.ndarray) -> np.ndarray:
        return normalize_windows(X) if self.normalize else np.asarray(X, dtype=np.float32)

    @torch.no_grad()
    def _forward(self, X: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.net is None:
            raise RuntimeError("call fit() before predicting")
        self.net.eval()
        return self.net(torch.as_tensor(self._prepare(X), device=self.device))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, (samples, classes), columns in the order of ``classes_``."""
        logits, _ = self._forward(X)
        return logits.softmax(dim=1).cpu().numpy()

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The most likely class label of each window."""
        probabilities = self.predict_proba(X)
        assert self.classes_ is not None  # set together with net by fit()
        return self.classes_[probabilities.argmax(axis=1)]

    def predict_pointers(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted expansion start and end bar indices (start <= end)."""
        _, positions = self._forward(X)
        if positions is None:
            raise RuntimeError("this model was trained without pointers (predict_pointers=False or no labels)")
        bars = np.asarray(X).shape[1]
        index = np.rint(positions.cpu().numpy() * (bars - 1)).astype(np.int64)
        start, end = index[:, 0], index[:, 1]
        return np.minimum(start, end), np.maximum(start, end)


def _rebalance(balancer: LossBalancer, balance: TaskGradients | None, monitor: GradientMonitor) -> None:
    """Update the loss weights from this rank's balance measurement, if any, then take rank 0's on every rank
    (a collective, so every step on every rank, measured or not); record the weights when they change."""
    previous = dict(balancer.weights)
    if balance is not None:
        balancer.update(balance)
    balancer.synchronise()
    if balancer.weights != previous:
        monitor.record_weights(balancer.weights, previous=previous, method=balancer.method)


def _format_metrics(row: dict[str, float]) -> str:
    parts = [f"loss {row['train_loss']:.4f}", f"acc {row['type_acc']:.3f}"]
    if "pointer_err_bars" in row:
        parts.append(f"ptr err {row['pointer_err_bars']:.2f} bars")
    if not math.isfinite(row["train_loss"]):
        parts.append("(non-finite loss)")
    return " ".join(parts)
