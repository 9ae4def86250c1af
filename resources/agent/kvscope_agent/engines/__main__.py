"""`python3 -m kvscope_agent.engines`: which real engines import here, as JSON (name -> version,
or "unavailable: ..." with the reason and what the engine needs)."""

from __future__ import annotations

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
