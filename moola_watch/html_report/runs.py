"""The runs of the logs given, each with its own slice of analyze's frames: what every figure draws from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from moola_watch import analyze, rules
from moola_watch.loader import log_labels

FRAMES = ("grad", "layers", "groups", "balance", "epochs")  # groups: a big model's (analyze.group_norms)
STEP, EPOCH = "step", "epoch"


@dataclass(frozen=True)
class RunData:
    """One run of one log: its frames (rows of this run only), its epochs as recorded (a NaN loss the text ``nan``:
    :func:`moola_watch.analyze.as_recorded`), its rule engine and the alerts that fired."""

    label: str  # unique among the runs of a report; raw text from the log (escaped where drawn)
    log: str
    run: str
    engine: rules.RuleEngine
    frames: dict[str, pd.DataFrame]
    recorded_epochs: pd.DataFrame
    alerts: list[rules.Alert]
    thresholds_from: str = ""  # where the thresholds (and training floors) it was judged by came from, as check says

    @property
    def thresholds(self) -> rules.Thresholds:
        """The thresholds this run was judged by: its recorded ones, less any a flag or config overrode."""
        return self.engine.thresholds

    @property
    def verdict(self) -> str:
        """This run's verdict, as ``check`` gives it (:func:`moola_watch.analyze.run_verdict`)."""
        return analyze.run_verdict(self.engine)


def _rows_of(frame: pd.DataFrame, run: str) -> pd.DataFrame:
    if frame.empty or "run" not in frame:
        return frame
    return frame[frame["run"].astype("string") == run].reset_index(drop=True)


def _labels(logs: Sequence[tuple[str, list[str]]]) -> list[str]:
    """A short label per (log, run): the log's file name stem (behind its folder where logs share a name, as
    ``analyze --csv`` names their files: ``a/log``, ``b/log``), with the run id when a log holds several; made
    unique by a counter."""
    stems = log_labels([Path(log) for log, _runs in logs], for_files=False)
    labels: list[str] = []
    for log, runs in logs:
        stem = stems[Path(log)]
        for run in runs:
            label = stem if len(runs) == 1 else f"{stem} · {run}"
            base, n = label, 2
            while label in labels:
                label, n = f"{base} ({n})", n + 1
            labels.append(label)
    return labels


def collect_runs(scans: Sequence[analyze.LogScan]) -> list[RunData]:
    """Every run of every scan (made with ``frames=True``), in the order of the logs and of the runs in them."""
    per_log = [(scan, {**analyze.to_frames(scan), "groups": analyze.group_norms(scan)}) for scan in scans]
    labels = iter(_labels([(scan.path, list(scan.engines)) for scan in scans]))
    out: list[RunData] = []
    for scan, frames in per_log:
        fired = scan.alerts()
        recorded_epochs = analyze.as_recorded(scan)["epochs"]
        for run, engine in scan.engines.items():
            out.append(
                RunData(
                    label=next(labels),
                    log=scan.path,
                    run=run,
                    engine=engine,
                    frames={name: _rows_of(frames[name], run) for name in FRAMES},
                    recorded_epochs=_rows_of(recorded_epochs, run),
                    alerts=[alert for alert_run, alert in fired if alert_run == run],
                    thresholds_from=scan.threshold_sources.get(run, ""),
                )
            )
    return out


def x_axis(runs: Sequence[RunData]) -> str:
    """``step`` when every record drawn carries one and some step was counted, else ``epoch`` (the spec's
    epoch-only trainers; logs their older writers wrote say step 0 in every epoch record)."""
    counted = False
    for data in runs:
        for name in FRAMES:
            frame = data.frames[name]
            if frame.empty:
                continue
            if STEP not in frame or frame[STEP].isna().any():
                return EPOCH
            counted = counted or bool((frame[STEP] > 0).any())
    return STEP if counted else EPOCH


def positions(frame: pd.DataFrame, axis: str) -> np.ndarray:
    """The frame's x positions on ``axis`` as floats (NaN where a record lacks it)."""
    if axis not in frame:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[axis], errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def alert_span(alert: rules.Alert, axis: str, end: float | None) -> tuple[float | None, float | None]:
    """Where an alert starts and stops on ``axis``; a firing one lasts until ``end`` (the run's last position)."""
    if axis == STEP:
        first, last, resolved = alert.first_step, alert.last_step, alert.resolved_step
    else:
        first, last, resolved = alert.first_epoch, alert.last_epoch, alert.resolved_epoch
    if resolved is not None:
        stop: float | None = resolved
    elif alert.state == rules.FIRING:
        stop = end if end is not None else last
    else:
        stop = last
    return first, stop if stop is not None else first


def last_position(data: RunData, axis: str) -> float | None:
    """The run's furthest position on ``axis`` over all its frames."""
    ends = [np.nanmax(x) for name in FRAMES if len(x := positions(data.frames[name], axis)) and not np.isnan(x).all()]
    return float(max(ends)) if ends else None
