"""dockyard's benchmarks: each measures dockyard and a baseline in the same run (BENCHMARKS.md).

Run them all with ``.venv/bin/python -m bench`` (``--quick`` for the short version); see
``bench/README.md``.
"""
