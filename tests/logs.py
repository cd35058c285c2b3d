"""Building logs record by record for rule and watcher tests (the trainer's own logs are in sample_logs)."""

from __future__ import annotations

from pathlib import Path

from moola_watch.schema import encode_record, make_record

LAYERS = ("encoder.weight_ih_l0", "encoder.weight_hh_l0", "type_head.0.weight", "pointer_head.weight")


class LogBuilder:
    """Records of one run with increasing time; ``lines()`` encodes them."""

    def __init__(self, run: str = "run-1", t0: float = 1_700_000_000.0) -> None:
        self.run = run
        self.time = t0
        self.records: list[dict] = []

    def add(self, kind: str, **fields) -> LogBuilder:
        self.time += 1.0
        self.records.append(make_record(kind, self.run, self.time, **fields))
        return self

    def start(self) -> LogBuilder:
        return self.add("run_start", model="enhanced_simple_lstm", parameters=list(LAYERS), config={})

    def grad(self, epoch: int, mean: float, peak: float, norms: dict[str, float] | None = None) -> LogBuilder:
        norms = norms or {name: mean for name in LAYERS}
        finite = [v for v in norms.values() if v == v and abs(v) != float("inf")]
        bad = [k for k, v in norms.items() if not (v == v and abs(v) != float("inf"))]
        return self.add(
            "grad_stats", epoch=epoch, step=epoch * 10, layer_norms=norms, total_norm=sum(v * v for v in finite) ** 0.5,
            mean_norm=mean, std_norm=0.0, min_norm=min(finite, default=0.0), max_norm=peak,
            nonfinite_count=len(bad), nonfinite_layers=bad,
        )  # fmt: skip

    def balance(self, epoch: int, ratio: float, **fields) -> LogBuilder:
        """A pointer/type balance sample; ``fields`` adds e.g. ``shares``, ``losses``, ``weights``."""
        return self.add(
            "task_balance", epoch=epoch, step=epoch * 10, ratio=ratio, norms={"pointer": ratio, "type": 1.0}, **fields
        )

    def epoch(self, epoch: int, loss: float = 0.5, **fields) -> LogBuilder:
        """An epoch record; ``fields`` adds e.g. ``task_losses``, ``metrics``."""
        return self.add("epoch", epoch=epoch, step=epoch * 10, train_loss=loss, **fields)

    def end(self, status: str = "completed", error: str | None = None) -> LogBuilder:
        return self.add("run_end", status=status, error=error)

    def lines(self) -> list[bytes]:
        return [encode_record(r) for r in self.records]

    def write(self, path: Path) -> Path:
        path.write_bytes(b"".join(self.lines()))
        return path


def healthy_scenario() -> LogBuilder:
    """The spec's scenario 1, with ten balance samples averaging 1.34."""
    log = LogBuilder().start()
    means = {5: (0.1823, 1.2456), 10: (0.2134, 1.4567), 15: (0.1967, 1.3245), 20: (0.1845, 1.2134)}
    ratios = [1.23, 1.45, 1.30, 1.41, 1.28, 1.36, 1.31, 1.39, 1.33, 1.34]
    for epoch in range(1, 21):
        if epoch in means:
            log.grad(epoch, *means[epoch])
        if epoch % 2 == 0:
            log.balance(epoch, ratios[epoch // 2 - 1])
        log.epoch(epoch)
    return log.end()


def collapse_scenario() -> LogBuilder:
    """The spec's scenario 2: the ratio climbs until the window mean is 6.34; meanwhile the type task gets 1% of
    the update and its loss stays flat while the pointer loss falls (a starving type task)."""
    log = LogBuilder().start()
    ratios = [3.82, 5.23, 6.1, 6.5, 6.9, 7.0, 6.8, 6.4, 7.3, 7.36]
    for i, ratio in enumerate(ratios, start=1):
        losses = {"type": 0.69, "pointer": 0.8 - 0.05 * i}
        log.grad(i, 0.2 + 0.03 * i, 1.5 + 0.2 * i).balance(
            i, ratio, shares={"pointer": 0.99, "type": 0.01}, losses=losses, weights={"pointer": 8.0, "type": 1.0}
        )
        log.epoch(i, task_losses=losses)
    return log.end()


def vanishing_scenario() -> LogBuilder:
    """The spec's scenario 3: 12 then 24 vanishing layers, mean norm falling to 0.0012."""
    log = LogBuilder().start()
    for epoch, mean, count in ((5, 0.0234, 12), (10, 0.0012, 24)):
        norms = {f"layer{i}": (1e-9 if i < count else mean * 2) for i in range(30)}
        log.grad(epoch, mean, max(norms.values()), norms).epoch(epoch)
    return log.end()


def exploding_scenario() -> LogBuilder:
    log = LogBuilder().start()
    for epoch in (1, 2, 3):
        norms = {"a": 0.3, "b": 40.0 * epoch}
        log.grad(epoch, sum(norms.values()) / 2, max(norms.values()), norms).epoch(epoch)
    return log.end()


def recovered_collapse_scenario(run: str = "recovered") -> LogBuilder:
    """The pointer task starves for ten balance samples (a collapse error), then gets an equal share and
    learns: by the run's end it has recovered."""
    log = LogBuilder(run).start()
    for epoch in range(1, 31):
        starving = epoch <= 10
        share = 0.01 if starving else 0.5
        losses = {"pointer": 1.0 if starving else 1.0 / (epoch - 9), "type": 1.0 / epoch}
        log.balance(epoch, 0.3 if starving else 1.0, shares={"pointer": share, "type": 1 - share}, losses=losses,
                    weights={"pointer": 0.1, "type": 1.0})  # fmt: skip
    return log.end()


def nan_loss_scenario() -> LogBuilder:
    """The type loss goes NaN at epoch 4 and the training loss at 5 (of 5); the balance sample of epoch 2 and the
    epoch record of epoch 3 have no type loss at all, and only epoch 1 has a validation loss."""
    nan = float("nan")
    log = LogBuilder().start()
    for epoch in range(1, 6):
        losses = {"pointer": 0.5, "type": nan if epoch >= 4 else 0.9}
        sampled = {name: loss for name, loss in losses.items() if epoch != 2 or name == "pointer"}
        recorded = {name: loss for name, loss in losses.items() if epoch != 3 or name == "pointer"}
        log.grad(epoch, 0.3, 0.4).balance(epoch, 1.2, losses=sampled)
        log.epoch(epoch, nan if epoch == 5 else 0.7, task_losses=recorded, **({"val_loss": 0.6} if epoch == 1 else {}))
    return log.end()
