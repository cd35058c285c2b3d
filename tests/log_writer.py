"""A real writer process for tail tests: performs the steps given as JSON in argv[1] on the file argv[2].

Steps: ["append", HEX] appends bytes (one write, flushed); ["truncate"] empties the file in place;
["rotate"] keeps it as PATH.1 and atomically puts a new empty file at PATH; ["delete"] unlinks it;
["sleep", SECONDS]; ["mark", FILE] writes the wall-clock time (unix seconds) to FILE.
"""

import json
import os
import sys
import time

steps = json.loads(sys.argv[1])
path = sys.argv[2]
for step in steps:
    action = step[0]
    if action == "append":
        with open(path, "ab") as handle:
            handle.write(bytes.fromhex(step[1]))
            handle.flush()
    elif action == "truncate":
        with open(path, "r+b") as handle:
            handle.truncate(0)
    elif action == "rotate":
        # Keep the old file as PATH.1 and put a new, empty file at PATH in one atomic step, so a reader sees
        # the inode change and never a moment without the file (that is delete-and-recreate, tested apart).
        os.link(path, path + ".1")
        open(path + ".new", "wb").close()
        os.replace(path + ".new", path)
    elif action == "delete":
        os.unlink(path)
    elif action == "sleep":
        time.sleep(step[1])
    elif action == "mark":
        with open(step[1], "w") as mark:
            mark.write(repr(time.time()))
    else:
        raise SystemExit(f"unknown step {action}")
