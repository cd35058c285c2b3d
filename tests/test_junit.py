"""`moola-watch check LOG... --junit FILE`: a JUnit report CI systems can read, one testcase per run."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from helpers import run_cli
from logs import LogBuilder, collapse_scenario, healthy_scenario, vanishing_scenario

from moola_watch.junit import LogResult, junit_xml


def check_junit(tmp_path: Path, *args: object) -> tuple[int, ET.Element]:
    report = tmp_path / "reports" / "moola.xml"
    result = run_cli("moola_watch.cli", "check", *map(str, args), "--junit", str(report))
    return result.returncode, ET.parse(report).getroot()


def test_one_testcase_per_run_and_the_collapsed_run_fails(tmp_path: Path) -> None:
    healthy = healthy_scenario().write(tmp_path / "healthy.jsonl")
    collapse = collapse_scenario().write(tmp_path / "collapse.jsonl")
    quick = LogBuilder(run="quick").start().grad(1, 0.2, 0.5).epoch(1).end()
    two_runs = tmp_path / "two.jsonl"
    two_runs.write_bytes(b"".join(quick.lines() + collapse_scenario().lines()))

    code, root = check_junit(tmp_path, healthy, collapse, two_runs)
    assert code == 1
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("4", "2", "0")
    cases = {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}
    assert set(cases) == {(str(healthy), "run-1"), (str(collapse), "run-1"), (str(two_runs), "quick"),
                          (str(two_runs), "run-1")}  # fmt: skip
    assert cases[(str(healthy), "run-1")].find("failure") is None
    assert cases[(str(two_runs), "quick")].find("failure") is None
    failure = cases[(str(collapse), "run-1")].find("failure")
    assert failure.get("type") == "collapse"
    assert failure.get("message").startswith("error: TASK COLLAPSE: Pointer task dominating (ratio=6.34 > 5.0)")
    assert "the type task is starving" in failure.get("message")
    assert failure.text.startswith("error firing collapse (type) since step 100: TASK COLLAPSE")
    assert "-> Urgent: increase alpha by 2x or decrease beta by 0.5x" in failure.text


def test_fail_on_decides_what_fails_and_unreadable_logs_are_errors(tmp_path: Path) -> None:
    vanishing = vanishing_scenario().write(tmp_path / "vanishing.jsonl")
    code, root = check_junit(tmp_path, vanishing, tmp_path / "missing.jsonl")
    assert code == 2 and (root.get("failures"), root.get("errors")) == ("0", "1")
    code, root = check_junit(tmp_path, "--fail-on", "warning", vanishing)
    assert code == 1 and root.find("testsuite/testcase/failure").get("type") == "vanishing"


def test_strings_xml_cannot_carry_are_escaped() -> None:
    report = {
        "runs": [{"run": "r\x1b[31m\x00", "status": "completed", "epoch": 1, "step": 10, "records": 3}],
        "alerts": [{"run": "r\x1b[31m\x00", "severity": "critical", "state": "firing", "rule": "nonfinite",
                    "subject": "layers", "first_step": 10, "message": "NaN in \x07bell\ufffe",
                    "recommendation": "lower the lr"}],
    }  # fmt: skip
    root = ET.fromstring(junit_xml([LogResult("log.jsonl", report)], "error"))
    case = root.find("testsuite/testcase")
    assert case.get("name") == "r\\x1b[31m\\x00"
    assert case.find("failure").get("message") == "critical: NaN in \\x07bell\\xfffe"


def test_a_run_that_measured_nothing_is_an_error_not_a_pass(tmp_path: Path) -> None:
    log = LogBuilder().start().epoch(1).epoch(2).end().write(tmp_path / "epochs_only.jsonl")
    result = run_cli("moola_watch.cli", "check", "--junit", str(tmp_path / "j.xml"), str(log))
    assert result.returncode == 3
    case = ET.parse(tmp_path / "j.xml").getroot().find("testsuite/testcase")
    assert case is not None and case.find("error").get("type") == "no_measurements"
    assert ET.parse(tmp_path / "j.xml").getroot().get("errors") == "1"
