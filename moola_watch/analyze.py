"""Offline analysis: a log's records through the rules (one engine per run id), into pandas DataFrames, and
the per-log report that ``check`` and ``analyze --json`` print.

:class:`LogScan` is shared with the live watcher: feed it tail items, ask it for the verdict. The frame
columns are collected only when asked for (``analyze``); ``check`` keeps nothing per record. :func:`scan_log`
reads a whole file through :mod:`moola_watch.columnar` (typed, in batches), or item by item as ``follow`` does.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from moola_watch import columnar, rules, schema, sources
from moola_watch.counts import counted
from moola_watch.floors import task_floors
from moola_watch.frames import FrameColumns, nan_text, table
from moola_watch.rules import AlertEvent, RuleEngine, Thresholds, run_thresholds
from moola_watch.rules.evidence import Predecessor, QuietGradStats
from moola_watch.tail import CUT_OFF, REPEATED, BadLine, Item, LineDecoder, Notice, RecordItem, SkippedHistory
from moola_watch.writer_process import log_writer_gone

if TYPE_CHECKING:  # pandas is imported where frames are made: check and follow never need its 0.2 s import
    import pandas as pd

_T = TypeVar("_T")
MAX_BAD_LINE_DETAILS = 20
VERDICT_HEALTHY = "healthy"
VERDICT_UNTERMINATED = "unterminated"  # no alert, but no run_end either: not known to be healthy
VERDICT_NO_MEASUREMENTS = "no_measurements"  # the run recorded no gradient statistics or balance: not a pass
VERDICT_NOT_A_LOG = "not_a_log"  # not one valid record in the file


def run_verdict(engine: RuleEngine) -> str:
    """One run's verdict: an error or critical that fired (a run that failed or died measured enough to say so);
    else no_measurements if it measured nothing (unless it continues a run begun in another log: its rest may be
    its run_end alone), whatever warnings its silence or its end raised (a stale warning must not turn a log
    that checked nothing into a pass an hour later); else the worst severity that fired; else healthy if it
    ended, unterminated if not."""
    worst = engine.worst_severity()
    if worst in ("error", "critical"):
        return worst
    if not engine.measured() and not engine.run.continues:
        return VERDICT_NO_MEASUREMENTS
    if worst:
        return worst
    ended = engine.run.status != "running" or engine.run.continued_in  # (rotated: it goes on in another log)
    return VERDICT_HEALTHY if ended else VERDICT_UNTERMINATED


def verdict_rank(verdict: str) -> int:
    """Worse verdicts rank higher: a severity above nothing measured above unterminated above healthy."""
    order = (VERDICT_HEALTHY, VERDICT_UNTERMINATED, VERDICT_NO_MEASUREMENTS)
    return order.index(verdict) if verdict in order else len(order) + rules.SEVERITY_RANK.get(verdict, 0)


def most_telling(items: Sequence[_T], verdict: Callable[[_T], str], limit: int) -> list[_T]:
    """All of ``items`` up to ``limit``; beyond, the ``limit`` whose ``verdict`` ranks worst (the latest first among
    equals), in their own order: which runs a table or a page shows when it cannot show them all."""
    if len(items) <= limit:
        return list(items)
    worst_first = sorted(range(len(items)), key=lambda i: (-verdict_rank(verdict(items[i])), -i))
    return [items[i] for i in sorted(worst_first[:limit])]


RUN_COLUMNS = ("run", "verdict", "model", "status", "records", "epoch", "step", "started", "last_time",
               "thresholds_from")  # fmt: skip
ALERT_COLUMNS = ("run", "rule", "severity", "counts_as", "state", "subject", "value", "message", "recommendation",
                 "first_step", "first_epoch", "last_step", "resolved_step", "layers")  # fmt: skip


def held_out_metrics(epoch: Mapping[str, Any]) -> dict[str, Any]:
    """An epoch record's held-out metrics: its ``metrics``, or where it has none its ``val_loss`` (the HF
    Trainer's ``eval_loss``, written at the top level: a Trainer without ``compute_metrics`` has nothing else)."""
    metrics = dict(epoch.get("metrics") or {})
    val_loss = epoch.get("val_loss")
    if metrics or not isinstance(val_loss, int | float) or isinstance(val_loss, bool):
        return metrics
    return {"val_loss": val_loss}


def floors_source(recorded: Mapping[str, float], given: Mapping[str, float]) -> str:
    """The training floors a run is judged by, in words for the thresholds line ('' with none): '; training
    floors: pointer 0.1 (recorded in run_start), type 0.36 (given)'."""
    floors = {**{task: (loss, "recorded in run_start") for task, loss in recorded.items()},
              **{task: (loss, "given") for task, loss in given.items()}}  # fmt: skip
    if not floors:
        return ""
    return "; training floors: " + ", ".join(f"{task} {loss:.3g} ({how})" for task, (loss, how) in floors.items())


@dataclass
class LogScan:
    """One log's items through the rules, one engine per run id (a file may hold several runs, or a restarted
    one). Each run is judged by the thresholds its ``run_start`` recorded, except the names in ``overridden``
    (set by a flag or config), which come from ``thresholds``; a run without recorded ones gets ``thresholds``.
    ``floors`` (task -> loss, from a flag or config) beat the training floors a run recorded."""

    path: str
    thresholds: Thresholds = field(default_factory=Thresholds)
    columns: FrameColumns | None = None
    overridden: frozenset[str] = frozenset()
    floors: Mapping[str, float] = field(default_factory=dict)
    engines: dict[str, RuleEngine] = field(default_factory=dict)
    threshold_sources: dict[str, str] = field(default_factory=dict)  # per run: where its thresholds came from
    records: int = 0
    bad_lines: int = 0
    bad_by_category: Counter[str] = field(default_factory=Counter)
    bad_details: list[BadLine] = field(default_factory=list)
    newest_schema: int = schema.SCHEMA_VERSION  # the highest schema version a line said (a newer moola's lines)
    notices: list[Notice] = field(default_factory=list)
    trainer_alerts: int = 0  # alert records written by the trainer (the watcher recomputes its own)
    _run_keys: dict[str, str] = field(default_factory=dict)  # run id -> the key of its latest run (ID, ID#2, ...)
    _bad_before: BadLine | None = None  # the bad line just taken, if no record came after it yet

    def add(self, item: Item) -> list[AlertEvent]:
        """Take one tail item; return the alert transitions it caused."""
        if isinstance(item, RecordItem):
            return self.observe(item.record)
        if isinstance(item, SkippedHistory):
            return self._resume(item)
        if isinstance(item, BadLine):
            if item.rejected.category == REPEATED and self._bad_before is not None:
                item = item._replace(rejected=self._bad_before.rejected)  # the repeat of a bad line is as bad
            self.bad_lines += 1
            self.bad_by_category[item.rejected.category] += 1
            self.newest_schema = max(self.newest_schema, item.rejected.schema or 0)
            if len(self.bad_details) < MAX_BAD_LINE_DETAILS:
                self.bad_details.append(item)
            self._bad_before = item
        else:
            self.notices.append(item)
        return []

    def _resume(self, skipped: SkippedHistory) -> list[AlertEvent]:
        """Start from the end of a file: its last run as its run_start says (thresholds, identity), last heard
        from when the file was last written, and over if its last record was its run_end (no rule judges that
        history: its alerts were for whoever watched then)."""
        if skipped.run_start is None:
            return []
        events = self.observe(skipped.run_start)
        engine = self.engines[self._run_keys[skipped.run_start["run"]]]
        if skipped.last is not None and skipped.last is not skipped.run_start:
            engine.evidence.start_unknown = "followed from its middle: follow --from-end skipped its start"
        run = engine.run
        run.last_time = skipped.written if run.last_time is None else max(run.last_time, skipped.written)
        last = skipped.last
        if last is not None and last["kind"] == schema.RUN_END and last["run"] == skipped.run_start["run"]:
            run.status, run.error = last["status"], last.get("error")
        return events

    def observe(self, record: schema.Record, *, frame: bool = True) -> list[AlertEvent]:
        """Take one valid record (into the frame columns too, unless ``frame`` is False: the caller adds its row).

        A ``run_start`` under a run id that already started is a restart (a fixed ``run_id`` appending to its
        own log): a new run, ``ID#2``, so that its windows never mix with the first run's; unless it is marked
        ``continued``: the run's header at the top of a rotated log's new file, read after the old one, and the
        run goes on."""
        self.records += 1
        if self._bad_before is not None:
            self._cut_by_a_crash(record)
        if record["kind"] == schema.ALERT:
            self.trainer_alerts += 1
        original = record["run"]
        if self.is_restart(record):
            if record.get(schema.CONTINUED) is True:
                return []
            self._run_keys[original] = self._restart_key(original)
        key = self._run_keys.setdefault(original, original)
        if key != original:
            record = {**record, "run": key}
        if frame and self.columns is not None:
            self.columns.add(record)
        engine = self.engines.get(record["run"])
        if engine is None:
            engine = self._new_run(record)
        return engine.observe(record)

    def _cut_by_a_crash(self, record: schema.Record) -> None:
        """A torn line (the start of a record, or NULs) right before a ``run_start`` is the line a crashed writer
        was writing when it died, which the next run's writer ended with a newline before its own first line: a
        cut-off line, as a last one is, not a record lost from a run that went on. Other junk there counts."""
        bad, self._bad_before = self._bad_before, None
        if bad is None or record["kind"] != schema.RUN_START or not bad.torn:
            return
        if bad.rejected.category not in ("bad_json", "bad_utf8"):  # a whole line, only a wrong record
            return
        self.bad_by_category[bad.rejected.category] -= 1
        if not self.bad_by_category[bad.rejected.category]:
            del self.bad_by_category[bad.rejected.category]
        self.bad_by_category[CUT_OFF] += 1
        cut = BadLine(bad.path, bad.line_no, schema.Rejected(CUT_OFF, f"cut off by a crash before a new run began "
                                                                      f"({bad.rejected.reason})"))  # fmt: skip
        self.bad_details = [cut if detail is bad else detail for detail in self.bad_details]

    def run_key(self, run: str) -> str:
        """The key the latest run under id ``run`` is known by (``ID``, or ``ID#2`` after a restart)."""
        return self._run_keys.get(run, run)

    def is_restart(self, record: schema.Record) -> bool:
        """Is ``record`` a ``run_start`` for a run id whose run has started already?"""
        if record["kind"] != schema.RUN_START:  # (asked of every record)
            return False
        key = self._run_keys.get(record["run"])
        return key is not None and self.engines[key].run.started is not None

    def _restart_key(self, run: str) -> str:
        number = 2
        while f"{run}#{number}" in self.engines:
            number += 1
        return f"{run}#{number}"

    def observe_quiet(self, quiet: QuietGradStats) -> list[AlertEvent]:
        """Take grad_stats records of a run already seen, in which no rule finds its condition (not their rows:
        the caller adds those)."""
        self.records += len(quiet.steps)
        self._bad_before = None
        return self.engines[quiet.run].observe_quiet(quiet)

    def _new_run(self, record: schema.Record) -> RuleEngine:
        if record["kind"] == schema.RUN_START:  # the runs before it that wrote no run_end have ended
            for earlier in self.engines.values():
                earlier.run.superseded = earlier.run.status == "running"
        recorded = record.get("thresholds") if record["kind"] == schema.RUN_START else None
        thresholds, source = run_thresholds(recorded, self.thresholds, self.overridden)
        recorded_floors = task_floors(record.get("task_floors")) if record["kind"] == schema.RUN_START else {}
        self.threshold_sources[record["run"]] = source + floors_source(recorded_floors, self.floors)
        before = self.current
        engine = self.engines[record["run"]] = RuleEngine(thresholds, self.floors)
        if (
            before is not None
            and record["kind"] == schema.RUN_START
            and before.run.model == record["model"]
            and before.run.status != "completed"
        ):  # if this run began late, it may be that one resumed from a checkpoint: its training rates start there
            ev = before.evidence
            engine.evidence.resumes = Predecessor(
                ev.first_losses, ev.first_epoch_losses or {}, before.run.step, before.run.epoch
            )
            if before.run.status in ("interrupted", "failed") and _began_late(record):
                before.run.resumed_by = record["run"]
        return engine

    def check_stale(self, now: float) -> list[AlertEvent]:
        return [event for engine in self.engines.values() for event in engine.check_stale(now)]

    def check_resumed(self, now: float) -> list[AlertEvent]:
        """Resolve the interruption, or settle the failure, of each run a later one resumed
        (:meth:`RuleEngine.check_resumed`)."""
        return [event for engine in self.engines.values() for event in engine.check_resumed(now)]

    def check_writers(self, gone: Callable[..., bool | None], now: float) -> list[tuple[str, AlertEvent]]:
        """Fire run_died for each run not ended whose writer has exited: ``gone(path, host, pid, process, log)``
        judges the writer its ``run_start`` names, for this log (:func:`moola_watch.writer_process.
        log_writer_gone`); ``now``: unix seconds. Returns (run id, event) pairs."""
        return [
            (run, event)
            for run, engine in self.engines.items()
            if engine.run_status in ("running", "stale")
            for event in engine.check_writer(gone(self.path, *engine.run.writer), now)
        ]

    @property
    def current(self) -> RuleEngine | None:
        """The engine of the run that wrote last."""
        return next(reversed(self.engines.values()), None)

    def select(self, run: str | None = None, *, latest: bool = False) -> list[str]:
        """Run ids to report: the one named ``run``, the latest, or all (in order of first record). Raises
        ``KeyError`` naming the runs there are if ``run`` is not one of them."""
        if run is not None:
            if run not in self.engines:
                raise KeyError(f"no run {run!r} in {self.path} (runs: {', '.join(self.engines) or 'none'})")
            return [run]
        if latest and self.engines:
            return [next(reversed(self.engines))]
        return list(self.engines)

    def alerts(self, runs: Iterable[str] | None = None) -> list[tuple[str, rules.Alert]]:
        """(run id, alert) for every alert that fired in ``runs`` (default: all), in order."""
        chosen = self.engines if runs is None else runs
        return [(run, a) for run in chosen for a in self.engines[run].alerts if a.state != rules.PENDING]

    def verdict(self, runs: Iterable[str] | None = None) -> str:
        """The worst severity that fired in ``runs`` (default: all); else not_a_log if the file held no
        valid record, no_measurements if a run measured nothing, unterminated if one has not ended, else
        healthy."""
        chosen = list(self.engines if runs is None else runs)
        if not self.records:
            return VERDICT_NOT_A_LOG
        verdicts = {run_verdict(self.engines[run]) for run in chosen}
        severities = [v for v in verdicts if v in rules.SEVERITY_RANK]
        if severities:
            return max(severities, key=rules.SEVERITY_RANK.__getitem__)
        for verdict in (VERDICT_NO_MEASUREMENTS, VERDICT_UNTERMINATED):
            if verdict in verdicts:
                return verdict
        return VERDICT_HEALTHY

    def fails(self, fail_on: str, runs: Iterable[str] | None = None) -> bool:
        """Did anything at or above severity ``fail_on`` fire in ``runs`` (default: all)?"""
        bar = rules.SEVERITY_RANK[fail_on]
        return any(rules.SEVERITY_RANK[rules.verdict_severity(alert)] >= bar for _run, alert in self.alerts(runs))

    def run_report(self, run: str) -> dict[str, Any]:
        """One run's verdict, state, thresholds and summary."""
        engine = self.engines[run]
        return {
            "run": run,
            "verdict": run_verdict(engine),
            "model": engine.run.model,
            "status": engine.run_status,
            "epoch": engine.run.epoch,
            "step": engine.run.step,
            "records": engine.run.records,
            "steps_backwards": engine.run.steps_backwards,
            "error": engine.run.error,
            "thresholds_from": self.threshold_sources[run],
            "thresholds": engine.thresholds.to_dict(),
            "task_floors": engine.evidence.floors,
            "metrics": held_out_metrics(engine.last_epoch or {}),
            "metrics_epoch": (engine.last_epoch or {}).get("epoch"),
            "summary": engine.summary().to_dict(),
        }

    def deciding_run(self, runs: Iterable[str] | None = None) -> str | None:
        """The run of ``runs`` (default: all) whose verdict is the log's: of several, the latest; None if there
        is no run."""
        chosen = list(self.engines if runs is None else runs)
        verdict = self.verdict(chosen)
        return next((run for run in reversed(chosen) if run_verdict(self.engines[run]) == verdict), None)

    def report(self, runs: Iterable[str] | None = None) -> dict[str, Any]:
        """The machine-readable verdict of this log (``check --json``), of ``runs`` (default: all). Its top-level
        ``run``, ``status`` and ``summary`` are those of the run that decided the verdict (:meth:`deciding_run`),
        so that they never speak of a healthy run next to another run's error; ``runs`` holds every run's."""
        chosen = list(self.engines if runs is None else runs)
        deciding = self.deciding_run(chosen)
        engine = self.engines[deciding] if deciding is not None else None
        return {
            "log": self.path,
            "verdict": self.verdict(chosen),
            "status": engine.run_status if engine else "empty",
            "run": deciding,  # (the key it has in runs: ID, or ID#2 after a restart)
            "runs": [self.run_report(run) for run in chosen],
            "alerts": [alert_json(run, alert) for run, alert in self.alerts(chosen)],
            "records": self.records,
            "bad_lines": self.bad_lines,
            "bad_line_categories": dict(self.bad_by_category),
            "bad_line_details": [
                {"line": bad.line_no, "category": bad.rejected.category, "reason": bad.rejected.reason}
                for bad in self.bad_details
            ],
            "summary": engine.summary().to_dict() if engine else None,
        }


def not_a_log(path: str | Path, scans: Iterable[LogScan]) -> str:
    """The one line that says why ``path`` (a log, or a folder of them), whose ``scans`` hold not one valid
    record, cannot be judged: ``check``, ``follow``, ``report`` and ``load`` say it alike."""
    return f"{path} is {why_not_a_log(scans)}"


def why_not_a_log(scans: Iterable[LogScan]) -> str:
    """Why logs holding not one valid record cannot be judged, in the words after their name: written by a newer
    moola when most of their bad lines are of a newer schema (this watcher cannot read them, upgrading it can);
    else not a moola log at all (another tool's file)."""
    scans = list(scans)
    bad = sum(scan.bad_lines for scan in scans)
    newer = sum(scan.bad_by_category[schema.NEWER_SCHEMA] for scan in scans)
    if newer * 2 > bad:
        version = max(scan.newest_schema for scan in scans)
        return (f"a log of a newer moola (schema {version}; this moola-watch reads up to schema "
                f"{schema.SCHEMA_VERSION}): upgrade moola-watch to read it")  # fmt: skip
    return f"not a moola log: no valid record ({counted(bad, 'bad line')})"


def alert_json(run: str | None, alert: rules.Alert) -> dict[str, Any]:
    """An alert as the JSON outputs (``check --json``, ``follow --json``) show it."""
    return {
        "run": run,
        "rule": alert.rule,
        "severity": alert.severity,
        "counts_as": rules.verdict_severity(alert),  # in the run's verdict (a recovered collapse: a warning)
        "state": alert.state,
        "subject": alert.subject,
        "value": json_number(alert.value),
        "message": alert.message,
        "recommendation": alert.recommendation,
        "first_step": alert.first_step,
        "first_epoch": alert.first_epoch,
        "last_step": alert.last_step,
        "resolved_step": alert.resolved_step,
        "layers": alert.layers,
    }


def json_number(value: float | None) -> float | str | None:
    """A float for JSON output: non-finite values as the contract's strings."""
    if value is None or math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def scan_log(
    path: str | Path,
    thresholds: Thresholds | None = None,
    *,
    parts: Sequence[str | Path] | None = None,
    overridden: frozenset[str] = frozenset(),
    floors: Mapping[str, float] | None = None,
    frames: bool = False,
    now: float | None = None,
    on_progress: Callable[[int], None] | None = None,
    fast: bool = True,
    parallel: bool | None = None,
) -> LogScan:
    """Read a whole log in chunks through the rules. ``frames`` collects columns for :meth:`to_frames`;
    ``now`` (unix seconds, default: the clock) judges staleness of a run without ``run_end``;
    ``on_progress`` gets the bytes read so far; ``overridden`` names the thresholds that beat a run's recorded
    ones, ``floors`` the training floors that beat its recorded ones; ``fast`` reads typed and in batches
    (:mod:`moola_watch.columnar`; ``parallel``: decoding in a second process too, by default for a big file when
    a CPU is idle), else item by item (the reference), with the same result. ``path`` may be ``-`` (stdin) or a
    compressed file (gzip, bzip2, xz); ``parts``, the files read one after another as this one log (a rotated
    log's, oldest first: :mod:`moola_watch.sources`). Those are read item by item. Raises ``OSError`` if a file
    cannot be read (:class:`~moola_watch.sources.UnreadableLog`: its message says why whole)."""
    sources_of = [path] if parts is None else list(parts)

    def streamed() -> LogScan:
        scan = LogScan(
            str(path), thresholds or Thresholds(), FrameColumns() if frames else None, overridden, dict(floors or {})
        )
        for item in read_sources(sources_of, str(path), on_progress):
            scan.add(item)
        return scan

    if fast and len(sources_of) == 1 and sources.plain_file(sources_of[0]):
        scan = LogScan(
            str(path), thresholds or Thresholds(), FrameColumns() if frames else None, overridden, dict(floors or {})
        )
        try:
            columnar.scan_into(scan, sources_of[0], parallel=parallel, on_progress=on_progress)
        except columnar.UnsupportedInput:
            scan = streamed()  # a line the typed decoder misjudged: take the reference's answer
    else:
        scan = streamed()
    now = time.time() if now is None else now
    scan.check_writers(log_writer_gone, now)
    scan.check_stale(now)
    scan.check_resumed(now)
    return scan


def _began_late(start: schema.Record) -> bool:
    """Whether a ``run_start`` says its writer began past the first step or epoch (resumed from a checkpoint)."""
    step, epoch = start.get("first_step"), start.get("first_epoch")
    return (type(step) is int and step > 1) or (type(epoch) is int and epoch > 1)


def read_sources(
    paths: Sequence[str | Path], name: str, on_progress: Callable[[int], None] | None
) -> Iterator[RecordItem | BadLine]:
    """Every item of ``paths`` read one after another, as ``cat`` would join them (line numbers run on through
    them, each ending a line); ``on_progress`` gets the bytes read so far."""
    decoder = LineDecoder(name)
    done = 0
    for chunk in sources.chunks(paths):
        yield from decoder.feed(chunk)
        done += len(chunk)
        if on_progress:
            on_progress(done)
    yield from decoder.finish()


def to_frames(scan: LogScan) -> dict[str, pd.DataFrame]:
    """DataFrames of a scan made with ``frames=True``: grad, layers (long), balance, epochs, alerts, runs."""
    assert scan.columns is not None, "scan_log(..., frames=True) collects the columns"
    with columnar.cyclic_gc_paused():  # pandas turns the balance and epoch rows into columns: no cycles either
        out = scan.columns.frames()
    out["alerts"] = alerts_table(scan)
    import pandas as pd  # (imported where frames are made: check and follow never need it)

    # JSON spells a non-finite value as a string; a frame's column is numbers
    out["alerts"]["value"] = pd.to_numeric(out["alerts"]["value"], errors="coerce").astype("float64")
    out["runs"] = table(
        [
            {"run": run, "verdict": run_verdict(e), "model": e.run.model, "status": e.run_status,
             "records": e.run.records, "epoch": e.run.epoch, "step": e.run.step, "started": e.run.started,
             "last_time": e.run.last_time, "thresholds_from": scan.threshold_sources[run]}
            for run, e in scan.engines.items()
        ],
        RUN_COLUMNS,
    )  # fmt: skip
    return out


def alerts_table(scan: LogScan) -> pd.DataFrame:
    """The alerts of a scan as the JSON outputs show them, one row each: a non-finite value is its text (``nan``)."""
    return table([alert_json(run, alert) for run, alert in scan.alerts()], ALERT_COLUMNS)


#: The columns of :func:`to_frames`' ``grad`` and ``layers`` tables that hold a gradient norm: every
#: ``grad_stats`` record holds them (the schema requires them), so each NaN there is one the record said.
RECORDED_NORMS = {"grad": ("total_norm", "mean_norm", "std_norm", "min_norm", "max_norm"), "layers": ("norm",)}


def as_recorded(scan: LogScan, frames: Mapping[str, pd.DataFrame] | None = None) -> dict[str, pd.DataFrame]:
    """The ``balance``, ``epochs`` and ``alerts`` tables of a scan made with ``frames=True`` for a person to read
    (``analyze --csv``, the report's comparison): a NaN the log recorded (a loss gone NaN) is the text ``nan``,
    a value it did not record is missing (an empty CSV cell). :func:`to_frames`' are numbers, NaN for both. Given
    ``frames`` (:func:`to_frames` of the scan), its ``grad`` and ``layers`` tables too, each NaN norm the text
    ``nan`` (:data:`RECORDED_NORMS`; ``inf`` is written ``inf`` anyway)."""
    assert scan.columns is not None, "scan_log(..., frames=True) collects the columns"
    recorded = {**scan.columns.measurements(nan_as_text=True), "alerts": alerts_table(scan)}
    if frames is not None:
        recorded.update({name: nan_text(frames[name], columns) for name, columns in RECORDED_NORMS.items()})
    return recorded


def group_norms(scan: LogScan) -> pd.DataFrame:
    """A big model's module-group norms of a scan made with ``frames=True`` (see
    :class:`~moola_watch.frames.GroupColumns`; empty for a log of smaller models). Not one of :func:`to_frames`'
    tables: those of the layers hold the tensors the rules judge."""
    assert scan.columns is not None, "scan_log(..., frames=True) collects the columns"
    return scan.columns.groups.frame()


def worst_layers(
    layers: pd.DataFrame, top: int = 10, thresholds: Thresholds | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per run and layer: last, peak and lowest norm, the samples that named it (``seen``) and the most any layer
    of its run was named in (``samples``: a big model's samples name only their extreme tensors); of each run,
    the ``top`` with the highest peak and the ``top`` with the lowest minimum of the others (no layer is in
    both), leaving out of the lowest the biases zero by construction under ``thresholds`` (default: the
    watcher's), which the vanishing rule never flags (see
    :func:`~moola_watch.rules.zero_by_construction`, on each layer's peak in its run). Runs in the order they appear
    in ``layers``, each with its ``run`` (a layer's last norm of one run never stands beside its peak of another); a
    table without a ``run`` column is one run (and the result has none)."""
    import numpy as np
    import pandas as pd

    by_run = "run" in layers
    keys = ["run", "layer"] if by_run else ["layer"]
    if layers.empty:
        empty = pd.DataFrame(columns=[*keys, "last", "peak", "lowest", "nonfinite", "seen", "samples"])
        return empty, empty
    finite = layers["norm"].where(layers["norm"].abs() != math.inf)
    grouped = layers.assign(finite=finite, nonfinite=~np.isfinite(layers["norm"].to_numpy())).groupby(
        keys, observed=True, sort=False
    )
    table = pd.DataFrame(
        {
            "last": grouped["norm"].last(),
            "peak": grouped["finite"].max(),
            "lowest": grouped["finite"].min(),
            "nonfinite": grouped["nonfinite"].sum(),
            "seen": grouped["norm"].size(),  # samples that named the layer (of a big model: its extremes only)
        }
    ).reset_index()
    # The run's samples, as far as its layers tell: every sample names every layer, a big model's its extremes only
    table["samples"] = table.groupby("run", observed=True)["seen"].transform("max") if by_run else table["seen"].max()
    largest, smallest = [], []
    for _run, of_run in table.groupby("run", observed=True, sort=False) if by_run else [(None, table)]:
        peaks = dict(zip(of_run["layer"].astype(str), of_run["peak"].fillna(math.inf), strict=True))
        structural = rules.zero_by_construction(peaks, thresholds or Thresholds())
        candidates = of_run[~of_run["layer"].astype(str).isin(structural)] if structural else of_run
        largest.append(of_run.nlargest(top, "peak"))
        # Of the layers not among the largest: a model of fewer than 2 * top layers would list some twice.
        smallest.append(candidates[~candidates["layer"].isin(largest[-1]["layer"])].nsmallest(top, "lowest"))
    return pd.concat(largest, ignore_index=True), pd.concat(smallest, ignore_index=True)


def window_means(ratios: Iterable[float], thresholds: Thresholds) -> list[float | None]:
    """The collapse window's mean after each balance sample (None until the window is full)."""
    history: list[float] = []
    out: list[float | None] = []
    for ratio in ratios:
        history.append(ratio)
        out.append(rules.collapse_verdict(history[-2 * thresholds.window :], thresholds).mean)
    return out
