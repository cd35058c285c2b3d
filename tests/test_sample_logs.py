"""The shipped sample logs still get the verdicts their README promises, and one regenerates with the same
measurements and verdict."""

import json
import re
import shlex

import pytest
from helpers import REPO, run_cli

from moola.sample_logs import SAMPLES
from moola_watch.rules import Thresholds

SAMPLE_DIR = REPO / "sample_logs"
ROW = re.compile(r"^\| `(?P<file>[^`]+)` \|.*\| `moola-watch check (?P<check>[^`]+)` \| (?P<verdict>\w+) \| "
                 r"(?P<status>\w+) \| (?P<rules>[^|]+) \| (?P<bad>\d+) \|$")  # fmt: skip


def promises() -> list[dict]:
    rows = [m.groupdict() for line in (SAMPLE_DIR / "README.md").read_text().splitlines() if (m := ROW.match(line))]
    assert [row["file"] for row in rows] == [sample.name for sample in SAMPLES]
    return rows


def measured_steps(path) -> list[tuple[str, int | None]]:
    """Each record's kind and step, alerts left out."""
    records = [json.loads(line) for line in path.read_bytes().splitlines()]
    return [(record["kind"], record.get("step")) for record in records if record["kind"] != "alert"]


def check(path, *args) -> dict:
    result = run_cli("moola_watch.cli", "check", "--json", *args, str(path))
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("row", promises(), ids=lambda row: row["file"])
def test_shipped_log_gets_the_promised_verdict(row):
    path = SAMPLE_DIR / row["file"]
    assert path.stat().st_size < 1_000_000
    args = shlex.split(row["check"])[:-1]
    report = check(path, *args)
    promised_rules = set() if row["rules"].strip() == "-" else set(row["rules"].strip().split(", "))
    assert report["verdict"] == row["verdict"] and report["status"] == row["status"]
    assert {alert["rule"] for alert in report["alerts"]} == promised_rules
    assert report["bad_lines"] == int(row["bad"])


def test_regenerated_log_matches_the_shipped_one(tmp_path):
    name = "pointer_collapse.jsonl"
    result = run_cli("moola.cli", "sample-logs", "--out", str(tmp_path), name)
    assert result.returncode == 0, result.stderr
    fresh, shipped = check(tmp_path / name), check(SAMPLE_DIR / name)
    assert fresh["verdict"] == shipped["verdict"] == "error"
    assert {a["rule"] for a in fresh["alerts"]} == {a["rule"] for a in shipped["alerts"]}
    # The same measurements at the same steps. How often an alert fired and resolved may differ: past the collapse
    # the trainer's gradients are chaotic, and another CPU's float kernels (AVX2 or AVX-512) take another path.
    assert measured_steps(tmp_path / name) == measured_steps(SAMPLE_DIR / name)
    assert not (tmp_path / "README.md").exists()  # a partial regeneration leaves the README alone


def test_regenerated_killed_log_goes_stale_here_as_elsewhere(tmp_path):
    """On the boot that made it, a killed run's log that names its writer's process reads as dead; shipped, it
    must read as the README promises on every machine: stale."""
    name = "killed_midway.jsonl"
    result = run_cli("moola.cli", "sample-logs", "--out", str(tmp_path), name)
    assert result.returncode == 0, result.stderr
    report = check(tmp_path / name, "--stale-seconds", "0")
    assert (report["verdict"], report["status"]) == ("warning", "stale")
    assert report["bad_lines"] == 1


@pytest.mark.parametrize("row", promises(), ids=lambda row: row["file"])
def test_shipped_log_records_todays_default_thresholds(row):
    """A log judges by the thresholds its run recorded: a sample recorded before the defaults changed would show
    bounds the README no longer documents."""
    start = json.loads((SAMPLE_DIR / row["file"]).read_bytes().splitlines()[0])
    assert start["kind"] == "run_start"
    assert start["thresholds"] == Thresholds().to_dict()
