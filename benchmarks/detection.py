"""Detection quality of the task-collapse verdict on the labelled corpus, old rule and new verdict side by side.

    .venv/bin/python benchmarks/detection.py            # builds the corpus first if runs/detection-corpus is empty
    .venv/bin/python benchmarks/detection.py --tune     # first choose the verdict's numbers on the tuning runs
    .venv/bin/python benchmarks/detection.py --cut-at 12   # every run as if it had completed after epoch 12
    .venv/bin/python benchmarks/detection.py --floors   # each run's training floors in its run_start, as a user
                                                        # who ran each task alone would give them

The *old rule* is the spec's dominance window alone at error level (what ``check`` failed on before): the
first step a ``collapse`` alert raised by a balance sample is firing with its window beyond ``collapse_high``,
whatever its severity. The *new verdict* is the first step a ``collapse`` alert is firing at error level:
during the run, a ratio outside the healthy band and a starving task; at a completed run's end, a task that
ended starved. Both are read from one replay of each log through :class:`moola_watch.rules.RuleEngine` with
the run's recorded thresholds, the verdict's own numbers from the watcher's defaults unless ``--tune`` chose
others: first ``starve_drop`` and ``starve_share`` (during the run), then ``final_share``,
``final_run_share`` and ``final_rate`` (at the end), then the floor's ``starve_persistence`` and ``floor_rate``,
then its second branch's ``noise_persistence`` and ``noise_rate``; with ``--floors``, then ``floor_progress``
(each run judged with its tasks' training floors from the corpus's single-task runs). Ground truth comes from
held-out metrics only (see ``detection_corpus.py``); a second table per set of runs scores the new verdict on
the runs whose label each half of the held-out split gives alike (the reliable ones).

Lead time is the alert's step minus the step at which the starved task's validation metric plateaued
(negative: the alert came first); for the new verdict's catches, also that of its first alert on the task it
names, at any severity (the dominance warning that the error later confirmed).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from detection_labels import Run, cut, label

from moola_watch import schema
from moola_watch.rules import COLLAPSE, RuleEngine, Thresholds, run_thresholds, verdict_severity
from moola_watch.tail import RecordItem, read_log

CORPUS = Path("runs/detection-corpus")
FALSE_ALARM_TARGET = 0.05  # at most this share of healthy runs may get an error-level verdict
CLEARLY_STARVED = 0.3  # starved runs this far below the label's 0.5 are not borderline
#: No task's loss ends a billion times its first: the end-of-run verdict is off while the during-run one is chosen.
FINAL_OFF = {"final_rate": 1e9}
KEPT = 1  # the settings of one stage that the next stage's grid is tried beside (5: an hour on 2 cores, not 15 min)
SHOWN = 5  # the best settings of each stage printed
#: Each stage of ``--tune``: what it holds fixed, and the thresholds it chooses with the values it tries (a grid
#: over all of them). The during-run verdict is tried alone, then the end-of-run one beside its best.
TUNING_STAGES = (
    (FINAL_OFF, {"starve_drop": (0.0, 0.01, 0.02, 0.03, 0.05, 0.1, 0.15, 0.2),
                 "starve_share": (0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2)}),
    ({}, {"final_share": (0.1, 0.2, 0.4, 0.6, 2.0), "final_run_share": (0.2, 0.4, 0.6, 0.8, 2.0),
          "final_rate": (0.0, 0.3, 0.5, 0.6, 0.7, 0.8)}),
    ({}, {"starve_persistence": (0.0, 0.2, 0.3, 0.4, 0.5), "floor_rate": (0.6, 0.7, 0.8, 0.9)}),
    ({}, {"noise_persistence": (0.1, 0.15, 0.2, 0.25, 0.3), "noise_rate": (0.0, 0.8, 0.9, 0.95)}),
)  # fmt: skip
#: With ``--floors``, the last stage: how far towards its training floor a stalled task must have come.
FLOOR_STAGE = ({}, {"floor_progress": (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)})
VERDICT_NAMES = (("old", "old rule (dominance)"), ("new", "new verdict (dominance + lost progress, or ended starved)"))
Chosen = dict[str, float]  # threshold name -> value, over the run's recorded ones


@dataclass(frozen=True)
class Alarm:
    """The first step a verdict named a task (None: it never did), the tasks it named at that step (more than one
    of three may starve at once), whether that was at the run's end, and every task it named in the run."""

    tasks: tuple[str, ...] = ()
    step: int | None = None
    at_end: bool = False
    named: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Outcome:
    """One labelled run as each verdict judged it."""

    run: str
    family: str
    label: str
    starved: tuple[str, ...]  # the starved tasks, the least progress first (of three tasks, two may starve)
    held_out: bool
    plateaus: dict[str, int]  # the step each task's validation metric plateaued
    progress: float | None  # the most starved task's share of its achievable held-out progress
    agreed: bool | None  # whether each half of the held-out split alone gives the same label (None: not recorded)
    old: Alarm
    new: Alarm
    paged: Alarm  # the new verdict's first error-level collapse, even one that resolved: what --notify-on error sends
    warned: dict[str, int]  # per task, the step the new verdict's collapse alert on it first fired, at any severity

    def right(self, alarm: Alarm) -> bool:
        """Whether ``alarm`` first names a starved task."""
        return any(task in self.starved for task in alarm.tasks)

    def lead(self, alarm: Alarm) -> int | None:
        """A right alarm's step minus the plateau step of the starved task it names (the earliest plateau)."""
        plateaus = [self.plateaus[task] for task in alarm.tasks if task in self.starved]
        return None if alarm.step is None or not plateaus else alarm.step - min(plateaus)

    def warned_lead(self, alarm: Alarm) -> int | None:
        """For a right ``alarm``: the first alert on the starved task it names (a warning, the dominance without
        lost progress yet, or the error itself) minus that task's plateau step, the earliest of the tasks named."""
        leads = [self.warned[task] - self.plateaus[task] for task in alarm.tasks if task in self.starved]
        return min(leads) if leads else None

    def overnamed(self, alarm: Alarm) -> frozenset[str]:
        """The tasks ``alarm`` named in a starved run that did not starve."""
        return alarm.named - set(self.starved) if self.label == "starved" else frozenset()


@functools.cache
def records(path: str) -> tuple[schema.Record, ...]:
    """The log's records, read once: ``--tune`` replays each log for every setting it tries."""
    return tuple(item.record for item in read_log(path) if isinstance(item, RecordItem))


def alarms(log: Sequence[schema.Record], thresholds: Thresholds) -> tuple[Alarm, Alarm, Alarm, dict[str, int]]:
    """The old rule's and the new verdict's first alarm on one log, the new verdict's first page, and per task
    the step its first collapse alert of any severity fired."""
    # The old rule is the spec's window alone: with the healthy band widened to the collapse bounds, a collapse
    # alert raised by a balance sample fires (at any severity) exactly when the window is beyond them.
    spec_window = replace(thresholds, balance_low=thresholds.collapse_low, balance_high=thresholds.collapse_high)
    old, _, _ = _first_collapse(log, spec_window, kinds={schema.TASK_BALANCE})
    return old, *_first_collapse(log, thresholds, kinds=set(schema.KINDS), verdict=True)


def _first_collapse(
    log: Sequence[schema.Record], thresholds: Thresholds, kinds: set[str], verdict: bool = False
) -> tuple[Alarm, Alarm, dict[str, int]]:
    """The first step a collapse alert raised by a record of ``kinds`` is firing, and the task it names; twice:
    as ``check`` judges and as a page; and per task the step its first collapse alert fired at any severity.
    With ``verdict``, at error level, and for ``check`` only an alert that counts as an error in the run's
    verdict at its end (a collapse that resolved, its task recovered, counts as a warning); a page is any error
    that fired."""
    engine = RuleEngine(thresholds)
    first: dict[str, tuple[int, bool]] = {}  # per task, the step its collapse first fired at the severity asked
    warned: dict[str, int] = {}
    for record in log:
        if record["kind"] not in kinds:
            continue
        engine.observe(record)
        for alert in engine.firing():
            if alert.rule != COLLAPSE:
                continue
            warned.setdefault(alert.subject, record.get("step") or 0)
            if alert.subject not in first and (not verdict or alert.severity == "error"):
                first[alert.subject] = (record.get("step") or 0, record["kind"] == schema.RUN_END)
    paged = _earliest(first)
    if verdict:
        counted = {a.subject for a in engine.alerts if a.rule == COLLAPSE and verdict_severity(a) == "error"}
        first = {task: when for task, when in first.items() if task in counted}
    return _earliest(first), paged, warned


def _earliest(first: dict[str, tuple[int, bool]]) -> Alarm:
    """The alarm of the earliest step in ``first`` (task -> its first step, and whether at the run's end)."""
    if not first:
        return Alarm()
    step, at_end = min(first.values())
    return Alarm(tuple(task for task, when in first.items() if when[0] == step), step, at_end, frozenset(first))


def judge(run: dict, chosen: Chosen, floors: bool = False) -> Outcome:
    """Replay one labelled run's log through the old rule and the new verdict, with ``chosen`` thresholds; a run
    cut short (``until``, see :func:`cut_short`) as if it had completed there; with ``floors``, its run_start
    given the run's training floors (``task_floors``)."""
    log = records(run["log"])
    if "until" in run:
        log = ended_at(log, run["until"])
    if floors and run.get("floors"):
        log = [{**r, "task_floors": run["floors"]} if r["kind"] == schema.RUN_START else r for r in log]
    start = next(r for r in log if r["kind"] == schema.RUN_START)
    recorded, _source = run_thresholds(start.get("thresholds"), Thresholds(), frozenset())
    starved = run["starved_tasks"]
    progress = run["progress"][starved[0]] if starved else None
    name = run["log"].rsplit("/", 1)[-1].removesuffix(".jsonl")
    return Outcome(name, run["family"], run["label"], tuple(starved), run["held_out"], run["plateau_step"], progress,
                   run.get("agreed"), *alarms(log, replace(recorded, **chosen)))  # fmt: skip


@dataclass(frozen=True)
class Score:
    """The confusion counts of one verdict over a set of runs, and the lead times of its right catches."""

    starved: int
    right: int  # starved runs alarmed, naming a starved task
    wrong_task: int  # alarmed, naming a task that did not starve
    missed: int
    healthy: int
    false_alarms: int  # healthy runs given an error
    paged: int  # healthy runs given an error at some time, even one that resolved (--notify-on error pages them)
    all_poor: int
    all_poor_alarmed: int
    leads: list[int]
    at_end: int  # right catches first named at the run's end
    warned_leads: list[int]  # of the right catches, the first alert on the task named (any severity) - plateau

    @property
    def recall(self) -> float:
        return self.right / self.starved if self.starved else float("nan")

    @property
    def false_alarm_rate(self) -> float:
        return self.false_alarms / self.healthy if self.healthy else float("nan")


def score(outcomes: Iterable[Outcome], verdict: str) -> Score:
    """Score the ``old`` or ``new`` verdict."""
    runs = list(outcomes)
    alarm = {o.run: getattr(o, verdict) for o in runs}
    starved = [o for o in runs if o.label == "starved"]
    right = [o for o in starved if o.right(alarm[o.run])]
    healthy = [o for o in runs if o.label == "healthy"]
    poor = [o for o in runs if o.label == "all_poor"]
    leads = [lead for o in right if (lead := o.lead(alarm[o.run])) is not None]
    paged = {o.run: o.paged if verdict == "new" else alarm[o.run] for o in healthy}
    return Score(
        starved=len(starved),
        right=len(right),
        wrong_task=sum(1 for o in starved if alarm[o.run].tasks and not o.right(alarm[o.run])),
        missed=sum(1 for o in starved if not alarm[o.run].tasks),
        healthy=len(healthy),
        false_alarms=sum(1 for o in healthy if alarm[o.run].tasks),
        paged=sum(1 for o in healthy if paged[o.run].tasks),
        all_poor=len(poor),
        all_poor_alarmed=sum(1 for o in poor if alarm[o.run].tasks),
        leads=leads,
        at_end=sum(1 for o in right if alarm[o.run].at_end),
        warned_leads=[lead for o in right if (lead := o.warned_lead(alarm[o.run])) is not None],
    )


def fraction(count: int, total: int) -> str:
    return f"{count}/{total} ({count / total:.0%})" if total else "0/0"


def lead_text(leads: list[int], at_end: int, warned: list[int] | None = None) -> str:
    """The lead times of a verdict's right catches in words; with ``warned`` (the new verdict's), also those of
    its first alert on the task, a warning that the error later confirmed."""
    if not leads:
        return "-"
    before = sum(1 for lead in leads if lead <= 0)
    ended = f", {at_end} only at the run's end" if at_end else ""
    first = ""
    if warned:
        early = sum(1 for lead in warned if lead <= 0)
        first = (f"; its first alert on that task (a warning until confirmed): median "
                 f"{statistics.median(warned):+.0f}, {early}/{len(warned)} at or before")  # fmt: skip
    return (f"median {statistics.median(leads):+.0f} steps, {before}/{len(leads)} at or before the plateau"
            f"{ended}{first}")  # fmt: skip


def table(outcomes: list[Outcome], title: str) -> list[str]:
    """A markdown table: per family and in total, old rule and new verdict side by side."""
    lines = [f"**{title}**", "",
             "| runs | verdict | starved caught, right task | wrong task | missed | healthy given an error | "
             "healthy paged (an error, even resolved) | lead time (alert - plateau) |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    families = sorted({o.family for o in outcomes})
    for group in [*families, "all"]:
        chosen = [o for o in outcomes if group in ("all", o.family)]
        for verdict, name in VERDICT_NAMES:
            s = score(chosen, verdict)
            lines.append(
                f"| {group} ({len(chosen)}) | {name} | {fraction(s.right, s.starved)} | {s.wrong_task} | "
                f"{s.missed} | {fraction(s.false_alarms, s.healthy)} | {fraction(s.paged, s.healthy)} | "
                f"{lead_text(s.leads, s.at_end, s.warned_leads if verdict == 'new' else None)} |"
            )
    starved = [o for o in outcomes if o.label == "starved" and o.progress is not None]
    missed = sorted(o.progress for o in starved if not o.right(o.new))
    if missed:
        clear = [o for o in starved if o.progress < CLEARLY_STARVED]
        caught = sum(o.right(o.new) for o in clear)
        lines += ["", f"Starved runs the new verdict missed, by the starved task's held-out progress: "
                      f"{', '.join(f'{p:.2f}' for p in missed)}. Clearly starved (progress below "
                      f"{CLEARLY_STARVED}): {fraction(caught, len(clear))} caught."]  # fmt: skip
    overnamed = [f"{o.run} ({', '.join(sorted(o.overnamed(o.new)))})" for o in outcomes if o.overnamed(o.new)]
    if overnamed:
        lines += ["", f"Starved runs in which the new verdict also named a task that did not starve: "
                      f"{', '.join(overnamed)}."]  # fmt: skip
    poor = [o for o in outcomes if o.label == "all_poor"]
    if poor:
        lines += ["", f"Every task poor (not scored): {', '.join(o.run for o in poor)}"]
    return lines


def reliability_table(outcomes: list[Outcome], title: str) -> list[str]:
    """A markdown table: per family and in total, how many runs' labels each half of the held-out split gives
    alike (the rest are as much the held-out sample's noise as the run's outcome), and the new verdict scored on
    those runs alone. Empty when no run recorded its halves."""
    if all(o.agreed is None for o in outcomes):
        return []
    lines = [f"**{title}**", "",
             "| runs | labels both halves of the held-out split give alike | starved caught, right task | "
             "healthy given an error |", "|---|---|---|---|"]  # fmt: skip
    families = sorted({o.family for o in outcomes})
    for group in [*families, "all"]:
        chosen = [o for o in outcomes if group in ("all", o.family) and o.agreed is not None]
        agreed = [o for o in chosen if o.agreed]
        s = score(agreed, "new")
        lines.append(f"| {group} ({len(chosen)}) | {fraction(len(agreed), len(chosen))} | "
                     f"{fraction(s.right, s.starved)} | {fraction(s.false_alarms, s.healthy)} |")  # fmt: skip
    return lines


def tune(runs: list[dict], stages: Sequence[int], defaults: Chosen, floors: bool = False) -> Chosen:
    """Stage by stage (the ``stages`` of ``TUNING_STAGES``, counted from 1; a stage left out, and every stage
    before its own, keeps the watcher's ``defaults``, not the values each run recorded): each stage's grid tried
    beside each of the previous stage's ``KEPT`` best settings; the best are those with the best recall (right
    task) on the tuning runs among those within the false-alarm target, or, with none within it, the best recall
    less false-alarm rate (Youden's J); ties going to the fewer false alarms, then the smaller values. Prints each
    stage's front; returns the last stage's best. With ``floors``, the runs are judged with their training floors
    and :data:`FLOOR_STAGE` comes last."""
    tuning = [run for run in runs if not run["held_out"]]
    kept: list[Chosen] = [dict(defaults)]
    tuned: list[str] = []  # the names chosen so far: the front shows them, not every default carried beside them
    for fixed, stage in [*(TUNING_STAGES[number - 1] for number in stages), *([FLOOR_STAGE] if floors else [])]:
        scored = []
        for before, values in itertools.product(kept, itertools.product(*stage.values())):
            trial = {**before, **fixed, **dict(zip(stage, values, strict=True))}
            s = score([judge(run, trial, floors) for run in tuning], "new")
            chosen = {**before, **dict(zip(stage, values, strict=True))}
            within = s.false_alarm_rate <= FALSE_ALARM_TARGET
            # Beyond the target, recall alone would choose the setting that changes least: the best trade instead
            merit = s.recall if within else s.recall - s.false_alarm_rate
            scored.append((within, merit, -s.false_alarm_rate, [-x for x in chosen.values()], chosen, s))
        scored.sort(key=lambda row: row[:4], reverse=True)
        tuned += stage
        print(f"{' x '.join(stage)} on the {len(tuning)} tuning runs (held-out runs not used), best first:")
        for *_rank, chosen, s in scored[:SHOWN]:
            print(f"  {', '.join(f'{name} {chosen[name]}' for name in tuned)}: recall {s.recall:.1%}, "
                  f"false alarms {s.false_alarms}/{s.healthy} ({s.false_alarm_rate:.1%})")  # fmt: skip
        if not scored[0][0]:
            print(f"  (none keeps false alarms within {FALSE_ALARM_TARGET:.0%})")
        kept = [row[4] for row in scored[:KEPT]]
    return kept[0]


def cut_short(runs: list[dict], epochs: int) -> list[dict]:
    """Every labelled run as if it had completed after ``epochs`` epochs (the same training, shorter), relabelled
    from its held-out metrics up to there against the runs of its family and seed cut alike; ``until`` is the step
    its log is cut at."""
    short = [cut(Run(**row), epochs) for row in runs]
    label(short)
    return [{**asdict(run), "until": run.steps[-1]} for run in short]


def ended_at(log: Sequence[schema.Record], step: int) -> list[schema.Record]:
    """``log``'s records up to ``step``, then its ``run_end`` moved there."""
    kept = [r for r in log if r["kind"] != schema.RUN_END and (r.get("step") is None or r["step"] <= step)]
    end = next(r for r in log if r["kind"] == schema.RUN_END)
    return [*kept, {**end, "step": step, "epoch": max(r["epoch"] for r in kept if r.get("epoch") is not None)}]


def seed_span(seeds: Sequence[int]) -> str:
    """'4-9' for consecutive seeds, else '4, 6, 9'."""
    if len(seeds) > 2 and list(seeds) == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--tune", action="store_true", help="choose the verdict's numbers on the tuning runs")
    parser.add_argument("--stages", default=",".join(str(n) for n in range(1, len(TUNING_STAGES) + 1)),
                        help="with --tune, the stages to choose (the others keep the defaults): 3 alone takes "
                             "minutes, all of them about 15 minutes on 2 cores")  # fmt: skip
    parser.add_argument("--cut-at", type=int, metavar="EPOCH",
                        help="judge every run as if it had completed after this epoch, relabelled there")  # fmt: skip
    parser.add_argument("--floors", action="store_true",
                        help="judge each run with its tasks' training floors (task_floors) in run_start")  # fmt: skip
    args = parser.parse_args()
    labels = args.corpus / "labels.json"
    if not labels.exists():
        subprocess.run([sys.executable, str(Path(__file__).with_name("detection_corpus.py")), "--out",
                        str(args.corpus)], check=True)  # fmt: skip
    runs = json.loads(labels.read_text())
    if args.cut_at:
        runs = cut_short(runs, args.cut_at)
    defaults = Thresholds().to_dict()
    chosen = {name: defaults[name] for _fixed, stage in TUNING_STAGES for name in stage}
    if args.tune:
        chosen |= tune(runs, [int(number) for number in args.stages.split(",") if number], chosen, args.floors)
    print(
        f"\n{', '.join(f'{name} {value}' for name, value in chosen.items())}; window and ratio bounds as each run "
        "recorded them\n"
    )
    if args.floors:
        chosen.setdefault("floor_progress", defaults["floor_progress"])
    outcomes = [judge(run, chosen, args.floors) for run in runs]
    held_out = sorted({run["seed"] for run in runs if run["held_out"]})
    for title, chosen in (("Tuning runs", [o for o in outcomes if not o.held_out]),
                          (f"Held-out runs (seeds {seed_span(held_out)}, never used to choose a number)",
                           [o for o in outcomes if o.held_out])):  # fmt: skip
        print("\n".join(table(chosen, title)), end="\n\n")
        reliable = reliability_table(chosen, f"{title.split(' (')[0]}: the new verdict on runs whose label is reliable")
        if reliable:
            print("\n".join(reliable), end="\n\n")


if __name__ == "__main__":
    main()
