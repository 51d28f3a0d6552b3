"""How a serving process sets up CPython's garbage collector once its startup is done.

The service runs it at the end of its lifespan's startup, and so does the benchmark's
baseline (``bench/baseline_app.py``), so that both pay the same for the collector.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_COLLECTION_THRESHOLD", "settle_garbage_collector"]

# Net allocations of container objects between two young collections (CPython's default:
# 700). A read allocates and frees thousands, so at 700 the collector ran every few
# requests, each time to find nothing: a 100-turn read cost about 30 µs more of CPU.
YOUNG_COLLECTION_THRESHOLD = 50_000


def settle_garbage_collector() -> None:
    """Freeze what startup loaded for good, and collect the young generation less often.

    The process then holds about 175,000 objects that live as long as it does (FastAPI's
    routes and models, SQLAlchemy, botocore's S3 model). A full collection scanned them all,
    some 100 ms on the benchmark's machine, and a read that allocates as much as a
    10,000-turn transcript triggers full collections often enough for those pauses to set
    p99. Frozen, they are skipped; whatever becomes garbage later is collected as before.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, old)
