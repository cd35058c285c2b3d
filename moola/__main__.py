"""``python -m moola``: the ``moola`` command, where its script is not on the PATH."""

import sys

from moola.cli import main

sys.exit(main())
