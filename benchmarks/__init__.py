"""Benchmarks of fishertut against its peers (``make bench`` runs ``python -m benchmarks.run``).

OpenMP threads that spin while waiting at a barrier burn the CPU that their partner thread needs when other
processes share the cores: on the 2-core machine of RESULTS.md, with other jobs running, a 0.05 s computation
took 4 s. Sleeping waits (PASSIVE) keep timings meaningful on a shared machine. The OpenMP runtime reads the
variable when torch loads, so it is set here, before any module of this package imports torch; a value set by
the caller wins (``OMP_WAIT_POLICY=ACTIVE make bench``), and a process that imported torch first (the tests) is
left alone.
"""

import os
import sys

OMP_POLICY_PRESET = "torch" in sys.modules
if not OMP_POLICY_PRESET:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
