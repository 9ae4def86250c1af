import os
import sys

# Tests import the package from resources/agent, as `python3 -m kvscope_agent` does with
# resources/agent on PYTHONPATH.
AGENT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if AGENT_ROOT not in sys.path:
    sys.path.insert(0, AGENT_ROOT)
