"""`moola_watch.load(path_or_dir)`: the DataFrames `analyze --csv` writes, in one call, for notebooks."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import REPO, run_cli
from logs import LogBuilder, collapse_scenario, healthy_scenario, nan_loss_scenario

import moola_watch
from moola_watch.loader import TABLES, NotALogError


def test_load_of_a_log_is_what_csv_writes_plus_the_log(tmp_path: Path) -> None:
    log = collapse_scenario().write(tmp_path / "collapse.jsonl")
    assert run_cli("moola_watch.cli", "analyze", str(log), "--csv", str(tmp_path / "csv")).returncode == 1
    frames = moola_watch.load(log)
    assert set(frames) == set(TABLES)
    for name in TABLES:
        written = pd.read_csv(tmp_path / "csv" / f"collapse.{name}.csv")
        assert list(frames[name].columns) == ["log", *written.columns], name
        assert len(frames[name]) == len(written), name
        assert (frames[name]["log"] == str(log)).all()
    pd.testing.assert_series_equal(frames["grad"]["total_norm"], written_column(tmp_path, "grad", "total_norm"))
    assert "collapse" in set(frames["alerts"]["rule"])


def written_column(tmp_path: Path, table: str, column: str) -> pd.Series:
    return pd.read_csv(tmp_path / "csv" / f"collapse.{table}.csv")[column]


def test_load_of_a_directory_is_every_log_in_it(tmp_path: Path) -> None:
    healthy_scenario().write(tmp_path / "a.jsonl")
    collapse_scenario().write(tmp_path / "b.jsonl")
    (tmp_path / "notes.txt").write_text("not a log")
    frames = moola_watch.load(tmp_path)
    assert list(frames["runs"]["log"]) == [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    by_log = frames["balance"].groupby("log")["ratio"].mean()
    assert by_log[str(tmp_path / "b.jsonl")] > 5 > by_log[str(tmp_path / "a.jsonl")]
    assert frames["alerts"]["log"].unique().tolist() == [str(tmp_path / "b.jsonl")]


def test_load_of_the_shipped_samples_and_of_nothing(tmp_path: Path) -> None:
    frames = moola_watch.load(REPO / "sample_logs")
    assert len(frames["runs"]) == len(list((REPO / "sample_logs").glob("*.jsonl")))
    with pytest.raises(FileNotFoundError, match=r"no \*\.jsonl log"):
        moola_watch.load(tmp_path)


def test_importing_moola_watch_stays_light() -> None:
    code = "import sys, moola_watch; assert 'pandas' not in sys.modules and callable(moola_watch.load)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=60).returncode == 0


def exploded_then_recovered(path: Path, *, positions: bool = True) -> Path:
    """Layer b explodes at steps 10-30 and recovers at 40 (a resolved exploding alert naming b); with
    ``positions`` False, every other record carries neither epoch nor step."""
    log = LogBuilder().start()
    for epoch in range(1, 6):
        norms = {"a.weight": 0.3, "b.weight": 40.0 if epoch <= 3 else 0.3}
        log.grad(epoch, sum(norms.values()) / 2, max(norms.values()), norms).balance(epoch, 1.2).epoch(epoch)
    if not positions:
        for index, record in enumerate(log.records):
            if record["kind"] in ("grad_stats", "task_balance", "epoch") and index % 2:
                del record["epoch"], record["step"]
    return log.end().write(path)


def test_alerts_csv_writes_layers_as_json_and_steps_as_whole_numbers(tmp_path: Path) -> None:
    log = exploded_then_recovered(tmp_path / "log.jsonl")
    assert run_cli("moola_watch.cli", "analyze", str(log), "--csv", str(tmp_path / "csv")).returncode == 1
    with (tmp_path / "csv" / "log.alerts.csv").open(newline="") as file:
        rows = {row["rule"]: row for row in csv.DictReader(file)}
    exploding = rows["exploding"]
    assert json.loads(exploding["layers"]) == ["b.weight"]  # JSON, not Python's "['b.weight']"
    assert (exploding["first_step"], exploding["resolved_step"], exploding["first_epoch"]) == ("10", "40", "1")
    assert json.loads(rows["norm_level"]["layers"]) == [] and rows["norm_level"]["resolved_step"] == "40"
    with (tmp_path / "csv" / "log.runs.csv").open(newline="") as file:
        (run,) = csv.DictReader(file)
    assert (run["epoch"], run["step"]) == ("5", "50")
    firing = collapse_scenario().write(tmp_path / "collapse.jsonl")
    assert run_cli("moola_watch.cli", "analyze", str(firing), "--csv", str(tmp_path / "csv")).returncode == 1
    with (tmp_path / "csv" / "collapse.alerts.csv").open(newline="") as file:
        collapse = next(row for row in csv.DictReader(file) if row["rule"] == "collapse")
    assert (collapse["state"], collapse["first_step"], collapse["resolved_step"]) == ("firing", "100", "")


def test_every_frames_step_and_epoch_are_nullable_integers(tmp_path: Path) -> None:
    """Records without an epoch or a step: the column is still of integers (Int64), so arithmetic on it keeps
    the missing ones missing; pandas made objects of them (epoch + 1 gave NaN) or floats (12.0)."""
    frames = moola_watch.load(exploded_then_recovered(tmp_path / "log.jsonl", positions=False))
    for name in ("grad", "layers", "balance", "epochs", "runs"):
        for column in ("epoch", "step"):
            assert frames[name][column].dtype == "Int64", (name, column, frames[name][column].dtype)
        assert frames[name]["epoch"].isna().any() or name == "runs", name
    assert (frames["grad"]["epoch"] + 1).dropna().tolist() == [3, 5]  # the epochs 2 and 4 kept theirs
    for column in ("first_step", "first_epoch", "last_step", "resolved_step"):
        assert frames["alerts"][column].dtype == "Int64", column
    whole = moola_watch.load(exploded_then_recovered(tmp_path / "whole.jsonl"))
    assert all(whole[name]["step"].dtype == "Int64" for name in ("grad", "layers", "balance", "epochs", "runs"))
    assert whole["grad"]["step"].tolist() == [10, 20, 30, 40, 50]


@pytest.mark.parametrize("module", ["gzip", "bz2", "lzma"])
def test_a_compressed_log_is_read_decompressed(tmp_path: Path, module: str) -> None:
    """What ``gzip run.jsonl`` (bzip2, xz) leaves is read as the log it holds: its frames were six empty tables."""
    opener = __import__(module)
    plain = collapse_scenario().write(tmp_path / "run.jsonl")
    packed = tmp_path / ("run.jsonl." + {"gzip": "gz", "bz2": "bz2", "lzma": "xz"}[module])
    packed.write_bytes(opener.compress(plain.read_bytes()))
    expected, frames = moola_watch.load(plain), moola_watch.load(packed)
    for name in TABLES:
        assert (frames[name]["log"] == str(packed)).all(), name
        pd.testing.assert_frame_equal(frames[name].drop(columns="log"), expected[name].drop(columns="log"))
    assert len(frames["grad"]) == 10 and "collapse" in set(frames["alerts"]["rule"])
    misnamed = tmp_path / "misnamed.jsonl"  # told by its first bytes, not its name
    misnamed.write_bytes(packed.read_bytes())
    assert len(moola_watch.load(misnamed)["grad"]) == 10


def test_a_file_that_is_not_a_log_is_an_error_as_check_says_it(tmp_path: Path) -> None:
    foreign = tmp_path / "metrics.jsonl"
    foreign.write_text('{"loss": 0.5}\n{"loss": 0.4}\n')
    with pytest.raises(NotALogError) as raised:
        moola_watch.load(foreign)
    message = str(raised.value)
    assert message == f"{foreign} is not a moola log: no valid record (2 bad lines)" and "\n" not in message
    assert message in run_cli("moola_watch.cli", "check", str(foreign)).stderr  # the CLI's words
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(NotALogError, match="no valid record"):
        moola_watch.load(empty)

    healthy_scenario().write(tmp_path / "run.jsonl")  # in a folder with a log, another tool's file is skipped
    with pytest.warns(UserWarning) as caught:
        frames = moola_watch.load(tmp_path)
    skipped = [f"skipped: {empty} is not a moola log: no valid record (0 bad lines)", f"skipped: {message}"]
    assert sorted(str(w.message) for w in caught) == skipped
    assert frames["runs"]["log"].tolist() == [str(tmp_path / "run.jsonl")]
    (tmp_path / "run.jsonl").unlink()
    with pytest.raises(NotALogError):  # a folder of no log at all
        moola_watch.load(tmp_path)


def test_a_log_of_a_newer_moola_is_an_error_that_says_to_upgrade(tmp_path: Path) -> None:
    newer = healthy_scenario()
    for record in newer.records:
        record["schema"] = 2
    path = newer.write(tmp_path / "run.jsonl")
    with pytest.raises(NotALogError) as raised:
        moola_watch.load(path)
    assert str(raised.value) == (
        f"{path} is a log of a newer moola (schema 2; this moola-watch reads up to schema 1): upgrade moola-watch to "
        "read it"
    )
    assert str(raised.value) in run_cli("moola_watch.cli", "check", str(path)).stderr  # the CLI's words


def test_a_damaged_or_unreadable_compressed_log_is_an_os_error(tmp_path: Path) -> None:
    import gzip

    whole = gzip.compress(healthy_scenario().write(tmp_path / "run.jsonl").read_bytes())
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(OSError, match=r"cut\.jsonl\.gz is gzip-compressed, but its data is damaged or cut short"):
        moola_watch.load(cut)
    zstd = tmp_path / "run.jsonl.zst"
    zstd.write_bytes(b"\x28\xb5\x2f\xfd" + b"\x00" * 20)
    with pytest.raises(OSError, match="is zstd-compressed, which this Python cannot read: decompress it first"):
        moola_watch.load(zstd)


def test_a_folders_rotated_log_is_loaded_as_one_log_oldest_part_first(tmp_path: Path) -> None:
    """As check reads a folder: run.jsonl.1 (the older half) then run.jsonl, one log, its rows in order."""
    lines = collapse_scenario().lines()
    folder = tmp_path / "rotated"
    folder.mkdir()
    (folder / "run.jsonl.1").write_bytes(b"".join(lines[:15]))
    (folder / "run.jsonl").write_bytes(b"".join(lines[15:]))
    joined = tmp_path / "joined" / "run.jsonl"
    joined.parent.mkdir()
    joined.write_bytes(b"".join(lines))
    parts, whole = moola_watch.load(folder), moola_watch.load(joined)
    for name in ("grad", "balance", "epochs", "alerts"):
        assert parts[name].drop(columns="log").equals(whole[name].drop(columns="log")), name
    assert set(parts["runs"]["log"]) == {str(folder / "run.jsonl")}


def test_a_logs_numbered_and_dated_parts_are_loaded_by_when_each_was_modified_with_one_warning(
    tmp_path: Path,
) -> None:
    """As check reads them: no name orders run.jsonl.1 and run.jsonl-20250102, so the older by modification time
    comes first, and a warning says so. Before, load raised ValueError for the whole folder."""
    lines = collapse_scenario().lines()
    folder = tmp_path / "rotated"
    folder.mkdir()
    for age, (name, data) in enumerate(
        [("run.jsonl.1", lines[:10]), ("run.jsonl-20250102", lines[10:20]), ("run.jsonl", lines[20:])]
    ):
        (folder / name).write_bytes(b"".join(data))
        os.utime(folder / name, (1_700_000_000 + age, 1_700_000_000 + age))
    joined = tmp_path / "joined" / "run.jsonl"
    joined.parent.mkdir()
    joined.write_bytes(b"".join(lines))
    with pytest.warns(UserWarning, match=r"read in the order they were last modified, run\.jsonl\.1, ") as said:
        parts = moola_watch.load(folder)
    assert len(said) == 1
    whole = moola_watch.load(joined)
    for name in ("grad", "balance", "epochs", "alerts"):
        assert parts[name].drop(columns="log").equals(whole[name].drop(columns="log")), name


def test_an_alerts_value_is_a_number_column_and_not_a_log_error_is_the_packages() -> None:
    """JSON spells a NaN value "nan": the frame's column held floats and strings (no .mean(), no comparison)."""
    frames = moola_watch.load(REPO / "sample_logs" / "nonfinite_gradients.jsonl")
    values = frames["alerts"]["value"]
    assert values.dtype == "float64" and values.isna().any() and values.notna().any()
    assert moola_watch.NotALogError is NotALogError


def test_a_nan_loss_is_nan_in_the_csv_and_a_loss_not_recorded_an_empty_cell(tmp_path: Path) -> None:
    """A person reading the tables must tell a loss that was NaN from one the record did not have."""
    nan_loss_scenario().write(tmp_path / "log.jsonl")
    result = run_cli("moola_watch.cli", "analyze", str(tmp_path / "log.jsonl"), "--csv", str(tmp_path / "csv"))
    assert result.returncode == 1, result.stderr  # the NaN training loss: a critical alert

    def cells(table: str, column: str) -> list[str]:
        with (tmp_path / "csv" / f"log.{table}.csv").open(newline="") as file:
            return [row[column] for row in csv.DictReader(file)]

    # Before, every one of these "nan" cells was empty, like the values the records did not have.
    assert cells("balance", "loss_type") == ["0.9", "", "0.9", "nan", "nan"]
    assert cells("epochs", "loss_type") == ["0.9", "0.9", "", "nan", "nan"]
    assert cells("epochs", "train_loss") == ["0.7", "0.7", "0.7", "0.7", "nan"]
    assert cells("epochs", "val_loss") == ["0.6", "", "", "", ""]
    assert "nan" in cells("alerts", "value")  # the non-finite loss alert's
    frames = moola_watch.load(tmp_path / "log.jsonl")  # numbers: NaN for both, as pandas has it
    assert frames["epochs"]["loss_type"].dtype == "float64" and frames["epochs"]["loss_type"].isna().tolist() == [
        False, False, True, True, True,
    ]  # fmt: skip
    assert frames["alerts"]["value"].dtype == "float64"


def test_a_nan_norm_is_nan_in_the_grad_and_layers_csv_as_inf_is_inf(tmp_path: Path) -> None:
    """A review's case: a NaN gradient norm was an empty cell in the grad and layers tables (inf was ``inf``), as
    if not recorded; the other tables already said ``nan``. A value not recorded (``cost_ms``) stays empty."""
    nan, inf = float("nan"), float("inf")
    log = LogBuilder().start()
    for epoch, norms, cost in ((1, {"a": 0.3, "b": 0.2}, 1.5), (2, {"a": nan, "b": inf}, None)):
        total = 0.36 if epoch == 1 else nan
        log.add(
            "grad_stats", epoch=epoch, step=epoch * 10, layer_norms=norms, total_norm=total, mean_norm=total,
            std_norm=total, min_norm=total, max_norm=total, nonfinite_count=2 * (epoch - 1),
            nonfinite_layers=[] if epoch == 1 else ["a", "b"], **({} if cost is None else {"cost_ms": cost}),
        )  # fmt: skip
    log.end().write(tmp_path / "log.jsonl")
    result = run_cli("moola_watch.cli", "analyze", str(tmp_path / "log.jsonl"), "--csv", str(tmp_path / "csv"))
    assert result.returncode == 1, result.stderr  # the non-finite gradients: a critical alert

    def rows(table: str) -> list[dict[str, str]]:
        with (tmp_path / "csv" / f"log.{table}.csv").open(newline="") as file:
            return list(csv.DictReader(file))

    grad = rows("grad")
    for column in ("total_norm", "mean_norm", "std_norm", "min_norm", "max_norm"):
        assert [row[column] for row in grad] == ["0.36", "nan"], column
    assert [row["cost_ms"] for row in grad] == ["1.5", ""]
    assert [(row["layer"], row["norm"]) for row in rows("layers")] == [
        ("a", "0.3"), ("b", "0.2"), ("a", "nan"), ("b", "inf"),
    ]  # fmt: skip
    frames = moola_watch.load(tmp_path / "log.jsonl")  # numbers, as pandas has them
    assert frames["grad"]["total_norm"].dtype == frames["layers"]["norm"].dtype == "float64"


def test_load_judges_with_the_thresholds_given_over_those_the_run_recorded() -> None:
    """A review's case: ``load(path, thresholds=Thresholds(window=3))`` gave the same alerts as without it on every
    log the trainer wrote (its run_start records thresholds, and those won); the README says it judges with them."""
    from moola_watch.rules import Thresholds

    log = REPO / "sample_logs" / "pointer_collapse.jsonl"
    recorded = moola_watch.load(log)
    assert (
        "exploding" in set(recorded["alerts"]["rule"])
        and "recorded in run_start" in recorded["runs"].iloc[0]["thresholds_from"]
    )
    given = moola_watch.load(log, thresholds=Thresholds(exploding=1000.0))  # every value, as given
    assert "exploding" not in set(given["alerts"]["rule"])
    assert given["runs"].iloc[0]["thresholds_from"].startswith("as given")
    window = moola_watch.load(log, thresholds={"window": 3})  # that one alone; the rest as the run recorded them
    first = [frames["alerts"].query("rule == 'collapse'")["first_step"].min() for frames in (window, recorded)]
    assert first[0] < first[1] and "exploding" in set(window["alerts"]["rule"])
    assert window["runs"].iloc[0]["thresholds_from"].startswith("recorded in run_start, except window")
    with pytest.raises(ValueError, match="unknown threshold"):
        moola_watch.load(log, thresholds={"windw": 3})
    spelled = moola_watch.load(log, thresholds={"collapse-high": 50})  # as a flag spells it, as the config allows
    assert spelled["runs"].iloc[0]["thresholds_from"].startswith("recorded in run_start, except collapse_high")


def test_a_column_of_numbers_is_numbers_even_where_no_record_filled_it(tmp_path: Path) -> None:
    """A review's case: tasks other than pointer/type left ``balance.ratio`` and ``cosine``, and a loop without a
    validation loss left ``epochs.val_loss``, ``lr`` and ``duration_s``, as objects holding None; the README's
    ``groupby("log")["ratio"].describe()`` then counted text (count/unique/top/freq)."""
    log = LogBuilder().start()
    for epoch in range(1, 4):
        log.add("task_balance", epoch=epoch, step=epoch * 10, norms={"cls": 1.0, "reg": 0.5},
                shares={"cls": 0.7, "reg": 0.3})  # fmt: skip
        log.epoch(epoch, task_losses={"cls": 0.5, "reg": 0.4})
    frames = moola_watch.load(log.end().write(tmp_path / "two-tasks.jsonl"))
    for name, columns in (("balance", ["ratio", "cosine", "norm_cls", "share_reg"]),
                          ("epochs", ["train_loss", "val_loss", "lr", "duration_s"])):  # fmt: skip
        assert all(frames[name][column].dtype == "float64" for column in columns), frames[name].dtypes
    assert list(frames["balance"]["run"]) == ["run-1"] * 3  # text stays text
    assert list(frames["balance"].groupby("log")["ratio"].describe().columns)[:2] == ["count", "mean"]


def test_the_readmes_notebook_lines_give_numbers_for_any_task_names(tmp_path: Path) -> None:
    """An outside review: the README's example, `frames["balance"].groupby("log")["ratio"].describe()`, gave a
    count of 0 and NaN for tasks not named pointer/type (`ratio` is that pair's). Its lines, run on a log of a real
    trainer whose tasks are `cls` and `reg`, must say something."""
    import torch

    from moola.utils.monitoring import GradientMonitor

    readme = (REPO / "README.md").read_text()
    block = readme.split("### Notebooks\n\n```python\n", 1)[1].split("```", 1)[0]
    torch.manual_seed(0)
    trunk, cls_head, reg_head = torch.nn.Linear(4, 8), torch.nn.Linear(8, 2), torch.nn.Linear(8, 1)
    model = torch.nn.ModuleDict({"trunk": trunk, "cls": cls_head, "reg": reg_head})
    (tmp_path / "runs").mkdir()
    with GradientMonitor(every_n_steps=1, log_path=tmp_path / "runs" / "a.jsonl", echo=lambda _line: None) as monitor:
        for _step in range(6):
            x = torch.randn(8, 4)
            h = trunk(x).relu()
            losses = {"cls": torch.nn.functional.cross_entropy(cls_head(h), (x[:, 0] > 0).long()),
                      "reg": reg_head(h).squeeze(1).sub(x[:, 1]).pow(2).mean()}  # fmt: skip
            monitor.backward(model, losses)
            monitor.on_before_optimizer_step(model)
    results = []
    namespace: dict = {}
    for line in block.splitlines():
        code = line.split("  #", 1)[0].replace('"runs/"', repr(str(tmp_path / "runs")))
        try:
            results.append(eval(code, namespace))  # an expression: what a notebook cell shows
        except SyntaxError:
            exec(code, namespace)
    shares = results[0]
    assert list(shares.columns) == ["share_cls", "share_reg"] and shares.notna().all().all(), shares
    assert results[1].notna().all() and len(results[2]) == len(namespace["frames"]["alerts"])
