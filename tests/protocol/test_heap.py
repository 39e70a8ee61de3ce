"""protocol.heap.settle: what is alive at start-up leaves the collector's full passes, in a real process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# A process with a large permanent heap, as the service's and the simulator's are: after settle() a full
# collection no longer walks it.
PROGRAM = textwrap.dedent(
    """
    import gc, json, sys
    from protocol.heap import YOUNG_THRESHOLD, settle
    permanent = [{"unit": i, "state": [i, str(i)]} for i in range(300_000)]
    settled = "--settle" in sys.argv
    frozen = settle() if settled else 0
    tracked_before = len(gc.get_objects(generation=2))
    gc.collect(2)
    print(json.dumps({"frozen": frozen, "threshold": gc.get_threshold()[0], "young": YOUNG_THRESHOLD,
                      "old_generation": tracked_before, "alive": len(permanent)}))
    """
)


def run(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM, *args], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(out.stdout)


def test_settle_takes_the_permanent_heap_out_of_full_collections():
    plain = run()
    settled = run("--settle")
    # Without settle the 300,000 units' objects (and their lists) sit in the oldest generation a full pass walks.
    assert plain["old_generation"] > 600_000, plain
    assert plain["threshold"] == 700, plain
    # With it they are frozen: the oldest generation holds almost nothing, and the young one is collected less often.
    assert settled["frozen"] > 600_000, settled
    assert settled["old_generation"] < 10_000, settled
    assert settled["threshold"] == settled["young"] == 20_000, settled
