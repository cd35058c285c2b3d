"""``moola-watch check --junit FILE``: the verdicts as a JUnit XML report, the format CI systems show as tests.

One ``<testsuite>`` per log, one ``<testcase>`` per run in it. A run fails when an alert at or above
``--fail-on`` fired in it; the ``<failure>`` names the worst and lists every alert of the run with its
recommendation. A run that measured nothing (``no_measurements``: ``check`` exits 3), a log that could not be
read or holds no valid record, and a run ``--run`` names that no log holds, are an ``<error>``: nothing checked is
no pass. A log with lines that are not valid records gets a ``bad lines`` testcase, failing when they fail the log
(more than ``--max-bad-lines``). Pure: results in, bytes out.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from moola_watch.counts import counted
from moola_watch.schema import SEVERITIES

# Characters XML 1.0 cannot hold at all, even escaped: shown as visible escapes instead.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@dataclass(frozen=True)
class LogResult:
    """One log on the command line: the object ``check --json`` prints for it (None: unreadable, reason unknown)."""

    log: str
    report: Mapping[str, Any] | None


def xml_text(value: object) -> str:
    """``value`` as text XML can carry (a log's strings may hold any character)."""
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def _rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1


def _counts_as(alert: Mapping[str, Any]) -> str:
    """The severity an alert gives its run's verdict (a recovered collapse: a warning)."""
    return alert.get("counts_as", alert["severity"])


def alert_line(alert: Mapping[str, Any]) -> str:
    """One alert as a line of the failure's body."""
    since = "the start" if alert["first_step"] is None else f"step {alert['first_step']}"
    return (
        f"{alert['severity']} {alert['state']} {alert['rule']} ({alert['subject']}) since {since}: "
        f"{alert['message']} -> {alert['recommendation']}"
    )


def _element(parent: ET.Element, tag: str, text: str | None = None, **attributes: object) -> ET.Element:
    element = ET.SubElement(parent, tag, {key: xml_text(value) for key, value in attributes.items()})
    if text is not None:
        element.text = xml_text(text)
    return element


def run_case(
    suite: ET.Element, log: str, run: Mapping[str, Any], alerts: Sequence[Mapping[str, Any]], bar: int
) -> str | None:
    """Add the testcase of one run; "failures" or "errors" if it is one, None if it passed."""
    case = _element(suite, "testcase", classname=log, name=run["run"])
    if run.get("verdict") == "no_measurements":
        message = "the run recorded no gradient statistics or task balance: nothing was checked"
        _element(case, "error", message=message, type="no_measurements")
        return "errors"
    # The worst first; among equals, one still firing before one resolved.
    failing = sorted(
        (a for a in alerts if _rank(_counts_as(a)) >= bar),
        key=lambda a: (-_rank(_counts_as(a)), a["state"] != "firing"),
    )
    if failing:
        worst = failing[0]
        _element(
            case,
            "failure",
            "\n".join(map(alert_line, alerts)),
            message=f"{worst['severity']}: {worst['message']}",
            type=worst["rule"],
        )
    _element(
        case,
        "system-out",
        f"status={run['status']} at epoch {_shown(run['epoch'])}, step {_shown(run['step'])}; {run['records']} "
        f"records; {counted(len(alerts), 'alert')}",
    )
    return "failures" if failing else None


def _shown(value: object) -> object:
    """A position as the report shows it: ``-`` where the run recorded none."""
    return "-" if value is None else value


#: Why a log could not be judged at all, by its verdict (``check --json`` adds the error it printed).
UNJUDGED = {
    "unreadable": "the log could not be read",
    "not_a_log": "not a moola log: no valid record",
    "no_such_run": "the run is in no log",
}


def unjudged_case(suite: ET.Element, log: str, report: Mapping[str, Any] | None) -> None:
    """The ``<error>`` testcase of a log that could not be judged: unreadable, not a log, or without ``--run``'s
    run (that testcase is named after the run)."""
    verdict = "unreadable" if report is None else report.get("verdict", "unreadable")
    error = None if report is None else report.get("error")
    message = UNJUDGED.get(verdict, verdict)
    if verdict == "unreadable" and error:
        message = f"{message}: {error}"
    elif verdict in ("no_such_run", "not_a_log"):  # check's own line: which run, or why not (a newer moola's)
        message = error or message
    name = report["run"] if verdict == "no_such_run" and report is not None else "read"
    case = _element(suite, "testcase", classname=log, name=name)
    _element(case, "error", message=message, type=verdict)


def bad_lines_case(suite: ET.Element, log: str, report: Mapping[str, Any]) -> str | None:
    """The ``bad lines`` testcase of a log holding lines that are not valid records (cut-off and repeated
    lines are not counted); "failures" if they fail the log, None if accepted (``--max-bad-lines``)."""
    case = _element(suite, "testcase", classname=log, name="bad lines")
    summary = f"bad_lines={report['bad_lines']}: {report['bad_lines_summary']}"
    if report["bad_lines_fail"]:
        details = "\n".join(f"line {bad['line']}: {bad['reason']}" for bad in report.get("bad_line_details", ()))
        _element(case, "failure", details, message=summary, type="bad_lines")
        return "failures"
    _element(case, "system-out", summary)
    return None


def junit_xml(results: Sequence[LogResult], fail_on: str) -> bytes:
    """The JUnit XML of ``check``'s results: a run fails on an alert of severity ``fail_on`` or worse."""
    bar = _rank(fail_on)
    root = ET.Element("testsuites", name="moola-watch check")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for result in results:
        suite = _element(root, "testsuite", name=result.log)
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        report = result.report
        if report is None or not report.get("runs"):  # unreadable, empty, foreign, or no such run: not a pass
            unjudged_case(suite, result.log, report)
            counts.update(tests=1, errors=1)
        elif report.get("bad_lines_counted"):
            counts["tests"] += 1
            if bad_lines_case(suite, result.log, report) is not None:
                counts["failures"] += 1
        for run in report.get("runs", ()) if report else ():
            alerts = [a for a in report["alerts"] if a["run"] == run["run"]]
            counts["tests"] += 1
            outcome = run_case(suite, result.log, run, alerts, bar)
            if outcome is not None:
                counts[outcome] += 1
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
