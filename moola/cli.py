"""``python -m moola.cli train ...`` (also ``moola train``): train EnhancedSimpleLSTM, optionally monitored."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import re
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from moola import __version__
from moola.data import DataError, load_npz, make_synthetic
from moola_watch.floors import checked_floors

EXIT_USAGE = 2
EXIT_HALTED = 3  # --halt-on stopped the run
EXIT_INTERRUPTED = 130
NO_TORCH = (
    "moola: error: the trainer needs PyTorch, which is not installed here: pip install 'moola[train]' "
    "(moola-watch works without it)"
)
DEVICE = re.compile(r"cpu|auto|cuda(:\d+)?")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def _task_floor(text: str) -> tuple[str, float]:
    """``--task-floor``'s TASK=LOSS: the task (type or pointer) and its floor, a finite loss of at least 0."""
    task, equals, loss = text.rpartition("=")
    if not equals or task not in ("type", "pointer"):
        raise argparse.ArgumentTypeError(f"must be TASK=LOSS with TASK type or pointer, got {text}")
    try:
        return task, checked_floors({task: float(loss)})[task]
    except ValueError:
        raise argparse.ArgumentTypeError(f"the {task} floor must be a finite loss of at least 0, got {loss}") from None


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults appended once, and only where there is one to tell (not for switches, nor when the help says it)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        if action.default is None or isinstance(action.default, bool) or "default" in help_text:
            return help_text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from moola.models.enhanced_simple_lstm import MODEL_NAME

    parser = argparse.ArgumentParser(prog="moola", description=__doc__)
    parser.add_argument("--version", action="version", version=f"moola {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train",
        help="train a model (with --monitor-gradients: log gradient records to JSONL)",
        formatter_class=_HelpFormatter,
        description="Train EnhancedSimpleLSTM on synthetic OHLC windows or your own .npz. With "
        "--monitor-gradients, gradient statistics and task balance are printed and appended to a JSONL "
        "log that `moola-watch` can follow live.",
    )
    train.add_argument("--model", choices=[MODEL_NAME], default=MODEL_NAME, help="model to train")
    train.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (an error if unavailable), or auto")
    train.add_argument(
        "--predict-pointers",
        action="store_true",
        help="also regress the expansion start/end (the multi-task setting; enables task balance)",
    )
    monitor = train.add_mutually_exclusive_group()
    monitor.add_argument(
        "--monitor-gradients", dest="monitor_gradients", action="store_true", help="enable gradient monitoring"
    )
    monitor.add_argument("--no-monitor-gradients", dest="monitor_gradients", action="store_false", help="disable it")
    train.set_defaults(monitor_gradients=False)
    train.add_argument("--gradient-log-freq", type=_positive_int, default=10, help="gradient statistics every N epochs")
    train.add_argument("--task-balance-freq", type=_positive_int, default=5, help="task balance every N epochs")
    train.add_argument(
        "--every-n-steps",
        type=_positive_int,
        default=None,
        help="measure gradient statistics and task balance every N optimizer steps instead of by epochs",
    )
    actions = train.add_argument_group("acting on alerts (need --monitor-gradients)")
    actions.add_argument(
        "--halt-on",
        choices=["critical", "error"],
        default=None,
        help="stop cleanly, before the optimizer step, when an alert of this severity or worse fires; exit 3",
    )
    actions.add_argument(
        "--checkpoint-on-alert",
        type=Path,
        metavar="DIR",
        default=None,
        help="save model+optimizer when a collapse or critical alert fires; keep DIR/last-good.pt (each epoch, "
        "until the first non-finite gradient)",
    )
    actions.add_argument(
        "--auto-balance",
        choices=["ratio", "gradnorm"],
        default=None,
        help="adjust the loss weights from each task-balance measurement (see README: Automatic balancing)",
    )
    train.add_argument(
        "--task-floor",
        type=_task_floor,
        action="append",
        metavar="TASK=LOSS",
        help="a task's training loss at the end of a run on it alone (--loss-alpha 0 or --loss-beta 0), recorded "
        "in run_start: a stalled task near it is not called starving (repeat for both tasks)",
    )
    train.add_argument(
        "--balance-scope",
        choices=["shared", "representation"],
        default="shared",
        help="task balance on the shared encoder's parameters, or (cheaper) at its output",
    )
    train.add_argument("--loss-alpha", type=_non_negative_float, default=1.0, help="weight of the type loss")
    train.add_argument("--loss-beta", type=_non_negative_float, default=1.0, help="weight of the pointer loss")
    train.add_argument("--epochs", type=_positive_int, default=30, help="training epochs")
    train.add_argument("--lr", type=_positive_float, default=3e-3, help="Adam learning rate")
    train.add_argument("--batch-size", type=_positive_int, default=32, help="batch size")
    train.add_argument(
        "--grad-clip", type=_non_negative_float, default=1.0, help="max total gradient norm; 0 disables clipping"
    )
    train.add_argument("--hidden-size", type=_positive_int, default=64, help="LSTM hidden units per direction")
    train.add_argument("--num-layers", type=_positive_int, default=1, help="stacked LSTM layers")
    train.add_argument(
        "--no-normalize",
        dest="normalize",
        action="store_false",
        help="feed raw prices instead of percent change from the window's first close",
    )
    train.add_argument("--seed", type=int, default=0, help="seed for data, split, init and batches")
    train.add_argument("--n-samples", type=_positive_int, default=600, help="synthetic windows to generate")
    train.add_argument(
        "--data", type=Path, default=None, help=".npz with X, y, expansion_start, expansion_end (instead of synthetic)"
    )
    train.add_argument(
        "--grad-log",
        type=Path,
        default=None,
        help="JSONL gradient log to append to (default: runs/<run id>.jsonl)",
    )
    train.add_argument(
        "--per-rank-log",
        action="store_true",
        help="under torchrun, every rank writes its own log (run.rank1.jsonl, the rank in every record), "
        "not only rank 0",
    )
    samples = commands.add_parser(
        "sample-logs",
        help="regenerate sample_logs/ from real training runs (fixed seeds)",
        formatter_class=_HelpFormatter,
    )
    samples.add_argument("--out", type=Path, default=Path("sample_logs"), help="directory to write")
    samples.add_argument("names", nargs="*", help="only these files (the README is then left as it is)")
    return parser


class TrainingConsole(Console):
    """The training run's console. A reader that goes away (`moola train ... | head`) silences it instead of
    ending the run: Rich's default raises ``SystemExit`` from whatever line was being printed, which would stop
    the training and mark its log failed. The gradient log is the record; the console is a view of it."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # later writes (and the interpreter's final flush) go nowhere
        os.close(devnull)


def _train(args: argparse.Namespace, console: Console) -> int:
    from moola.models.enhanced_simple_lstm import EnhancedSimpleLSTM
    from moola.utils.monitoring.console import console_lines

    acting = [flag for flag, value in (("--halt-on", args.halt_on), ("--checkpoint-on-alert", args.checkpoint_on_alert),
              ("--auto-balance", args.auto_balance), ("--task-floor", args.task_floor)) if value]  # fmt: skip
    if acting and not args.monitor_gradients:
        print(f"moola: error: {', '.join(acting)} need --monitor-gradients", file=sys.stderr)
        return EXIT_USAGE
    try:
        data = load_npz(args.data) if args.data else make_synthetic(args.n_samples, seed=args.seed)
        model = EnhancedSimpleLSTM(
            hidden_size=args.hidden_size,
            num_layers=args.num_layers,
            predict_pointers=args.predict_pointers,
            normalize=args.normalize,
            device=args.device,
            seed=args.seed,
        )
    except (DataError, ValueError) as exc:
        print(f"moola: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    run_id = f"{args.model}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    grad_log = args.grad_log or Path("runs") / f"{run_id}.jsonl"
    source = args.data or f"synthetic ({args.n_samples} windows, seed {args.seed})"
    console.print(
        f"Training {args.model} on {source}, device {model.device}, {args.epochs} epochs, "
        f"alpha={args.loss_alpha} beta={args.loss_beta}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )

    def echo(text: str) -> None:  # literally: log text is never Rich markup
        console.print(text, markup=False, highlight=False, emoji=False, soft_wrap=True)

    try:
        with console_lines(echo):
            model.fit(
                data.X,
                data.y,
                data.expansion_start,
                data.expansion_end,
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                loss_alpha=args.loss_alpha,
                loss_beta=args.loss_beta,
                grad_clip=args.grad_clip,
                monitor_gradients=args.monitor_gradients,
                gradient_log_freq=args.gradient_log_freq,
                task_balance_freq=args.task_balance_freq,
                balance_scope=args.balance_scope,
                grad_log=grad_log if args.monitor_gradients else None,
                run_id=run_id,
                console=console,
                every_n_steps=args.every_n_steps,
                halt_on=args.halt_on,
                task_floors=dict(args.task_floor or []),
                checkpoint_dir=args.checkpoint_on_alert,
                auto_balance=args.auto_balance,
                per_rank_log=args.per_rank_log,
            )
    except KeyboardInterrupt:
        console.print("\nmoola: interrupted; the gradient log is marked 'interrupted'", markup=False)
        return EXIT_INTERRUPTED
    halted = model.monitor.halt_reason if model.monitor else None
    if halted is not None:
        console.print(
            f"moola: {halted} (--halt-on {args.halt_on})",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return EXIT_HALTED
    final = model.history[-1]
    line = f"Done: val type accuracy {final['type_acc']:.3f}"
    if "pointer_err_bars" in final:
        line += f", pointer error {final['pointer_err_bars']:.2f} bars"
    console.print(line, markup=False, highlight=False, soft_wrap=True)
    if args.monitor_gradients and model.monitor and model.monitor.log_path:
        log = model.monitor.log_path
        # a log it could not write (warned above) holds nothing of this run: no command to read it
        said = f"Gradient log: none written to {log} (see the warning above)"
        if model.monitor.records_written:
            said = f"Gradient log: {log}  (analyze: moola-watch analyze {shlex.quote(str(log))})"
        console.print(said, markup=False, highlight=False, soft_wrap=True)
    return 0


def _distributed(device: str) -> bool:
    """Join the process group when started by torchrun (WORLD_SIZE > 1): gloo on CPU, nccl on CUDA."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    import torch
    import torch.distributed as dist

    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    return True


#: How long a halted rank waits for the others to finish before it exits, in seconds.
HALTED_RANKS_WAIT = 60.0


def _wait_for_every_rank() -> None:
    """A halted rank waits for the others (at most :data:`HALTED_RANKS_WAIT` seconds) before it exits. Every rank
    halts at the same step (they agree), but rank 0 still writes its log and prints while another is done: the
    first to exit non-zero makes torchrun stop the rest by SIGTERM, and rank 0 exited -15, not 3. Bounded: a rank
    that did not halt (the agreement failed) is in its next all-reduce, and waiting for it would wait forever."""
    from datetime import timedelta

    import torch.distributed as dist

    with contextlib.suppress(RuntimeError):  # timed out, or a peer gone: exit as before
        dist.barrier(async_op=True).wait(timeout=timedelta(seconds=HALTED_RANKS_WAIT))


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments == ["--version"]:  # said before the parser, whose choices need torch: an install without it too
        print(f"moola {__version__}")
        return 0
    if importlib.util.find_spec("torch") is None:
        print(NO_TORCH, file=sys.stderr)
        return EXIT_USAGE
    args = build_parser().parse_args(arguments)
    if args.command == "train":
        if DEVICE.fullmatch(args.device) is None:
            # Checked before torch sees it: `--device gpu` is a usage error, not a traceback.
            print(
                f"moola: error: --device {args.device!r} is not a device: use cpu, cuda, cuda:N or auto",
                file=sys.stderr,
            )
            return EXIT_USAGE
        if args.grad_log is not None and args.grad_log.is_dir():
            # A mistake in the command, not a log that failed: caught before training, never a run left unlogged
            # whose closing line then points `moola-watch analyze` at every other log in that directory.
            print(
                f"moola: error: --grad-log {args.grad_log} is a directory: give the log file, "
                f"such as {args.grad_log / 'run.jsonl'}",
                file=sys.stderr,
            )
            return EXIT_USAGE
        distributed = _distributed(args.device)
        # Only rank 0 talks: the others train in silence (and write no log unless asked per rank).
        quiet = distributed and int(os.environ.get("RANK", "0")) != 0
        try:
            code = _train(args, TrainingConsole(quiet=quiet))
            if distributed and code == EXIT_HALTED:
                _wait_for_every_rank()
        finally:
            if distributed:
                import torch.distributed as dist

                dist.destroy_process_group()
        if distributed:
            # Gloo's worker threads can abort the process while the interpreter finalizes, after all the work
            # is done ("terminate called without an active exception", pytorch/pytorch#179291), and torchrun
            # would report the finished run as failed: leave now, with the run's own exit code.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code
    if args.command == "sample-logs":
        from moola import sample_logs

        return sample_logs.main(args.out, args.names)
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
