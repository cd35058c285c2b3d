"""torch.distributed facts the monitor needs: who this process is, whether its gradients are sharded, and
whether a backward it does itself would bypass the framework's gradient synchronisation."""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

import torch

#: Where DTensor lives. Importing it costs over a second (sympy, the symbolic shapes), a third of a trainer's
#: start, and a tensor can only be a DTensor once something (FSDP2, tensor parallel) has imported it: so it is
#: looked up, never imported here.
DTENSOR_MODULE = "torch.distributed.tensor"


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) of the initialised default process group, (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def launcher_rank() -> int:
    """This process's rank, as the launcher (torchrun, ``accelerate launch``) set it in ``RANK`` before any
    process group exists; 0 without one. A monitor made before ``Accelerator()`` or ``init_process_group``
    must still know that only rank 0 writes."""
    rank = os.environ.get("RANK", "0")
    return int(rank) if rank.isdigit() else 0


def rank_log_path(path: str | Path, rank: int) -> Path:
    """``runs/a.jsonl`` -> ``runs/a.rank1.jsonl``: one file per writer, never two writers in one file."""
    path = Path(path)
    return path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


#: How long a rank waits for rank 0's run id (once per run, at its first record; DDP's ranks reach it together).
RUN_ID_WAIT_S = 30.0
#: Each per-rank run this process opens, numbered alike on every rank (they open their runs in the same order).
_runs_opened = itertools.count()


def shared_run_id(run_id: str, rank: int, wait_s: float = RUN_ID_WAIT_S) -> tuple[str, str | None]:
    """Rank 0's ``run_id``, for each rank's own log of one job (``per_rank``): one run, whichever file a watcher
    reads it in. Rank 0 leaves its id in the process group's key-value store and goes on; another rank waits for
    it up to ``wait_s`` seconds. Returns the id and, where this rank keeps its own (no process group, or rank 0's
    id never came), why."""
    key = f"moola/run_id/{next(_runs_opened)}"
    try:
        store = torch.distributed.distributed_c10d._get_default_store()
        if rank == 0:
            store.set(key, run_id)
            return run_id, None
        store.wait([key], timedelta(seconds=wait_s))
        return store.get(key).decode(), None
    except Exception as exc:  # no store, a timeout, a store gone: this rank's log keeps an id of its own
        return run_id, f"rank 0's run id did not reach rank {rank} ({type(exc).__name__}: {exc})"


def is_sharded(tensor: torch.Tensor) -> bool:
    """True for a DTensor (FSDP2, tensor parallel): its local values are one shard of the whole."""
    dtensor = getattr(sys.modules.get(DTENSOR_MODULE), "DTensor", None)
    return dtensor is not None and isinstance(tensor, dtensor)


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's global value (a collective over its mesh: every rank must call it); any other tensor as is."""
    return tensor.full_tensor() if is_sharded(tensor) else tensor


def synchronised_backward_reason(parameters: Iterable[torch.Tensor]) -> str | None:
    """Why a backward done by ``torch.autograd.grad`` would not be the step's real backward, or None.

    DDP and FSDP all-reduce (or reduce-scatter) gradients from hooks that only ``backward()`` fires, and so
    do other post-accumulate-grad hooks (optimizer-in-backward, accelerate's sharding); filling ``.grad``
    ourselves would silently skip them and let the replicas diverge.
    """
    if distributed_rank()[1] > 1:
        return "torch.distributed is running (DDP/FSDP synchronise gradients inside backward())"
    for p in parameters:
        if is_sharded(p):
            return "the parameters are sharded (DTensor)"
        if getattr(p, "_post_accumulate_grad_hooks", None):
            return "a parameter has a post-accumulate-grad hook that only backward() runs"
    return None


def halted_anywhere(reason: str | None) -> str | None:
    """The ranks' agreement on halting: ``reason`` is why this rank halts (None: it would go on); returns the
    first halting rank's reason, the same on every rank, or None if none halts. A collective (every rank calls
    it at the same point): one all-reduce of one number, and the reasons travel only when some rank halted."""
    cuda = torch.distributed.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    flag = torch.tensor([0.0 if reason is None else 1.0], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    if flag.item() == 0:
        return None
    reasons: list[str | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(reasons, reason)
    return next(text for text in reasons if text is not None)


def static_graph_first_iteration(losses: Iterable[torch.Tensor]) -> bool:
    """True if ``losses`` come out of a ``DistributedDataParallel(static_graph=True)`` module's first iteration.

    Then DDP's output node queues the delayed all-reduce of every gradient from the first backward that runs
    through it, and only once: a probe's backward would take it, before the step's own backward has made the
    gradients, and the replicas would drift apart for the rest of the run. Walks the losses' autograd graph
    (only under an initialised torch.distributed), looking for that node."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return False
    seen: set[object] = set()
    todo = [node for loss in losses if (node := getattr(loss, "grad_fn", None)) is not None]
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        if type(node).__name__ == "_DDPSinkBackward":
            ddp = node.ddp_weakref()
            if ddp is not None and ddp.static_graph and not ddp._static_graph_delay_allreduce_enqueued:
                return True
        todo.extend(following for following, _ in node.next_functions if following is not None)
    return False
