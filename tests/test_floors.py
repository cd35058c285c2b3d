"""Training floors read off single-task runs (moola_watch.floors): which task a run trained alone, and its floor."""

import math

from moola_watch.floors import Floor, flags, floor_of, solo_runs


def records(run, losses, weights=None):
    """A run's epoch records of ``losses`` (task -> per-epoch list), a balance sample with ``weights`` first."""
    out = [{"kind": "run_start", "run": run}]
    if weights is not None:
        out.append({"kind": "task_balance", "run": run, "weights": weights})
    for epoch in range(len(next(iter(losses.values())))):
        out.append({"kind": "epoch", "run": run, "task_losses": {t: v[epoch] for t, v in losses.items()}})
    return out


def test_the_one_task_with_a_weight_is_the_one_a_run_trained_and_its_floor_is_its_last_three_epochs_mean():
    (run,) = solo_runs(records("r", {"a": [1.0, 0.5, 0.4, 0.3, 0.2], "b": [1.0, 1.0, 1.0, 1.0, 0.9]}, {"a": 1, "b": 0}))
    assert floor_of(run) == Floor("a", (0.4 + 0.3 + 0.2) / 3, "r", 3)


def test_a_loop_that_logs_one_task_without_weights_trained_it_and_a_short_run_takes_the_epochs_it_has():
    (run,) = solo_runs(records("r", {"depth": [0.9, math.nan, 0.5]}))
    assert floor_of(run) == Floor("depth", 0.7, "r", 2)  # the NaN epoch is not a loss


def test_runs_of_several_tasks_together_give_no_floor_each_run_of_a_log_apart():
    log = [
        *records("all", {"a": [1.0, 0.5], "b": [1.0, 0.6]}),
        *records("two of three", {"a": [1.0], "b": [1.0], "c": [1.0]}, {"a": 1, "b": 2, "c": 0}),
        *records("c alone", {"a": [1.0], "b": [1.0], "c": [0.25]}, {"a": 0, "b": 0, "c": 3}),
    ]
    assert [floor_of(run) for run in solo_runs(log)] == [None, None, Floor("c", 0.25, "c alone", 1)]


def test_the_flags_name_each_task_once_its_last_floor_winning_and_quote_a_name_a_shell_would_split():
    given = [Floor("a", 0.5, "r1", 3), Floor("my task", 0.123456, "r2", 3), Floor("a", 0.25, "r3", 3)]
    assert flags(given) == "--task-floor a=0.25 --task-floor 'my task=0.1235'"
