"""Programs the app sends to a host as the program text of `<python> - ARGS` (stdin), as it sends
probe.py: the run's tail (tail.py) and the listing `kvscope clean` works from (list_runs.py).

They ship with the agent package (deployed, and in installers beside it) but never run from the
deployed copy, so they work before the agent is deployed and for a run whose agent folder is gone.
Each is one standard-library file (Python 3.6+, no import of this package) with a `main(argv)`;
tests/test_programs.py runs them as the app does.
"""
