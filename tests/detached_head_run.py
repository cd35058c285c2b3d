"""A real training loop whose last head reads a detached input: ``python detached_head_run.py LOG [STEP [TASKS]]``.

Heads ``a`` and ``b`` share a trunk and are balanced; head ``c`` reads ``trunk(x).detach()`` (a linear probe,
or the bug of a head that never trains the trunk), from the start or, given ``STEP``, from that optimizer step
on (a change that cut it off the trunk mid-run). ``TASKS`` 2: heads ``a`` and ``c`` only. The monitor measures
every step, its warnings going where a library's go by default (the ``moola`` logger, shown on stderr).
"""

import sys

import torch
from torch import nn

from moola.utils.monitoring import GradientMonitor

STEPS = 40


def main(log: str, detached_from: int = 1, tasks: int = 3) -> None:
    torch.manual_seed(0)
    trunk, heads = nn.Sequential(nn.Linear(8, 16), nn.Tanh()), nn.ModuleDict({t: nn.Linear(16, 1) for t in "abc"})
    model = nn.ModuleDict({"trunk": trunk, "heads": heads})
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    with GradientMonitor(every_n_steps=1, log_path=log) as monitor:
        monitor.watch_optimizer(optimizer)
        for step in range(1, STEPS + 1):
            x = torch.randn(16, 8)
            h = trunk(x)
            c_input = h.detach() if step >= detached_from else h
            losses = {
                "a": nn.functional.mse_loss(heads["a"](h).squeeze(1), x[:, 0]),
                "b": nn.functional.mse_loss(heads["b"](h).squeeze(1), x[:, 1]),
                "c": nn.functional.mse_loss(heads["c"](c_input).squeeze(1), x[:, 2]),
            }
            if tasks == 2:
                del losses["b"]
            monitor.backward(model, losses)
            monitor.on_before_optimizer_step(model)
            optimizer.step()
            optimizer.zero_grad()


if __name__ == "__main__":
    main(sys.argv[1], *map(int, sys.argv[2:]))
