"""``python -m moola.cli`` with an audit hook that notes every file this rank renames into place (how a
checkpoint is published): one line ``RANK<TAB>destination`` per rename, appended to ``$MOOLA_RENAMES``. It only
watches; the CLI runs unchanged."""

import os
import runpy
import sys


def note(event: str, args: tuple) -> None:
    if event == "os.rename":
        with open(os.environ["MOOLA_RENAMES"], "a") as trace:
            trace.write(f"{os.environ.get('RANK', '0')}\t{os.fsdecode(args[1])}\n")


sys.addaudithook(note)
sys.argv = ["moola.cli", *sys.argv[1:]]
runpy.run_module("moola.cli", run_name="__main__", alter_sys=True)
