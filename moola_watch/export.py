"""``moola-watch export LOG --tensorboard DIR``: a log's DataFrames as TensorBoard event files, one run each.

Tags: ``gradients/*`` (total, mean, max, min norm and non-finite layer count), ``balance/*`` (ratio, cosine,
and per task ``norm``, ``raw_norm``, ``share``, ``loss``, ``weight``, per pair ``cosine``), ``loss/*`` (train,
val, per task), ``metrics/*``, ``lr``, and the alerts as text under ``alerts``. Values a record does not carry
are left out, not written as zeros (a NaN gradient statistic or training loss was recorded, and is written, as
TensorBoard shows it). Each run gets its own sub-directory, named after its run id, holding one event file with a
fixed name and a note of the log it came from, so exporting the log again replaces it rather than doubling the
points, and a run of another log under the same id gets a directory of its own.
"""

from __future__ import annotations

import bisect
import math
import os
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from moola_watch import tbevents

GRAD_TAGS = {
    "total_norm": "gradients/total_norm",
    "mean_norm": "gradients/mean_norm",
    "max_norm": "gradients/max_norm",
    "min_norm": "gradients/min_norm",
    "nonfinite_count": "gradients/nonfinite_layers",
}
#: Balance columns by prefix (``share_pointer`` -> ``balance/share/pointer``); the longer prefix first.
BALANCE_PREFIXES = ("raw_norm", "norm", "share", "loss", "weight", "cosine")
BALANCE_TAGS = {"ratio": "balance/ratio", "cosine": "balance/cosine"}
EPOCH_TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "lr": "lr", "duration_s": "epoch/duration_s"}
#: Epoch columns every epoch record carries (the schema requires them): a NaN there is one the record said.
RECORDED_EPOCH = frozenset({"train_loss"})
ROW_KEYS = frozenset({"run", "epoch", "step", "time", "scope"})
ALERTS_TAG = "alerts"
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class RunEvents:
    """One run's event file: where it goes and what it holds."""

    name: str  # the sub-directory
    run: str
    start: float  # wall time of its first row
    events: list[bytes]
    scalars: int
    alerts: int


def _position(row: Mapping[str, Any]) -> tuple[float, int]:
    """(wall time, step) of a frame row: the step, else the epoch, else 0."""
    step = next((row.get(k) for k in ("step", "epoch") if _present(row.get(k))), 0)
    wall = row.get("time")
    return (float(wall) if _present(wall) else 0.0), int(step)


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value is not pd.NA


def balance_tag(column: str) -> str | None:
    """The tag of a balance column, or None for the row's own keys."""
    if column in BALANCE_TAGS:
        return BALANCE_TAGS[column]
    for prefix in BALANCE_PREFIXES:
        if column.startswith(prefix + "_"):
            return f"balance/{prefix}/{column[len(prefix) + 1 :]}"
    return None


def epoch_tag(column: str) -> str | None:
    """The tag of an epoch column: losses, learning rate, duration; any other number is a metric."""
    if column in EPOCH_TAGS:
        return EPOCH_TAGS[column]
    if column.startswith("loss_"):
        return f"loss/{column[len('loss_') :]}"
    return None if column in ROW_KEYS else f"metrics/{column}"


def _scalar_events(
    frame: pd.DataFrame, tags: Mapping[str, str], measured: frozenset[str] = frozenset()
) -> Iterator[tuple[float, int, list[bytes]]]:
    """One event per row: every value of a tagged column the record holds (:func:`_recorded`)."""
    for row in frame.to_dict(orient="records"):
        values = [
            tbevents.scalar_value(tag, number)
            for column, tag in tags.items()
            if (number := _recorded(row.get(column), column in measured)) is not None
        ]
        if values:
            yield (*_position(row), values)


def _recorded(value: Any, measured: bool) -> float | None:
    """A cell as the number its record held, or None where it held none. A table as recorded
    (:func:`~moola_watch.analyze.as_recorded`) writes a NaN the record said as the text ``nan`` and leaves a value
    it did not hold missing; in a ``measured`` column (one every record of its kind carries) a NaN is what was
    measured either way."""
    if isinstance(value, str):
        return math.nan if value == "nan" else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if measured or _present(value) else None


def alert_text(alert: Mapping[str, Any]) -> str:
    """An alert as the Markdown the text plugin shows."""
    state = alert["state"]
    if _present(alert.get("resolved_step")):
        state += f" at step {int(alert['resolved_step'])}"
    return (
        f"**{alert['severity']}** `{alert['rule']}` ({alert['subject']}), {state}: {alert['message']}"
        f" → {alert['recommendation']}"
    )


def run_events(name: str, run: str, frames: Mapping[str, pd.DataFrame]) -> RunEvents:
    """The events of one run, in step order, from the DataFrames that ``analyze --csv`` writes."""

    def of_run(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[frame["run"] == run] if "run" in frame else frame.iloc[0:0]

    grad, balance, epochs = of_run(frames["grad"]), of_run(frames["balance"]), of_run(frames["epochs"])
    tags = {
        "grad": {c: t for c, t in GRAD_TAGS.items() if c in grad},
        "balance": {c: t for c in balance.columns if (t := balance_tag(c))},
        "epochs": {c: t for c in epochs.columns if (t := epoch_tag(c))},
    }
    timed = [
        *_scalar_events(grad, tags["grad"], measured=frozenset(GRAD_TAGS)),  # every grad_stats carries them
        *_scalar_events(balance, tags["balance"]),
        *_scalar_events(epochs, tags["epochs"], measured=RECORDED_EPOCH),  # a loss gone NaN is the news
    ]
    timed.sort(key=lambda item: item[1])
    scalars = sum(len(values) for _, _, values in timed)
    alerts = of_run(frames["alerts"])
    steps = [step for _, step, _ in timed]  # in order: each alert's clock is found by bisection, not a scan
    texts = []
    for alert in alerts.to_dict(orient="records"):
        step = int(alert["first_step"]) if _present(alert.get("first_step")) else 0
        at = bisect.bisect_left(steps, step)  # the first event at or after the alert's step: the clock then
        wall = timed[at][0] if at < len(timed) else (timed[-1][0] if timed else 0.0)
        texts.append((wall, step, [tbevents.text_value(ALERTS_TAG, alert_text(alert))]))
    timed += texts
    timed.sort(key=lambda item: item[1])
    start = min((wall for wall, _, _ in timed), default=0.0)
    events = [tbevents.event(wall, step, values) for wall, step, values in timed]
    return RunEvents(name, run, start, events, scalars, len(alerts))


def directory_names(keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """A sub-directory name for each (log, run): the run id made safe for a path; where two would share a name
    (the same run id in two logs, as per-rank files have), the log's file name goes in front."""

    def safe(text: str) -> str:
        return SAFE_NAME.sub("_", text).strip("._")[:120] or "run"

    names = {key: safe(key[1]) for key in keys}
    clashes = Counter(names.values())
    names = {key: name if clashes[name] == 1 else safe(f"{Path(key[0]).stem}-{key[1]}") for key, name in names.items()}
    seen: Counter[str] = Counter()
    unique = {}
    for key, name in names.items():
        seen[name] += 1
        unique[key] = name if seen[name] == 1 else f"{name}-{seen[name]}"
    return unique


#: In each run's directory: the log (absolute path) its events came from.
SOURCE_NOTE = ".moola-watch-source"


def write_run(directory: Path, run: RunEvents, log: str) -> Path:
    """Write (or replace) the run's event file under ``directory/run.name``, or ``run.name-2``... when that holds
    another log's run of the same id (TensorBoard would merge the two into one line); return its path."""
    source = str(Path(log).resolve())
    target, number = directory / run.name, 1
    while (note := target / SOURCE_NOTE).exists() and note.read_text("utf-8", "replace") != source:
        number += 1
        target = directory / f"{run.name}-{number}"
    target.mkdir(parents=True, exist_ok=True)
    (target / SOURCE_NOTE).write_text(source, "utf-8")
    path = target / f"events.out.tfevents.{int(run.start)}.moola-watch"
    partial = target / ".moola-watch-writing"  # a name TensorBoard ignores until it is whole
    partial.write_bytes(tbevents.event_file(run.start, run.events))
    os.replace(partial, path)
    return path
