"""A run resumed from a checkpoint, or followed from its middle, is judged as the same training uninterrupted:
its tasks' training rates start where the training did, not where the watcher began to read."""

import copy
import json
import subprocess
import sys
import time

import pytest
import torch
from helpers import REPO
from logs import LogBuilder
from torch import nn

from moola.utils.monitoring import GradientMonitor
from moola_watch import rules
from moola_watch.analyze import scan_log

STEPS, CRASH_AT, EVERY, PER_EPOCH = 300, 150, 5, 30
WATCH = [sys.executable, "-m", "moola_watch.cli"]


class Crash(RuntimeError):
    pass


def train(
    log, first: int, last: int, checkpoint=None, crash: bool = False, every: int = EVERY, save_at: int = CRASH_AT
):
    """Steps ``first`` to ``last`` of a two-task loop (an easy classification the regression's 17x weight
    dominates, so its gradients are dominated after it has learned), from ``checkpoint`` if given; returns the
    checkpoint taken after step ``save_at``, where a run crashing later resumes from."""
    torch.manual_seed(0)
    model = nn.ModuleDict({"trunk": nn.Linear(8, 16), "cls": nn.Linear(16, 2), "reg": nn.Linear(16, 1)})
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    if checkpoint is not None:
        checkpoint = copy.deepcopy(checkpoint)  # as torch.load gives it: the optimizer takes its tensors as they are
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
    weights, saved = {"cls": 0.3, "reg": 5.0}, None
    with GradientMonitor(every_n_steps=every, log_path=log, echo=lambda _line: None) as monitor:
        monitor.watch_optimizer(optimizer)  # a restored Adam counts on from its checkpoint's steps
        for i in range(first, last):
            monitor.on_epoch_start(i // PER_EPOCH + 1)
            x = torch.randn(32, 8, generator=torch.Generator().manual_seed(1000 + i))
            y = torch.randn(32, generator=torch.Generator().manual_seed(2000 + i))
            h = model["trunk"](x).relu()
            losses = {"cls": nn.functional.cross_entropy(model["cls"](h), (x[:, 1] > 0).long()),
                      "reg": nn.functional.mse_loss(model["reg"](h).squeeze(1), x[:, 0] + y)}  # fmt: skip
            monitor.backward(model, losses, weights)
            monitor.on_before_optimizer_step(model)
            optimizer.step()
            optimizer.zero_grad()
            if i + 1 == save_at:  # a copy, as torch.save makes: the optimizer's step counts change in place
                saved = copy.deepcopy({"model": model.state_dict(), "optimizer": optimizer.state_dict()})
        if crash:
            raise Crash("CUDA error: an illegal memory access was encountered")
    return saved


def check(log, *args):
    result = subprocess.run([*WATCH, "check", "--json", *args, str(log)], capture_output=True, text=True, cwd=REPO)
    return result.returncode, json.loads(result.stdout)


def collapse(report) -> dict:
    (alert,) = [a for a in report["alerts"] if a["rule"] == "collapse" and a["state"] == "firing"]
    return alert


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    log = tmp_path_factory.mktemp("full") / "full.jsonl"
    train(log, 0, STEPS)
    return log


def test_a_run_resumed_into_its_log_is_judged_as_the_uninterrupted_one(tmp_path, uninterrupted):
    code, full = check(uninterrupted)
    assert code == 0 and collapse(full)["severity"] == "warning" and "has learned" in collapse(full)["message"]
    log = tmp_path / "resumed.jsonl"
    checkpoint = train(tmp_path / "first.jsonl", 0, CRASH_AT)  # what the run that crashes saves
    with pytest.raises(Crash):
        train(log, 0, CRASH_AT + 20, crash=True)
    train(log, CRASH_AT, STEPS, checkpoint)
    code, resumed = check(log, "--latest")
    (run,) = resumed["runs"]
    assert run["step"] == STEPS and run["status"] == "completed"  # its steps go on from the checkpoint's
    assert code == 0 and collapse(resumed)["message"] == collapse(full)["message"]


def test_a_run_resumed_into_a_new_log_does_not_call_a_learned_task_starving(tmp_path):
    checkpoint = train(tmp_path / "first.jsonl", 0, CRASH_AT)
    log = tmp_path / "resumed.jsonl"
    train(log, CRASH_AT, STEPS, checkpoint)
    code, report = check(log)
    message = collapse(report)["message"]
    assert code == 0 and collapse(report)["severity"] == "warning", message
    assert "whether the cls task had already learned cannot be told" in message
    assert "it began at epoch 6, step 151, past its start" in message
    (start,) = [json.loads(line) for line in log.read_text().splitlines() if '"run_start"' in line]
    assert (start["first_step"], start["first_epoch"]) == (151, 6)


def test_follow_from_end_judges_what_it_did_not_read_as_unknown_not_as_a_fresh_start(tmp_path, uninterrupted):
    lines = uninterrupted.read_bytes().splitlines(keepends=True)
    middle = next(i for i, line in enumerate(lines) if b'"step":150' in line)
    log = tmp_path / "live.jsonl"
    log.write_bytes(b"".join(lines[:middle]))
    follow = subprocess.Popen([*WATCH, "follow", "--from-end", "--exit-on-end", "--json", str(log)],
                              stdout=subprocess.PIPE, text=True, cwd=REPO)  # fmt: skip
    time.sleep(1.5)
    with log.open("ab") as out:
        for line in lines[middle:]:
            out.write(line)
            out.flush()
    events = [json.loads(line) for line in follow.communicate(timeout=60)[0].splitlines()]
    collapses = [e for e in events if e["event"] == "alert" and e["rule"] == "collapse"]
    assert follow.returncode == 0 and collapses and all(e["severity"] == "warning" for e in collapses), collapses
    assert "follow --from-end skipped its start" in collapses[-1]["message"]


def test_a_late_first_record_is_a_start_only_by_the_runs_own_cadence():
    """Measured every 5 steps, a fresh run's first record is by step 11; one from step 155 began elsewhere.
    Without a cadence recorded (another writer) the first record is the start, as before."""

    def first_losses(first_step: int, **cadence) -> dict:
        log = LogBuilder().add("run_start", model="m", **cadence)
        log.add("task_balance", step=first_step, norms={"a": 1.0, "b": 1.0}, losses={"a": 0.5, "b": 0.7})
        return rules.replay(log.records).evidence.first_losses

    assert first_losses(5, every_n_steps=5, balance_every_n_steps=5) == {"a": 0.5, "b": 0.7}
    assert first_losses(155, every_n_steps=5, balance_every_n_steps=5) == {}
    assert first_losses(155) == {"a": 0.5, "b": 0.7}


def test_a_run_resumed_before_twice_its_cadence_still_takes_the_start_of_the_run_it_resumes(tmp_path):
    """Measured every 20 steps, resumed from step 30: its first record, at step 40, is past a fresh run's first
    (20), and the crashed run before it in the log got to step 50."""
    full = tmp_path / "full.jsonl"
    train(full, 0, STEPS, every=20)
    log = tmp_path / "resumed.jsonl"
    checkpoint = train(tmp_path / "first.jsonl", 0, 30, every=20, save_at=30)
    with pytest.raises(Crash):
        train(log, 0, 50, crash=True, every=20)
    train(log, 30, STEPS, checkpoint, every=20)
    (_full_code, full_report), (_code, resumed) = check(full), check(log, "--latest")
    assert collapse(resumed)["message"] == collapse(full_report)["message"]
    first_losses = [scan.current.evidence.first_losses for scan in (scan_log(full), scan_log(log))]
    assert first_losses[0] == first_losses[1] and first_losses[0]  # the training's start, not step 40's
    assert resumed["runs"][0]["step"] == STEPS


def test_a_completed_experiment_before_it_in_the_log_lends_no_start(tmp_path):
    """Another experiment of the same model that ran to its end is not the run this one resumes: its first
    losses would judge this one's tasks by another training's start."""
    log = tmp_path / "two.jsonl"
    train(log, 0, 20)  # a short smoke test, completed
    checkpoint = train(tmp_path / "first.jsonl", 0, CRASH_AT)
    train(log, CRASH_AT, STEPS, checkpoint)
    _code, report = check(log, "--latest")
    assert "whether the cls task had already learned cannot be told" in collapse(report)["message"]


def starved_aux_run(log, joins_at: int) -> None:
    """A fresh two-task run whose aux task (weight 0.002) truly starves; its labels (and loss) join the batches
    at step ``joins_at``: the first balance records come late, in a run that began at step 1."""
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(8, 4), nn.Tanh())
    heads = nn.ModuleDict({"main": nn.Linear(4, 1), "aux": nn.Linear(4, 2)})
    model = nn.ModuleDict({"trunk": trunk, "heads": heads})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(1)
    with GradientMonitor(every_n_steps=50, balance_every_n_steps=5, log_path=log, echo=lambda _line: None) as monitor:
        monitor.watch_optimizer(optimizer)
        for step in range(1, 301):
            monitor.on_epoch_start((step - 1) // 30 + 1)
            x = torch.randn(32, 8, generator=generator)
            h = trunk(x)
            losses = {"main": nn.functional.mse_loss(heads["main"](h).squeeze(1), 3 * x[:, 0] + x[:, 1])}
            if step >= joins_at:
                losses["aux"] = nn.functional.cross_entropy(heads["aux"](h), (x[:, 5] * x[:, 6] > 0).long())
            monitor.backward(model, losses, {task: {"main": 1.0, "aux": 0.002}[task] for task in losses})
            monitor.on_before_optimizer_step(model)
            optimizer.step()
            optimizer.zero_grad()


def test_a_task_whose_losses_join_a_fresh_run_late_is_judged_as_from_the_start_not_as_a_resumed_run(tmp_path):
    """The first balance record comes at step 20 (no aux labels before), past the cadence of 5: the run still
    began at step 1, as its run_start says, so the starving aux task is an error as when it is there at once."""
    verdicts = []
    for joins_at in (1, 20):
        log = tmp_path / f"joins-at-{joins_at}.jsonl"
        starved_aux_run(log, joins_at)
        code, report = check(log)
        errors = [a for a in report["alerts"] if a["rule"] == "collapse" and a["counts_as"] == "error"]
        assert code == 1 and [a["subject"] for a in errors] == ["aux"], report["alerts"]
        assert "cannot be told" not in errors[0]["message"]
        verdicts.append(report["verdict"])
    assert verdicts == ["error", "error"]


def test_a_resumed_run_that_ends_with_a_task_starved_says_it_cannot_tell_rather_than_nothing(tmp_path):
    """Resumed at step 151 into a new log: the cls task gets 5% of the update to the end (not dominated enough for
    a collapse during the run), its loss flat. Whether it had learned before cannot be told (its first loss is
    unknown): a warning says so; it said nothing."""
    log = LogBuilder().add("run_start", model="m", every_n_steps=5, first_step=151, first_epoch=6)
    for i in range(12):
        losses = {"cls": 0.6, "reg": 0.9 - 0.01 * i}
        log.add("task_balance", step=155 + 5 * i, norms={"cls": 0.4, "reg": 1.0}, shares={"cls": 0.05, "reg": 0.95},
                losses=losses, weights={"cls": 1.0, "reg": 5.0})  # fmt: skip
    code, report = check(log.end().write(tmp_path / "resumed.jsonl"))
    ended = [a for a in report["alerts"] if a["rule"] == "collapse" and "POSSIBLE TASK COLLAPSE" in a["message"]]
    assert code == 0 and [a["severity"] for a in ended] == ["warning"], report["alerts"]
    assert "whether it had learned cannot be told: it began at epoch 6, step 151" in ended[0]["message"]


@pytest.mark.parametrize(("after", "code"), [("resumed", 0), ("restarted from step 1", 1), ("nothing", 1)])
def test_a_failed_run_that_a_later_run_resumed_is_a_warning_that_names_it(tmp_path, after, code):
    """A review's case: a run written ``failed`` (Lightning always, the HF Trainer inside ``with callback:``) and
    then resumed from a checkpoint into the same log failed ``check`` for ever, while the same history after a
    kill -9 (no run_end) passed. Resumed, its failure is a warning that says so (the error still shows) and the
    resuming run decides; restarted from scratch, or not followed at all, it still fails."""
    failed = LogBuilder("first").start()
    failed.grad(1, 0.3, 0.5).grad(2, 0.3, 0.5).end("failed", "RuntimeError: CUDA error: an illegal memory access")
    lines = failed.lines()
    if after != "nothing":
        later = LogBuilder("second", t0=1_700_000_100.0).start()
        later.records[0].update(first_step=21 if after == "resumed" else 1, first_epoch=3 if after == "resumed" else 1)
        lines += later.grad(3, 0.3, 0.5).end().lines()
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"".join(lines))
    result, report = check(log)
    alerts = [alert for alert in report["alerts"] if alert["run"] == "first" and alert["rule"] == "run_failed"]
    assert result == code, report
    if after == "resumed":
        error, warning = alerts
        assert (error["severity"], error["state"], error["counts_as"]) == ("error", "resolved", "warning")
        assert (warning["severity"], warning["state"]) == ("warning", "firing")
        assert (
            warning["message"]
            == "Run failed and was resumed by run second; its error: RuntimeError: CUDA error: an illegal memory access"
        )
        assert [run["verdict"] for run in report["runs"]] == ["warning", "healthy"]
    else:
        ((severity, state),) = [(alert["severity"], alert["state"]) for alert in alerts]
        assert (severity, state) == ("error", "firing")
