"""Detection quality of the task-collapse verdict outside the detection corpus's families, as a user meets it: the
outside corpus's runs (``outside_corpus.py``: a tiny Transformer, a 1D CNN and an MLP on a table) judged by the
real command line, ``moola-watch check --json``, without and with the ``--task-floor`` flags that ``moola-watch
floors`` reads off each setting's single-task runs.

    cd benchmarks && ../.venv/bin/python outside.py   # builds runs/outside-corpus first if it has no labels.json
                                                      # (about 8 minutes on one core), then checks (about 40 s)

A starved run is caught when, of the collapse alerts that count as an error in ``check``'s verdict (``counts_as``),
the earliest names a starved task; a healthy run is given an error when any does, and paged when any collapse
alert reached error severity, even one that resolved (what ``--notify-on error`` sends). all_poor runs are counted,
not scored. The last two columns score the runs whose label each half of the held-out split gives alike. Then
the same with each task's achievable progress taken per trunk width (a sensitivity check, not the corpus's rule:
a task the small trunk cannot serve even alone is then not starved), and every miss and false alarm with the
task's held-out progress and the start of its collapse message.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from detection import fraction
from detection_labels import Run
from outside_corpus import label, setting, solo_logs

CORPUS = Path("runs/outside-corpus")
WATCH = (sys.executable, "-m", "moola_watch")  # the installed command line, run as a user runs it
MESSAGE_CHARS = 200  # of each collapse message listed
STARVED = ("caught", "wrong_task", "missed")
HEALTHY = ("false_alarm", "quiet")
Report = dict[str, Any]  # one log's object from ``moola-watch check --json``
Alert = dict[str, Any]  # one of its alerts


@dataclass(frozen=True)
class Judged:
    """One labelled run as ``check`` judged it."""

    outcome: str  # starved: caught, wrong_task or missed; healthy: false_alarm or quiet; all_poor
    errors: tuple[Alert, ...]  # its collapse alerts counting as an error in the verdict, the earliest first
    paged: bool  # a collapse alert reached error severity, even one that resolved
    collapse: tuple[Alert, ...]  # every collapse alert, in check's order


def check(logs: list[str], floors: dict[str, float]) -> dict[str, Report]:
    """``moola-watch check --json`` of ``logs``, with a ``--task-floor`` per entry of ``floors``: log -> its object."""
    flags = [arg for task, loss in floors.items() for arg in ("--task-floor", f"{task}={loss}")]
    proc = subprocess.run([*WATCH, "check", "--json", *flags, *logs], capture_output=True, text=True)
    reports = {report["log"]: report for report in map(json.loads, proc.stdout.splitlines())}
    if proc.returncode not in (0, 1) or set(logs) - set(reports):  # 1: something fired at error, what is scored
        raise SystemExit(f"moola-watch check exited {proc.returncode}: {proc.stderr[-2000:]}")
    return reports


def cli_floors(logs: list[str]) -> dict[str, float]:
    """Each task's training floor (a loss) as ``moola-watch floors`` reads it off ``logs``, runs of one task
    alone: the ``--task-floor=TASK=LOSS`` flags of its last line."""
    proc = subprocess.run([*WATCH, "floors", *logs], capture_output=True, text=True, check=True)
    flags = (flag.removeprefix("--task-floor=").rpartition("=") for flag in proc.stdout.splitlines()[-1].split())
    return {task: float(loss) for task, _, loss in flags}


def judge(run: Run, report: Report) -> Judged:
    """``run``'s outcome under the verdict in ``report``."""
    collapse = tuple(alert for alert in report["alerts"] if alert["rule"] == "collapse")
    errors = tuple(sorted((a for a in collapse if a["counts_as"] == "error"), key=lambda a: a["first_step"] or 0))
    if run.label == "starved":
        outcome = "missed" if not errors else "caught" if errors[0]["subject"] in run.starved_tasks else "wrong_task"
    elif run.label == "healthy":
        outcome = "false_alarm" if errors else "quiet"
    else:
        outcome = "all_poor"
    return Judged(outcome, errors, any(a["severity"] == "error" for a in collapse), collapse)


def table(judged: list[tuple[Run, Judged]]) -> list[str]:
    """A markdown table of the outcomes, per family and overall."""
    lines = ["| family | runs | starved caught, right task | wrong task | missed | healthy given an error | "
             "healthy paged (an error, even resolved) | all_poor | labels both halves agree on: starved caught | "
             "labels both halves agree on: healthy given an error |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for family in [*sorted({run.family for run, _ in judged}), "all"]:
        rows = [(run, j) for run, j in judged if family in ("all", run.family)]
        n = Counter(j.outcome for _, j in rows)
        agreed = Counter(j.outcome for run, j in rows if run.agreed)
        paged = sum(j.paged for run, j in rows if run.label == "healthy")
        starved, healthy = sum(n[o] for o in STARVED), sum(n[o] for o in HEALTHY)
        lines.append(
            f"| {family} | {len(rows)} | {fraction(n['caught'], starved)} | {n['wrong_task']} | {n['missed']} | "
            f"{fraction(n['false_alarm'], healthy)} | {fraction(paged, healthy)} | {n['all_poor']} | "
            f"{fraction(agreed['caught'], sum(agreed[o] for o in STARVED))} | "
            f"{fraction(agreed['false_alarm'], sum(agreed[o] for o in HEALTHY))} |"
        )
    return lines


def cases(judged: list[tuple[Run, Judged]]) -> list[str]:
    """One line per starved run missed or named wrongly and per healthy run given an error: the task (the starved
    one; of a false alarm, the one named), its held-out progress (a share of the achievable), and the start of the
    collapse alert that decided (the earliest counting as an error; of a miss, the last on the starved task)."""
    lines = []
    for run, j in judged:
        if j.outcome in ("missed", "wrong_task", "false_alarm"):
            task = run.starved or j.errors[0]["subject"]
            on_task = [a for a in j.collapse if a["subject"] == task]
            alert = j.errors[0] if j.errors else on_task[-1] if on_task else None
            said = (f"[{alert['subject']}: {alert['severity']}, counts as {alert['counts_as']}, {alert['state']}, "
                    f"step {alert['first_step']}] {alert['message'][:MESSAGE_CHARS]}" if alert else
                    f"no collapse alert on {task}")  # fmt: skip
            agreed = "; halves agree" if run.agreed else ""
            lines.append(f"- {Path(run.log).stem} ({j.outcome}{agreed}): {task} progress "
                         f"{run.progress[task]:.2f}; {said}")  # fmt: skip
    return lines


def per_width(runs: list[Run]) -> list[Run]:
    """Copies of ``runs`` labelled with each task's achievable progress taken per trunk width (the best of the
    runs of its family, seed and width), not over both widths."""
    fresh = [replace(run, label="", starved=None, starved_tasks=[], progress={}, plateau_step={}, agreed=None)
             for run in runs]  # fmt: skip
    for width in {setting(run).rsplit("-h", 1)[1] for run in fresh}:
        label([run for run in fresh if setting(run).rsplit("-h", 1)[1] == width])
    return fresh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    args = parser.parse_args()
    labels = args.corpus / "labels.json"
    if not labels.exists():
        subprocess.run([sys.executable, str(Path(__file__).with_name("outside_corpus.py")), "--out",
                        str(args.corpus)], check=True)  # fmt: skip
    runs = [Run(**row) for row in json.loads(labels.read_text())]
    settings: dict[str, list[Run]] = {}
    for run in runs:
        settings.setdefault(setting(run), []).append(run)
    reports: dict[str, dict[str, Report]] = {"without floors": {}, "with floors": {}}
    for group in settings.values():  # one check of a setting's 9 runs at a time: the runs share their floors
        logs = [run.log for run in group]
        reports["without floors"] |= check(logs, {})
        reports["with floors"] |= check(logs, cli_floors(solo_logs(group[0])))
    titles = {"without floors": "Without floors", "with floors": "With `--task-floor` from `moola-watch floors` on "
              "each setting's single-task runs"}  # fmt: skip
    listed: list[str] = []
    for key, title in titles.items():
        judged = [(run, judge(run, reports[key][run.log])) for run in runs]
        print(f"## {title}\n", *table(judged), "", sep="\n")
        listed += [f"## Misses and false alarms, {key}\n", *cases(judged), ""]
    print("## Labels with the achievable progress per trunk width (a sensitivity check, not the corpus's rule)\n")
    relabelled = per_width(runs)
    for key in titles:
        print(f"{key.capitalize()}:\n", *table([(run, judge(run, reports[key][run.log])) for run in relabelled]), "",
              sep="\n")  # fmt: skip
    other = Counter(rule for report in reports["without floors"].values()
                    for rule in {a["rule"] for a in report["alerts"] if a["counts_as"] in ("error", "critical")}
                    if rule != "collapse")  # fmt: skip
    held = ", ".join(f"{rule} {count}" for rule, count in sorted(other.items()))
    print(f"Not scored: of {len(runs)} runs, those whose verdict also holds another rule's error: {held}\n")
    print(*listed, sep="\n")


if __name__ == "__main__":
    main()
