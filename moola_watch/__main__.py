"""``python -m moola_watch``: the ``moola-watch`` command, where its script is not on the PATH."""

import sys

from moola_watch.cli import main

sys.exit(main())
