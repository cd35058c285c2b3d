"""``moola sample-logs``: regenerate ``sample_logs/`` from real training runs with fixed seeds.

Each log is the JSONL that ``python -m moola.cli train`` writes for one situation the spec describes; the
README beside them is written from what ``moola-watch check`` says of each, so the promise and the files
come from the same run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

COMMON = ("--predict-pointers", "--monitor-gradients", "--n-samples", "400", "--seed", "0",
          "--gradient-log-freq", "2", "--task-balance-freq", "1")  # fmt: skip
KILL_AFTER_EPOCH = 6


@dataclass(frozen=True)
class Sample:
    name: str
    args: tuple[str, ...]
    situation: str
    killed: bool = False
    check_args: tuple[str, ...] = ()  # how the README's verdict was taken


SAMPLES = (
    Sample(
        "healthy.jsonl",
        ("--epochs", "20", "--seed", "2"),
        "healthy balanced training with default loss weights (seed 2: with seeds 0 and 1 one LSTM layer's "
        "pre-clip gradient spikes above 10 once, which the spec's exploding rule reports)",
    ),
    Sample("pointer_collapse.jsonl", ("--epochs", "20", "--loss-beta", "50"), "pointer task dominating (beta = 50)"),
    Sample("type_collapse.jsonl", ("--epochs", "20", "--loss-alpha", "50"), "type task dominating (alpha = 50)"),
    Sample(
        "vanishing_gradients.jsonl",
        ("--epochs", "20", "--lr", "0.3"),
        "learning rate 0.3 kills the type head's ReLUs: its gradients vanish, the type task goes silent",
    ),
    Sample(
        "exploding_gradients.jsonl",
        ("--epochs", "20", "--lr", "1"),
        "learning rate 1: layer gradient norms far above 10",
    ),
    Sample(
        "nonfinite_gradients.jsonl",
        ("--epochs", "10", "--lr", "1e30", "--grad-clip", "0"),
        "learning rate 1e30 without clipping: weights overflow, gradients become NaN",
    ),
    Sample(
        "killed_midway.jsonl",
        ("--epochs", "200",),
        f"healthy settings, killed with SIGKILL after epoch {KILL_AFTER_EPOCH}; the last line is then cut in "
        "half, as a torn write on a crashed host leaves it",
        killed=True,
        check_args=("--stale-seconds", "0"),  # judged as it reads once the run is long dead
    ),
)  # fmt: skip


def command_of(sample: Sample, out: Path) -> list[str]:
    return ["python", "-m", "moola.cli", "train", *COMMON, *sample.args, "--grad-log", str(out / sample.name)]


def generate(sample: Sample, out: Path) -> None:
    """Train (or train and kill) to produce ``out / sample.name``, replacing any old file."""
    log = out / sample.name
    log.unlink(missing_ok=True)
    argv = [sys.executable, *command_of(sample, out)[1:]]
    if not sample.killed:
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        return
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    marker = b'"kind":"epoch","run"'
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if log.exists() and log.read_bytes().count(marker) >= KILL_AFTER_EPOCH:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("the run to be killed never reached its epoch")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    data = without_writer_identity(log.read_bytes())
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    cut = last_start + (len(data) - last_start) // 2
    log.write_bytes(data[:cut])


def without_writer_identity(data: bytes) -> bytes:
    """The log ``data`` with its run_start's ``process`` (the writer's boot, PID namespace and start time) removed.
    A shipped log is read on other machines: there the killed writer cannot be told dead and the run turns stale
    on the clock, but on the boot that made it the watcher would know the writer dead, and the README's promise
    would depend on where it was read. Without it every machine judges the run alike (as a log of an older
    version)."""
    first, newline, rest = data.partition(b"\n")
    record = json.loads(first)
    record.pop("process", None)
    return json.dumps(record, separators=(",", ":")).encode() + newline + rest


def check(log: Path, *args: str) -> dict:
    """What ``moola-watch check --json ARGS`` says of ``log``."""
    result = subprocess.run(
        [sys.executable, "-m", "moola_watch.cli", "check", "--json", *args, str(log)], capture_output=True, text=True
    )
    if result.returncode == 2:
        raise RuntimeError(result.stderr.strip())
    return json.loads(result.stdout)


def write_readme(out: Path) -> None:
    rows = []
    for sample in SAMPLES:
        report = check(out / sample.name, *sample.check_args)
        rule_names = sorted({alert["rule"] for alert in report["alerts"]})
        command = " ".join(command_of(sample, Path("sample_logs")))
        if sample.killed:
            command += f"  # SIGKILL after epoch {KILL_AFTER_EPOCH}, last line cut in half"
        check_command = " ".join(("moola-watch check", *sample.check_args, sample.name))
        rows.append(
            f"| `{sample.name}` | {sample.situation} | `{command}` | `{check_command}` | {report['verdict']} | "
            f"{report['status']} | {', '.join(rule_names) or '-'} | {report['bad_lines']} |"
        )
    (out / "README.md").write_text(
        "# Sample logs\n\n"
        "Real logs from `python -m moola.cli train`, one per situation of the spec, regenerated (fixed seeds) by\n\n"
        "```bash\n.venv/bin/moola sample-logs\n```\n\n"
        "The verdict, status and alert rules are what `moola-watch check --json` said of each file when it was\n"
        "made; `tests/test_sample_logs.py` holds the shipped files to them. A log without `run_end` turns from\n"
        "`unterminated` to `stale` once its last record is older than `--stale-seconds` (300 s).\n\n"
        "| file | situation | made by | checked by | verdict | status | alert rules | bad lines |\n"
        "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n",
        encoding="utf-8",
    )


def main(out: Path, only: list[str] | None = None) -> int:
    out.mkdir(parents=True, exist_ok=True)
    for sample in SAMPLES:
        if only and sample.name not in only:
            continue
        began = time.perf_counter()
        generate(sample, out)
        size = os.path.getsize(out / sample.name)
        print(f"{sample.name}: {size} bytes in {time.perf_counter() - began:.1f}s", flush=True)
    if not only:
        write_readme(out)
        print(f"{out / 'README.md'} written", flush=True)
    return 0
