"""Task balance on a shared scope, for any number of named tasks: each task's gradient on the parameters
every task reaches (or at a shared representation), their norms, pairwise cosines and shares of the update,
from one Gram matrix and one host transfer. Pure measuring: no records, no rules.

The one way in is ``losses: Mapping[str, Tensor]`` with ``weights: Mapping[str, float]`` (each loss's weight
in the total, default 1): names, not argument positions, say which loss is which. A whole-number name (``{0:
loss_a, 1: loss_b}``) is taken as its text (``"0"``, ``"1"``), as it is written in the records; any other name,
and a loss that is not one number (a per-sample loss vector), is refused with a :class:`BalanceUnavailable` that
names the task and says what to pass, before any gradient is computed.

A task that reaches no parameter any other task reaches (a head fed a detached input, by mistake or as a linear
probe) is left out of the balance, which is measured for the others, and named once in a warning of the
``moola`` logger: it takes no part in the competition for the shared parameters that the balance describes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from moola.utils.monitoring.distributed import full_tensor, synchronised_backward_reason

#: Of a shared scope larger than this many values, each task's gradient direction is kept (for the next balance's
#: ``persistence``) on an evenly strided sample of at most this many: the cosine of a sample estimates the whole one's,
#: and the copy costs a few hundred KiB per task whatever the model's size.
DIRECTION_SAMPLE = 65_536
#: Each task's gradient on the shared scope as the last balance measured it (a strided sample of it, see
#: :data:`DIRECTION_SAMPLE`), as float64: what the next balance's ``persistence`` compares with.
Directions = dict[str, torch.Tensor]


class BalanceUnavailable(ValueError):
    """The balance cannot be measured this way; the message says why and what to do."""


#: What to do when a compiled training graph frees its saved tensors during the backward (aot_autograd's donated
#: buffers, on by default): the probe's backward per task must keep the graph for the step's own backward.
DONATED_BUFFERS = (
    "this torch.compile'd model frees what its backward saved (donated buffers), so the graph cannot be kept for "
    "the step's own backward: `import torch._functorch.config` and set torch._functorch.config.donated_buffer = "
    "False before torch.compile, or measure at the shared representation with a RepresentationTap"
)
REENTRANT_CHECKPOINT = (
    "the shared layers are checkpointed with use_reentrant=True, through which torch.autograd.grad cannot "
    "differentiate: checkpoint with use_reentrant=False (the HF Trainer: gradient_checkpointing_kwargs="
    "{'use_reentrant': False}), or measure at the shared representation the heads read (representation=, or a "
    "RepresentationTap), which lies after the checkpointed blocks"
)


@dataclass(frozen=True)
class TaskGradients:
    """Task balance over a shared scope, for any number of named tasks.

    ``norms`` are the gradient norms of the weighted losses as they enter the total (``weight * loss``),
    ``raw_norms`` of the unweighted ones; ``cosines`` holds every pair (``"a|b"``, names in sorted order,
    absent where a gradient is zero); ``shares`` is each task's part of the update, ``g_i . g / |g|^2`` from
    the Gram matrix of the weighted task gradients (they sum to 1; a negative share pulls against the rest).
    ``ratio`` and ``cosine`` are the spec's pointer/type figures, None without those two tasks. ``left_out``
    names the tasks not measured: they reach none of the parameters the others share (``scope`` says so too).
    ``parameters`` are the shared parameters measured on (none for a representation's balance). ``persistence``
    is each task's cosine between its gradient now and at the previous balance on the same parameters (given
    that balance's ``directions``): near 0, a gradient dominated by mini-batch noise (around a minimum the task
    reached, or on noisy labels); near 1, one that keeps asking the same change of the shared parameters (absent
    on a first balance, a changed scope, a zero gradient, or at a representation, whose batches hold different
    samples).
    ``directions`` are what the next balance compares with. ``float(result)`` is the ratio."""

    ratio: float | None
    norms: dict[str, float]
    raw_norms: dict[str, float]
    cosine: float | None
    scope: str
    losses: dict[str, float]  # the unweighted task losses of the batch
    cosines: dict[str, float]
    shares: dict[str, float]
    weights: dict[str, float]
    left_out: tuple[str, ...] = ()
    persistence: dict[str, float] = field(default_factory=dict)
    parameters: tuple[torch.Tensor, ...] = field(default=(), repr=False, compare=False)
    directions: Directions = field(default_factory=dict, repr=False, compare=False)

    def __float__(self) -> float:
        return math.nan if self.ratio is None else self.ratio


#: What joins two task names into one key of a balance record's ``cosines`` ('a|b'), and a column's name.
PAIR_SEPARATOR = "|"


def require_named(losses: object) -> None:
    """Task losses come as a mapping of task name to loss: a list or a tuple says nothing of which is which (a
    weight or an alert could name the wrong task), so it is refused in one line instead of failing deep down; so
    is a name that is blank or holds the separator of a pair's columns."""
    if not isinstance(losses, Mapping):
        raise TypeError(
            f"task losses must be a mapping of task name to loss tensor, such as {{'cls': cls_loss, 'reg': reg_loss}}"
            f", not a {type(losses).__name__}"
        )
    for task in losses:
        if isinstance(task, str) and (not task.strip() or PAIR_SEPARATOR in task):
            raise ValueError(
                f"task name {task!r}: a task's name must be visible text without {PAIR_SEPARATOR!r}, which joins "
                "two names into a cosine's column (an empty one is a blank column; 'a|b' beside 'c' reads as "
                "'a|b|c')"
            )


def task_weights(
    losses: Mapping[str, torch.Tensor], weights: Mapping[str, float | torch.Tensor] | None
) -> dict[str, float]:
    """Each task of ``losses`` with its weight as a number (default 1; a tensor weight, such as a learnable one, by
    its value). A weight for a task without a loss in this batch weighs nothing: a run's weights name every task,
    and a batch may hold only some (labels on a third of the batches, one task a batch)."""
    given = dict(weights or {})
    return {
        name: float(w.detach()) if isinstance(w := given.get(name, 1.0), torch.Tensor) else float(w) for name in losses
    }


def _task_name(name: object) -> str:
    """A task's name as the records hold it: a string, or a whole number's text."""
    if isinstance(name, str):
        return name
    if isinstance(name, int) and not isinstance(name, bool):
        return str(name)
    raise BalanceUnavailable(f"task name {name!r} is a {type(name).__name__}: name each task with a string")


def named_task_losses(
    losses: Mapping[Any, Any], weights: Mapping[Any, Any] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """``losses`` and ``weights`` keyed by text, each loss checked to be a one-number tensor: what a user is told
    (one line naming the task) instead of an error from deep inside the measuring."""
    named: dict[str, torch.Tensor] = {}
    for key, loss in losses.items():
        name = _task_name(key)
        if name in named:
            raise BalanceUnavailable(f"two task losses are named {name!r} (once as text, once as a number)")
        if not isinstance(loss, torch.Tensor):
            raise BalanceUnavailable(f"task loss {name!r} is a {type(loss).__name__}: pass the loss tensor")
        if loss.numel() != 1:
            raise BalanceUnavailable(f"task loss {name!r} has shape {tuple(loss.shape)}: pass a scalar (call .mean())")
        # A one-element loss of shape (1,) is a scalar too (same graph, same gradient); a 0-d one stays itself.
        named[name] = loss if loss.dim() == 0 else loss.reshape(())
    if weights is None:
        return named, None
    return named, {_task_name(key): weight for key, weight in weights.items()}


def _require_graphs(losses: Mapping[str, torch.Tensor]) -> None:
    """Name a task whose loss cannot be differentiated, rather than blame the shared parameters."""
    for name, loss in losses.items():
        if loss.grad_fn is None:
            raise BalanceUnavailable(
                f"the {name!r} loss has no autograd graph (computed under torch.no_grad, detached, or a constant)"
            )


def _reached_leaves(loss: torch.Tensor) -> dict[int, torch.Tensor]:
    """The leaf tensors ``loss`` backpropagates into, by id (a walk of its autograd graph).

    Raises :class:`BalanceUnavailable` through a compiled region (``torch.compile``): its backward is one
    opaque node that seems to reach every input, so which parameters a task really uses cannot be seen."""
    reached: dict[int, torch.Tensor] = {}
    seen: set[int] = set()
    stack = [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if variable is not None:
            reached[id(variable)] = variable
        elif "CompiledFunction" in type(node).__name__:
            raise BalanceUnavailable(
                "the model is compiled (torch.compile): the graph does not show which parameters each task "
                "reaches; pass shared_parameters= (e.g. the encoder's parameters)"
            )
        stack.extend(next_node for next_node, _ in node.next_functions)
    return reached


def parameters_reached(loss: torch.Tensor, parameters: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    """The parameters among ``parameters`` that ``loss`` backpropagates into, in their order."""
    reached = _reached_leaves(loss)
    return [p for p in parameters if id(p) in reached]


def _reached_by_task(model: nn.Module, losses: Mapping[str, torch.Tensor]) -> dict[str, set[int]]:
    """The ids of the trainable parameters each task's loss reaches."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return {name: {id(p) for p in parameters_reached(loss, trainable)} for name, loss in losses.items()}


def _alone(reached: Mapping[str, set[int]]) -> list[str]:
    """The tasks that reach no parameter another task reaches."""
    return [name for name, ids in reached.items() if not any(ids & other for o, other in reached.items() if o != name)]


def _why_unshared(alone: Sequence[str]) -> str:
    """': the X task reaches no parameter another task reaches (...)', or the advice when each shares with some
    other."""
    if not alone:
        return ": no parameter is reached by every task (pass shared_parameters=)"
    tasks = " and ".join(alone)
    return (f": the {tasks} task{'s' if len(alone) > 1 else ''} reach{'' if len(alone) > 1 else 'es'} no parameter "
            "another task reaches (a head fed a detached input?)")  # fmt: skip


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


def resolve_shared(
    model: nn.Module,
    losses: Mapping[str, torch.Tensor],
    given: Sequence[nn.Parameter] | None,
    before: Sequence[nn.Parameter] = (),
) -> tuple[list[nn.Parameter], tuple[str, ...]]:
    """``given``, or the parameters every loss reaches, and the tasks left out of the balance. When no parameter
    is reached by every task, the tasks that reach none another task reaches (a head fed a detached input) are
    left out, with one warning, and the parameters the others all reach are measured, if at least two others
    share some. Else, given the parameters an earlier balance was measured on (``before``), the tasks that
    reach none of them any more are left out and the rest measured on those they reach (even one task: of two
    tasks, the one cut off the shared layers is news, not a reason to stop measuring). Otherwise an error that
    names a task sharing nothing with any other."""
    shared = list(given) if given is not None else shared_parameters_of(model, *losses.values())
    if shared:
        return shared, ()
    reached = _reached_by_task(model, losses)
    alone = _alone(reached)
    rest = [name for name in losses if name not in alone]
    if given is None and alone and len(rest) >= 2:
        shared = shared_parameters_of(model, *(losses[name] for name in rest))
        if shared:
            return shared, tuple(alone)
    earlier = {id(p) for p in before}
    sharing = [name for name in losses if reached[name] & earlier]
    if given is None and sharing and len(sharing) < len(losses):
        measured = [p for p in before if any(id(p) in reached[name] for name in sharing)]
        return measured, tuple(name for name in losses if name not in sharing)
    raise BalanceUnavailable(f"the task losses share no trainable parameters{_why_unshared(alone)}")


def _flat(grads: Sequence[torch.Tensor | None], like: Sequence[torch.Tensor]) -> torch.Tensor:
    """One real vector of a task's gradients over ``like``: missing ones as zeros, sparse ones densified,
    sharded ones gathered, complex ones as (real, imaginary) pairs, so that dot products are the real inner
    product the optimizer sees."""
    pieces = []
    for grad, tensor in zip(grads, like, strict=True):
        if grad is None:
            grad = torch.zeros_like(full_tensor(tensor.detach()))
        grad = full_tensor(grad)
        if grad.is_sparse:
            grad = grad.to_dense()
        if grad.is_complex():
            grad = torch.view_as_real(grad)
        pieces.append(grad.reshape(-1).double())
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def _balance(
    task_grads: Mapping[str, Sequence[torch.Tensor | None]],
    like: Sequence[torch.Tensor],
    losses: Mapping[str, torch.Tensor],
    weights: Mapping[str, float],
    scope: str,
    left_out: tuple[str, ...] = (),
    previous: Directions | None = None,
) -> TaskGradients:
    """Task balance from each task's unweighted gradients over the same tensors ``like`` (the tasks of
    ``task_grads``; ``left_out`` names the others): one Gram matrix, one host transfer. Given the ``previous``
    balance's directions (None: a representation's, which are not compared), each task's ``persistence``."""
    names = list(task_grads)
    count = len(names)
    flats = torch.stack([_flat(task_grads[name], like) for name in names])
    gram = flats @ flats.T
    loss_values = torch.stack([losses[name].detach().real.to(gram.device, torch.float64) for name in names])
    directions = _directions(flats, names) if previous is not None else {}
    compared = [name for name in names if name in (previous or {}) and previous[name].shape == directions[name].shape]
    persisting = _persistence_terms(directions, previous or {}, compared, gram.device)
    values = torch.cat([gram.reshape(-1), loss_values.reshape(-1), persisting]).tolist()  # the one host transfer
    raw_gram = [values[row * count : (row + 1) * count] for row in range(count)]
    raw = [math.sqrt(max(raw_gram[i][i], 0.0)) for i in range(count)]
    weight = [weights[name] for name in names]
    cosines = {}
    for i in range(count):
        for j in range(i + 1, count):
            if raw[i] > 0 and raw[j] > 0:
                pair = PAIR_SEPARATOR.join(sorted((names[i], names[j])))  # one key whatever the losses' order
                cosines[pair] = max(-1.0, min(1.0, raw_gram[i][j] / (raw[i] * raw[j])))
    weighted = [[weight[i] * weight[j] * raw_gram[i][j] for j in range(count)] for i in range(count)]
    total = math.fsum(math.fsum(row) for row in weighted)
    shares = {name: (math.fsum(weighted[i]) / total if total > 0 else math.nan) for i, name in enumerate(names)}
    norms = {name: abs(weight[i]) * raw[i] for i, name in enumerate(names)}
    ratio = cosine = None
    if "pointer" in norms and "type" in norms:
        pointer_norm, type_norm = norms["pointer"], norms["type"]
        # Zero type gradient: the pointer task is all there is (inf), or neither task moves (NaN).
        ratio = pointer_norm / type_norm if type_norm > 0 else (math.inf if pointer_norm > 0 else math.nan)
        cosine = cosines.get("pointer|type")
    return TaskGradients(
        ratio=ratio,
        norms=norms,
        raw_norms=dict(zip(names, raw, strict=True)),
        cosine=cosine,
        scope=scope,
        losses=dict(zip(names, values[count * count : count * count + count], strict=True)),
        cosines=cosines,
        shares=shares,
        weights=dict(zip(names, weight, strict=True)),
        left_out=left_out,
        persistence=_cosines_of(compared, values[count * count + count :]),
        directions=directions,
    )


def _directions(flats: torch.Tensor, names: Sequence[str]) -> Directions:
    """Each task's gradient (a row of ``flats``), or an evenly strided sample of :data:`DIRECTION_SAMPLE` values of
    it, copied: kept until the next balance."""
    stride = max(1, -(-flats.shape[1] // DIRECTION_SAMPLE))
    sample = flats[:, ::stride] if stride > 1 else flats
    return {name: sample[i].clone() for i, name in enumerate(names)}


def _persistence_terms(
    directions: Directions, previous: Directions, compared: Sequence[str], device: torch.device
) -> torch.Tensor:
    """For each task of ``compared``: its direction now dotted with its previous one, and both squared norms."""
    if not compared:
        return torch.zeros(0, dtype=torch.float64, device=device)
    terms = []
    for name in compared:
        now, before = directions[name], previous[name].to(device)
        terms += [now @ before, now @ now, before @ before]
    return torch.stack(terms)


def _cosines_of(compared: Sequence[str], terms: Sequence[float]) -> dict[str, float]:
    """Each task's cosine from its (dot, squared norm now, squared norm before); none where a norm is zero."""
    persistence = {}
    for i, name in enumerate(compared):
        dot, now, before = terms[3 * i : 3 * i + 3]
        if now > 0 and before > 0:
            persistence[name] = max(-1.0, min(1.0, dot / math.sqrt(now * before)))
    return persistence


def _shared_scope(shared: Sequence[torch.Tensor], left_out: Sequence[str] = ()) -> str:
    scope = f"shared parameters ({sum(p.numel() for p in shared)} values in {len(shared)} tensors)"
    return f"{scope}; left out: {', '.join(left_out)} (no gradient on them)" if left_out else scope


def compute_task_balance(
    losses: Mapping[str, torch.Tensor],
    model: nn.Module,
    *,
    weights: Mapping[str, float | torch.Tensor] | None = None,
    shared_parameters: Sequence[nn.Parameter] | None = None,
    representation: torch.Tensor | None = None,
    before: Sequence[nn.Parameter] = (),
    previous: Directions | None = None,
) -> TaskGradients:
    """Balance of any number of named tasks on the parameters every loss reaches (or ``shared_parameters``),
    or at ``representation`` (the shared encoder's output of this forward: a backward through the heads only).
    ``before``: the parameters an earlier balance of the run was measured on (see :func:`resolve_shared`);
    ``previous``: that balance's ``directions``, for each task's ``persistence`` on the same parameters.

    Uses ``torch.autograd.grad(..., retain_graph=True)``: the graph, ``.grad`` and any gradient
    synchronisation are untouched, so it is safe under DDP, FSDP, accelerate and a GradScaler; the caller still
    does the step's backward. One host transfer. Task names and losses are checked first (see
    :func:`named_task_losses`)."""
    losses, weights = named_task_losses(losses, weights)
    weights = task_weights(losses, weights)
    _require_graphs(losses)
    left_out: tuple[str, ...] = ()
    if representation is not None:
        targets: list[torch.Tensor] = [representation]
        scope = f"shared representation {tuple(representation.shape)}"
    else:
        targets, left_out = resolve_shared(model, losses, shared_parameters, before)
        scope = _shared_scope(targets, left_out)
    measured = {name: loss for name, loss in losses.items() if name not in left_out}
    try:
        grads = {
            name: torch.autograd.grad(loss, targets, retain_graph=True, allow_unused=True)
            for name, loss in measured.items()
        }
    except RuntimeError as exc:
        if "donated buffer" in str(exc):
            raise BalanceUnavailable(DONATED_BUFFERS) from None
        if "use_reentrant=True" in str(exc):
            raise BalanceUnavailable(REENTRANT_CHECKPOINT) from None
        raise
    if representation is not None:
        return _balance(grads, targets, measured, weights, scope, left_out)
    same_scope = previous is not None and [id(p) for p in before] == [id(p) for p in targets]
    balance = _balance(grads, targets, measured, weights, scope, left_out, previous if same_scope else {})
    return replace(balance, parameters=tuple(targets))


class FusedBackward:
    """The step's backward and the task balance from the same passes: one backward per task instead of the
    one per task plus one that measuring first and then calling ``backward()`` takes.

    Its gradient is the plain backward's only up to floating-point rounding, and only where the backward is
    linear in its incoming gradient: a clamping hook or custom autograd function runs once per task instead
    of once on the total. :class:`~moola.utils.monitoring.GradientMonitor` therefore never uses it; it is here
    for loops that want the cheaper probe and know their backward is plain.

    Constructing it computes each task's gradients (nothing is written, the graph is kept); :meth:`apply` then
    fills the ``.grad`` of every leaf the losses reach (model parameters and any other, such as a loss's own
    learnable weights), accumulating as ``backward()`` does, with the gradient of ``sum(weight * loss)``; do
    not call ``backward()`` as well. Raises :class:`BalanceUnavailable` where that would not be the step's real
    backward (see :func:`~moola.utils.monitoring.distributed.synchronised_backward_reason`): measure with
    :func:`compute_task_balance` and call ``backward()`` then.
    """

    def __init__(
        self,
        losses: Mapping[str, torch.Tensor],
        model: nn.Module,
        weights: Mapping[str, float] | None = None,
        shared_parameters: Sequence[nn.Parameter] | None = None,
    ) -> None:
        losses, named_weights = named_task_losses(losses, weights)
        self.losses = losses
        self.weights = task_weights(losses, named_weights)
        self.shared, self.left_out = resolve_shared(model, losses, shared_parameters)
        leaves: dict[int, torch.Tensor] = {}
        for loss in losses.values():
            leaves.update((key, t) for key, t in _reached_leaves(loss).items() if t.requires_grad)
        self.leaves = list(leaves.values())
        reason = synchronised_backward_reason(self.leaves)
        if reason is not None:
            raise BalanceUnavailable(
                f"{reason}: measuring the task balance before the backward instead (one more pass per task)"
            )
        # retain_graph throughout: should anything fail before apply(), the caller can still call backward().
        self.grads = {
            name: torch.autograd.grad(loss, self.leaves, retain_graph=True, allow_unused=True)
            for name, loss in losses.items()
        }

    @torch.no_grad()
    def apply(self) -> None:
        """Accumulate ``sum(weight * task gradient)`` into each leaf's ``.grad``, as ``backward()`` would."""
        for index, leaf in enumerate(self.leaves):
            parts = [
                grads[index] * self.weights[name] for name, grads in self.grads.items() if grads[index] is not None
            ]
            if not parts:
                continue
            step_grad = parts[0]
            for part in parts[1:]:
                step_grad = step_grad + part
            if leaf.grad is None:
                leaf.grad = step_grad
            else:
                leaf.grad.add_(step_grad)

    def balance(self) -> TaskGradients:
        """The balance on the shared parameters, from the passes already made."""
        where = {id(leaf): i for i, leaf in enumerate(self.leaves)}
        return _balance(
            {
                name: [grads[where[id(p)]] if id(p) in where else None for p in self.shared]
                for name, grads in self.grads.items()
                if name not in self.left_out
            },
            self.shared,
            {name: loss for name, loss in self.losses.items() if name not in self.left_out},
            self.weights,
            _shared_scope(self.shared, self.left_out),
            self.left_out,
        )


def backward_with_task_balance(
    losses: Mapping[str, torch.Tensor],
    model: nn.Module,
    *,
    weights: Mapping[str, float] | None = None,
    shared_parameters: Sequence[nn.Parameter] | None = None,
) -> TaskGradients:
    """Fill ``.grad`` as ``sum(weight * loss).backward()`` would and return the task balance, from one pass per
    task (see :class:`FusedBackward`, whose :class:`BalanceUnavailable` it raises before touching anything)."""
    fused = FusedBackward(losses, model, weights, shared_parameters)
    fused.apply()
    return fused.balance()


class RepresentationTap:
    """The cheap scope, free to run every step: each task's gradient at the shared representation, read off
    the step's own ``backward()`` by tensor hooks (so it is safe wherever ``backward()`` is: DDP, accelerate).

    Feed ``tap.input(task)`` to each task's head instead of the representation itself: they are views of
    it, one per task, so each task's gradient arrives at its own view. After the backward of
    ``sum(weight * loss)``, :meth:`balance` gives the balance.
    """

    def __init__(self, representation: torch.Tensor) -> None:
        self.representation = representation
        self._inputs: dict[str, torch.Tensor] = {}
        self._grads: dict[str, torch.Tensor] = {}

    def input(self, task: str) -> torch.Tensor:
        """The view of the representation that ``task``'s head must read."""
        if task not in self._inputs:
            view = self.representation.view_as(self.representation)
            view.register_hook(lambda grad, task=task: self._grads.__setitem__(task, grad))
            self._inputs[task] = view
        return self._inputs[task]

    def balance(
        self,
        losses: Mapping[str, torch.Tensor],
        weights: Mapping[str, float] | None = None,
        *,
        scaler: torch.amp.GradScaler | None = None,
    ) -> TaskGradients:
        """The balance after ``backward()``. The hooks saw the weighted gradients, times the loss scale when a
        GradScaler scaled the loss: both are divided out here (a task with weight 0 reads as no gradient)."""
        weights = task_weights(losses, weights)
        scale = scaler.get_scale() if scaler is not None and scaler.is_enabled() else 1.0

        def raw(task: str) -> torch.Tensor | None:
            grad, weight = self._grads.get(task), weights[task]
            if grad is None or weight == 0:
                return None
            return grad / (weight * scale)

        return _balance(
            {task: [raw(task)] for task in losses},
            [self.representation],
            losses,
            weights,
            f"shared representation {tuple(self.representation.shape)}",
        )
