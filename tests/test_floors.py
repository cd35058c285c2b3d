"""Training floors read off single-task runs (moola_watch.floors): which task a run trained alone, and its floor."""

import math

from moola_watch.floors import Floor, Skipped, fall_words, flags, floor_of, solo_runs


def records(run, losses, weights=(), config=None, status="completed"):
    """A run's records: ``run_start`` with ``config``, one balance sample per entry of ``weights`` before the
    epochs, an epoch record per value of ``losses`` (task -> per-epoch list), and ``run_end`` unless ``status`` is
    None."""
    out = [{"kind": "run_start", "run": run, "config": config or {}}]
    out += [{"kind": "task_balance", "run": run, "weights": w} for w in weights]
    for epoch in range(len(next(iter(losses.values())))):
        out.append({"kind": "epoch", "run": run, "task_losses": {t: v[epoch] for t, v in losses.items()}})
    return out + ([{"kind": "run_end", "run": run, "status": status}] if status else [])


def floor(log):
    (run,) = solo_runs(log)
    return floor_of(run)


def test_the_one_task_with_a_weight_is_the_one_a_run_trained_and_its_floor_is_its_last_three_epochs_mean():
    log = records("r", {"a": [1.0, 0.5, 0.4, 0.3, 0.2], "b": [1.0, 1.0, 1.0, 1.0, 0.9]}, [{"a": 1, "b": 0}] * 2)
    assert floor(log) == Floor("a", (0.4 + 0.3 + 0.2) / 3, "r", 3, first=1.0)


def test_a_loop_that_logs_one_task_without_weights_trained_it_and_a_short_or_unfinished_run_says_so():
    assert floor(records("r", {"depth": [0.9, 0.5]}, status=None)) == Floor("depth", 0.7, "r", 2, None, 0.9)


def test_the_project_trainers_weights_come_from_its_config_when_it_recorded_no_balance_sample():
    """moola train's default --task-balance-freq 5 writes no balance sample in a 4-epoch run."""
    losses = {"type": [0.7, 0.6, 0.5, 0.4], "pointer": [1.0, 1.0, 1.0, 1.0]}
    assert floor(records("r", losses, config={"alpha": 1.0, "beta": 0.0})) == Floor("type", 0.5, "r", 3, first=0.7)
    assert floor(records("r", losses, config={"alpha": 1.0, "beta": 1.0})).why.startswith("it trained type, pointer")


def test_no_floor_from_tasks_together_changed_weights_a_diverged_end_or_a_negative_loss():
    together = records("all", {"a": [1.0, 0.5], "b": [1.0, 0.6]})
    assert floor(together) == Skipped("all", "it trained a, b together, not one task alone")
    cooldown = records("cd", {"a": [1.0, 0.9, 0.8], "b": [1.0, 0.9, 0.9]}, [{"a": 1, "b": 1}, {"a": 1, "b": 0}])
    assert "its loss weights changed during the run" in floor(cooldown).why
    diverged = records("nan", {"a": [1.0, 0.5, 0.4, math.nan]})
    assert floor(diverged).why == "its a loss is not finite, or not recorded, in some of its last 3 epochs"
    assert "ends negative (-2)" in floor(records("nll", {"a": [-1.0, -2.0, -3.0]})).why


def test_each_run_of_a_log_apart_and_the_flags_name_each_task_once_as_one_word_whatever_its_name():
    log = [*records("x", {"a": [1.0]}), *records("y", {"c": [0.25]})]
    assert [floor_of(run) for run in solo_runs(log)] == [
        Floor("a", 1.0, "x", 1, first=1.0),
        Floor("c", 0.25, "y", 1, first=0.25),
    ]
    given = [Floor("a", 0.5, "r1", 3), Floor("my task", 0.123456, "r2", 3), Floor("-x", 0.2, "r3", 3),
             Floor("a", 0.25, "r4", 3)]  # fmt: skip
    assert flags(given) == "--task-floor=a=0.25 '--task-floor=my task=0.1235' --task-floor=-x=0.2"


def test_a_floor_says_how_far_below_its_first_epochs_loss_the_run_alone_took_its_task():
    """A floor near the first loss (alone, the task barely learned, or its data allow no more) reads as such."""
    learned = floor(records("r", {"a": [1.0, 0.5, 0.4, 0.3, 0.2]}))
    barely = floor(records("r", {"a": [1.47, 1.43, 1.4, 1.39, 1.37]}))
    assert fall_words(learned) == ", 30% of its first epoch's 1"
    assert fall_words(barely) == ", 94% of its first epoch's 1.47"
    assert fall_words(floor(records("r", {"a": [math.nan, 0.6, 0.5, 0.4]}))) == ""
