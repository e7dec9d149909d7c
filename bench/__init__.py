"""`make bench` / `python -m bench`: the performance benchmarks, run against real processes.

Each benchmark starts what it measures (supervisors through the real CLI, module processes, raw
pyzmq peers), measures its baseline in the same run, stops everything it started, and returns rows
for the table. Nothing here is a test: pytest never collects this package.
"""
