"""The frameworks are optional extras: the trainer side's core, the integrations package and the watcher import
none of them."""

import subprocess
import sys


def test_core_and_watcher_import_no_framework():
    code = (
        "import sys, moola.cli, moola.utils.monitoring, moola.integrations, moola_watch.cli\n"
        "loaded = {'lightning', 'pytorch_lightning', 'transformers', 'accelerate'} & set(sys.modules)\n"
        "assert not loaded, loaded"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
