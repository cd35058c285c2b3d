"""`moola_watch.load(path_or_dir)`: the DataFrames `analyze --csv` writes, in one call, for notebooks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import REPO, run_cli
from logs import collapse_scenario, healthy_scenario

import moola_watch
from moola_watch.loader import TABLES


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
