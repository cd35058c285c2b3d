"""Shared fixtures."""

import pytest


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
