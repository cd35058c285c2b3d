"""Console output of a training run: a Rich progress bar over epochs on a terminal, plain lines when piped.

Text from the monitor goes through :meth:`TrainingReporter.echo`, printed literally (no Rich markup), above
the bar while it is live.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainingReporter:
    """Shows progress over ``epochs``; use as a context manager around the training loop."""

    def __init__(self, console: Console, epochs: int) -> None:
        self.console = console
        self.epochs = epochs
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> TrainingReporter:
        if self.console.is_terminal:
            self._progress = Progress(
                TextColumn("Epoch {task.completed}/{task.total}"),
                BarColumn(),
                TextColumn("{task.fields[metrics]}", markup=False),
                TextColumn("elapsed"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._task = self._progress.add_task("train", total=self.epochs, metrics="")
            self._progress.start()
        return self

    def echo(self, text: str) -> None:
        """Print monitor output literally."""
        self.console.print(text, markup=False, highlight=False, emoji=False, soft_wrap=True)

    def epoch_done(self, epoch: int, metrics: str, seconds: float) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=epoch, metrics=metrics)
        else:
            self.echo(f"Epoch {epoch}/{self.epochs} - {metrics} - {seconds:.2f}s")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
