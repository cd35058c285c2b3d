"""How far any verdict on the training-side signals can go on the labelled corpus: classifiers learned from them
(logistic regression, gradient-boosted trees) beside the verdict, scored alike on the same held-out runs.

    .venv/bin/python benchmarks/detection_ceiling.py            # about a minute; needs runs/detection-corpus
    .venv/bin/python benchmarks/detection_ceiling.py --floors   # with each task's way to its training floor

Each task of each labelled run is one example (positive: the task starved), its signals taken at the run's end:

* ``share``, ``run_share``: its mean share of the update over the collapse window and over the whole run, times
  the number of tasks (1: an equal share), log;
* ``dominance``, ``raw_dominance``: the window mean of the largest other task's gradient norm over its own,
  weighted and unweighted, log;
* ``persistence``: the window mean cosine of its gradient between consecutive samples (low: noise at a minimum);
* ``rate``: its training loss (mean of the last three epochs) over its first epoch's; ``relative_rate``: that
  over the other tasks' mean (GradNorm's inverse training rate); ``half_rate``: the run's middle epoch's over
  its first; ``drop``: the change over the window's last ten epochs; ``late_fall``: the share of its loss's whole
  fall made in the run's second half;
* with ``--floors``, ``way``: how far its loss came from its first epoch's towards its training floor.

The learned models see the whole run and are chosen with the labels, so they bound what an end-of-run verdict on
these signals can do here; they are not a rule to ship (the verdict must decide while the run goes on, and say
why). A run's alarm is its most probable task, if above a threshold. The threshold is chosen on out-of-fold
predictions on the tuning seeds (each seed's runs predicted by a model fit on the other tuning seeds): the one
that catches the most starved runs with at most 5% of the healthy ones alarmed. The model is then fit on every
tuning run and scored on the held-out seeds, where the verdict (defaults; ``--floors``: given the floors) is
scored beside it.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from detection import CORPUS, FALSE_ALARM_TARGET, TUNING_STAGES, fraction, judge, records, score
from detection_labels import TUNING_SEEDS
from sklearn.base import ClassifierMixin, clone
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from moola_watch import schema
from moola_watch.rules import Thresholds

WINDOW = 10  # balance samples and epochs in the window, as the rule's default
ENDS = 3  # epochs averaged at each end of a span, as the rule does
SIGNALS = ("share", "run_share", "dominance", "raw_dominance", "persistence", "rate", "relative_rate", "half_rate",
           "drop", "late_fall")  # fmt: skip


def _imputed(model: ClassifierMixin, scaled: bool = False) -> Callable[[], ClassifierMixin]:
    """A maker of ``model`` behind a median imputer (a signal a run lacks), and a scaler where it needs one."""
    steps = [SimpleImputer(strategy="median"), *([StandardScaler()] if scaled else []), model]
    return lambda: make_pipeline(*(clone(step) for step in steps))


MODELS: dict[str, Callable[[], ClassifierMixin]] = {
    "logistic regression": _imputed(LogisticRegression(max_iter=5000), scaled=True),
    "boosted trees, depth 2": _imputed(GradientBoostingClassifier(max_depth=2, random_state=0)),
    "boosted trees, depth 3": _imputed(GradientBoostingClassifier(max_depth=3, n_estimators=200, random_state=0)),
}


@dataclass(frozen=True)
class Example:
    """One task of one labelled run."""

    run: str
    family: str
    seed: int
    held_out: bool
    label: str  # the run's: starved or healthy
    starved: bool  # this task starved
    signals: tuple[float, ...]


def _mean(values: Sequence[float | None]) -> float:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(kept)) if kept else math.nan


def _log(value: float) -> float:
    return math.log(max(value, 1e-9)) if math.isfinite(value) else math.nan


def task_signals(log: Sequence[schema.Record], floors: dict[str, float] | None) -> dict[str, tuple[float, ...]]:
    """Each task's signals at the run's end (see the module's docstring), in :data:`SIGNALS`' order (then ``way``
    where ``floors`` are given)."""
    samples = [r for r in log if r["kind"] == schema.TASK_BALANCE]
    epochs = [r["task_losses"] for r in log if r["kind"] == schema.EPOCH and r.get("task_losses")]
    tasks = list(samples[-1]["shares"])
    losses = {t: [e[t] for e in epochs if t in e] for t in tasks}
    rates = {t: _mean(ls[-ENDS:]) / ls[0] if ls else math.nan for t, ls in losses.items()}
    window = samples[-WINDOW:]
    out = {}
    for task in tasks:
        others = [o for o in tasks if o != task]
        ls = losses[task]
        first, last = (ls[0], _mean(ls[-ENDS:])) if ls else (math.nan, math.nan)
        middle = ls[len(ls) // 2] if ls else math.nan
        signals = [
            _log(_mean([s["shares"][task] for s in window]) * len(tasks)),
            _log(_mean([s["shares"][task] for s in samples]) * len(tasks)),
            _log(_mean([max(s["norms"][o] for o in others) / max(s["norms"][task], 1e-30) for s in window])),
            _log(_mean([max(s["raw_norms"][o] for o in others) / max(s["raw_norms"][task], 1e-30) for s in window])),
            _mean([s.get("persistence", {}).get(task) for s in window]),
            rates[task],
            rates[task] / _mean([rates[o] for o in others]),
            middle / first,
            last / _mean(ls[-WINDOW : -WINDOW + ENDS]) - 1 if len(ls) >= WINDOW else math.nan,
            (middle - last) / (first - last) if first > last else math.nan,
        ]
        if floors is not None:
            floor = floors.get(task, math.nan)
            signals.append((first - last) / (first - floor) if first > floor else math.nan)
        out[task] = tuple(signals)
    return out


def examples(runs: list[dict], floors: bool) -> list[Example]:
    """Every task of every run labelled starved or healthy (runs whose every task is poor are not scored)."""
    found = []
    for run in runs:
        if run["label"] not in ("starved", "healthy"):
            continue
        given = (run.get("floors") or {}) if floors else None
        for task, signals in task_signals(records(run["log"]), given).items():
            found.append(Example(run["log"], run["family"], run["seed"], run["held_out"], run["label"],
                                 task in run["starved_tasks"], signals))  # fmt: skip
    return found


@dataclass(frozen=True)
class RunCall:
    """A run's most probable task: whether it starved, and its probability."""

    label: str
    family: str
    right: bool
    probability: float


def run_calls(chosen: list[Example], probabilities: np.ndarray) -> list[RunCall]:
    best: dict[str, tuple[float, Example]] = {}
    for example, p in zip(chosen, probabilities, strict=True):
        if example.run not in best or p > best[example.run][0]:
            best[example.run] = (float(p), example)
    return [RunCall(e.label, e.family, e.starved, p) for p, e in best.values()]


def counts(calls: list[RunCall], threshold: float) -> tuple[int, int, int, int]:
    """(starved runs alarmed on a starved task, starved runs, healthy runs alarmed, healthy runs)."""
    starved = [c for c in calls if c.label == "starved"]
    healthy = [c for c in calls if c.label == "healthy"]
    return (sum(c.right and c.probability > threshold for c in starved), len(starved),
            sum(c.probability > threshold for c in healthy), len(healthy))  # fmt: skip


def best_threshold(calls: list[RunCall]) -> float:
    """The threshold that catches the most starved runs with at most the target share of healthy ones alarmed."""
    ranked = []
    for threshold in sorted({c.probability for c in calls}):
        caught, _, alarmed, healthy = counts(calls, threshold)
        if alarmed <= FALSE_ALARM_TARGET * healthy:
            ranked.append((caught, -threshold, threshold))
    return max(ranked)[2] if ranked else 1.0


def fitted(name: str, chosen: list[Example]) -> ClassifierMixin:
    model = MODELS[name]()
    model.fit(np.array([e.signals for e in chosen]), np.array([e.starved for e in chosen]))
    return model


def probabilities(model: ClassifierMixin, chosen: list[Example]) -> np.ndarray:
    return model.predict_proba(np.array([e.signals for e in chosen]))[:, 1]


def learned_row(name: str, tuning: list[Example], held_out: list[Example]) -> tuple[tuple[float, ...], dict]:
    """A model's held-out counts (see :func:`counts`) at the threshold chosen out of fold on the tuning seeds, then
    its per-task AUROC held out; and the counts per family."""
    out_of_fold: list[RunCall] = []
    for seed in sorted(TUNING_SEEDS):
        fold = [e for e in tuning if e.seed == seed]
        model = fitted(name, [e for e in tuning if e.seed != seed])
        out_of_fold += run_calls(fold, probabilities(model, fold))
    threshold = best_threshold(out_of_fold)
    predicted = probabilities(fitted(name, tuning), held_out)
    calls = run_calls(held_out, predicted)
    families = {c.family for c in calls}
    auroc = roc_auc_score([e.starved for e in held_out], predicted)
    return (*counts(calls, threshold), auroc), {
        f: counts([c for c in calls if c.family == f], threshold) for f in families
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--floors", action="store_true", help="add each task's way to its training floor")
    args = parser.parse_args()
    runs = json.loads((args.corpus / "labels.json").read_text())
    found = examples(runs, args.floors)
    tuning = [e for e in found if not e.held_out]
    held_out = [e for e in found if e.held_out]
    names = [*SIGNALS, *(["way"] if args.floors else [])]
    starved = np.array([e.starved for e in tuning])
    print("Each signal alone, per task on the tuning runs (AUROC for the starved task, either direction):")
    for index, name in enumerate(names):
        column = np.array([e.signals[index] for e in tuning])
        kept = np.isfinite(column)
        auroc = roc_auc_score(starved[kept], column[kept])
        print(f"  {name}: {max(auroc, 1 - auroc):.2f}")
    defaults = Thresholds().to_dict()
    chosen = {name: defaults[name] for _fixed, stage in TUNING_STAGES for name in stage}
    verdict = score([judge(run, chosen, args.floors) for run in runs if run["held_out"]], "new")
    print(f"\nHeld-out runs (seeds outside {sorted(TUNING_SEEDS)}), target: at least 95% caught, at most "
          f"{FALSE_ALARM_TARGET:.0%} of healthy runs alarmed\n")  # fmt: skip
    print("| verdict | starved caught, right task | healthy alarmed (error) | per-task AUROC |\n|---|---|---|---|")
    print(f"| the verdict (defaults) | {fraction(verdict.right, verdict.starved)} | "
          f"{fraction(verdict.false_alarms, verdict.healthy)} | |")  # fmt: skip
    per_family = {}
    for name in MODELS:
        (caught, starved_runs, alarmed, healthy, auroc), per_family[name] = learned_row(name, tuning, held_out)
        print(f"| {name}, learned | {fraction(int(caught), int(starved_runs))} | "
              f"{fraction(int(alarmed), int(healthy))} | {auroc:.2f} |")  # fmt: skip
    print("\nPer family, held out (caught / starved, alarmed / healthy):\n")
    print(f"| family | {' | '.join(MODELS)} |\n|---|{'---|' * len(MODELS)}")
    for family in sorted(next(iter(per_family.values()))):
        cells = [f"{c[0]}/{c[1]}, {c[2]}/{c[3]}" for c in (per_family[name][family] for name in MODELS)]
        print(f"| {family} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
