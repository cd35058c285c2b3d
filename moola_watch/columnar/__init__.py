"""The offline fast path: a whole log read typed and in batches, with the streaming engine's exact answer.

:func:`scan_into` fills a :class:`~moola_watch.analyze.LogScan` as feeding it every line would; ``analyze``,
``check``, ``report`` and ``export`` read whole files this way (:func:`moola_watch.analyze.scan_log`), while
``follow`` and the reference stay on the streaming engine. :mod:`.records` decodes ``grad_stats`` lines typed;
:mod:`.scan` walks a file's chunks.
"""

from moola_watch.columnar.records import UnsupportedInput
from moola_watch.columnar.scan import cyclic_gc_paused, scan_into

__all__ = ["UnsupportedInput", "cyclic_gc_paused", "scan_into"]
