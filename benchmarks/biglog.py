"""Generating a big, realistic gradient log for the offline benchmarks (seeded; ~1.75 kB per record)."""

from __future__ import annotations

import math
import random
from pathlib import Path

from moola_watch.schema import encode_record, make_record

LAYERS_PER_RECORD = 50


def write_big_log(path: Path, records: int, seed: int = 0) -> int:
    """Write ``records`` records to ``path``: grad_stats with 50 layer norms, plus task_balance and epoch
    records in the proportions a monitored run has; returns the file size in bytes."""
    rng = random.Random(seed)
    names = [f"layer{i:02d}.weight" for i in range(LAYERS_PER_RECORD)]
    run = "bench-run"
    t0 = 1_700_000_000.0
    with path.open("wb") as handle:
        handle.write(encode_record(make_record("run_start", run, t0, model="bench", parameters=names, config={})))
        batch: list[bytes] = []
        for index in range(1, records - 1):
            step, t = index, t0 + index * 0.01
            kind = index % 10
            if kind == 9:
                ratio = math.exp(rng.gauss(0.0, 0.5))
                record = make_record(
                    "task_balance",
                    run,
                    t,
                    epoch=index // 100,
                    step=step,
                    ratio=ratio,
                    norms={"pointer": ratio, "type": 1.0},
                    cosine=rng.uniform(-1, 1),
                )
            elif kind == 8:
                record = make_record("epoch", run, t, epoch=index // 100, step=step, train_loss=rng.uniform(0.1, 1))
            else:
                norms = {name: abs(rng.gauss(0.2, 0.1)) + 1e-4 for name in names}
                values = list(norms.values())
                mean = sum(values) / len(values)
                record = make_record(
                    "grad_stats", run, t, epoch=index // 100, step=step, layer_norms=norms,
                    total_norm=math.sqrt(sum(v * v for v in values)), mean_norm=mean,
                    std_norm=math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)),
                    min_norm=min(values), max_norm=max(values), nonfinite_count=0, nonfinite_layers=[], cost_ms=0.5,
                )  # fmt: skip
            batch.append(encode_record(record))
            if len(batch) >= 5000:
                handle.write(b"".join(batch))
                batch.clear()
        handle.write(b"".join(batch))
        handle.write(encode_record(make_record("run_end", run, t0 + records * 0.01, status="completed")))
    return path.stat().st_size
