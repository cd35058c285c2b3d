"""Child processes for the benchmarks, each measuring itself (peak RSS from VmHWM, which exec resets).

python benchmarks/workers.py MODE LOG                       -> one JSON line: seconds, records, peak_mib, worker_mib
    MODE: analyze|check with -parallel (the fast path, a second process decoding), -serial (the fast path in one
    process) or -streaming (the reference, item by item); or pandas; or polars (``polars.read_ndjson``, parse only,
    on every core: the fastest JSON-lines reader we found, the ``bench`` extra)
python benchmarks/workers.py writer LOG COUNT INTERVAL_S    -> appends COUNT epoch records, then run_end
"""

from __future__ import annotations

import json
import re
import resource
import sys
import time
from pathlib import Path


def peak_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


def offline(mode: str, log: str) -> None:
    began = time.perf_counter()
    if mode == "pandas":
        import pandas as pd

        records = len(pd.read_json(log, lines=True))
    elif mode == "polars":
        import polars as pl

        records = len(pl.read_ndjson(log))
    else:
        from moola_watch.analyze import scan_log, to_frames

        command, way = mode.split("-")
        frames = command == "analyze"
        scan = scan_log(log, frames=frames, fast=way != "streaming", parallel=way == "parallel")
        if frames:
            to_frames(scan)
        scan.report()
        records = scan.records
    # The decoding worker is forked: its peak counts the pages it shares with this process, so it does not add.
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    seconds = time.perf_counter() - began
    print(json.dumps({"seconds": seconds, "records": records, "peak_mib": peak_mib(), "worker_mib": worker}))


def writer(log: str, count: int, interval: float) -> None:
    """One record per write, every ``interval`` seconds (0: as fast as possible, in 500-record writes);
    each record's ``time`` is the moment it is written, so a reader can compute its latency."""
    from moola_watch.schema import encode_record, make_record

    run = "bench"
    with open(log, "ab", buffering=0) as handle:
        handle.write(encode_record(make_record("run_start", run, time.time(), model="bench")))
        if interval > 0:
            for step in range(count):
                handle.write(
                    encode_record(make_record("epoch", run, time.time(), epoch=step, step=step, train_loss=0.5))
                )
                time.sleep(interval)
        else:
            for start in range(0, count, 500):
                now = time.time()
                handle.write(
                    b"".join(
                        encode_record(make_record("epoch", run, now, epoch=s, step=s, train_loss=0.5))
                        for s in range(start, min(count, start + 500))
                    )
                )
        handle.write(encode_record(make_record("run_end", run, time.time(), status="completed")))


if __name__ == "__main__":
    if sys.argv[1] == "writer":
        writer(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        offline(sys.argv[1], sys.argv[2])
