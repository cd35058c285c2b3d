"""Detection quality of the task-collapse verdict on the labelled corpus, old rule and new verdict side by side.

    .venv/bin/python benchmarks/detection.py            # builds the corpus first if runs/detection-corpus is empty
    .venv/bin/python benchmarks/detection.py --tune     # first choose starve_drop, starve_share on the tuning runs

The *old rule* is the spec's dominance window alone at error level (what ``check`` failed on before): the
first step a ``collapse`` alert is firing with its window beyond ``collapse_high``, whatever its severity. The
*new verdict* is the first step a ``collapse`` alert is firing at error level (a ratio outside the healthy band
and a starving task). Both are read from one replay of each
log through :class:`moola_watch.rules.RuleEngine` with the run's recorded thresholds, ``starve_drop`` and
``starve_share`` from the watcher's defaults unless ``--tune`` chose others. Ground truth comes from held-out
metrics only (see ``detection_corpus.py``).

Lead time is the alert's step minus the step at which the starved task's validation metric plateaued
(negative: the alert came first).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from moola_watch import schema
from moola_watch.rules import COLLAPSE, RuleEngine, Thresholds, run_thresholds
from moola_watch.tail import RecordItem, read_log

CORPUS = Path("runs/detection-corpus")
FALSE_ALARM_TARGET = 0.05  # at most this share of healthy runs may get an error-level verdict
CLEARLY_STARVED = 0.3  # starved runs this far below the label's 0.5 are not borderline
DROP_GRID = (0.0, 0.01, 0.02, 0.03, 0.05, 0.1, 0.15, 0.2)
SHARE_GRID = (0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2)
Starve = tuple[float, float]  # (starve_drop, starve_share)


@dataclass(frozen=True)
class Alarm:
    """The first step a verdict named a task (None: it never did)."""

    task: str | None
    step: int | None


@dataclass(frozen=True)
class Outcome:
    """One labelled run as each verdict judged it."""

    run: str
    family: str
    label: str
    starved: str | None
    held_out: bool
    plateau: int | None  # the step the starved task's validation metric plateaued
    progress: float | None  # the starved task's share of its achievable held-out progress
    old: Alarm
    new: Alarm


def records(path: str) -> list[schema.Record]:
    return [item.record for item in read_log(path) if isinstance(item, RecordItem)]


def alarms(log: list[schema.Record], thresholds: Thresholds) -> list[Alarm]:
    """The old rule's and the new verdict's first alarm on one log."""
    # The old rule is the spec's window alone: with the healthy band widened to the collapse bounds, a collapse
    # alert fires (at any severity) exactly when the window is beyond them.
    spec_window = replace(thresholds, balance_low=thresholds.collapse_low, balance_high=thresholds.collapse_high)
    return [_first_collapse(log, spec_window, severity=None), _first_collapse(log, thresholds, severity="error")]


def _first_collapse(log: list[schema.Record], thresholds: Thresholds, severity: str | None) -> Alarm:
    """The first step a collapse alert is firing (at ``severity``, or any), and the task it names."""
    engine = RuleEngine(thresholds)
    for record in log:
        engine.observe(record)
        for alert in engine.firing():
            if alert.rule == COLLAPSE and severity in (None, alert.severity):
                return Alarm(alert.subject, record.get("step"))
    return Alarm(None, None)


def judge(run: dict, starve: Starve) -> Outcome:
    """Replay one labelled run's log through the old rule and the new verdict."""
    log = records(run["log"])
    start = next(r for r in log if r["kind"] == schema.RUN_START)
    recorded, _source = run_thresholds(start.get("thresholds"), Thresholds(), frozenset())
    old, new = alarms(log, replace(recorded, starve_drop=starve[0], starve_share=starve[1]))
    starved = run["starved"]
    return Outcome(run["log"].rsplit("/", 1)[-1].removesuffix(".jsonl"), run["family"], run["label"], starved,
                   run["held_out"], run["plateau_step"].get(starved) if starved else None,
                   run["progress"].get(starved) if starved else None, old, new)  # fmt: skip


@dataclass(frozen=True)
class Score:
    """The confusion counts of one verdict over a set of runs, and the lead times of its right catches."""

    starved: int
    right: int  # starved runs alarmed, naming the starved task
    wrong_task: int  # alarmed, naming the other task
    missed: int
    healthy: int
    false_alarms: int  # healthy runs given an error
    both_poor: int
    both_poor_alarmed: int
    leads: list[int]

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
    right = [o for o in starved if alarm[o.run].task == o.starved]
    healthy = [o for o in runs if o.label == "healthy"]
    poor = [o for o in runs if o.label == "both_poor"]
    leads = [alarm[o.run].step - o.plateau for o in right if alarm[o.run].step is not None and o.plateau is not None]
    return Score(
        starved=len(starved),
        right=len(right),
        wrong_task=sum(1 for o in starved if alarm[o.run].task not in (None, o.starved)),
        missed=sum(1 for o in starved if alarm[o.run].task is None),
        healthy=len(healthy),
        false_alarms=sum(1 for o in healthy if alarm[o.run].task is not None),
        both_poor=len(poor),
        both_poor_alarmed=sum(1 for o in poor if alarm[o.run].task is not None),
        leads=leads,
    )


def fraction(count: int, total: int) -> str:
    return f"{count}/{total} ({count / total:.0%})" if total else "0/0"


def lead_text(leads: list[int]) -> str:
    if not leads:
        return "-"
    before = sum(1 for lead in leads if lead <= 0)
    return f"median {statistics.median(leads):+.0f} steps, {before}/{len(leads)} at or before the plateau"


def table(outcomes: list[Outcome], title: str) -> list[str]:
    """A markdown table: per family and in total, old rule and new verdict side by side."""
    lines = [f"**{title}**", "",
             "| runs | verdict | starved caught, right task | wrong task | missed | healthy given an error | "
             "lead time (alert - plateau) |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    families = sorted({o.family for o in outcomes})
    for group in [*families, "all"]:
        chosen = [o for o in outcomes if group in ("all", o.family)]
        for verdict, name in (("old", "old rule (dominance)"), ("new", "new verdict (dominance + lost progress)")):
            s = score(chosen, verdict)
            lines.append(
                f"| {group} ({len(chosen)}) | {name} | {fraction(s.right, s.starved)} | {s.wrong_task} | "
                f"{s.missed} | {fraction(s.false_alarms, s.healthy)} | {lead_text(s.leads)} |"
            )
    starved = [o for o in outcomes if o.label == "starved" and o.progress is not None]
    missed = sorted(o.progress for o in starved if o.new.task != o.starved)
    if missed:
        clear = [o for o in starved if o.progress < CLEARLY_STARVED]
        caught = sum(o.new.task == o.starved for o in clear)
        lines += ["", f"Starved runs the new verdict missed, by the starved task's held-out progress: "
                      f"{', '.join(f'{p:.2f}' for p in missed)}. Clearly starved (progress below "
                      f"{CLEARLY_STARVED}): {fraction(caught, len(clear))} caught."]  # fmt: skip
    poor = [o for o in outcomes if o.label == "both_poor"]
    if poor:
        lines += ["", f"Both tasks poor (not scored): {', '.join(o.run for o in poor)}"]
    return lines


def tune(runs: list[dict]) -> Starve:
    """The (starve_drop, starve_share) with the best recall (right task) on the tuning runs among those within
    the false-alarm target; ties go to the fewer false alarms, then the smaller thresholds. Prints the front."""
    tuning = [run for run in runs if not run["held_out"]]
    scored = []
    for starve in itertools.product(DROP_GRID, SHARE_GRID):
        s = score([judge(run, starve) for run in tuning], "new")
        scored.append((s.false_alarm_rate <= FALSE_ALARM_TARGET, s.recall, -s.false_alarm_rate, [-x for x in starve],
                       starve, s))  # fmt: skip
    scored.sort(key=lambda row: row[:4], reverse=True)
    print(f"starve_drop x starve_share on the {len(tuning)} tuning runs (held-out runs not used), best first:")
    for *_rank, starve, s in scored[:5]:
        print(f"  drop {starve[0]:<5} share {starve[1]:<6} recall {s.recall:.1%}  false alarms "
              f"{s.false_alarms}/{s.healthy} ({s.false_alarm_rate:.1%})")  # fmt: skip
    if not scored[0][0]:
        print(f"  (none keeps false alarms within {FALSE_ALARM_TARGET:.0%})")
    return scored[0][4]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--tune", action="store_true", help="choose starve_drop and starve_share on the tuning runs")
    args = parser.parse_args()
    labels = args.corpus / "labels.json"
    if not labels.exists():
        subprocess.run([sys.executable, str(Path(__file__).with_name("detection_corpus.py")), "--out",
                        str(args.corpus)], check=True)  # fmt: skip
    runs = json.loads(labels.read_text())
    defaults = Thresholds()
    starve = tune(runs) if args.tune else (defaults.starve_drop, defaults.starve_share)
    print(f"\nstarve_drop {starve[0]}, starve_share {starve[1]}; window and ratio bounds as each run recorded them\n")
    outcomes = [judge(run, starve) for run in runs]
    for title, chosen in (("Tuning runs", [o for o in outcomes if not o.held_out]),
                          ("Held-out runs (seeds 4 and 5, never used to choose a number)",
                           [o for o in outcomes if o.held_out])):  # fmt: skip
        print("\n".join(table(chosen, title)), end="\n\n")


if __name__ == "__main__":
    main()
