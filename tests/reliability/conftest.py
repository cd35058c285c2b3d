"""Fixtures for fault-injection tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from processes import start_trainer


@pytest.fixture
def trainer():
    """Start trainers; any still running at the end of the test is killed."""
    started = []

    def start(log: Path, epochs: int = 40, *extra: str):
        started.append(start_trainer(log, epochs, *extra))
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()
