"""``moola train`` whose rank 0 finishes a second after the other ranks (its log on a slow network filesystem,
say): how a run under torchrun ends when its ranks end apart. Run as ``torchrun tests/slow_rank0_train.py train
ARGS``."""

import os
import sys
import time

from moola import cli

train = cli._train


def slow_rank_0(*args: object) -> int:
    code = train(*args)
    if os.environ.get("RANK") == "0":
        time.sleep(1.5)
    return code


cli._train = slow_rank_0
sys.exit(cli.main())
