"""Ground truth of the detection corpus (``detection_corpus.py``): each run's labels from its held-out metrics
alone, never from gradients. The rule, for any number of tasks, is described in ``detection_corpus.py``.

Pure (numpy, no torch): ``detection.py`` relabels runs cut short with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

STARVED_PROGRESS = 0.5  # a task reaching less than half of its achievable progress is starved
TAIL_EPOCHS = 3  # the final metric is the mean of this many last epochs (one epoch's value is noisy)
#: The seeds of every family whose runs choose the verdict's numbers; every other seed's runs are held out.
TUNING_SEEDS = frozenset(range(4))
#: family -> {task: whether a higher held-out metric is better}
DIRECTIONS: dict[str, dict[str, bool]] = {
    "lstm": {"type": True, "pointer": False},
    "gradnorm": {"small": False, "big": False},
    "cancer": {"diagnosis": True, "fractal": False},
    "trio": {"sign": True, "level": False, "bucket": True},
    "digits": {"digit": True, "ink": False},
    "diabetes": {"progression": False, "bmi": False, "bp": False},
    "floor": {"a": False, "b": False, "c": False},
    "noisy": {"clean": True, "noisy": True},
}


@dataclass
class Run:
    """One finished run: its log, its weights, each task's validation metric per epoch (and the step at each
    epoch's end), each task's trivial-predictor baseline on the held-out split, and the same metrics on each half
    of that split (``halves["a"]``, ``halves["b"]``), which tell how far the label can be trusted."""

    family: str
    seed: int
    weights: dict[str, float]
    log: str
    steps: list[int]
    metrics: dict[str, list[float]]
    baselines: dict[str, float]
    label: str = ""
    starved: str | None = None  # the most starved task (the least progress)
    starved_tasks: list[str] = field(default_factory=list)  # every starved task, the most starved first
    progress: dict[str, float] = field(default_factory=dict)
    plateau_step: dict[str, int] = field(default_factory=dict)
    held_out: bool = False
    halves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    #: Whether each half of the held-out split, alone, gives the run the same label and most starved task as the
    #: whole split (None: the halves were not recorded). Where they differ, the label is the held-out sample's noise
    #: as much as the run's outcome.
    agreed: bool | None = None
    #: Each task's training loss at the end of a run of the same model on that task's loss alone (its training
    #: floor, what a user learns from a single-task run; {}: not built).
    floors: dict[str, float] = field(default_factory=dict)


def final_metric(values: list[float]) -> float:
    """The mean of the last ``TAIL_EPOCHS`` epochs' metric."""
    return float(np.mean(values[-TAIL_EPOCHS:]))


def plateau_step(values: list[float], steps: list[int], higher_is_better: bool, share: float = 0.9) -> int:
    """The step at the end of the first epoch whose best-so-far metric reached ``share`` of the run's whole
    improvement over its first epoch (the step from which the metric stops moving much)."""
    signed = np.asarray(values) * (1 if higher_is_better else -1)
    best_so_far = np.maximum.accumulate(signed)
    gained = best_so_far - signed[0]
    total = gained[-1]
    reached = np.flatnonzero(gained >= share * total) if total > 0 else np.array([0])
    return steps[int(reached[0])]


def label(runs: list[Run]) -> None:
    """Progress, label and plateau steps of each run, against the best of its family and seed among ``runs``; and
    whether each half of the held-out split, labelled alone the same way, agrees (:attr:`Run.agreed`)."""
    _label_from_metrics(runs)
    for family, seed in {(run.family, run.seed) for run in runs}:
        group = [run for run in runs if (run.family, run.seed) == (family, seed)]
        if not all(run.halves for run in group):
            continue
        # A half's trivial predictor is taken as the whole split's: the labels differ by the metrics alone
        by_half = {half: [replace(run, metrics=run.halves[half], progress={}, plateau_step={}) for run in group]
                   for half in ("a", "b")}  # fmt: skip
        for half_runs in by_half.values():
            _label_from_metrics(half_runs)
        for index, run in enumerate(group):
            run.agreed = all((half_runs[index].label, half_runs[index].starved) == (run.label, run.starved)
                             for half_runs in by_half.values())  # fmt: skip


def _label_from_metrics(runs: list[Run]) -> None:
    """Progress, label and plateau steps of each run from its ``metrics``, against the best of its family and seed."""
    for family, seed in {(run.family, run.seed) for run in runs}:
        group = [run for run in runs if (run.family, run.seed) == (family, seed)]
        for task, higher in DIRECTIONS[family].items():
            sign = 1 if higher else -1
            best = max(sign * final_metric(run.metrics[task]) for run in group)
            for run in group:
                base = sign * run.baselines[task]
                run.progress[task] = (sign * final_metric(run.metrics[task]) - base) / (best - base)
                run.plateau_step[task] = plateau_step(run.metrics[task], run.steps, higher)
        for run in group:
            poor = sorted((task for task, p in run.progress.items() if p < STARVED_PROGRESS), key=run.progress.get)
            run.held_out = seed not in TUNING_SEEDS
            run.starved_tasks = poor if len(poor) < len(run.progress) else []
            run.starved = run.starved_tasks[0] if run.starved_tasks else None
            run.label = "healthy" if not poor else "starved" if run.starved_tasks else "all_poor"


def cut(run: Run, epochs: int) -> Run:
    """``run`` as if it had ended after ``epochs`` epochs: its steps and metrics up to there, unlabelled (the
    same training, shorter: nothing in these loops depends on the number of epochs)."""
    metrics = {task: values[:epochs] for task, values in run.metrics.items()}
    halves = {half: {task: values[:epochs] for task, values in by_task.items()} for half, by_task in run.halves.items()}
    return replace(run, steps=run.steps[:epochs], metrics=metrics, halves=halves, label="", starved=None,
                   starved_tasks=[], progress={}, plateau_step={}, agreed=None)  # fmt: skip
