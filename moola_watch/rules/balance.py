"""Rules on ``task_balance`` records: the spec's pointer/type imbalance band, and task collapse.

Collapse combines two kinds of evidence. Dominance: over the window, a task's weighted gradient on the shared
parameters is smaller than the largest task's by more than the healthy band allows (for pointer/type, the window
mean ratio outside [balance_low, balance_high]). Starving: the dominated task gets almost none of the update (window
mean share below ``starve_share``), its own training loss has stalled (down less than ``starve_drop`` over the
window), it is not at its floor (its loss at or below ``floor_rate`` of its first with a gradient of mini-batch
noise: the window's mean ``persistence`` below ``starve_persistence``), and another task learns. Both: an error. The
spec's collapse (a window beyond ``collapse_high``) with a task that still learns: a warning that says, in words,
what is still moving; an imbalance short of that with a task that still learns is the imbalance rule's business
alone. The numbers were chosen on labelled runs (``benchmarks/detection.py --tune``,
``benchmarks/detection_frontier.py``). The message keeps the spec's words (``TASK COLLAPSE: Pointer task dominating
(ratio=6.34 > 5.0)``) and adds the evidence; the recommendation keeps the spec's action and adds the weights that
would bring the window into the healthy band. The subject of a collapse alert is the task it starves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from moola_watch import schema
from moola_watch.counts import counted
from moola_watch.rules.evidence import RECENT_SAMPLES, Evidence, TaskProgress
from moola_watch.rules.lifecycle import Observation
from moola_watch.rules.rule import Findings, Rule
from moola_watch.rules.thresholds import Thresholds
from moola_watch.rules.verdicts import band, mean_ratio, names, position, recommend_ratio

IMBALANCE = "imbalance"
COLLAPSE = "collapse"
LEFT_OUT = "left_out"
BALANCE_UNMEASURED = "balance_unmeasured"
FLOOR_UNMATCHED = "floor_unmatched"
#: Balance samples a task needs for a completed run that never filled the collapse window to be judged at its
#: end on the samples it has (a run of 384 steps measured every 50 holds 7: its starved task passed as healthy):
#: as many as its own progress needs (the mean of the first and of the last RECENT_SAMPLES).
MIN_END_SAMPLES = 2 * RECENT_SAMPLES
TASK_PAIR = "pointer/type"
BALANCE = frozenset({schema.TASK_BALANCE})
#: The project trainer's flags for the two spec weights (total = alpha * type_loss + beta * pointer_loss).
WEIGHT_FLAGS = {"type": "--loss-alpha", "pointer": "--loss-beta"}
#: The ``model`` whose run_start means those flags exist (``moola train``); any other loop gets weights by name.
TRAINER_MODEL = "enhanced_simple_lstm"


def _pointer_type(record: schema.Record) -> bool:
    ratio = record.get("ratio")
    return ratio is not None and not math.isnan(ratio)


def _spec_pair(record: schema.Record) -> bool:
    """The spec's two tasks alone: the pointer/type window judges them. With a third task, the any-tasks rule
    judges every task (two rules on one subject would fire and resolve it in turn)."""
    return _pointer_type(record) and len(record["norms"]) <= 2


def _imbalance(ev: Evidence, record: schema.Record, th: Thresholds) -> Findings:
    if not _pointer_type(record):
        return []
    verdict = ev.window_verdict(th)
    advice = recommend_ratio(verdict.mean, th) if verdict.mean is not None else None
    if advice is None or not advice.severity:
        return [(TASK_PAIR, None)]
    return [(TASK_PAIR, Observation(
        "warning", verdict.mean,
        f"{advice.status}: mean Pointer/Type gradient ratio {verdict.mean:.2f} over the last {verdict.samples} "
        f"samples (healthy range: {band(th)})",
        advice.action,
    ))]  # fmt: skip


#: A recommended change beyond this factor is a first estimate: the gradients it is computed from shift once the
#: tasks train differently (a starved task's gradient is small because it starves). An outside review's run,
#: ratio 3,618, told to raise a weight 1,800x, flipped into the opposite collapse; changes of 60-110x worked.
LARGE_CHANGE = 10.0


def significant(value: float) -> str:
    """``value`` to two significant figures without an exponent where one is not needed (110, not 1.1e+02)."""
    return f"{float(f'{value:.2g}'):g}"


def _weight(task: str, value: float, factor: float, flags: Mapping[str, str]) -> str:
    flag = flags.get(task)
    name = f"`{flag}`" if flag else f"the {task} loss weight"
    return f"{name} {significant(value * factor)} (from {value:g})"


def weight_fix(
    starved: str, dominant: str | None, ratio: float, target: float, weights: Mapping[str, float],
    flags: Mapping[str, str] | None = None,
) -> str:  # fmt: skip
    """Concrete weights that bring the window's ratio (dominant / starved weighted gradient norm, linear in
    each weight) down to ``target``, the healthy band's edge: the smallest change that makes the window
    healthy (a starved task that recovers takes a bigger share by itself, so aiming further overshoots).
    Of two tasks, lowering the dominant weight or raising the starved one; of more, lowering the ``dominant``
    one alone (raising the starved task's weight alone would make it dominate the third). ``dominant`` None
    (more than two tasks, where which task dominates changes from sample to sample and lowering one can starve
    another): the starved task's weight raised against all the others alike, every weight then scaled so that
    their sum stays (raising one weight alone by a large factor scales the whole update by it, which can make
    the gradients explode). A change beyond ``LARGE_CHANGE`` says it is a first estimate. ``flags`` name the
    weights by command-line flag. '' when the weights are not recorded, the ratio is infinite, or the change
    would not show in two significant figures."""
    factor, flags = ratio / target, flags or {}
    if starved not in weights or not math.isfinite(factor) or not factor > 0:
        return ""
    if significant(weights[starved] * factor) == significant(weights[starved]):
        return ""  # a window at the band's edge: no change shows at the precision a weight is given in
    if dominant is None:
        fix = _sum_kept(starved, factor, weights, flags)
    elif dominant not in weights:
        return ""
    else:
        fix = f"set {_weight(dominant, weights[dominant], 1 / factor, flags)}"
        if len(weights) <= 2:
            fix += f" or {_weight(starved, weights[starved], factor, flags)}"
    caution = (f"; {significant(factor)}x is a first estimate (the gradients shift once the tasks train "
               "differently): re-check the balance after it" if factor > LARGE_CHANGE else "")  # fmt: skip
    return f"{fix} to bring the ratio {ratio:.2f} to {target:.2g}{caution}"


def _sum_kept(starved: str, factor: float, weights: Mapping[str, float], flags: Mapping[str, str]) -> str:
    """Every weight, the ``starved`` one ``factor`` times the others' relative to now, their sum as it is."""
    total = math.fsum(weights.values())
    kept = total / (total + weights[starved] * (factor - 1))
    listed = ", ".join(
        f"{flags.get(task, task)} {significant(value * kept * (factor if task == starved else 1.0))} (from {value:g})"
        for task, value in weights.items()
    )
    kept_words = (f"the {starved} weight raised {significant(factor)}x against the others (each kept in proportion "
                  f"to the rest), their sum kept at {total:g}")  # fmt: skip
    return f"set the loss weights {listed}: {kept_words},"


def update_share(share: float) -> str:
    """'1.6% of the update'; a negative share (the task's gradient points against the step taken) says so, where
    it shows at a tenth of a percent (-0.0% is none)."""
    shown = f"{share:.1%}".replace("-0.0%", "0.0%")
    return f"{shown} of the update" + (" (its gradient pulls against it)" if shown.startswith("-") else "")


def gradient_persistence(cosine: float) -> str:
    """The window's mean cosine between a task's consecutive gradients, in words: near 1 a gradient that keeps
    asking the same change (starving), near 0 mini-batch noise around a minimum."""
    return f"its gradient's direction from one sample to the next: mean cosine {cosine:.2f}"


def _change(fraction: float) -> str:
    """A loss change in percent, to a tenth under 10% (so that -1.8% is not shown as the -2% a 2% bound
    compares with)."""
    return f"{fraction:+.1%}" if abs(fraction) < 0.1 else f"{fraction:+.0%}"


#: A task whose training loss is below this fraction of its first has learned something: a task starves only
#: while another learns (one that has learned, or whose loss still falls); with none learning (a learning rate of
#: 0, frozen layers) there is no competition for the shared layers, and re-weighting fixes nothing. Close to 1: a
#: classifier on noisy labels learns all it can at 90% of its first cross-entropy (an outside review's, 91%,
#: dominated a starved regression that 0.9 here excused).
LEARNED_SOMETHING = 0.98
#: What to do when no task learns (the collapse's weights would change nothing).
NOTHING_LEARNS = (
    "Check that the model trains at all: the learning rate (0?), the optimizer given the model's parameters, layers "
    "left frozen; re-weighting the losses changes nothing while no task learns"
)


def others_learn(task: str, progress: Mapping[str, TaskProgress], th: Thresholds) -> bool:
    """Whether a task other than ``task`` learns: its loss down at least ``starve_drop`` over the window, or
    below :data:`LEARNED_SOMETHING` of its first (True when no other task's progress is known: nothing says
    otherwise)."""
    known = [p for p in progress.values() if p.task != task]
    return not known or any(
        p.change <= -th.starve_drop or (p.rate is not None and p.rate <= LEARNED_SOMETHING) for p in known
    )


def usable_floor(own: TaskProgress, floor: float | None) -> float | None:
    """The task's training ``floor`` where it can judge the task (its first loss known), else None."""
    return None if floor is None or own.start is None else floor


def way_to_floor(own: TaskProgress, floor: float) -> float:
    """How far the task's loss has come from its :meth:`~TaskProgress.floor_reference` (its first epoch's loss,
    else its first) to its training ``floor``: 0 not at all, 1 there; above 1 below it, negative when it rose
    above that reference. A floor at or above the reference: 1 (alone, the task did not learn either: measured
    on the labelled runs, such tasks were mostly not starved)."""
    reference, _name = own.floor_reference(floor)
    if reference <= floor:
        return 1.0
    return (reference - own.recent) / (reference - floor)


def at_its_floor(own: TaskProgress, persistence: float | None, th: Thresholds, floor: float | None = None) -> bool:
    """Whether a stalled task sits at the floor its data allow. With its training ``floor`` known (run_start's
    ``task_floors``, :func:`usable_floor`): once its loss came ``floor_progress`` of the way there
    (:func:`way_to_floor`). Without one, from its gradient: its gradient on the shared parameters is now
    mini-batch noise around a minimum (the window's mean ``persistence``), either below ``starve_persistence`` with
    its loss at or below ``floor_rate`` of its first (it learned), or below ``noise_persistence`` (no direction
    left at all) with its loss at or below ``noise_rate`` of its first: a loss with a high floor (a regression of
    low R^2, noisy labels) cannot fall far, and its gradient says it is done. A task near its first loss with a
    noisy gradient never got going: stuck at a chance-level plateau, which more of the shared layers could lift
    (an outside review's starved tasks on noisy labels had gradients as noisy as a converged task's)."""
    if usable_floor(own, floor) is not None:
        return way_to_floor(own, floor) >= th.floor_progress
    if persistence is None or own.rate is None:
        return False
    learned = own.rate <= th.floor_rate and persistence < th.starve_persistence
    return learned or (own.rate <= th.noise_rate and persistence < th.noise_persistence)


def floor_figures(own: TaskProgress, floor: float) -> str:
    """The task's way to its training floor in words: 'come 40% of the way from its first epoch's loss 0.9 to
    its training floor 0.3', or why the floor was not used."""
    reference, name = own.floor_reference(floor)
    if reference is None:
        return f"its training floor {floor:.3g} not used: its first loss is unknown"
    if floor >= reference:
        return (f"its training floor {floor:.3g} not below {name} {reference:.3g}: alone, it did not "
                f"learn either (or the floor is a loss of other units: a weighted or summed one?)")  # fmt: skip
    if own.recent <= floor:
        return f"at or below its training floor {floor:.3g} ({name} {reference:.3g})"
    if own.recent >= reference:
        return f"no nearer its training floor {floor:.3g} than {name} {reference:.3g}"
    way = way_to_floor(own, floor)
    return f"come {way:.0%} of the way from {name} {reference:.3g} to its training floor {floor:.3g}"


def floorless(task: str, floor: float | None) -> str:
    """For an error on a task judged without a training floor: how to tell one at its floor from one starving
    ('' with a floor). Measured on the labelled runs, healthy runs given an error fell from 18% to 6% with floors
    (most were tasks whose loss cannot fall far, a noisy target's)."""
    if floor is not None:
        return ""
    return (
        f"; judged without a training floor for {task} (`--task-floor {task}=LOSS`, the loss of a run on "
        f"{task} alone, tells a task at its floor from a starving one)"
    )


def _reference(own: TaskProgress, *, now: bool = False) -> str:
    """What a training rate is taken against, in words: "its first loss 1.15", or with ``now`` "its first epoch's
    loss (1.02 -> 0.87)"."""
    reference, name = own.rate_reference
    return f"{name} ({reference:.3g} -> {own.recent:.3g})" if now else f"{name} {reference:.3g}"


def not_falling(own: TaskProgress, th: Thresholds) -> str:
    """How a loss that did not fall by ``starve_drop`` over the window moved: "stalled" (within ``starve_drop``
    either way), or "rose 60%" (a noisy batch loss can end a window much higher than it began; "stalled: down less
    than 5%" would misstate the evidence)."""
    return f"rose {_change(own.change).lstrip('+')}" if own.change >= th.starve_drop else "stalled"


@dataclass(frozen=True)
class Starvation:
    """What a dominated task's own evidence says: the severity it gives the task's collapse, that evidence in
    words, whether the task has learned (its loss at or below ``starve_rate`` of its first: an error raised before
    is over, not eased by one noisy window), and whether no task learns at all (no competition for the shared
    layers: re-weighting would change nothing)."""

    severity: str
    words: str
    learned: bool = False
    nothing_learns: bool = False
    #: For a warning: while what holds it is not urgent, and what would make it so (the advice follows it)
    calm: str = ""


def starvation(task: str, ev: Evidence, th: Thresholds) -> Starvation:
    """The :class:`Starvation` of a dominated task.

    An error needs all of: the task's mean share of the update over the window below ``starve_share``, its own
    training loss down by less than ``starve_drop`` over the window (a plateau), that loss still above
    ``starve_rate`` of its start (below it the task has learned: a converged task needs little gradient and its
    loss is flat too), not at its floor (:func:`at_its_floor`, where ``persistence`` is
    recorded), and another task learning (:func:`others_learn`). Otherwise a warning
    that says which part is missing."""
    progress = ev.progress()
    own = progress.get(task)
    nothing_learns = not others_learn(task, progress, th)
    if own is None:
        unknown = f"not enough per-task losses recorded yet to tell whether the {task} task still learns"
        return Starvation(
            "warning",
            f"gradients dominated; {unknown}",
            nothing_learns=nothing_learns,
            calm=f"while the {task} task may still learn; if its loss stalls",
        )
    share = ev.mean_share(task)
    share_words = update_share(share) if share is not None else "its share of the update not recorded"
    others = ", ".join(f"{p.task} {_change(p.change)}" for p in progress.values() if p.task != task)
    persistence = ev.mean_persistence(task)
    persistence_words = "" if persistence is None else f", {gradient_persistence(persistence)}"
    floor = ev.floor(task)
    floor_words = "" if floor is None else f", {floor_figures(own, floor)}"
    figures = (f"{task} {own.measure} {own.earlier:.3g} -> {own.recent:.3g} ({_change(own.change)}) from {own.span} "
               f"[{others}], {share_words}{persistence_words}{floor_words}")  # fmt: skip
    learned = own.rate is not None and own.rate <= th.starve_rate
    moved = not_falling(own, th)
    if own.change <= -th.starve_drop:
        words = f"gradients dominated, but the {task} loss is still falling: {figures}"
        return Starvation("warning", words, learned, nothing_learns, f"while the {task} task learns; if it stalls")
    if share is None or share >= th.starve_share:
        words = f"gradients dominated, but the {task} task still gets a share of the update: {figures}"
        calm = f"while the {task} task gets a share of the update; if its share falls and its loss stalls"
        return Starvation("warning", words, learned, nothing_learns, calm)
    if own.rate is None:
        return Starvation("warning", (f"gradients dominated and the {task} loss {moved}, but whether the {task} task "
                                      f"had already learned cannot be told: this run's first losses are unknown "
                                      f"({ev.start_unknown}): {figures}"), nothing_learns=nothing_learns,
                          calm=f"while the {task} task may have learned; if its held-out metric lags")  # fmt: skip
    if learned:
        return Starvation("warning", (f"gradients dominated, but the {task} task has learned: its loss is "
                                      f"{own.rate:.0%} of {_reference(own)}: {figures}"), True,
                          nothing_learns, f"while the {task} loss stays low; if it rises")  # fmt: skip
    if at_its_floor(own, persistence, th, floor):
        reached = (f"it has come at least {th.floor_progress:.0%} of the way to the training floor given for it"
                   if usable_floor(own, floor) is not None else
                   "its gradient on the shared parameters is mini-batch noise around a minimum it reached (a "
                   "starving task's keeps asking the same change)")  # fmt: skip
        return Starvation("warning", f"gradients dominated and the {task} loss {moved}, but {reached}: {figures}",
                          learned, nothing_learns, f"while the {task} task sits at its floor; if its held-out "
                          "metric lags")  # fmt: skip
    if nothing_learns:
        return Starvation("warning", (f"gradients dominated and the {task} loss {moved}, but no other task learns "
                                      f"either: not a competition for the shared layers: {figures}"),
                          nothing_learns=True)  # fmt: skip
    kept = (f", its gradient's direction kept (cosine at least {th.starve_persistence:g})"
            if persistence is not None and persistence >= th.starve_persistence else "")  # fmt: skip
    rose = own.change >= th.starve_drop
    stall = f"{moved} over the window" if rose else f"stalled: down less than {th.starve_drop:.0%}"
    return Starvation("error", (f"and the {task} task is starving (its loss {stall}, share below "
                                f"{th.starve_share:.0%}{kept}, still {own.rate:.0%} of {_reference(own)}): "
                                f"{figures}{floorless(task, floor)}"))  # fmt: skip


@dataclass(frozen=True)
class Dominance:
    """A task dominated over the window: ``ratio`` is the dominant task's weighted gradient norm over the starved
    one's (window mean), ``target`` the healthy band's edge in those terms, ``dominant`` None with more than two
    tasks; ``text`` says it (in the spec's words for pointer/type), ``beyond`` whether the spec's collapse bound
    is passed, ``action`` the spec's action."""

    starved: str
    dominant: str | None
    ratio: float
    target: float
    text: str
    beyond: bool
    action: str


def pair_dominance(ev: Evidence, th: Thresholds) -> Dominance | None:
    """The spec's pointer/type window outside the healthy band, or None (inside it, or not full yet)."""
    verdict = ev.window_verdict(th)
    mean = verdict.mean
    if mean is None or th.balance_low <= mean <= th.balance_high:
        return None
    pointer_wins = mean > th.balance_high
    starved, dominant = ("type", "pointer") if pointer_wins else ("pointer", "type")
    # A window mean of 0 (the pointer task's gradient never reached the shared layers): type's lead is unbounded.
    ratio, target = (mean, th.balance_high) if pointer_wins else (1 / mean if mean else math.inf, 1 / th.balance_low)
    text = verdict.text
    if not verdict.collapsed:  # outside the healthy band, short of the spec's collapse bound
        edge = f"> {th.balance_high}" if pointer_wins else f"< {th.balance_low}"
        text = f"{dominant.capitalize()} task dominating (ratio={mean:.2f} {edge}, the healthy band's edge)"
    return Dominance(starved, dominant, ratio, target, text, verdict.collapsed, recommend_ratio(mean, th).action)


def task_dominance(ev: Evidence, task: str, th: Thresholds) -> Dominance | None:
    """Any set of tasks: the window mean of the largest task's weighted gradient norm over ``task``'s, when
    it is full and beyond the healthy band, else None. The fix may lower the dominant task: the other of two,
    or of more the one that led every sample of the window, if lowering it alone is enough
    (:func:`_lowerable_leader`); else the starved task is raised against all the others (lowering one could
    leave another dominating, or starve a third)."""
    window = ev.dominance.get(task, ())
    mean = mean_ratio(window) if len(window) == th.window else None
    if mean is None or not mean > th.balance_high:
        return None
    others = [other for other in ev.dominance if other != task]
    dominant = others[0] if len(others) == 1 else _lowerable_leader(ev, task, mean, th)
    beyond = mean > th.collapse_high
    bound = th.collapse_high if beyond else th.balance_high
    if dominant is None:
        action = f"Urgent: raise the weight of the {task} loss against the others"
    elif others == [dominant]:
        action = f"Urgent: raise the weight of the {task} loss, or lower the {dominant} task's"
    else:  # raising the starved task's weight alone would make it dominate the third
        action = f"Urgent: lower the weight of the {dominant} loss"
    return Dominance(task, dominant, mean, th.balance_high,
                     f"{task} task dominated (largest task gradient / its gradient = {mean:.2f} > {bound})", beyond,
                     action)  # fmt: skip


def _lowerable_leader(ev: Evidence, task: str, mean: float, th: Thresholds) -> str | None:
    """Of more than two tasks, the one whose lowering alone would bring ``task`` into the band: the task that led
    every sample of the window, when every other task's gradient is within the band of ``task``'s (each one's
    window mean over ``task``'s, from how far each is below the leader). None otherwise: lowering the leader
    would leave the runner-up dominating."""
    leader = ev.steady_dominant()
    if leader is None or leader == task:
        return None
    for other, window in ev.dominance.items():
        if other not in (task, leader) and len(window) == th.window:
            behind = mean_ratio(window)
            if math.isfinite(behind) and behind > 0 and mean / behind > th.balance_high:
                return None
    return leader


def _weights_fix(ev: Evidence, dominance: Dominance, action: str) -> str:
    """``action``, with the weights that bring the window's ratio to the healthy band's edge when recorded."""
    flags = WEIGHT_FLAGS if ev.run.model == TRAINER_MODEL else {}
    fix = weight_fix(dominance.starved, dominance.dominant, dominance.ratio, dominance.target, ev.weights, flags)
    return f"{action}: {fix}" if fix else action


def _collapse_observation(ev: Evidence, dominance: Dominance, th: Thresholds) -> Observation | None:
    """Short of the spec's collapse bound only a starving task makes a collapse: None otherwise."""
    starving = starvation(dominance.starved, ev, th)
    if starving.severity != "error" and not dominance.beyond:
        return None
    span = ev.window_span()
    action = _weights_fix(ev, dominance, dominance.action)
    if starving.nothing_learns:
        action = NOTHING_LEARNS
    elif starving.severity != "error":  # the words say the task still learns (or cannot tell): no "Urgent" beside them
        action = f"Not urgent {starving.calm}: {_unurged(action)}"
    return Observation(
        starving.severity, dominance.ratio,
        f"TASK COLLAPSE: {dominance.text} over {counted(len(ev.balance_steps), 'sample')}"
        f"{f' ({span})' if span else ''}; {starving.words}",
        action, settles=starving.learned,
    )  # fmt: skip


def _unurged(action: str) -> str:
    """``action`` without the spec's "Urgent: ", its first letter lower case (it follows other words)."""
    rest = action.removeprefix("Urgent: ")
    return rest[:1].lower() + rest[1:]


def _collapse_pair(ev: Evidence, record: schema.Record, th: Thresholds) -> Findings:
    """The spec's pointer/type window; the subject is the task it starves."""
    if not _spec_pair(record):
        return []
    dominance = pair_dominance(ev, th)
    if dominance is None:
        return [("type", None), ("pointer", None)]
    return [(dominance.starved, _collapse_observation(ev, dominance, th)), (dominance.dominant or "", None)]


def _collapse_tasks(ev: Evidence, record: schema.Record, th: Thresholds) -> Findings:
    """Any set of tasks (no pointer/type pair alone): per task, :func:`task_dominance`."""
    norms: dict[str, float] = record["norms"]
    if _spec_pair(record) or not max(norms.values(), default=math.nan) > 0:
        return []
    findings: list[tuple[str, Observation | None]] = [(task, None) for task in ev.left_out_since]
    for task in ev.dominance:
        dominance = task_dominance(ev, task, th)
        findings.append((task, _collapse_observation(ev, dominance, th) if dominance else None))
    return findings


def _left_out(ev: Evidence, record: schema.Record, _th: Thresholds) -> Findings:
    """A task measured in an earlier sample that now gets no gradient on the shared parameters: it stopped
    training them (a head that was made to read a detached input, a trunk frozen for it). A task left out from
    the first sample (a linear probe on frozen features) is the run's design, not news."""
    findings: list[tuple[str, Observation | None]] = [(task, None) for task in record["norms"]]
    for task, since in ev.left_out_since.items():
        last = ev.last_measured[task]
        findings.append((task, Observation(
            "warning", None,
            f"The {task} task has had no gradient on the shared parameters since {position(since.epoch, since.step)} "
            f"(it had one until {position(last.epoch, last.step)}): it no longer trains the layers it shares, so "
            "its balance is no longer judged",
            f"Check that the {task} head still reads the shared features undetached (no .detach(), no "
            "torch.no_grad(), no trunk frozen for it)",
        )))  # fmt: skip
    return findings


def _never_measured(ev: Evidence, record: schema.Record, th: Thresholds) -> Findings:
    """At ``run_end``: tasks whose losses the writer was given (its ``tasks``) but whose balance was never judged:
    no balance sample named them, or every one that did measured nothing of them (non-finite, or absent); else,
    a run whose balance samples never filled the collapse window (:func:`_window_never_filled`). A log without
    them would otherwise pass in silence where collapse was never looked for."""
    tasks = record.get("tasks") or []
    if len(tasks) < 2:
        return [] if len(ev.sampled_tasks) < 2 else _window_never_filled(ev, record, th)
    unjudged = [task for task in tasks if task not in ev.last_measured and task not in ev.left_out_tasks]
    if not unjudged:
        return _window_never_filled(ev, record, th)
    many = "at least " if len(tasks) >= schema.MAX_TASK_NAMES else ""
    span = f" (the run recorded {position(ev.run.epoch, ev.run.step)} last)" if ev.run.step is not None else ""
    if not ev.balance_records:
        return [("tasks", Observation(
            "warning", None,
            f"The trainer was given the losses of {many}{counted(len(tasks), 'task')} ({names(tasks, 8)}) but "
            f"recorded no task balance{span}: whether a task starved was never judged",
            "Pass every task's loss of a batch together (batches of one task each cannot be compared); if the probe "
            "failed, the trainer's warning says why; a run shorter than balance_every_n_steps has no sample",
        ))]  # fmt: skip
    never_named = [task for task in unjudged if task not in ev.sampled_tasks]
    plural = len(unjudged) > 1
    if never_named:
        why = f"no balance sample held {'them' if plural else 'it'}"
        action = "Pass every task's loss of a batch together, on batches that hold each task's labels"
    else:
        why = (f"{'their' if plural else 'its'} samples measured nothing of {'them' if plural else 'it'} (a "
               "non-finite norm or loss, or no gradient and nothing to have one from)")  # fmt: skip
        action = (
            "Find why its loss or gradient was non-finite or absent in every balance sample (its labels, its weight)"
        )
    compared = names(sorted(ev.last_measured), 8) or "none"
    return [("tasks", Observation(
        "warning", None,
        f"The balance of the {names(unjudged, 8)} task{'s' if plural else ''} was never judged: {why} "
        f"({ev.balance_records} balance records; tasks measured: {compared})",
        action,
    ))]  # fmt: skip


def _window_never_filled(ev: Evidence, record: schema.Record, th: Thresholds) -> Findings:
    """Balance samples of several tasks, but fewer than the collapse window holds, of the run or of some tasks (a
    task labelled in few batches): no window of theirs was judged while the run went on. A completed run's end
    judges a task on the samples it has (at warning level) where its progress can be told."""
    samples = ev.balance_records
    if not 0 < samples < th.window:
        counts = {task: held for task, held in ev.sampled_tasks.items() if held < th.window}
        if not counts or not samples:
            return []
        unfilled = sorted(counts)
        return [("tasks", Observation(
            "warning", min(counts.values()),
            f"The {names(unfilled, 8)} task{'s were' if len(unfilled) > 1 else ' was'} in fewer balance samples "
            f"than the collapse window's {th.window} ({', '.join(f'{task}: {counts[task]}' for task in unfilled)}, "
            f"of {samples}): {'their' if len(unfilled) > 1 else 'its'} balance was never judged in a window",
            "Give every task's loss in more of the measured batches, measure the balance more often, or judge with "
            "a smaller --window",
        ))]  # fmt: skip
    progress = ev.progress() if record["status"] == "completed" else {}
    judged = sorted(task for task, n in ev.run_shares.items() if n.count >= MIN_END_SAMPLES and task in progress)
    only = "" if len(judged) == len(ev.run_shares) else f" (of the {names(judged, 8)} task{'s' * (len(judged) > 1)})"
    said = f"only the run's end judged those {samples}{only}" if judged else "whether a task starved was never judged"
    return [("tasks", Observation(
        "warning", samples,
        f"The task balance was sampled {counted(samples, 'time')}, fewer than the collapse "
        f"window's {th.window}: no window was judged during the run; {said}",
        "Measure the balance more often (GradientMonitor's balance_every_n_steps, or every_n_steps; the "
        "callbacks' every_n_steps), or judge with a smaller --window",
    ))]  # fmt: skip


def _floors_unmatched(ev: Evidence, record: schema.Record, th: Thresholds) -> Findings:
    """At ``run_end``: training floors (given or recorded) that name no task the run's balance samples measured:
    a misspelt task, or one of another run, whose floor judged nothing."""
    unmatched = sorted(task for task in ev.floors if task not in ev.sampled_tasks)
    if not unmatched or not ev.sampled_tasks:  # no balance sample at all: balance_unmeasured says so
        return []
    return [("floors", Observation(
        "warning", None,
        f"Training floors name {'a task' if len(unmatched) == 1 else 'tasks'} this run never measured: "
        f"{names(unmatched, 8)} (its tasks: {names(sorted(ev.sampled_tasks), 8)}); a floor judges only the task "
        "of its name",
        "Spell each floor's task as the run names it (--task-floor TASK=LOSS, [task_floors], task_floors=)",
    ))]  # fmt: skip


def _starved_at_the_end(ev: Evidence, record: schema.Record, th: Thresholds) -> Findings:
    """At a completed run's ``run_end``: each task that ended starved. Judged on the whole run, this is the
    verdict on outcomes (``benchmarks/detection.py``): a task may look starved for a while in a healthy run (not
    started yet, or done); one that got little of the update to the end, and little over the run, while its
    own loss stayed high, did not learn. Only tasks found starved are named: an alert raised during the run
    keeps its state."""
    if record["status"] != "completed" or len(ev.run_shares) < 2:
        return []
    equal = 1 / len(ev.run_shares)
    progress = ev.progress()
    spec_pair = bool(ev.ratios) and len(ev.run_shares) == 2
    # A run whose samples never filled the window is judged on those it has (its window is all of them), at
    # warning level: early in training a healthy task can look starved, and a short run is all early.
    short = ev.balance_records < th.window
    needed = MIN_END_SAMPLES if short else th.window
    findings: list[tuple[str, Observation | None]] = []
    for task, run_share in ev.run_shares.items():
        share, own = ev.mean_share(task), progress.get(task)
        if share is None or own is None or run_share.count < needed:
            continue
        if not (share < th.final_share * equal and run_share.mean < th.final_run_share * equal):
            continue
        persistence, floor = ev.mean_persistence(task), ev.floor(task)
        if at_its_floor(own, persistence, th, floor):
            continue  # near the floor given for it, or its gradient is noise around a minimum: it learned what it could
        if not others_learn(task, progress, th):
            continue  # no other task learned: no competition for the shared layers starved this one
        if own.rate is None:  # the run's start is unknown: whether the task learned cannot be told, so say that
            findings.append((task, Observation(
                "warning", share,
                f"POSSIBLE TASK COLLAPSE: the run ended with the {task} task getting {update_share(share)} over "
                f"its last {len(ev.shares[task])} balance samples ({ev.window_span() or 'steps unknown'}), "
                f"{run_share.mean:.1%} over the run (an equal share: {equal:.0%}); whether it had learned cannot be "
                f"told: {ev.start_unknown}",
                f"Check the {task} task's held-out metric; judge the whole training from its start (its log from the "
                "first run, or the run it resumed appending to the same log)",
            )))  # fmt: skip
            continue
        if own.rate > th.final_rate:
            dominance = pair_dominance(ev, th) if spec_pair else task_dominance(ev, task, th)
            dominated = f"{dominance.text}; " if dominance and dominance.starved == task else ""
            action = f"Raise the weight of the {task} loss, or give the tasks more shared capacity"
            title = (f"POSSIBLE TASK COLLAPSE (on {ev.balance_records} balance samples, fewer than the window's "
                     f"{th.window})" if short else "TASK COLLAPSE")  # fmt: skip
            findings.append((task, Observation(
                "warning" if short else "error", share,
                f"{title}: {dominated}the run ended with the {task} task starved: {update_share(share)} "
                f"over its last {len(ev.shares[task])} balance samples ({ev.window_span() or 'steps unknown'}), "
                f"{run_share.mean:.1%} over the run (an equal share: {equal:.0%}), and its training loss still "
                f"{own.rate:.0%} of {_reference(own, now=True)}"
                f"{'' if persistence is None else ', ' + gradient_persistence(persistence)}"
                f"{'' if floor is None else ', ' + floor_figures(own, floor)}{floorless(task, floor)}",
                _weights_fix(ev, dominance, action) if dominated else action,
            )))  # fmt: skip
    return findings


RULES = (
    Rule(IMBALANCE, "warning", True, BALANCE, _imbalance,
         "window mean of the pointer/type ratio outside the healthy band (the spec's table)"),
    Rule(COLLAPSE, "error", False, BALANCE, _collapse_pair,
         "pointer/type window outside the healthy band and the dominated task starving (share < starve_share, "
         "loss down < starve_drop): an error; beyond [collapse_low, collapse_high] without starving: a warning",
         outcome=True),
    Rule(COLLAPSE, "error", False, BALANCE, _collapse_tasks,
         "a task's gradient dominated (window mean > balance_high) and starving: an error; beyond collapse_high "
         "without starving: a warning", outcome=True),
    Rule(LEFT_OUT, "warning", False, BALANCE, _left_out,
         "a task measured before gets no gradient on the shared parameters (left out of the balance)"),
    Rule(BALANCE_UNMEASURED, "warning", False, frozenset({schema.RUN_END}), _never_measured,
         "a run given the losses of several tasks (run_end's tasks) ended with a task never measured in a balance "
         "sample, or with fewer balance samples than the collapse window"),
    Rule(FLOOR_UNMATCHED, "warning", False, frozenset({schema.RUN_END}), _floors_unmatched,
         "training floors (given, or recorded in run_start) name a task the run's balance samples never measured"),
    Rule(COLLAPSE, "error", False, frozenset({schema.RUN_END}), _starved_at_the_end,
         "a completed run ended with a task starved: its share of the update below final_share of an equal share "
         "over the last window and final_run_share over the run, its loss above final_rate of its first (a run "
         f"whose samples never filled the window: judged on them, at least {MIN_END_SAMPLES}, as a warning)",
         outcome=True),
)  # fmt: skip
