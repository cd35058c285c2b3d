"""Synthetic logs for the report's tests (big, epoch-only, hostile names), and a PNG blankness check."""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

from moola_watch.schema import encode_record, make_record

HOSTILE_RUN = "<script>window.__pwned = 1</script>"
HOSTILE_LAYER = '<img src=x onerror="window.__pwned = 2">'
HOSTILE_TASK = "<b onmouseover=window.__pwned=3>bold</b>"
HOSTILE_MODEL = "<svg onload=window.__pwned=4>"
HOSTILE_METRIC = "%{x}<a href=javascript:window.__pwned=5>click</a>"


def write_log(
    path: Path,
    *,
    run: str = "synthetic-run",
    model: str = "mlp",
    layers: Sequence[str] = ("enc.0.weight", "enc.0.bias", "head.weight"),
    steps: int = 50,
    tasks: Sequence[str] = ("pointer", "type"),
    metric: str = "type_acc",
    epochs_only: bool = False,
    spike_at: int | None = None,
    reweight_at: int | None = None,
) -> Path:
    """A complete run: grad_stats, task_balance and an epoch record every step (or every epoch, with no step
    at all, when ``epochs_only``). A spike at step ``spike_at`` makes the first layer explode there; from step
    ``reweight_at`` on, the first task's loss weight is halved."""
    t = 1_700_000_000.0
    lines = [encode_record(make_record("run_start", run, t, model=model, parameters=list(layers), config={}))]
    for i in range(1, steps + 1):
        where = {"epoch": i, "step": None} if epochs_only else {"epoch": None, "step": i}
        base = 0.2 + 0.05 * math.sin(i / 7)
        norms = {name: base * (1 + k % 5) / 3 for k, name in enumerate(layers)}
        if i == spike_at:
            norms[layers[0]] = 500.0
        values = list(norms.values())
        mean = sum(values) / len(values)
        lines.append(encode_record(make_record(
            "grad_stats", run, t + i, **where, layer_norms=norms, total_norm=math.sqrt(sum(v * v for v in values)),
            mean_norm=mean, std_norm=0.0, min_norm=min(values), max_norm=max(values), nonfinite_count=0,
        )))  # fmt: skip
        task_norms = {task: base * (k + 1) for k, task in enumerate(tasks)}
        ratio = task_norms[tasks[0]] / task_norms[tasks[1]] if tuple(tasks) == ("pointer", "type") else None
        lines.append(encode_record(make_record(
            "task_balance", run, t + i, **where, ratio=ratio, norms=task_norms,
            shares={task: 1 / len(tasks) for task in tasks}, cosine=0.3,
            weights={task: 0.5 if k == 0 and reweight_at and i >= reweight_at else 1.0 for k, task in enumerate(tasks)},
        )))  # fmt: skip
        lines.append(encode_record(make_record(
            "epoch", run, t + i, **where, train_loss=1.0 / i, task_losses={task: 0.5 / i for task in tasks},
            metrics={metric: min(1.0, i / steps)},
        )))  # fmt: skip
    lines.append(encode_record(make_record("run_end", run, t + steps + 1, status="completed")))
    path.write_bytes(b"".join(lines))
    return path


def hostile_log(path: Path) -> Path:
    """A log whose run id, model, layer, task and metric names are markup and script; a layer explodes so that
    its name is also in an alert's message."""
    return write_log(
        path, run=HOSTILE_RUN, model=HOSTILE_MODEL, layers=(HOSTILE_LAYER, "enc.1.weight"),
        tasks=(HOSTILE_TASK, "type"), metric=HOSTILE_METRIC, steps=20, spike_at=5,
    )  # fmt: skip


def png_pixels(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and the raw (still filtered) scanlines of an 8-bit PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, width, height, idat = 8, 0, 0, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return width, height, zlib.decompress(idat)


def distinct_bytes(data: bytes) -> int:
    """How many different byte values the PNG's pixel data holds: a blank (one-colour) image has a handful."""
    return len(set(png_pixels(data)[2]))
