"""The detection corpus's ground truth (benchmarks/detection_labels.py): labels from held-out metrics alone, and
which runs are held out of tuning."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from detection_labels import TUNING_SEEDS, Run, label


def cancer_run(seed: int, weight: float, accuracy: float, fractal_error: float) -> Run:
    """A finished cancer-family run whose held-out metrics stayed at these values for its 3 epochs."""
    metrics = {"diagnosis": [accuracy] * 3, "fractal": [fractal_error] * 3}
    baselines = {"diagnosis": 0.6, "fractal": 1.0}
    return Run("cancer", seed, {"diagnosis": 1.0, "fractal": weight}, f"cancer-s{seed}-w{weight}.jsonl", [10, 20, 30],
               metrics, baselines)  # fmt: skip


@pytest.mark.parametrize("seed", [0, 3, 4, 5, 6, 9])
def test_every_seed_outside_the_tuning_ones_is_held_out(seed: int) -> None:
    runs = [cancer_run(seed, 1.0, 0.95, 0.2), cancer_run(seed, 0.01, 0.96, 0.9)]
    label(runs)
    assert {run.held_out for run in runs} == {seed not in TUNING_SEEDS}
    assert [run.label for run in runs] == ["healthy", "starved"]
    assert runs[1].starved == "fractal"
    # fractal's error 0.9 against the trivial 1.0 and the seed's best 0.2: an eighth of the achievable progress
    assert runs[1].progress["fractal"] == pytest.approx(0.125)


def with_halves(run: Run, fractal_errors: tuple[float, float]) -> Run:
    """``run`` with its held-out halves recorded: the same accuracy, and these fractal errors on halves a and b."""
    run.halves = {half: {"diagnosis": run.metrics["diagnosis"], "fractal": [error] * 3}
                  for half, error in zip("ab", fractal_errors, strict=True)}  # fmt: skip
    return run


def test_a_label_the_two_halves_of_the_held_out_split_disagree_on_is_not_agreed() -> None:
    best = with_halves(cancer_run(4, 1.0, 0.95, 0.2), (0.2, 0.2))
    # 0.55 on the whole split: 0.56 of the achievable progress (healthy); 0.65 on one half (0.44: starved)
    borderline = with_halves(cancer_run(4, 0.1, 0.95, 0.55), (0.65, 0.45))
    starved = with_halves(cancer_run(4, 0.01, 0.95, 0.9), (0.92, 0.88))
    runs = [best, borderline, starved]
    label(runs)
    assert [run.label for run in runs] == ["healthy", "healthy", "starved"]
    assert [run.agreed for run in runs] == [True, False, True]
    # the halves' labelling leaves the run's own figures as the whole split gave them
    assert borderline.progress["fractal"] == pytest.approx(0.5625)


def test_a_run_without_halves_has_no_agreement_to_tell() -> None:
    runs = [cancer_run(4, 1.0, 0.95, 0.2), cancer_run(4, 0.01, 0.96, 0.9)]
    label(runs)
    assert [run.agreed for run in runs] == [None, None]
