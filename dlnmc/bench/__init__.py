"""Benchmarks: ``python -m dlnmc.bench [engine|flow|all] [--quick]``.

Each benchmark module has ``run(quick: bool) -> pandas.DataFrame`` that measures dlnmc and a
baseline in the same process and reports their ratio; nothing here is a test.
"""
