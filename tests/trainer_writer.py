"""A trainer-like process for rotation tests: the trainer's own JSONL writer (``JsonlRecordWriter``) appending a
run_start, ``argv[2]`` grad_stats records (steps 0, 1, ...) ``argv[3]`` seconds apart, and a run_end to the log
``argv[1]``, as a training loop does; whatever renames the log meanwhile is the test's (logrotate's) business."""

import sys
import time

from logs import LAYERS

from moola.utils.monitoring.jsonl_writer import JsonlRecordWriter
from moola_watch.schema import make_record

path, count, pace = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
run = "rotated-run"
writer = JsonlRecordWriter(path, warn=lambda message: print(message, file=sys.stderr, flush=True))
writer.write(make_record("run_start", run, time.time(), model="m", parameters=list(LAYERS), config={}))
norms = dict.fromkeys(LAYERS, 0.3)
for step in range(count):
    writer.write(make_record(
        "grad_stats", run, time.time(), epoch=step // 100, step=step, layer_norms=norms, total_norm=0.6,
        mean_norm=0.3, std_norm=0.0, min_norm=0.3, max_norm=0.3, nonfinite_count=0, nonfinite_layers=[],
    ))  # fmt: skip
    time.sleep(pace)
writer.write(make_record("run_end", run, time.time(), status="completed", error=None))
writer.close()
