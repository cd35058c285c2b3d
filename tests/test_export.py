"""`moola-watch export LOG --tensorboard DIR`, read back by TensorBoard's own EventAccumulator."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest
from helpers import REPO, run_cli
from logs import LogBuilder, collapse_scenario, healthy_scenario

from moola_watch import tbevents
from moola_watch.schema import decode_record

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def accumulator(directory: Path):
    reader = event_accumulator.EventAccumulator(str(directory), size_guidance={"scalars": 0, "tensors": 0})
    reader.Reload()
    return reader


def export(*args: object) -> str:
    result = run_cli("moola_watch.cli", "export", *map(str, args))
    assert result.returncode == 0, result.stderr
    return result.stdout


def float32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


def records(log: Path, kind: str) -> list[dict]:
    decoded = (decode_record(line) for line in log.read_bytes().splitlines())
    return [r for r in decoded if isinstance(r, dict) and r["kind"] == kind]


def test_crc32c_is_castagnolis() -> None:
    assert tbevents.crc32c(b"123456789") == 0xE3069283  # the check value of CRC-32C
    assert tbevents.crc32c(b"") == 0


def test_tensorboard_reads_back_the_logs_series(tmp_path: Path) -> None:
    log = REPO / "sample_logs" / "pointer_collapse.jsonl"
    export(log, "--tensorboard", tmp_path / "tb")
    (run_dir,) = (tmp_path / "tb").iterdir()
    assert run_dir.name == records(log, "run_start")[0]["run"]
    reader = accumulator(run_dir)

    grad = records(log, "grad_stats")
    total = reader.Scalars("gradients/total_norm")
    assert [e.step for e in total] == [r["step"] for r in grad]
    assert [e.value for e in total] == [float32(r["total_norm"]) for r in grad]
    assert [e.wall_time for e in total] == [r["time"] for r in grad]
    balance = records(log, "task_balance")
    assert [e.value for e in reader.Scalars("balance/ratio")] == [float32(r["ratio"]) for r in balance]
    share = reader.Scalars("balance/share/type")
    assert [e.value for e in share] == [float32(r["shares"]["type"]) for r in balance]
    epochs = records(log, "epoch")
    assert [e.value for e in reader.Scalars("loss/train")] == [float32(r["train_loss"]) for r in epochs]
    assert [e.value for e in reader.Scalars("metrics/type_acc")] == [float32(r["metrics"]["type_acc"]) for r in epochs]
    tags = set(reader.Tags()["scalars"])
    assert {"gradients/mean_norm", "gradients/max_norm", "balance/norm/pointer", "balance/cosine/pointer|type"} <= tags
    assert {"loss/val", "loss/pointer", "lr"} <= tags

    alerts = [e.tensor_proto.string_val[0].decode() for e in reader.Tensors("alerts")]
    collapse = next(text for text in alerts if "`collapse`" in text)
    assert "TASK COLLAPSE: Pointer task dominating" in collapse and "increase alpha by 2x" in collapse


def test_one_run_per_directory_and_exporting_again_replaces(tmp_path: Path) -> None:
    first, second = LogBuilder(run="run-a").start(), LogBuilder(run="run-b", t0=1_700_000_100.0).start()
    for epoch in (1, 2):
        first.grad(epoch, 0.2, 0.5).epoch(epoch)
        second.grad(epoch, 0.4, 0.9).epoch(epoch)
    both = tmp_path / "two-runs.jsonl"
    both.write_bytes(b"".join(first.end().lines() + second.end().lines()))
    again = collapse_scenario().write(tmp_path / "again.jsonl")  # run id "run-1"
    same = healthy_scenario().write(tmp_path / "same.jsonl")  # "run-1" as well, in another log
    out = tmp_path / "tb"
    export(both, again, same, "--tensorboard", out)
    export(both, again, same, "--tensorboard", out)

    assert sorted(p.name for p in out.iterdir()) == ["again-run-1", "run-a", "run-b", "same-run-1"]
    assert all(len(list(d.glob("events.out.tfevents.*"))) == 1 for d in out.iterdir())  # replaced, not doubled
    assert [e.value for e in accumulator(out / "run-b").Scalars("gradients/mean_norm")] == [float32(0.4)] * 2
    assert len(accumulator(out / "again-run-1").Tensors("alerts")) >= 1


def test_another_logs_run_of_the_same_id_exported_later_gets_its_own_directory(tmp_path: Path) -> None:
    """Two exports into one directory, of two logs that each hold a run "run-1": TensorBoard would merge one
    directory's event files into one line. Exporting the first log again still replaces its own."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = collapse_scenario().write(tmp_path / "a" / "run.jsonl")
    second = healthy_scenario().write(tmp_path / "b" / "run.jsonl")
    out = tmp_path / "tb"
    for log in (first, second, first):
        export(log, "--tensorboard", out)
    assert sorted(p.name for p in out.iterdir()) == ["run-1", "run-1-2"]
    assert all(len(list(d.glob("events.out.tfevents.*"))) == 1 for d in out.iterdir())
    assert len(accumulator(out / "run-1").Tensors("alerts")) >= 1  # the collapse log's, exported twice
    assert not accumulator(out / "run-1-2").Tags()["tensors"]  # the healthy log's: no alert


def test_a_nan_gradient_statistic_is_exported_as_measured(tmp_path: Path) -> None:
    log = LogBuilder().start()
    for epoch, norm in ((1, 0.2), (2, math.nan), (3, 0.3)):
        log.grad(epoch, norm, 0.5, {"w": norm})
    path = log.end().write(tmp_path / "nan.jsonl")
    export(path, "--tensorboard", tmp_path / "tb")
    means = accumulator(tmp_path / "tb" / "run-1").Scalars("gradients/mean_norm")
    assert [e.step for e in means] == [10, 20, 30] and math.isnan(means[1].value)


def test_a_nan_training_loss_is_exported_as_recorded_and_a_missing_val_loss_is_left_out(tmp_path: Path) -> None:
    """The epoch the loss went NaN is the one a reader looks for: before, it vanished from loss/train (inf stayed)."""
    log = LogBuilder().start()
    for epoch, loss in ((1, 1.0), (2, math.inf), (3, math.nan), (4, 0.5)):
        log.epoch(epoch, loss, **({"val_loss": 0.4 if epoch != 2 else math.nan} if epoch != 3 else {}))
    path = log.end().write(tmp_path / "nan-loss.jsonl")
    export(path, "--tensorboard", tmp_path / "tb")
    reader = accumulator(tmp_path / "tb" / "run-1")
    train = reader.Scalars("loss/train")
    assert [e.step for e in train] == [10, 20, 30, 40], train
    assert train[1].value == math.inf and math.isnan(train[2].value) and train[3].value == 0.5
    val = reader.Scalars("loss/val")
    assert [e.step for e in val] == [10, 20, 40]  # not recorded at epoch 3: not written
    assert math.isnan(val[1].value) and val[2].value == pytest.approx(0.4)  # the NaN the record said: written


def test_a_run_id_cannot_escape_the_directory(tmp_path: Path) -> None:
    log = LogBuilder(run="../../escaped\x1b[2J").start().grad(1, 0.2, 0.5).end().write(tmp_path / "log.jsonl")
    out = tmp_path / "deep" / "tb"
    export(log, "--tensorboard", out)
    (run_dir,) = out.iterdir()
    assert run_dir.name == "escaped_2J"
    assert not (tmp_path / "escaped_2J").exists()


def test_unreadable_log_exits_2_and_exports_the_others(tmp_path: Path) -> None:
    log = healthy_scenario().write(tmp_path / "log.jsonl")
    result = run_cli("moola_watch.cli", "export", str(tmp_path / "missing.jsonl"), str(log), "--tensorboard", "tb",
                     cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2 and "cannot read" in result.stderr
    assert [p.name for p in (tmp_path / "tb").iterdir()] == ["run-1"]


def grad_and_alerts(rows: int, alert_steps: list[int]) -> dict:
    """A run's frames as ``analyze`` makes them: ``rows`` gradient records a step apart (time 1e9 + step), and
    an alert beginning at each of ``alert_steps``."""
    import numpy as np
    import pandas as pd

    grad = pd.DataFrame({"run": "r", "epoch": pd.array([None] * rows, dtype="Int64"), "step": np.arange(rows),
                         "time": 1e9 + np.arange(rows, dtype=float), "total_norm": 0.5})  # fmt: skip
    empty = pd.DataFrame({"run": pd.Series([], dtype=object), "step": pd.Series([], dtype="Int64")})
    alerts = pd.DataFrame({"run": "r", "rule": "exploding", "severity": "error", "state": "firing",
                           "subject": "layers", "message": "m", "recommendation": "r",
                           "first_step": pd.array(alert_steps, dtype="Int64"), "resolved_step": pd.NA})  # fmt: skip
    return {"grad": grad, "balance": empty, "epochs": empty, "alerts": alerts}


def test_export_time_grows_with_the_alerts_not_with_alerts_times_records() -> None:
    """Each alert is written at the clock of its first step, found by bisection: a 100 MB log with 3,470 alerts
    took 67 s when each alert scanned every event (8,000 alerts over 100,000 records: about 25 s, now about 1)."""
    import time

    from moola_watch import export

    rows = 100_000
    started = time.perf_counter()
    export.run_events("r", "r", grad_and_alerts(rows, []))
    without = time.perf_counter() - started
    started = time.perf_counter()
    events = export.run_events("r", "r", grad_and_alerts(rows, list(range(rows - 8000, rows))))
    with_alerts = time.perf_counter() - started
    assert events.alerts == 8000 and len(events.events) == rows + 8000
    # A bound loose enough for a loaded CI machine, far below the quadratic 25 s: a complexity check, not a timing
    assert with_alerts < 5 * without + 3.0, (with_alerts, without)


def test_an_alert_is_written_at_the_clock_of_its_first_step(tmp_path: Path) -> None:
    from moola_watch import export

    frames = grad_and_alerts(10, [0, 4, 9, 30])  # 30: after the last record, at the last record's clock
    frames["grad"] = frames["grad"][frames["grad"]["step"] % 2 == 0]  # steps 0, 2, ..., 8: 9 has none
    written = export.write_run(tmp_path, export.run_events("r", "r", frames), str(tmp_path / "log.jsonl"))
    alerts = accumulator(written.parent).Tensors("alerts")
    assert [(e.step, e.wall_time) for e in alerts] == [(0, 1e9), (4, 1e9 + 4), (9, 1e9 + 8), (30, 1e9 + 8)]
