"""`python -m tools.bench`: tgsnap measured side by side with the article's JSON backup, as ratios.

Never imported by the unit-test suite except one small smoke run (tests/tools/test_bench.py).
"""
