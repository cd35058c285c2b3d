"""Measuring gradients: per-layer norms, global statistics, task balance, and :class:`GradientMonitor`.

The measuring functions are cheap by construction: per-layer L2 norms come from one grouped
``torch._foreach_norm`` per (device, dtype) and reach the host in a single transfer, never one ``.item()``
per parameter. The rules that judge the numbers live in :mod:`moola_watch.rules`; this module only
measures, records and reports.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, TypeVar

import numpy as np
import torch
from torch import nn
from torch.utils._foreach_utils import _group_tensors_by_device_and_dtype

if torch.distributed.is_available():
    from torch.distributed.tensor import DTensor as _DTensor
else:  # a torch build without distributed support has no sharded gradients either
    _DTensor = None

from moola import __version__
from moola.utils.monitoring.jsonl_writer import JsonlRecordWriter
from moola_watch import rules, schema
from moola_watch.rules import AlertEvent, CollapseVerdict, MonitoringSummary, Thresholds

PREFIX = "[PHASE 4]"
_T = TypeVar("_T")


# ------------------------------------------------------------------------------------------ measuring


def _group_norms(members: list[torch.Tensor], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Norms of same-(device, dtype) tensors as a float64 vector on ``device``: one ``_foreach_norm``, or one
    norm each for what the foreach kernel cannot take (sparse tensors, exotic devices)."""
    # Low-precision gradients are reduced in float32 so the norm itself keeps its digits.
    wide = torch.float32 if dtype in (torch.float16, torch.bfloat16) else None
    try:
        stacked = torch.stack(torch._foreach_norm(members, 2.0, dtype=wide))
    except (NotImplementedError, RuntimeError):
        norms = [torch.linalg.vector_norm(t.coalesce().values() if t.is_sparse else t) for t in members]
        stacked = torch.stack([_full(norm) for norm in norms])
    # Sharded gradients (FSDP2, DTensor) give per-shard partial norms: one reduction over the shard group
    # makes them the norms of the full gradients. Every rank must take part, as in any collective.
    return _full(stacked).to(device=device, dtype=torch.float64)


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's global value (a collective over its mesh); any other tensor as it is."""
    return tensor.full_tensor() if _DTensor is not None and isinstance(tensor, _DTensor) else tensor


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) of the initialised default process group, (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def rank_log_path(path: str | Path, rank: int) -> Path:
    """``runs/a.jsonl`` -> ``runs/a.rank1.jsonl``: one file per writer, never two writers in one file."""
    path = Path(path)
    return path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


@torch.no_grad()
def _norms_on_device(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """L2 norm of each tensor as one float64 vector on the first tensor's device, without a host sync:
    one ``_foreach_norm`` per (device, dtype) group, as ``clip_grad_norm_`` does."""
    first_device = tensors[0].device
    groups = _group_tensors_by_device_and_dtype([list(tensors)], with_indices=True)
    parts = [
        (_group_norms(members, dtype, first_device), indices)
        for (_device, dtype), ([members], indices) in groups.items()
    ]
    if len(parts) == 1:
        return parts[0][0]  # one group keeps the input order
    out = torch.empty(len(tensors), dtype=torch.float64, device=first_device)
    for values, indices in parts:
        out.index_copy_(0, torch.tensor(indices, device=first_device), values)
    return out


def _layer_norms(named: Sequence[tuple[str, nn.Parameter]]) -> dict[str, float]:
    names, grads = [], []
    for name, parameter in named:
        if parameter.grad is not None:
            names.append(name)
            grads.append(parameter.grad)
    if not grads:
        return {}
    return dict(zip(names, _norms_on_device(grads).tolist(), strict=True))  # the one host transfer


class _NormPlan:
    """A model's parameters grouped once by (device, dtype). A gradient always has its parameter's device and
    dtype, so while every parameter has one, each step needs no grouping and no module-tree walk."""

    def __init__(self, named: list[tuple[str, nn.Parameter]]) -> None:
        self.named = named
        self.names = [name for name, _ in named]
        self.params = [p for _, p in named]
        groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for index, p in enumerate(self.params):
            groups.setdefault((p.device, p.dtype), []).append(index)
        self.groups = list(groups.items())
        self.device = self.params[0].device if self.params else torch.device("cpu")

    @torch.no_grad()
    def norms(self) -> dict[str, float]:
        grads = [p.grad for p in self.params]
        if not grads or any(g is None for g in grads):
            return _layer_norms(self.named)  # some gradients missing: group what is there
        if len(self.groups) == 1:
            values = _group_norms(grads, self.groups[0][0][1], self.device)
        else:
            values = _norms_on_device(grads)
        return dict(zip(self.names, values.tolist(), strict=True))  # the one host transfer


def compute_layer_gradient_norms(model: nn.Module) -> dict[str, float]:
    """L2 norm of each parameter's gradient, keyed by parameter name (parameters without a gradient are
    left out). One device-to-host transfer for the whole model."""
    return _layer_norms(list(model.named_parameters()))


def gradient_statistics_from_norms(layer_norms: dict[str, float]) -> dict[str, Any]:
    """The ``grad_stats`` body for given per-layer norms: the total norm (L2 over all gradients, NaN/inf
    if any layer is), mean/std/min/max over the finite layer norms, and the non-finite layers."""
    norms = np.fromiter(layer_norms.values(), dtype=np.float64, count=len(layer_norms))
    finite_mask = np.isfinite(norms)
    finite = norms[finite_mask]
    bad = [] if finite_mask.all() else [name for name, ok in zip(layer_norms, finite_mask, strict=True) if not ok]
    # Not np.dot for the sum of squares: BLAS threads would fight torch's for the cores.
    total = (math.nan if np.isnan(norms).any() else math.inf) if bad else math.sqrt(float(np.square(norms).sum()))
    if finite.size:
        mean, std, low, high = (float(v) for v in (finite.mean(), finite.std(), finite.min(), finite.max()))
    else:
        mean = std = low = high = math.nan
    return {
        "layer_norms": layer_norms,
        "total_norm": total,
        "mean_norm": mean,
        "std_norm": std,
        "min_norm": low,
        "max_norm": high,
        "nonfinite_count": len(bad),
        "nonfinite_layers": bad,
    }


def compute_gradient_statistics(model: nn.Module) -> dict[str, Any]:
    """Per-layer gradient norms and their statistics (see :func:`gradient_statistics_from_norms`)."""
    return gradient_statistics_from_norms(compute_layer_gradient_norms(model))


def detect_vanishing_gradients(layer_norms: dict[str, float], threshold: float = 1e-7) -> list[str]:
    """Layers whose gradient L2 norm is below ``threshold``."""
    return rules.vanishing_layers(layer_norms, threshold)


def detect_exploding_gradients(layer_norms: dict[str, float], threshold: float = 10.0) -> list[str]:
    """Layers whose gradient L2 norm is above ``threshold`` (finite; NaN/inf are reported separately)."""
    return rules.exploding_layers(layer_norms, threshold)


@dataclass(frozen=True)
class TaskGradients:
    """Task balance over a shared scope, for any number of named tasks.

    ``norms`` are the gradient norms of the weighted losses as they enter the total (``beta *
    pointer_loss``, ``alpha * type_loss``), ``raw_norms`` of the unweighted ones; ``cosines`` holds every pair
    (``"a|b"``, absent where a gradient is zero); ``shares`` is each task's part of the update, ``g_i . g /
    |g|^2`` from the Gram matrix of the weighted task gradients (they sum to 1; a negative share pulls
    against the rest). ``ratio`` and ``cosine`` are the spec's pointer/type figures, None without those two
    tasks. ``float(result)`` is the ratio."""

    ratio: float | None
    norms: dict[str, float]
    raw_norms: dict[str, float]
    cosine: float | None
    scope: str
    losses: dict[str, float]  # the unweighted task losses of the batch
    cosines: dict[str, float]
    shares: dict[str, float]

    def __float__(self) -> float:
        return math.nan if self.ratio is None else self.ratio


def parameters_reached(loss: torch.Tensor, parameters: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    """The parameters among ``parameters`` that ``loss`` backpropagates into (a walk of its graph)."""
    wanted = {id(p): p for p in parameters}
    reached: dict[int, nn.Parameter] = {}
    seen: set[int] = set()
    stack = [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if variable is not None and id(variable) in wanted:
            reached[id(variable)] = wanted[id(variable)]
        stack.extend(next_node for next_node, _ in node.next_functions)
    return [p for p in wanted.values() if id(p) in reached]


def shared_parameters_of(model: nn.Module, *losses: torch.Tensor) -> list[nn.Parameter]:
    """Parameters every task loss reaches: ``model.shared_parameters()`` if it declares them, else found by
    walking each loss's graph."""
    declared = getattr(model, "shared_parameters", None)
    if callable(declared):
        return [p for p in declared() if p.requires_grad]
    shared = [p for p in model.parameters() if p.requires_grad]
    for loss in losses:
        shared = parameters_reached(loss, shared)
    return shared


def _balance(
    task_grads: Mapping[str, Sequence[torch.Tensor | None]],
    like: Sequence[torch.Tensor],
    losses: Mapping[str, torch.Tensor],
    weights: Mapping[str, float],
    scope: str,
) -> TaskGradients:
    """Task balance from each task's unweighted gradients over the same tensors ``like``: one Gram matrix,
    one host transfer."""

    def flat(grads: Sequence[torch.Tensor | None]) -> torch.Tensor:
        pieces = [(g if g is not None else torch.zeros_like(t)).reshape(-1) for g, t in zip(grads, like, strict=True)]
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)

    names = list(task_grads)
    count = len(names)
    flats = torch.stack([flat(task_grads[name]).double() for name in names])
    gram = flats @ flats.T
    loss_values = torch.stack([losses[name].detach().to(gram.device, torch.float64) for name in names])
    values = torch.cat([gram.reshape(-1), loss_values]).tolist()  # the one host transfer
    raw_gram = [values[row * count : (row + 1) * count] for row in range(count)]
    raw = [math.sqrt(max(raw_gram[i][i], 0.0)) for i in range(count)]
    weight = [weights[name] for name in names]
    cosines = {}
    for i in range(count):
        for j in range(i + 1, count):
            if raw[i] > 0 and raw[j] > 0:
                cosines[f"{names[i]}|{names[j]}"] = max(-1.0, min(1.0, raw_gram[i][j] / (raw[i] * raw[j])))
    weighted = [[weight[i] * weight[j] * raw_gram[i][j] for j in range(count)] for i in range(count)]
    total = math.fsum(math.fsum(row) for row in weighted)
    shares = {name: (math.fsum(weighted[i]) / total if total > 0 else math.nan) for i, name in enumerate(names)}
    norms = {name: abs(weight[i]) * raw[i] for i, name in enumerate(names)}
    ratio = cosine = None
    if "pointer" in norms and "type" in norms:
        pointer_norm, type_norm = norms["pointer"], norms["type"]
        # Zero type gradient: the pointer task is all there is (inf), or neither task moves (NaN).
        ratio = pointer_norm / type_norm if type_norm > 0 else (math.inf if pointer_norm > 0 else math.nan)
        cosine = cosines.get("pointer|type", cosines.get("type|pointer"))
    return TaskGradients(
        ratio=ratio,
        norms=norms,
        raw_norms=dict(zip(names, raw, strict=True)),
        cosine=cosine,
        scope=scope,
        losses=dict(zip(names, values[count * count :], strict=True)),
        cosines=cosines,
        shares=shares,
    )


def _shared_scope(shared: Sequence[nn.Parameter]) -> str:
    return f"shared parameters ({sum(p.numel() for p in shared)} values in {len(shared)} tensors)"


def _resolve_shared(
    model: nn.Module, losses: Sequence[torch.Tensor], given: Sequence[nn.Parameter] | None
) -> list[nn.Parameter]:
    shared = list(given) if given is not None else shared_parameters_of(model, *losses)
    if not shared:
        raise ValueError("the task losses share no trainable parameters")
    return shared


def compute_task_balance(
    losses: Mapping[str, torch.Tensor],
    model: nn.Module,
    *,
    weights: Mapping[str, float] | None = None,
    shared_parameters: Sequence[nn.Parameter] | None = None,
    representation: torch.Tensor | None = None,
) -> TaskGradients:
    """Balance of any number of named tasks (``weights``: each loss's weight in the total, default 1), on the
    parameters every loss reaches or at ``representation``; graph and ``.grad`` untouched, one transfer."""
    weights = {name: 1.0 for name in losses} if weights is None else dict(weights)
    if representation is not None:
        targets: list[torch.Tensor] = [representation]
        scope = f"shared representation {tuple(representation.shape)}"
    else:
        targets = _resolve_shared(model, list(losses.values()), shared_parameters)
        scope = _shared_scope(targets)
    grads = {
        name: torch.autograd.grad(loss, targets, retain_graph=True, allow_unused=True) for name, loss in losses.items()
    }
    return _balance(grads, targets, losses, weights, scope)


def compute_task_gradient_ratio(
    pointer_loss: torch.Tensor,
    type_loss: torch.Tensor,
    model: nn.Module,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    shared_parameters: Sequence[nn.Parameter] | None = None,
    representation: torch.Tensor | None = None,
) -> TaskGradients:
    """Pointer/type gradient-norm ratio for the weighted losses ``beta * pointer_loss`` and
    ``alpha * type_loss``, on the shared parameters or, when ``representation`` (the shared encoder's output
    tensor of this forward pass) is given, on that representation: the cheap scope, a backward through the
    heads only, that can run every step.

    Uses ``torch.autograd.grad(..., retain_graph=True)``: parameters' ``.grad`` are not touched and the caller
    still calls ``backward()`` on the total loss. One host transfer. ``float(result)`` is the ratio; it is
    ``inf`` when the type gradient is zero and NaN when both are.
    """
    return compute_task_balance(
        {"pointer": pointer_loss, "type": type_loss},
        model,
        weights={"pointer": beta, "type": alpha},
        shared_parameters=shared_parameters,
        representation=representation,
    )


def backward_with_task_balance(
    pointer_loss: torch.Tensor,
    type_loss: torch.Tensor,
    model: nn.Module,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    shared_parameters: Sequence[nn.Parameter] | None = None,
) -> TaskGradients:
    """The step's backward and the shared-parameter task balance from the same two passes.

    Fills every parameter's ``.grad`` (accumulating, as ``backward()`` does) with the gradient of
    ``alpha * type_loss + beta * pointer_loss``, computed as ``alpha * g_type + beta * g_pointer`` from one
    backward pass per task; the balance is read off the shared part of those gradients. Two passes instead
    of the three that measuring first and then calling ``backward()`` takes. The graph is freed: do not call
    ``backward()`` afterwards.
    """
    shared = _resolve_shared(model, [pointer_loss, type_loss], shared_parameters)
    params = [p for p in model.parameters() if p.requires_grad]
    type_grads = torch.autograd.grad(type_loss, params, retain_graph=True, allow_unused=True)
    pointer_grads = torch.autograd.grad(pointer_loss, params, allow_unused=True)
    with torch.no_grad():
        for p, type_grad, pointer_grad in zip(params, type_grads, pointer_grads, strict=True):
            parts = [g * w for g, w in ((type_grad, alpha), (pointer_grad, beta)) if g is not None]
            if not parts:
                continue
            step_grad = parts[0] if len(parts) == 1 else parts[0].add_(parts[1])
            p.grad = step_grad if p.grad is None else p.grad.add_(step_grad)
    where = {id(p): i for i, p in enumerate(params)}
    index = [where[id(p)] for p in shared]
    return _balance(
        {"pointer": [pointer_grads[i] for i in index], "type": [type_grads[i] for i in index]},
        shared,
        {"pointer": pointer_loss, "type": type_loss},
        {"pointer": beta, "type": alpha},
        _shared_scope(shared),
    )


class RepresentationTap:
    """The cheap scope, free to run every step: each task's gradient at the shared representation, read off
    the step's own ``backward()`` by tensor hooks.

    Feed ``tap.input("type")`` to the type head and ``tap.input("pointer")`` to the pointer head instead of the
    representation itself: they are views of it, one per task, so each task's gradient arrives at its own
    view. After ``(alpha * type_loss + beta * pointer_loss).backward()``, :meth:`balance` gives the ratio.
    """

    def __init__(self, representation: torch.Tensor) -> None:
        self.representation = representation
        self._inputs: dict[str, torch.Tensor] = {}
        self._grads: dict[str, torch.Tensor] = {}

    def input(self, task: str) -> torch.Tensor:
        if task not in self._inputs:
            view = self.representation.view_as(self.representation)
            view.register_hook(lambda grad, task=task: self._grads.__setitem__(task, grad))
            self._inputs[task] = view
        return self._inputs[task]

    def balance(
        self, pointer_loss: torch.Tensor, type_loss: torch.Tensor, *, alpha: float = 1.0, beta: float = 1.0
    ) -> TaskGradients:
        """The balance after ``backward()``; the hooks saw the weighted gradients, so they are unweighted here
        (a task with weight 0 contributes nothing and reads as a zero gradient)."""

        def raw(task: str, weight: float) -> torch.Tensor | None:
            grad = self._grads.get(task)
            if grad is None or weight == 0:
                return None
            return grad if weight == 1 else grad / weight

        return _balance(
            {"pointer": [raw("pointer", beta)], "type": [raw("type", alpha)]},
            [self.representation],
            {"pointer": pointer_loss, "type": type_loss},
            {"pointer": beta, "type": alpha},
            f"shared representation {tuple(self.representation.shape)}",
        )


def detect_task_collapse(
    task_grad_ratios: Sequence[float], window_size: int = 10, collapse_threshold: float = 5.0
) -> CollapseVerdict:
    """The spec's sliding-window check: the mean of the last ``window_size`` pointer/type ratios above
    ``collapse_threshold`` means the pointer task dominates, below ``1 / collapse_threshold`` the type task
    does. Fewer than ``window_size`` ratios give ``state == "not_enough_data"``."""
    low = 1.0 / collapse_threshold
    defaults = Thresholds()
    th = Thresholds(
        window=window_size,
        collapse_high=collapse_threshold,
        collapse_low=low,
        balance_high=min(defaults.balance_high, collapse_threshold),
        balance_low=max(min(defaults.balance_low, collapse_threshold), low),
    )
    return rules.collapse_verdict(task_grad_ratios, th)


# ------------------------------------------------------------------------------------------ monitoring


def _echo_to_stdout(text: str) -> None:
    print(text, flush=True)


class GradientMonitor:
    """Measures gradients during training, judges them with :mod:`moola_watch.rules`, prints the spec's
    console lines and appends JSONL records.

    Call :meth:`update` after ``backward()`` and before ``optimizer.step()``: it measures on the first call
    of every ``log_frequency``-th epoch and is a no-op otherwise. :meth:`record_task_balance` measures the
    task ratio; :meth:`log_epoch` records epoch metrics; :meth:`close` (or leaving a ``with`` block) writes
    ``run_end``. Writing problems produce one warning and never interrupt training.
    """

    def __init__(
        self,
        log_frequency: int = 10,
        *,
        log_path: str | Path | None = None,
        stream: BinaryIO | None = None,
        thresholds: Thresholds | None = None,
        task_balance_frequency: int = 5,
        run_id: str | None = None,
        echo: Callable[[str], None] | None = _echo_to_stdout,
        warn: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        per_rank: bool = False,
    ) -> None:
        if log_frequency < 1 or task_balance_frequency < 1:
            raise ValueError("log_frequency and task_balance_frequency must be at least 1")
        # Under torch.distributed every rank measures (sharded norms need every rank in the reduction), but
        # only rank 0 writes and prints, its gradients being the all-reduced ones; per_rank=True gives each
        # rank its own file, named and marked with the rank.
        self.rank, self.world_size = distributed_rank()
        self.per_rank = per_rank
        if self.rank != 0 and not per_rank:
            log_path = stream = echo = warn = None
        elif per_rank and log_path is not None:
            log_path = rank_log_path(log_path, self.rank)
        self.log_frequency = log_frequency
        self.task_balance_frequency = task_balance_frequency
        self.thresholds = thresholds or Thresholds()
        self.run_id = run_id or f"run-{time.strftime('%Y%m%d-%H%M%S')}-{id(self) % 10000:04d}"
        self.engine = rules.RuleEngine(self.thresholds)
        self._echo = echo or (lambda _text: None)
        self._warn = warn or self._echo
        self._clock = clock
        self._writer = (
            JsonlRecordWriter(log_path if stream is None else stream, warn=self._warn)
            if log_path is not None or stream is not None
            else None
        )
        self._last_logged_epoch: int | None = None
        self._started = False
        self._closed = False
        self._failed: set[str] = set()  # measurements that failed once (and were warned about)
        self.optimizer_steps: int | None = None  # counted once watch_optimizer() is called
        self._plan_for: nn.Module | None = None
        self._norm_plan = _NormPlan([])
        self.history: list[dict[str, Any]] = []  # the grad_stats bodies measured, in order
        self.task_ratios: list[float] = []

    @property
    def log_path(self) -> Path | None:
        return self._writer.path if self._writer else None

    # -------------------------------------------------------------- records

    def _emit(self, kind: str, **fields: Any) -> schema.Record:
        if self.per_rank:
            fields["rank"] = self.rank
        record = schema.make_record(kind, self.run_id, self._clock(), **fields)
        events = self.engine.observe(record)
        if self._writer:
            self._writer.write(record)
        self._report(events, record)
        return record

    def _report(self, events: list[AlertEvent], cause: schema.Record) -> None:
        for event in events:
            alert = event.alert
            if alert.state == rules.PENDING:
                continue
            if self._writer and cause["kind"] != schema.RUN_END:  # run_end is the last record and says it all
                self._writer.write(
                    schema.make_record(
                        schema.ALERT,
                        self.run_id,
                        self._clock(),
                        epoch=cause.get("epoch"),
                        step=cause.get("step"),
                        rule=alert.rule,
                        severity=alert.severity,
                        state=alert.state,
                        subject=alert.subject,
                        value=alert.value,
                        message=alert.message,
                        recommendation=alert.recommendation,
                    )
                )
            if alert.rule == rules.IMBALANCE:
                continue  # the per-sample balance line already says it, in the spec's words
            if alert.state == rules.FIRING:
                self._echo(f"{PREFIX} {alert.message}\n  Recommendation: {alert.recommendation}")
            else:
                self._echo(f"{PREFIX} Resolved ({alert.rule}): {alert.message}")

    def start(self, model: nn.Module, *, model_name: str | None = None, config: dict[str, Any] | None = None) -> None:
        """Write ``run_start`` (called by the first :meth:`update` if not called before)."""
        if self._started:
            return
        self._started = True
        names = [name for name, p in model.named_parameters() if p.requires_grad]
        self._emit(
            schema.RUN_START,
            model=model_name or type(model).__name__,
            parameters=names,
            parameter_count=sum(p.numel() for p in model.parameters() if p.requires_grad),
            config=config or {},
            thresholds=self.thresholds.to_dict(),
            log_frequency=self.log_frequency,
            task_balance_frequency=self.task_balance_frequency,
            versions={"torch": torch.__version__, "moola": __version__, "schema": schema.SCHEMA_VERSION},
            host=socket.gethostname(),
            pid=os.getpid(),
            rank=self.rank,
            world_size=self.world_size,
        )

    def should_log(self, epoch: int) -> bool:
        """True on the first call of every ``log_frequency``-th epoch."""
        return epoch % self.log_frequency == 0 and epoch != self._last_logged_epoch

    def should_check_balance(self, epoch: int) -> bool:
        return epoch % self.task_balance_frequency == 0

    def update(
        self, epoch: int, model: nn.Module, step: int | None = None, *, scaler: torch.amp.GradScaler | None = None
    ) -> dict[str, Any] | None:
        """Measure the gradients now in ``model`` if this epoch is due; return the ``grad_stats`` body.

        ``step`` defaults to the optimizer steps counted by :meth:`watch_optimizer`. With mixed precision pass
        the ``scaler`` and call this after ``scaler.unscale_(optimizer)`` (as for gradient clipping): the
        norms are then the true ones, the scale is recorded, and an inf is recorded as the scaler's overflow
        (a skipped step) rather than a model fault.
        """
        if not self.should_log(epoch):
            return None
        self._last_logged_epoch = epoch
        if step is None:
            step = self.optimizer_steps
        return self._guarded("gradient statistics", lambda: self._update(epoch, model, step, scaler))

    def watch_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Count ``optimizer``'s steps (a hook after each ``step()``), so that records carry optimizer steps:
        with gradient accumulation that is one per accumulated batch, and a step a GradScaler skips is not one."""

        def counted(_optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
            self.optimizer_steps = (self.optimizer_steps or 0) + 1

        self.optimizer_steps = self.optimizer_steps or 0
        optimizer.register_step_post_hook(counted)

    def _guarded(self, what: str, measure: Callable[[], _T]) -> _T | None:
        """Run a measurement; a failure is one warning per kind of measurement, never a crashed run."""
        try:
            return measure()
        except Exception as exc:  # monitoring must never take training down
            if what not in self._failed:
                self._failed.add(what)
                self._warn(f"WARNING: {what} could not be measured ({type(exc).__name__}: {exc}); training continues")
            return None

    def _plan(self, model: nn.Module) -> _NormPlan:
        """The model's trainable parameters, listed and grouped once: walking the module tree and grouping
        every step would cost more than the norms of a thousand small tensors."""
        if self._plan_for is not model:
            self._plan_for = model
            # Every parameter, frozen ones too: one unfrozen later is then measured from its first gradient.
            self._norm_plan = _NormPlan(list(model.named_parameters()))
        return self._norm_plan

    def _update(
        self, epoch: int, model: nn.Module, step: int | None, scaler: torch.amp.GradScaler | None
    ) -> dict[str, Any]:
        self.start(model)
        began = time.perf_counter()
        norms = self._plan(model).norms()
        if not norms:
            raise ValueError("no parameter has a gradient yet: call update() after backward()")
        stats = gradient_statistics_from_norms(norms)
        overflow = False
        if scaler is not None and scaler.is_enabled():
            overflow = stats["nonfinite_count"] > 0
            stats["amp"] = {"scale": scaler.get_scale(), "overflow": overflow}
        stats["cost_ms"] = (time.perf_counter() - began) * 1e3
        self.history.append(stats)
        lines = [
            f"Epoch {epoch} Gradient Stats:",
            f"  Mean norm: {stats['mean_norm']:.4f}",
            f"  Max norm:  {stats['max_norm']:.4f}",
        ]
        flags = rules.flag_layers(stats["layer_norms"], self.thresholds)
        nonfinite_label = "AMP: GradScaler overflow (step skipped)" if overflow else "CRITICAL: Non-finite gradients"
        for label, layers in (
            ("WARNING: Vanishing gradients", flags.vanishing),
            ("WARNING: Exploding gradients", flags.exploding),
            (nonfinite_label, flags.nonfinite),
        ):
            if layers:
                lines.append(f"  {label} in {len(layers)} layers")
        self._echo("\n" + "\n".join(lines))
        self._emit(schema.GRAD_STATS, epoch=epoch, step=step, **stats)
        return stats

    def record_task_balance(
        self,
        epoch: int,
        model: nn.Module,
        pointer_loss: torch.Tensor,
        type_loss: torch.Tensor,
        *,
        alpha: float = 1.0,
        beta: float = 1.0,
        step: int | None = None,
        shared_parameters: Sequence[nn.Parameter] | None = None,
        representation: torch.Tensor | None = None,
    ) -> TaskGradients | None:
        """Measure the task ratio on this batch's graph (left intact), print and record it; see
        :func:`compute_task_gradient_ratio` for ``representation``. None (after one warning) if it cannot be
        measured, e.g. when the two losses share no parameters."""
        return self.record_tasks_balance(
            epoch,
            model,
            {"pointer": pointer_loss, "type": type_loss},
            weights={"pointer": beta, "type": alpha},
            step=step,
            shared_parameters=shared_parameters,
            representation=representation,
        )

    def backward_with_task_balance(
        self,
        epoch: int,
        model: nn.Module,
        pointer_loss: torch.Tensor,
        type_loss: torch.Tensor,
        *,
        alpha: float = 1.0,
        beta: float = 1.0,
        step: int | None = None,
        shared_parameters: Sequence[nn.Parameter] | None = None,
    ) -> TaskGradients | None:
        """Do this step's backward and record the shared-parameter balance from the same passes (see
        :func:`backward_with_task_balance`). If the balance cannot be measured (one warning), a plain
        ``backward()`` of the total is done instead, so the step always gets its gradients."""
        self.start(model)
        shared = self._guarded(
            "task balance", lambda: _resolve_shared(model, [pointer_loss, type_loss], shared_parameters)
        )
        if shared is None:
            (alpha * type_loss + beta * pointer_loss).backward()
            return None
        balance = backward_with_task_balance(
            pointer_loss, type_loss, model, alpha=alpha, beta=beta, shared_parameters=shared
        )
        self._record_balance(epoch, step, balance, alpha, beta)
        return balance

    def record_balance(
        self, epoch: int, balance: TaskGradients, *, alpha: float = 1.0, beta: float = 1.0, step: int | None = None
    ) -> None:
        """Print and record a balance measured elsewhere (e.g. by a :class:`RepresentationTap`)."""
        self._record_balance(epoch, step, balance, alpha, beta)

    def record_tasks_balance(
        self,
        epoch: int,
        model: nn.Module,
        losses: Mapping[str, torch.Tensor],
        *,
        weights: Mapping[str, float] | None = None,
        step: int | None = None,
        shared_parameters: Sequence[nn.Parameter] | None = None,
        representation: torch.Tensor | None = None,
    ) -> TaskGradients | None:
        """Any number of named tasks (see :func:`compute_task_balance`): norms, pairwise cosines and shares of
        the update are recorded; the watcher alerts on a dominated task."""
        weights = {name: 1.0 for name in losses} if weights is None else dict(weights)

        def measure() -> TaskGradients:
            self.start(model)
            return compute_task_balance(
                losses, model, weights=weights, shared_parameters=shared_parameters, representation=representation
            )

        balance = self._guarded("task balance", measure)
        if balance is not None:
            self._emit_balance(epoch, step, balance, weights)
        return balance

    def _record_balance(self, epoch: int, step: int | None, balance: TaskGradients, alpha: float, beta: float) -> None:
        self._emit_balance(epoch, step, balance, {"pointer": beta, "type": alpha})

    def _emit_balance(self, epoch: int, step: int | None, balance: TaskGradients, weights: dict[str, float]) -> None:
        if balance.ratio is not None:
            self.task_ratios.append(balance.ratio)
            if not math.isnan(balance.ratio):
                self._echo(f"\n{PREFIX} {rules.balance_message(balance.ratio, epoch, self.thresholds)}")
        else:
            parts = ", ".join(f"{t} {balance.norms[t]:.4g} ({balance.shares[t]:.0%})" for t in balance.norms)
            self._echo(f"\n{PREFIX} Task balance at epoch {epoch}: {parts} (gradient norm, share of the update)")
        fields: dict[str, Any] = {"ratio": balance.ratio} if balance.ratio is not None else {}
        self._emit(
            schema.TASK_BALANCE,
            epoch=epoch,
            step=step,
            **fields,
            norms=balance.norms,
            raw_norms=balance.raw_norms,
            cosine=balance.cosine,
            cosines=balance.cosines,
            shares=balance.shares,
            losses=balance.losses,
            weights=weights,
            scope=balance.scope,
        )

    def log_epoch(self, epoch: int, *, step: int | None = None, train_loss: float, **fields: Any) -> None:
        """Record an ``epoch`` record (losses, metrics, lr, duration_s)."""
        self._emit(schema.EPOCH, epoch=epoch, step=step, train_loss=train_loss, **fields)

    def get_summary(self) -> MonitoringSummary:
        return self.engine.summary()

    def close(self, status: str = "completed", error: str | None = None) -> MonitoringSummary:
        """Write ``run_end`` (synced to disk), print the summary block and release the log."""
        summary = self.get_summary()
        if self._closed:
            return summary
        self._closed = True
        if self._started:
            self._emit(schema.RUN_END, status=status, error=error, summary=summary.to_dict())
        summary = self.get_summary()
        self._echo("\n" + "\n".join(summary.lines()))
        if self._writer:
            self._writer.close(sync=True)
        return summary

    def __enter__(self) -> GradientMonitor:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close("completed")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close("interrupted")
        else:
            self.close("failed", error=f"{exc_type.__name__}: {exc}")
