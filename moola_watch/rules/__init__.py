"""Thresholds, rules and the alert lifecycle: records in, alert events out.

Pure: no files, no terminal, no clock (the stale rule takes ``now`` as an argument). The trainer's console
lines and summary and the watcher's alerts all come from here, so the two sides cannot disagree.

* :mod:`.thresholds` every number, and which a run is judged by (its recorded ones unless overridden);
* :mod:`.verdicts` what one norm, ratio or window means, in the spec's words;
* :mod:`.lifecycle` the one pending -> firing -> resolved lifecycle, keyed by (rule, subject);
* :mod:`.rule` a rule as a declared object; :mod:`.gradients`, :mod:`.balance`, :mod:`.run` the rules;
* :mod:`.evidence` what the rules remember of a run; :mod:`.engine` feeds records through the rules.
"""

from moola_watch.rules.balance import BALANCE_UNMEASURED, COLLAPSE, IMBALANCE, LEFT_OUT, TASK_PAIR, weight_fix
from moola_watch.rules.columns import GradSummary
from moola_watch.rules.engine import RULES, MonitoringSummary, RuleEngine, replay, verdict_severity
from moola_watch.rules.evidence import Evidence, RunState, TaskProgress
from moola_watch.rules.gradients import AMP_OVERFLOW, EXPLODING, NONFINITE, NORM_LEVEL, VANISHING
from moola_watch.rules.lifecycle import FIRING, PENDING, RESOLVED, SEVERITY_RANK, Alert, AlertEvent, Observation
from moola_watch.rules.rule import Rule
from moola_watch.rules.run import GRADS_UNMEASURED, RUN_FAILED, RUN_INTERRUPTED, STALE
from moola_watch.rules.thresholds import Thresholds, run_thresholds
from moola_watch.rules.verdicts import (
    WITH_WEIGHTS,
    CollapseVerdict,
    LayerFlags,
    Verdict,
    balance_message,
    classify_norm_level,
    collapse_verdict,
    exploding_layers,
    flag_layers,
    is_bias,
    judged_layer_norms,
    layer_bounds,
    mean_ratio,
    names_every_weight,
    position,
    recommend_ratio,
    vanishing_layers,
    zero_by_construction,
)

__all__ = [
    "AMP_OVERFLOW", "BALANCE_UNMEASURED", "COLLAPSE", "EXPLODING", "FIRING", "GRADS_UNMEASURED", "IMBALANCE",
    "LEFT_OUT", "NONFINITE", "NORM_LEVEL", "PENDING", "RESOLVED", "RULES", "RUN_FAILED", "RUN_INTERRUPTED",
    "SEVERITY_RANK", "STALE", "TASK_PAIR", "VANISHING", "WITH_WEIGHTS",
    "Alert", "AlertEvent", "CollapseVerdict", "Evidence", "GradSummary", "LayerFlags", "MonitoringSummary",
    "Observation", "Rule", "RuleEngine", "RunState", "TaskProgress", "Thresholds", "Verdict", "balance_message",
    "classify_norm_level", "collapse_verdict", "exploding_layers", "flag_layers", "is_bias", "judged_layer_norms",
    "layer_bounds", "mean_ratio", "names_every_weight", "position",
    "recommend_ratio", "replay", "run_thresholds", "vanishing_layers", "verdict_severity", "weight_fix",
    "zero_by_construction",
]  # fmt: skip
