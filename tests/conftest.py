"""Shared fixtures, and one torch thread per process."""

import os
import shutil
import signal

import pytest
from terminal import Terminal

# The suite runs a worker per core, each starting trainers of small models: a second torch thread per process
# only contends for the cores (a 15-epoch hidden-size-4 run: 10.2 s of CPU with two threads, 6.4 s with one).
# Set before any test imports torch; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# A suite started in the background of a script (`pytest ... &`) inherits SIGINT ignored, and every watcher and
# trainer it starts would too: the tests that stop one with Ctrl-C (SIGINT) then wait on a process that cannot
# hear it. A handler here (not an ignore) is reset to the default in each child at exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def own_state_home(tmp_path_factory, monkeypatch):
    """Each test's watchers keep their ledger of alerts sent (moola_watch.notify.ledger) in a folder of its own:
    never in the home of whoever runs the suite, and no test's deliveries silence another's."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))


@pytest.fixture
def small_train_args() -> list[str]:
    """A quick multi-task run: balance every epoch so the collapse window fills."""
    return [
        "train",
        "--predict-pointers",
        "--monitor-gradients",
        "--n-samples",
        "240",
        "--epochs",
        "12",
        "--gradient-log-freq",
        "4",
        "--task-balance-freq",
        "1",
    ]


@pytest.fixture
def terminal():
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    opened: list[Terminal] = []

    def open_terminal(command: str, **size) -> Terminal:
        opened.append(Terminal(command, **size))
        return opened[-1]

    yield open_terminal
    for term in opened:
        term.close()
