"""The benchmark harness: figures and ratios measured side by side in one run, printed and written as JSON.

    .venv/bin/python benchmarks/run.py [--quick] [--only monitor,step,gpu,fit,probe,analyze,follow] [--out FILE]

Timings interleave the things compared (round-robin), so a noisy shared machine shifts
them together; micro-benchmarks keep the best round, whole training runs the median. These are
measurements, not pass/fail tests.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import math
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from biglog import write_big_log  # noqa: E402

Row = dict[str, Any]


def interleaved(funcs: dict[str, Callable[[], object]], rounds: int, number: int) -> dict[str, float]:
    """Best over ``rounds`` of the mean seconds per call, the functions taking turns within each round (the
    best, as timeit advises: on a shared machine the slower rounds measure the neighbours)."""
    for func in funcs.values():
        func()  # warm up
    samples: dict[str, list[float]] = {name: [] for name in funcs}
    for _ in range(rounds):
        for name, func in funcs.items():
            began = time.perf_counter()
            for _ in range(number):
                func()
            samples[name].append((time.perf_counter() - began) / number)
    return {name: min(values) for name, values in samples.items()}


def row(section: str, name: str, value: float, unit: str, target: str = "", note: str = "") -> Row:
    return {"section": section, "name": name, "value": value, "unit": unit, "target": target, "note": note}


# ------------------------------------------------------------------------------------------------ 1


def models() -> dict[str, nn.Module]:
    from moola.models.enhanced_simple_lstm import DualTaskLSTMNet

    return {
        "lstm (2 layers)": DualTaskLSTMNet(2, num_layers=2),
        "stack ~25M": nn.Sequential(
            *[nn.Linear(1024, 1024) for _ in range(24)], *[nn.LayerNorm(1024) for _ in range(51)]
        ),
        "1000 small tensors": nn.Sequential(*[nn.Linear(16, 16) for _ in range(500)]),
    }


def bench_monitor(quick: bool, tmp: Path) -> list[Row]:
    from moola.utils.monitoring import GradientMonitor
    from moola.utils.monitoring.norms import NormPlan, gradient_statistics

    rows = []
    for name, model in models().items():
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 0.01  # realistic magnitudes: the healthy path
        grads = [p.grad for p in model.parameters()]
        params = list(model.parameters())
        monitor = GradientMonitor(every_n_steps=1, log_path=tmp / f"monitor-{uuid.uuid4().hex}.jsonl")
        plan = NormPlan(list(model.named_parameters()))
        timings = interleaved(
            {
                "floor": lambda grads=grads: torch.stack(torch._foreach_norm(grads)).tolist(),
                "naive": lambda params=params: [p.grad.norm().item() for p in params],
                "measure": lambda plan=plan: gradient_statistics(*plan.norms()[:2]),
                "monitor": lambda model=model, monitor=monitor: monitor.on_before_optimizer_step(model),
            },
            rounds=5 if quick else 15,
            number=5 if quick else 20,
        )
        monitor.on_run_end()
        tensors, values = len(grads), sum(g.numel() for g in grads)
        label = f"{name}: {tensors} tensors, {values / 1e6:.2f}M values"
        rows += [
            row("monitor", f"{label}: floor (one grouped _foreach_norm + transfer)", timings["floor"] * 1e3, "ms"),
            row("monitor", f"{label}: naive (.norm().item() per tensor)", timings["naive"] * 1e3, "ms"),
            row("monitor", f"{label}: measuring only (per-layer norms + statistics)", timings["measure"] * 1e3, "ms"),
            row("monitor", f"{label}: one every-step update (all it does)", timings["monitor"] * 1e3, "ms"),
            row("monitor", f"{label}: measuring / floor", timings["measure"] / timings["floor"], "x"),
            row("monitor", f"{label}: update / floor", timings["monitor"] / timings["floor"], "x",
                "<= 1.5" if name.startswith("lstm") else ""),
            row("monitor", f"{label}: naive / update", timings["naive"] / timings["monitor"], "x", ">= 1.3 (1000)"),
        ]  # fmt: skip
    return rows


def bench_step(quick: bool, tmp: Path) -> list[Row]:
    """A real training step (forward, backward, optimizer step) with and without ``every_n_steps=1``, under
    plain SGD (the cheapest step, so the largest share for the monitor) and AdamW (what most models train with)."""
    from moola.utils.monitoring import GradientMonitor

    rows = []
    for name, model in models().items():
        if name.startswith("1000"):
            continue
        if name.startswith("lstm"):
            x = torch.randn(32, 48, 4)

            def loss(model: nn.Module = model, x: torch.Tensor = x) -> torch.Tensor:
                logits, positions = model(x)
                return logits.logsumexp(1).mean() + positions.pow(2).mean()
        else:
            x = torch.randn(64, 1024)

            def loss(model: nn.Module = model, x: torch.Tensor = x) -> torch.Tensor:
                return model(x).pow(2).mean()

        for optimizer_name, make in (("SGD", torch.optim.SGD), ("AdamW", torch.optim.AdamW)):
            optimizer = make(model.parameters(), lr=1e-6)
            monitor = GradientMonitor(every_n_steps=1, log_path=tmp / f"step-{uuid.uuid4().hex}.jsonl")
            monitor.watch_optimizer(optimizer)

            def step(
                measure: bool,
                model: nn.Module = model,
                loss: Callable[[], torch.Tensor] = loss,
                optimizer: torch.optim.Optimizer = optimizer,
                monitor: GradientMonitor = monitor,
            ) -> None:
                loss().backward()
                if measure:
                    monitor.on_before_optimizer_step(model)
                optimizer.step()
                optimizer.zero_grad()

            timings = interleaved(
                {"plain": lambda step=step: step(False), "monitored": lambda step=step: step(True)},
                rounds=5 if quick else 15, number=3 if quick else 10,
            )  # fmt: skip
            monitor.on_run_end()
            overhead = (timings["monitored"] / timings["plain"] - 1) * 100
            target = "<= 2" if "25M" in name else ""
            label = f"{name}, {optimizer_name}"
            rows += [
                row("step", f"{label}: training step, no monitor", timings["plain"] * 1e3, "ms"),
                row("step", f"{label}: training step, every_n_steps=1", timings["monitored"] * 1e3, "ms"),
                row("step", f"{label}: every-step monitoring overhead", overhead, "%", target),
            ]
    return rows


def host_syncs(update: Callable[[], object], updates: int) -> list[int]:
    """Host syncs in each of ``updates`` calls of ``update``, counted by ``torch.cuda.set_sync_debug_mode("warn")``
    (which warns at every operation that waits for the device: ``.item()``, ``.tolist()``, a blocking copy)."""
    counts = []
    for _ in range(updates):
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                update()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        counts.append(sum("synchroniz" in str(warning.message) for warning in caught))
    return counts


def bench_gpu_on(device: torch.device, quick: bool, tmp: Path) -> list[Row]:
    """Host syncs per update and every-step overhead on ``device``, a GPU-sized model: a 24-layer transformer
    encoder (d_model 1024, ~300M parameters, fp32), AdamW, batch 8 x 512 tokens."""
    from moola.utils.monitoring import GradientMonitor

    layers, tokens = (2, 128) if quick else (24, 512)
    layer = nn.TransformerEncoderLayer(1024, 16, 4096, batch_first=True)
    model = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False).to(device)
    x = torch.randn(8, tokens, 1024, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    stepped = GradientMonitor(every_n_steps=1, log_path=tmp / f"gpu-step-{uuid.uuid4().hex}.jsonl")
    stepped.watch_optimizer(optimizer)

    def step(measure: bool) -> None:
        model(x).pow(2).mean().backward()
        if measure:
            stepped.on_before_optimizer_step(model)
        optimizer.step()
        optimizer.zero_grad()
        torch.cuda.synchronize()  # both variants end the step on the device, so the timer sees all of it

    step(False)
    model(x).pow(2).mean().backward()  # gradients in place for the update-only figures
    grads = [p.grad for p in model.parameters()]
    monitor = GradientMonitor(every_n_steps=1, log_path=tmp / f"gpu-{uuid.uuid4().hex}.jsonl")
    scaler = torch.amp.GradScaler("cuda")
    scaler.scale(torch.ones((), device=device))  # the scaler holds its scale on the device, as in AMP training
    monitor.on_before_optimizer_step(model)  # the first update also plans and writes run_start
    syncs = host_syncs(lambda: monitor.on_before_optimizer_step(model), 5)
    amp_syncs = host_syncs(lambda: monitor.on_before_optimizer_step(model, scaler=scaler), 5)

    def synced(func: Callable[[], object]) -> Callable[[], None]:
        def call() -> None:
            func()
            torch.cuda.synchronize()

        return call

    updates = interleaved(
        {
            "floor": synced(lambda: torch.stack(torch._foreach_norm(grads)).tolist()),
            "monitor": synced(lambda: monitor.on_before_optimizer_step(model)),
        },
        rounds=5 if quick else 15, number=5 if quick else 20,
    )  # fmt: skip
    monitor.on_run_end()
    optimizer.zero_grad()
    steps = interleaved(
        {"plain": lambda: step(False), "monitored": lambda: step(True)}, rounds=3 if quick else 10, number=3
    )
    stepped.on_run_end()
    overhead = (steps["monitored"] / steps["plain"] - 1) * 100
    values = sum(p.numel() for p in model.parameters())
    label = (
        f"{torch.cuda.get_device_name(device)}, {layers}-layer transformer ({len(grads)} tensors, {values / 1e6:.0f}M)"
    )
    return [
        row("gpu", f"{label}: host syncs per update (most of 5)", max(syncs), "syncs", "exactly 1"),
        row("gpu", f"{label}: host syncs per update, GradScaler (most of 5)", max(amp_syncs), "syncs", "exactly 1"),
        row("gpu", f"{label}: floor (one grouped _foreach_norm + transfer)", updates["floor"] * 1e3, "ms"),
        row("gpu", f"{label}: one every-step update (all it does)", updates["monitor"] * 1e3, "ms"),
        row("gpu", f"{label}: update / floor", updates["monitor"] / updates["floor"], "x"),
        row("gpu", f"{label}: training step (AdamW, batch 8x{tokens}), no monitor", steps["plain"] * 1e3, "ms"),
        row("gpu", f"{label}: training step, every_n_steps=1", steps["monitored"] * 1e3, "ms"),
        row("gpu", f"{label}: every-step monitoring overhead", overhead, "%", "<= 1"),
    ]


def bench_gpu(quick: bool, tmp: Path) -> list[Row]:
    """The CUDA figures (see :func:`bench_gpu_on`); one row saying they were skipped without CUDA."""
    if not torch.cuda.is_available():
        return [row("gpu", "skipped: no CUDA (host syncs per update, every-step overhead)", math.nan, "", "")]
    return bench_gpu_on(torch.device("cuda"), quick, tmp)


# ------------------------------------------------------------------------------------------------ 2


def bench_fit(quick: bool, tmp: Path) -> list[Row]:
    from rich.console import Console

    from moola.data import make_synthetic
    from moola.models.enhanced_simple_lstm import EnhancedSimpleLSTM

    data = make_synthetic(600, seed=0)
    epochs = 4 if quick else 8

    def fit(**monitoring: Any) -> float:
        began = time.perf_counter()
        EnhancedSimpleLSTM(seed=0).fit(
            data.X, data.y, data.expansion_start, data.expansion_end, epochs=epochs,
            console=Console(file=io.StringIO()), **monitoring,
        )  # fmt: skip
        return time.perf_counter() - began

    variants = {
        "off": {},
        "shared": {"monitor_gradients": True, "gradient_log_freq": 1, "task_balance_freq": 1},
        "representation": {
            "monitor_gradients": True, "gradient_log_freq": 1, "task_balance_freq": 1,
            "balance_scope": "representation",
        },
    }  # fmt: skip
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(3 if quick else 7):
        for name, kwargs in variants.items():
            extra = {"grad_log": tmp / f"fit-{uuid.uuid4().hex}.jsonl"} if kwargs else {}
            seconds[name].append(fit(**kwargs, **extra))
    off = statistics.median(seconds["off"])
    rows = [row("fit", f"fit, {epochs} epochs, no monitoring", off, "s")]
    for name in ("shared", "representation"):
        on = statistics.median(seconds[name])
        rows.append(row("fit", f"fit, stats + balance ({name}) every epoch", on, "s"))
        rows.append(row("fit", f"overhead, balance scope {name}", (on / off - 1) * 100, "%", "<= 3"))
    return rows


# ------------------------------------------------------------------------------------------------ 3


def bench_probe(quick: bool, tmp: Path) -> list[Row]:
    from moola.data import make_synthetic
    from moola.models.enhanced_simple_lstm import DualTaskLSTMNet, normalize_windows, pointer_loss_fn
    from moola.utils.monitoring.gradient_diagnostics import (
        RepresentationTap,
        backward_with_task_balance,
        compute_task_balance,
        compute_task_gradient_ratio,
    )

    data = make_synthetic(64, seed=1)
    x = torch.as_tensor(normalize_windows(data.X[:32]))
    y = torch.as_tensor(data.y[:32])
    pointers = torch.as_tensor(
        (
            torch.stack([torch.as_tensor(data.expansion_start[:32]), torch.as_tensor(data.expansion_end[:32])], 1)
            / 47.0
        ).float()
    )
    net = DualTaskLSTMNet(2)

    def losses() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        states = net.encode(x)
        logits, positions = net.heads(states)
        assert positions is not None
        return pointer_loss_fn(positions, pointers), nn.functional.cross_entropy(logits, y), states

    def forward() -> None:
        losses()

    def step() -> None:
        pointer, kind, _ = losses()
        (kind + pointer).backward()

    def measure_then_backward() -> None:
        pointer, kind, _ = losses()
        compute_task_gradient_ratio(pointer, kind, net, shared_parameters=list(net.shared_parameters()))
        (kind + pointer).backward()

    shared = list(net.shared_parameters())
    last: dict[str, Any] = {"before": (), "directions": {}}

    def persistence_then_backward() -> None:
        pointer, kind, _ = losses()
        balance = compute_task_balance(
            {"pointer": pointer, "type": kind}, net, shared_parameters=shared, before=last["before"],
            previous=last["directions"],
        )  # fmt: skip
        last.update(before=balance.parameters, directions=balance.directions)
        (kind + pointer).backward()

    def representation_then_backward() -> None:
        pointer, kind, states = losses()
        compute_task_balance({"pointer": pointer, "type": kind}, net, representation=states)
        (kind + pointer).backward()

    def fused() -> None:
        pointer, kind, _ = losses()
        backward_with_task_balance(
            {"pointer": pointer, "type": kind}, net, shared_parameters=list(net.shared_parameters())
        )

    def representation() -> None:
        states = net.encode(x)
        tap = RepresentationTap(states)
        logits, positions = net.heads(tap.input("type"), tap.input("pointer"))
        assert positions is not None
        pointer, kind = pointer_loss_fn(positions, pointers), nn.functional.cross_entropy(logits, y)
        (kind + pointer).backward()
        tap.balance({"pointer": pointer, "type": kind})

    timings = interleaved(
        {"forward": forward, "step": step, "measure_then_backward": measure_then_backward, "fused": fused,
         "persistence_then_backward": persistence_then_backward,
         "representation_then_backward": representation_then_backward, "representation": representation},
        rounds=5 if quick else 40, number=5 if quick else 10,
    )  # fmt: skip
    backward = timings["step"] - timings["forward"]
    rows = [row("probe", "one normal backward (LSTM, batch 32)", backward * 1e3, "ms")]
    for name, label, target in (
        ("measure_then_backward", "shared parameters, measured before backward(), no earlier balance", "reported"),
        (
            "persistence_then_backward",
            "shared parameters, measured before backward(), each task's persistence "
            "against the last (what the monitor does)",
            "reported",
        ),
        (
            "representation_then_backward",
            "shared representation, measured before backward() (representation=)",
            "reported",
        ),
        ("fused", "shared parameters, fused with the step's backward (backward_with_task_balance)", "<= 1.2"),
        ("representation", "shared representation, tapped from the step's own backward", "< 0.1"),
    ):
        extra = (timings[name] - timings["step"]) / backward
        rows.append(row("probe", f"probe cost, {label}", extra, "x backward", target))
    return rows


# ------------------------------------------------------------------------------------------------ 4


def child(*args: str) -> dict[str, Any]:
    """Run ``workers.py`` with ``args`` in a fresh process; its last output line, as JSON."""
    result = subprocess.run([sys.executable, str(HERE / "workers.py"), *args], capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return json.loads(result.stdout.splitlines()[-1])


OFFLINE_MODES = ("analyze-streaming", "analyze-serial", "analyze-parallel", "pandas", "check-streaming",
                 "check-serial", "check-parallel")  # fmt: skip
#: The reference for how fast any reader parses the log here (``pip install '.[bench]'``); skipped without it.
HAS_POLARS = importlib.util.find_spec("polars") is not None


def bench_analyze(quick: bool, tmp: Path) -> list[Row]:
    """Offline ``analyze`` and ``check`` on one big log: the streaming engine (the reference), the fast path in
    one process and with a second process decoding, and ``pandas.read_json(lines=True)``, each in a fresh child
    process, taking turns round by round; the best round's time, the largest peak RSS of any round. With polars
    installed, ``polars.read_ndjson`` as well: parsing alone, untyped, on every core, which says how much of 5x
    pandas' time any reader leaves for validation, the rules and the frames."""
    records = 20_000 if quick else 200_000
    log = tmp / "big.jsonl"
    mb = write_big_log(log, records) / 1e6
    modes = (*OFFLINE_MODES, "polars") if HAS_POLARS else OFFLINE_MODES
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for _ in range(1 if quick else 3):
        for mode in modes:
            runs[mode].append(child(mode, str(log)))
    seconds = {mode: min(r["seconds"] for r in results) for mode, results in runs.items()}
    peak = {mode: max(r["peak_mib"] for r in results) for mode, results in runs.items()}
    worker = {mode: max(r["worker_mib"] for r in results) for mode, results in runs.items()}
    rows = [row("analyze", f"log: {records} records, {mb:.0f} MB, 50 layers per grad_stats", mb, "MB")]
    ways = {"streaming": "streaming engine (reference)", "serial": "fast path, one process",
            "parallel": "fast path, a second process decoding"}  # fmt: skip
    for command, target_speed, target_peak in (("analyze", ">= 150", "< pandas"), ("check", ">= 150", "< 100")):
        for way, label in ways.items():
            mode = f"{command}-{way}"
            fast = way != "streaming"
            name = f"{command} end to end, {label}"
            rows.append(row("analyze", name, mb / seconds[mode], "MB/s", target_speed if fast else ""))
            rows.append(row("analyze", f"{command} records per second, {label}", records / seconds[mode], "records/s"))
            rows.append(row("analyze", f"{command} peak RSS, {label}", peak[mode], "MiB", target_peak if fast else ""))
            if way == "parallel":
                rows.append(row("analyze", f"{command} decoding process peak RSS (shares pages, not additive)",
                                worker[mode], "MiB"))  # fmt: skip
        if command == "analyze":
            rows.append(row("analyze", "pandas.read_json(lines=True) on the same file", mb / seconds["pandas"], "MB/s"))
            rows.append(row("analyze", "pandas.read_json peak RSS", peak["pandas"], "MiB"))
            for way in ("serial", "parallel"):
                speed = seconds["pandas"] / seconds[f"analyze-{way}"]
                rows.append(row("analyze", f"analyze ({ways[way]}) / pandas.read_json speed", speed, "x", ">= 5"))
            if HAS_POLARS:
                parsing = "polars.read_ndjson, parsing alone on every core / pandas.read_json speed"
                speed = seconds["pandas"] / seconds["polars"]
                rows.append(row("analyze", parsing, speed, "x", "", "no validation, rules or frames"))
                left = seconds["pandas"] / 5 - seconds["polars"]
                rows.append(row("analyze", "5x pandas' time left after polars.read_ndjson's parse", left, "s"))
            else:
                print("analyze  polars.read_ndjson: skipped (pip install '.[bench]')", flush=True)
        for way in ("serial", "parallel"):
            speed = seconds[f"{command}-streaming"] / seconds[f"{command}-{way}"]
            rows.append(row("analyze", f"{command} ({ways[way]}) / streaming engine speed", speed, "x"))
    return rows


# ------------------------------------------------------------------------------------------------ 5


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed_follow(log: Path, writer_args: list[str], poll: bool) -> tuple[list[float], float, int]:
    """Follow ``log`` in-process while a writer process appends; return per-record latencies (s), the
    wall time from the writer's start to the follower's exit, and the records seen."""
    from rich.console import Console

    from moola_watch.follow import Follower, FollowOptions
    from moola_watch.rules import Thresholds
    from moola_watch.tail import RecordItem

    latencies: list[float] = []

    class Timed(Follower):
        def _take(self, path: Path, item: Any) -> bool:
            if isinstance(item, RecordItem):
                latencies.append(time.time() - item.record["time"])
            return super()._take(path, item)

    follower = Timed(log, Thresholds(), FollowOptions(exit_on_end=True, poll=poll), Console(file=io.StringIO()))
    began = time.perf_counter()
    writer = subprocess.Popen([sys.executable, str(HERE / "workers.py"), "writer", str(log), *writer_args])
    follower.run()
    elapsed = time.perf_counter() - began
    writer.wait()
    return latencies, elapsed, len(latencies)


def screen_latency(tmp: Path, count: int) -> list[float]:
    """Write-to-screen latency: the dashboard in tmux, the screen read every few ms for the newest step."""
    if shutil.which("tmux") is None:
        return []
    log, server = tmp / "screen.jsonl", f"bench-{uuid.uuid4().hex[:6]}"
    command = f"unset COLUMNS LINES; {sys.executable} -m moola_watch.cli follow {log}; sleep 30"
    subprocess.run(["tmux", "-L", server, "new-session", "-d", "-x", "140", "-y", "40", command], check=True)
    time.sleep(1.5)
    writer = subprocess.Popen([sys.executable, str(HERE / "workers.py"), "writer", str(log), str(count), "0.1"])
    seen: dict[int, float] = {}
    pattern = re.compile(r"epoch \d+, step (\d+)")
    while writer.poll() is None or len(seen) < count // 2:
        screen = subprocess.run(["tmux", "-L", server, "capture-pane", "-p"], capture_output=True, text=True).stdout
        now = time.time()
        for match in pattern.finditer(screen):
            seen.setdefault(int(match.group(1)), now)
        if writer.poll() is not None and time.time() > now + 2:
            break
        time.sleep(0.003)
    subprocess.run(["tmux", "-L", server, "kill-server"])
    from moola_watch.schema import decode_record

    written = {
        r["step"]: r["time"]
        for r in map(decode_record, log.read_bytes().splitlines())
        if isinstance(r, dict) and r["kind"] == "epoch"
    }
    return [seen[step] - written[step] for step in seen if step in written]


def rss_growth(tmp: Path, total: int) -> tuple[float, float]:
    """Follower RSS (MiB) after the first 5% of ``total`` records and after all of them."""
    from moola_watch.schema import encode_record, make_record

    log = tmp / "rss.jsonl"
    log.write_bytes(encode_record(make_record("run_start", "rss", time.time(), model="bench")))
    follower = subprocess.Popen(
        [sys.executable, "-m", "moola_watch.cli", "follow", "--json", "--exit-on-end", str(log)],
        stdout=subprocess.DEVNULL, cwd=REPO,
    )  # fmt: skip
    chunk = b"".join(
        encode_record(make_record("epoch", "rss", time.time(), epoch=i, step=i, train_loss=0.5)) for i in range(10_000)
    )

    def append(count: int) -> None:
        with log.open("ab") as handle:
            for _ in range(count // 10_000):
                handle.write(chunk)

    def settled_rss() -> float:
        time.sleep(1.0)  # let it catch up, then read its resident set
        status = Path(f"/proc/{follower.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]

    append(total // 20)
    early = settled_rss()
    append(total - total // 20)
    late = settled_rss()
    with log.open("ab") as handle:
        handle.write(encode_record(make_record("run_end", "rss", time.time(), status="completed")))
    follower.wait(timeout=120)
    return early, late


def bench_follow(quick: bool, tmp: Path) -> list[Row]:
    rows = []
    count = 150 if quick else 500
    for poll, label in ((False, "watchdog"), (True, "--poll (0.25 s stat)")):
        latencies, _, _ = timed_follow(tmp / f"lat-{label[:4]}.jsonl", [str(count), "0.01"], poll)
        rows.append(row("follow", f"write-to-engine latency p50, {label}", percentile(latencies, 0.5) * 1e3, "ms"))
        target = "< 20" if not poll else ""
        rows.append(
            row("follow", f"write-to-engine latency p99, {label}", percentile(latencies, 0.99) * 1e3, "ms", target)
        )
    screen = screen_latency(tmp, 30 if quick else 80)
    if screen:
        rows.append(row("follow", "write-to-screen latency p50 (tmux)", percentile(screen, 0.5) * 1e3, "ms"))
        rows.append(row("follow", "write-to-screen latency p99 (tmux)", percentile(screen, 0.99) * 1e3, "ms", "< 300"))
    burst = 50_000 if quick else 300_000
    _, elapsed, seen = timed_follow(tmp / "rate.jsonl", [str(burst), "0"], False)
    rows.append(
        row("follow", f"sustained rate, {burst} records appended flat out", seen / elapsed, "records/s", ">= 20000")
    )
    early, late = rss_growth(tmp, 200_000 if quick else 1_000_000)
    rows.append(row("follow", "RSS after the first 5% of records", early, "MiB"))
    rows.append(
        row("follow", f"RSS growth over {200_000 if quick else 1_000_000} records", late - early, "MiB", "< 20")
    )
    return rows


SECTIONS = {
    "monitor": bench_monitor,
    "step": bench_step,
    "gpu": bench_gpu,
    "fit": bench_fit,
    "probe": bench_probe,
    "analyze": bench_analyze,
    "follow": bench_follow,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer rounds (a smoke run)")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--out", type=Path, default=HERE / "results.json", help="where to write the JSON")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="moola-bench-") as directory:
        for name in args.only.split(","):
            began = time.perf_counter()
            section = SECTIONS[name](args.quick, Path(directory))
            rows += section
            for item in section:
                line = f"{item['section']:<8} {item['name']:<92} {item['value']:>12.3f} {item['unit']:<10}"
                print(f"{line} {item['target']}", flush=True)
            print(f"  ({name}: {time.perf_counter() - began:.0f} s)", flush=True)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, {platform.processor() or '?'}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "quick": args.quick,
    }
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
