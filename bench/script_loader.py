"""Loads a bench script by its file name, for the scripts' tests (bench/*_test.py).

The scripts are named by what they measure (`offload-sweep-results.py`), so they are files, not
importable modules. Importing this module also puts the agent package (resources/agent) and the
scripts' shared helpers (bench/) on sys.path, as `PYTHONPATH=resources/agent` does for the scripts.
(Not a conftest.py: the agent's tests import their own conftest by name, and `npm test` runs both
folders in one pytest.)
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types

BENCH = os.path.dirname(os.path.abspath(__file__))
AGENT = os.path.join(os.path.dirname(BENCH), "resources", "agent")
for _p in (AGENT, BENCH):
    if _p not in sys.path:
        sys.path.insert(0, _p)


def load_script(name: str) -> types.ModuleType:
    """bench/<name> as a module (its dataclasses find their module in sys.modules)."""
    path = os.path.join(BENCH, name)
    mod_name = "bench_" + os.path.splitext(name)[0].replace("-", "_").replace("/", "_")
    spec = importlib.util.spec_from_file_location(mod_name, path)
    assert spec is not None and spec.loader is not None, path
    mod = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = mod
    spec.loader.exec_module(mod)
    return mod
