"""What each command imports before it starts work: modules it never needs stay unimported.

A CI gate runs ``moola-watch check`` once per log, and a sweep starts ``moola train`` once per run; each import
left out is paid back at every start (pandas about half a second; ``torch.distributed.tensor`` over a second).
"""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import REPO


def _imported_after(statement: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter holds after running ``statement``."""
    probe = f"import json, sys\n{statement}\nprint(json.dumps([m for m in {list(modules)!r} if m in sys.modules]))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_watchers_command_line_does_not_import_pandas_until_a_command_makes_tables() -> None:
    assert _imported_after("import moola_watch.cli", ("pandas", "torch")) == []
    made_tables = "import moola_watch.cli\nfrom moola_watch import loader"
    assert _imported_after(made_tables, ("pandas",)) == ["pandas"]  # the probe sees pandas when it is imported


def test_the_monitor_does_not_import_the_sharded_tensor_module() -> None:
    assert _imported_after("import moola.utils.monitoring", ("torch.distributed.tensor",)) == []


def test_a_tensor_is_seen_sharded_once_the_sharded_tensor_module_exists() -> None:
    """The monitor never imports DTensor; a DTensor made after the monitor's modules is still seen as one."""
    probe = """
import os, torch, torch.distributed as dist
from moola.utils.monitoring.distributed import is_sharded
plain = torch.ones(4)
before = is_sharded(plain)
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="0")
dist.init_process_group("gloo", rank=0, world_size=1, init_method="tcp://127.0.0.1:0")
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import distribute_tensor, Shard
sharded = distribute_tensor(torch.ones(4), init_device_mesh("cpu", (1,)), [Shard(0)])
print(before, is_sharded(plain), is_sharded(sharded))
dist.destroy_process_group()
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "True"]
