"""`moola-watch check` as a CI gate, through the real CLI: a reader closing the pipe early changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

from helpers import REPO, run_cli
from logs import LogBuilder, collapse_scenario, healthy_scenario


def watch(*args: object, **kwargs) -> subprocess.CompletedProcess:
    return run_cli("moola_watch.cli", *map(str, args), **kwargs)


def check_json(*args: object, **kwargs) -> tuple[subprocess.CompletedProcess, list[dict]]:
    result = watch("check", "--json", *args, **kwargs)
    return result, [json.loads(line) for line in result.stdout.splitlines()]


def with_line(builder: LogBuilder, index: int, line: bytes) -> bytes:
    """The builder's log with ``line`` put before its record ``index``."""
    lines = builder.lines()
    return b"".join([*lines[:index], line, *lines[index:]])


# ------------------------------------------------------------------------------------------------ broken pipe


def closed_early(*args: object) -> tuple[int, str]:
    """Run check with stdout a real pipe whose reader closes it after a few bytes; its exit code and stderr."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    process = subprocess.Popen(
        [sys.executable, "-m", "moola_watch.cli", "check", *map(str, args)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert process.stdout.read(20)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    return process.wait(timeout=120), stderr


def test_a_reader_closing_the_pipe_early_changes_neither_the_exit_code_nor_the_junit_file(tmp_path):
    healthy = [healthy_scenario().write(tmp_path / f"healthy{i:02}.jsonl") for i in range(12)]
    collapse = collapse_scenario().write(tmp_path / "zz_collapse.jsonl")  # judged last, after the reader left
    junit = tmp_path / "junit.xml"
    code, stderr = closed_early("--json", "--junit", junit, *healthy, collapse)
    assert code == 1 and "Traceback" not in stderr and "Broken" not in stderr, stderr
    root = ET.parse(junit).getroot()
    assert (root.get("tests"), root.get("failures")) == ("13", "1")
    code, stderr = closed_early(*healthy)  # text: Rich's own handling exited 1, whatever the verdict
    assert code == 0 and "Traceback" not in stderr, stderr
    code, _ = closed_early(*healthy, collapse)
    assert code == 1
