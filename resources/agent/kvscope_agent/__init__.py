"""KV Scope agent: runs the multi-user multi-round KV-cache workload and writes the events of
docs/protocol.md (its version is kvscope_agent/protocol/protocol.json's)."""

from .protocol import PROTOCOL_VERSION

__version__ = "0.1.0"

__all__ = ["PROTOCOL_VERSION", "__version__"]
