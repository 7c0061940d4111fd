"""Memory attribution for a gateway started by `bench/gateway.py --memprofile`.

Python imports `sitecustomize` at start-up from the first directory on sys.path that has
one; bench/gateway.py puts this directory on PYTHONPATH for that one gateway process only.
With BENCH_TRACEMALLOC_DIR set, tracemalloc starts before anything else is imported, and
every SIGUSR1 dumps a snapshot there (snap-0.pickle, snap-1.pickle, ...). The load client
sends the signal just before it opens the idle sessions and again once they are open.
tracemalloc's own bookkeeping inflates RSS, so a profiled run's KB/session is not a figure.
"""

import itertools
import os
import signal
import tracemalloc

_DIR = os.environ.get("BENCH_TRACEMALLOC_DIR")
if _DIR:
    tracemalloc.start(int(os.environ.get("BENCH_TRACEMALLOC_FRAMES", "12")))
    _counter = itertools.count()

    def _dump(signum: int, frame: object) -> None:
        snapshot = tracemalloc.take_snapshot()
        path = os.path.join(_DIR, f"snap-{next(_counter)}.pickle")
        snapshot.dump(path + ".tmp")
        os.replace(path + ".tmp", path)

    signal.signal(signal.SIGUSR1, _dump)
